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

// Sum over aligned groups of WIDTH lanes (a power of two up to 32); every lane of
// the group gets the sum. All 32 lanes must call it (full shuffle mask).
template <int WIDTH>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = WIDTH / 2; o > 0; o >>= 1) {
    v += __shfl_xor_sync(0xffffffffu, v, o);
  }
  return v;
}

__device__ __forceinline__ float warp_sum(float v) { return group_sum<32>(v); }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  }
  return v;
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// One 128-bit word of packed weights (4 uint32). `vec` says the pointer is 16-byte
// aligned (weights sliced at an odd offset take the scalar path).
__device__ __forceinline__ uint4 load_packed(const uint32_t* p, bool vec) {
  if (vec) {
    return __ldg(reinterpret_cast<const uint4*>(p));
  }
  return make_uint4(p[0], p[1], p[2], p[3]);
}

// VALS activations starting at p, widened to float (128-bit loads when aligned).
template <typename T, int VALS>
__device__ __forceinline__ void load_acts(const T* p, bool vec, float* out) {
  constexpr int PER = 16 / sizeof(T);
  if (vec) {
    const uint4* q = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int i = 0; i < VALS / PER; ++i) {
      uint4 u = q[i];
      const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int j = 0; j < PER; ++j) {
        out[i * PER + j] = to_float(e[j]);
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < VALS; ++i) {
      out[i] = to_float(p[i]);
    }
  }
}

template <int VALS>
__device__ __forceinline__ float sum_vals(const float* a) {
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < VALS; ++i) {
    s += a[i];
  }
  return s;
}

// sum_i q_i * a_i over the 128 / BITS values of one 128-bit word, low bits first
// (MLX's affine packing). The affine map w = scale * q + bias is applied per group
// by the caller as scale * sum(q a) + bias * sum(a).
template <int BITS>
__device__ __forceinline__ float packed_dot(uint4 w, const float* a) {
  constexpr int PW = 32 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
  float acc = 0.f;
#pragma unroll
  for (int m = 0; m < 4; ++m) {
#pragma unroll
    for (int i = 0; i < PW; ++i) {
      acc = fmaf(static_cast<float>((ws[m] >> (BITS * i)) & MASK), a[m * PW + i], acc);
    }
  }
  return acc;
}

// MLX's sigmoid written as its element-wise kernel computes it in the array's dtype:
// y = 1 / (1 + exp(-|x|)), then x < 0 ? 1 - y : y, each step rounded to T.
template <typename T>
__device__ __forceinline__ float sigmoid_as(float x) {
  const float e = round_to<T>(expf(-fabsf(x)));
  const float d = round_to<T>(1.f + e);
  const float y = round_to<T>(1.f / d);
  return x < 0.f ? round_to<T>(1.f - y) : y;
}

// mlx-lm's swiglu on already rounded g and u: silu(g) = g * sigmoid(g) (rounded),
// times u (rounded).
template <typename T>
__device__ __forceinline__ float swiglu_as(float g, float u) {
  const float silu = round_to<T>(g * sigmoid_as<T>(g));
  return round_to<T>(silu * u);
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
