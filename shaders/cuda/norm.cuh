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
#include "mlx/backend/cuda/device/binary_ops.cuh"

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
    if (lane == 0) {
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

}  // namespace zmlx
