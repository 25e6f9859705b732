// zmlx CUDA prelude: helpers shared by the fused MoE kernel bodies in this folder.
//
// MLX (fast::cuda_kernel) places this text after its own default header (which
// brings cuda_fp16.h, cuda_bf16.h and cuda::std) and before the generated kernel,
// so everything here lives in the `zmlx` namespace at global scope. Template
// arguments of a call are not visible here: helpers take them as template
// parameters instead.

namespace zmlx {

// Element <-> float conversions. Rounding to the activation dtype is how the
// kernels reproduce the reference's per-op roundings (each MLX op writes its result
// in the array's dtype).
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct Cvt;
template <>
struct Cvt<float> {
  static __device__ __forceinline__ float from(float v) { return v; }
};
template <>
struct Cvt<__half> {
  static __device__ __forceinline__ __half from(float v) { return __float2half_rn(v); }
};
template <>
struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 from(float v) {
    return __float2bfloat16_rn(v);
  }
};

template <typename T>
__device__ __forceinline__ T from_float(float v) {
  return Cvt<T>::from(v);
}

// v rounded to T and widened again.
template <typename T>
__device__ __forceinline__ float round_to(float v) {
  return to_float(from_float<T>(v));
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

__device__ __forceinline__ bool aligned4(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 3ull) == 0;
}

// The GPU's global clock in nanoseconds (PTX %globaltimer): for waits that must give
// up rather than hang.
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

}  // namespace zmlx

// ---- Router (moe_gate.cu) helpers: MLX CUDA router arithmetic ------------------
// Used by shaders/cuda/moe_gate.cu only; see that file for what each step mirrors.
namespace zmlx {

// The sum over the 32 lanes of n * e as MLX's softmax computes it: a
// cooperative_groups reduce over a 32-thread tile (xor butterfly, offsets 16 .. 1,
// out = out + shfl_xor(out, offset)) of the products, the value lane 0 ends with,
// broadcast. `fused` = the compiler's contraction of the product into the first
// butterfly addition (fma(n, e, partner's rounded product)); see moe_gate.cu.
__device__ __forceinline__ float router_tile_sum_lane0(float n, float e, bool fused) {
  const float p = __fmul_rn(n, e);
  const float other = __shfl_xor_sync(0xffffffffu, p, 16);
  float out = fused ? __fmaf_rn(n, e, other) : __fadd_rn(p, other);
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) {
    out = __fadd_rn(out, __shfl_xor_sync(0xffffffffu, out, o));
  }
  return __shfl_sync(0xffffffffu, out, 0);
}

// Max over the 32 lanes (exact whatever the order).
__device__ __forceinline__ float router_tile_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  }
  return v;
}

}  // namespace zmlx
// ---- end of router helpers -----------------------------------------------------
