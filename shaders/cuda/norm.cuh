// zmlx: MLX's CUDA RMS norm for rows of up to 1024 * NR values (`rms_norm_small` in
// mlx/backend/cuda/rms_norm.cu, read at 0.32.2-dev), step by step, for the fused
// norm kernels (add_rms_norm.cu, head_norm_rope.cu). Included after prelude.cuh.
//
// MLX launches one block of BLOCK threads per row of AXIS values of T. Thread t
// holds CHUNKS vectors of NR = 16 / sizeof(T) values; vector i starts at element
// (BLOCK * i + t) * NR, zeros past the row's end. Each thread sums the squares of
// its values in order from 0 (`normalizer += t * t`, which nvcc contracts into an
// fma: FMAV 0; FMAV 1 keeps a rounded product, for checking another build); the
// block adds the thread sums with a 32-lane xor butterfly per warp, then the warp
// sums with a second butterfly over lanes holding them (zeros elsewhere);
// normalizer = rsqrt(sum / AXIS + eps); output = w * T(float(x) * normalizer), the
// product taken in T. Launch shape (MLX's dispatch_num_chunks): AXIS <= 64 * NR:
// (64, 1); else with NVEC = ceil(AXIS / NR): NVEC % 128 == 0 and NVEC <= 1024:
// (128, NVEC / 128); NVEC % 64 == 0 and NVEC <= 512: (64, NVEC / 64); otherwise
// (128, ceil(NVEC / 128)).

// MLX's element-wise functors (cu::Add for the residual add).
// Guarded: the norm tail of the down kernel takes both mma.cuh and norm.cuh, and
// MLX's header has no include guard of its own.
#ifndef ZMLX_MLX_BINARY_OPS
#define ZMLX_MLX_BINARY_OPS
#include "mlx/backend/cuda/device/binary_ops.cuh"
#endif

namespace zmlx {

template <typename T, int AXIS>
struct RmsShape {
  static constexpr int NR = 16 / static_cast<int>(sizeof(T));
  static constexpr int NVEC = (AXIS + NR - 1) / NR;
  static constexpr bool ONE_CHUNK = AXIS <= 64 * NR;
  static constexpr int BLOCK = ONE_CHUNK                                   ? 64
                               : (NVEC % 128 == 0 && NVEC / 128 <= 8) ? 128
                               : (NVEC % 64 == 0 && NVEC / 64 <= 8)   ? 64
                                                                      : 128;
  static constexpr int CHUNKS = ONE_CHUNK ? 1 : (NVEC + BLOCK - 1) / BLOCK;
  static constexpr int VALS = CHUNKS * NR;
  static constexpr int WARPS = BLOCK / 32;
  static_assert(AXIS <= 1024 * NR, "MLX takes another kernel for longer rows");
};

// Element index of value `i` of thread `tid` (may be past the row's end).
template <typename T, int AXIS>
__device__ __forceinline__ int rms_index(int tid, int i) {
  using S = RmsShape<T, AXIS>;
  return (S::BLOCK * (i / S::NR) + tid) * S::NR + i % S::NR;
}

// Sum of the block's squares, as MLX's block reduce leaves it in every thread.
// `red` is shared memory for WARPS floats; every thread of the block must call.
// The block may be wider than BLOCK threads if the threads past BLOCK hold zeros.
template <typename T, int AXIS, int FMAV>
__device__ __forceinline__ float rms_normalizer(const T* v, float eps, float* red) {
  using S = RmsShape<T, AXIS>;
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < S::VALS; ++i) {
    const float t = to_float(v[i]);
    acc = FMAV == 0 ? __fmaf_rn(t, t, acc) : __fadd_rn(acc, __fmul_rn(t, t));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, o));
  }
  if (S::WARPS > 1) {
    const int lane = threadIdx.x & 31;
    // A block wider than MLX's (the down kernel's norm tail) has extra warps: they
    // hold zeros and stay out of the second stage, as MLX's block has none.
    if (lane == 0 && (threadIdx.x >> 5) < S::WARPS) {
      red[threadIdx.x >> 5] = acc;
    }
    __syncthreads();
    acc = lane < S::WARPS ? red[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, o));
    }
  }
  return rsqrtf(__fadd_rn(__fdiv_rn(acc, static_cast<float>(AXIS)), eps));
}

// One normalised value: w * T(float(x) * normalizer), the product in T.
template <typename T>
__device__ __forceinline__ T rms_scale(T x, T w, float normalizer) {
  return w * from_float<T>(__fmul_rn(to_float(x), normalizer));
}

// One head of one token (D values of T at `src`): RMS norm with weight `w`, then
// MLX's CUDA `fast::rope` (non-traditional, full head, one token: `rope_single` in
// mlx/backend/cuda/rope.cu, read at 0.32.2-dev) at position `pos` (already scale *
// offset), written to `dst`: pair p < D/2 of (n[p], n[p + D/2]) turns by theta = pos
// * exp2(-(p / (D/2)) * lb) with precise cosf/sinf, in f32, each result rounded once
// to T. MLX writes `x1 * cos - x2 * sin` and `x1 * sin + x2 * cos` and leaves the
// fma contraction to nvcc; ROPEV picks one: 0 = fma(x1, cos, -(x2 * sin)) and fma(x1,
// sin, x2 * cos) (LLVM's rule: the left product is fused), 1 = fma(-x2, sin, x1 *
// cos) and fma(x2, cos, x1 * sin), 2 = no fma. A block of RmsShape<T, D>::BLOCK
// threads; every thread must call. `red` (WARPS floats) and `normed` (D values) are
// shared memory.
template <typename T, int D, int FMAV, int ROPEV>
__device__ __forceinline__ void norm_rope_head(const T* src, const T* w, T* dst, float eps,
                                               float pos, float lb, float* red, T* normed) {
  using S = RmsShape<T, D>;
  constexpr int HALF = D / 2;
  static_assert(D % 2 == 0, "rope turns pairs");
  const int tid = threadIdx.x;
  T v[S::VALS];
#pragma unroll
  for (int i = 0; i < S::VALS; ++i) {
    const int idx = rms_index<T, D>(tid, i);
    v[i] = idx < D ? src[idx] : from_float<T>(0.f);
  }
  const float nrm = rms_normalizer<T, D, FMAV>(v, eps, red);
#pragma unroll
  for (int i = 0; i < S::VALS; ++i) {
    const int idx = rms_index<T, D>(tid, i);
    if (idx < D) {
      normed[idx] = rms_scale(v[i], w[idx], nrm);
    }
  }
  __syncthreads();
  for (int p = tid; p < HALF; p += S::BLOCK) {
    const float d = __fdiv_rn(static_cast<float>(p), static_cast<float>(HALF));
    const float inv_freq = exp2f(__fmul_rn(-d, lb));
    const float theta = __fmul_rn(pos, inv_freq);
    const float c = cosf(theta);
    const float s = sinf(theta);
    const float x1 = to_float(normed[p]);
    const float x2 = to_float(normed[p + HALF]);
    float r1;
    float r2;
    if (ROPEV == 0) {
      r1 = __fmaf_rn(x1, c, -__fmul_rn(x2, s));
      r2 = __fmaf_rn(x1, s, __fmul_rn(x2, c));
    } else if (ROPEV == 1) {
      r1 = __fmaf_rn(-x2, s, __fmul_rn(x1, c));
      r2 = __fmaf_rn(x2, c, __fmul_rn(x1, s));
    } else {
      r1 = __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
      r2 = __fadd_rn(__fmul_rn(x1, s), __fmul_rn(x2, c));
    }
    dst[p] = from_float<T>(r1);
    dst[p + HALF] = from_float<T>(r2);
  }
}

}  // namespace zmlx
