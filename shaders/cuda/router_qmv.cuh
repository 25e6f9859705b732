// zmlx CUDA: router logits as MLX's `qmv_kernel` computes them (8-bit affine
// weights, one token), for the SwiGLU kernel that computes its own router logits
// (swiglu_router.cu). Appended after prelude.cuh, mma.cuh and route.cuh.
//
// What is reproduced: MLX 0.32.4's quantized_matmul with one row of activations
// takes `qmv_kernel<rows_per_block 8, elems_per_thread 8, GROUP, has_bias,
// has_residue_k false>` for 8-bit weights (mlx/backend/cuda/quantized/qmm/qmv.cu;
// the kernel name is in the CUPTI traces of device run 65b). One warp a row; lane l
// takes the 8 consecutive values at l * 8 + it * 256 for it = 0 .. K / 256 - 1 and
// keeps 8 f32 sums, one per position: sums[i] = fma(x, w, sums[i]) with x and the
// dequantized weight w widened from T (the product is exact). The weight is
// dequantized in T as cutlass's `Array<T, 8>` operators compute `w * scale + bias`:
// QDEQ 2 rounds q * scale + bias once (a fused multiply-add, what the same operators
// give in MLX's gather_qmm, mma.cuh DEQ 2), QDEQ 0 rounds the product and the sum
// each (gpu.rs, ZMLX_CUDA_QDEQ selects; tests/cuda_vs_reference.rs checks the
// default against MLX: device run 114 found QDEQ 2 bit-exact in all 24 cases and
// QDEQ 0 off in 23). The lane then adds its 8 sums in order from 0, the warp
// reduces with cooperative groups' butterfly (xor 16 .. 1, out + partner), and the
// result is rounded to T.

namespace zmlx {

// Eight consecutive values of T from `p`, as raw 16-byte words: one vector load when
// `p` is 16-byte aligned, else eight scalar loads.
template <typename T>
__device__ __forceinline__ uint4 load8(const T* p, bool aligned) {
  if (aligned) {
    return *reinterpret_cast<const uint4*>(p);
  }
  uint32_t h[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    h[i] = bits16(p[i]);
  }
  return make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16),
                    h[6] | (h[7] << 16));
}

// Value i of eight values of T held as raw words (load8), widened.
template <typename T>
__device__ __forceinline__ float value8(const uint4& v, int i) {
  const uint32_t word = (i < 2 ? v.x : i < 4 ? v.y : i < 6 ? v.z : v.w) >> (16 * (i & 1));
  return gate_value(word & 0xffffu, T{});  // route.cuh: the T with these bits, widened
}

// One dequantized 8-bit weight in T.
template <typename T, int QDEQ>
__device__ __forceinline__ float qmv8_weight(uint32_t q, T s, T b) {
  const T wq = from_float<T>(static_cast<float>(q));  // exact: q < 256
  if constexpr (QDEQ == 0) {
    return to_float(__hadd_rn(__hmul_rn(wq, s), b));
  } else {
    return to_float(__hfma(wq, s, b));
  }
}

// This lane's activations of the token (`x`, 16-byte aligned or not) for
// qmv8_rows: the 8 values at lane * 8 + it * 256, as raw words.
template <typename T, int HID>
__device__ __forceinline__ void qmv8_activations(const T* x, bool aligned, int lane,
                                                 uint4 (&xv)[HID / 256]) {
#pragma unroll
  for (int it = 0; it < HID / 256; ++it) {
    xv[it] = load8(x + it * 256 + lane * 8, aligned);
  }
}

// The logits of R router rows, row0, row0 + stride, ... (rows at or past `rows`
// are skipped; their out values are unspecified): `w` holds each row's HID / 4
// words of 8-bit codes, `s`/`b` its HID / GROUP scales and biases, `xv` the token's
// activations (qmv8_activations). Every lane of the warp calls it and gets the same
// values. All the rows' loads come first, so the R rows cost one memory latency.
template <typename T, int HID, int GROUP, int QDEQ, int R>
__device__ __forceinline__ void qmv8_rows(const uint32_t* w, const T* s, const T* b, int row0,
                                          int stride, int rows, const uint4 (&xv)[HID / 256],
                                          int lane, T (&out)[R]) {
  static_assert(HID % 256 == 0, "qmv8_rows: MLX's qmv without a K residue");
  static_assert(GROUP % 8 == 0, "qmv8_rows: a lane's 8 values lie in one group");
  constexpr int IT = HID / 256;
  constexpr int GPR = HID / GROUP;
  uint2 wv[R][IT];
  T sv[R][IT];
  T bv[R][IT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int row = row0 + r * stride;
    if (row < rows) {
#pragma unroll
      for (int it = 0; it < IT; ++it) {
        const int idx = it * 256 + lane * 8;
        wv[r][it] = *reinterpret_cast<const uint2*>(w + static_cast<long long>(row) * (HID / 4) +
                                                     idx / 4);
        sv[r][it] = s[static_cast<long long>(row) * GPR + idx / GROUP];
        bv[r][it] = b[static_cast<long long>(row) * GPR + idx / GROUP];
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float sums[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int it = 0; it < IT; ++it) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t word = i < 4 ? wv[r][it].x : wv[r][it].y;
        const uint32_t q = (word >> (8 * (i & 3))) & 0xffu;
        sums[i] = __fmaf_rn(value8<T>(xv[it], i), qmv8_weight<T, QDEQ>(q, sv[r][it], bv[r][it]),
                            sums[i]);
      }
    }
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      sum = __fadd_rn(sum, sums[i]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      sum = __fadd_rn(sum, __shfl_xor_sync(0xffffffffu, sum, o));
    }
    out[r] = from_float<T>(sum);
  }
}

}  // namespace zmlx
