// zmlx fused per-head RMS norm + rotary embedding of one token's queries and keys
// (body for MLX's fast::cuda_kernel; helpers in prelude.cuh and norm.cuh).
//
// For each token and head: n = rms_norm(head, w, eps) as MLX's CUDA
// `fast::rms_norm` computes it (norm.cuh; w = the q or k norm weight), then MLX's
// CUDA `fast::rope` (non-traditional, full head, one token: `rope_single` in
// mlx/backend/cuda/rope.cu, read at 0.32.2-dev) of n at position `offset`:
// pair p < D/2 of (n[p], n[p + D/2]) turns by theta = (scale * offset) *
// exp2(-(p / (D/2)) * log2(base)) with precise cosf/sinf, in f32, each result
// rounded once to T. Qwen3's `q_norm` + `k_norm` + two `rope` calls of a decode
// step in one op instead of four, with the same bits.
//
// MLX writes `x1 * cos - x2 * sin` and `x1 * sin + x2 * cos` and leaves the fma
// contraction to nvcc; ROPEV picks one: 0 = fma(x1, cos, -(x2 * sin)) and
// fma(x1, sin, x2 * cos) (LLVM's rule: the left product is fused), 1 = fma(-x2,
// sin, x1 * cos) and fma(x2, cos, x1 * sin), 2 = no fma.
//
// Template arguments: T (f32, f16, bf16), D (head dim, even), NQ and NK (query and
// key heads per token), EPS, LB, SC (f32 bit patterns of eps, log2(base) and the
// position scale), FMAV (norm.cuh), ROPEV. Launch: RmsShape<T, D>::BLOCK threads per
// block, one block per (token, head), queries first. Inputs: q_in [B, NQ * D] T,
// k_in [B, NK * D] T, wq_in [D] T, wk_in [D] T, offset_in [1] int32. Outputs:
// q_out [B, NQ, 1, D] T, k_out [B, NK, 1, D] T.

using S = zmlx::RmsShape<T, D>;
constexpr int HALF = D / 2;
static_assert(D % 2 == 0, "rope turns pairs");
__shared__ float red[S::WARPS];
__shared__ T normed[D];
const int tid = threadIdx.x;
const long long blk = blockIdx.x;
const long long b = blk / (NQ + NK);
const int head = static_cast<int>(blk % (NQ + NK));
const bool is_q = head < NQ;
const long long at = is_q ? (b * NQ + head) * D : (b * NK + head - NQ) * D;
const T* src = (is_q ? q_in : k_in) + at;
const T* w = is_q ? wq_in : wk_in;
T* dst = (is_q ? q_out : k_out) + at;

T v[S::VALS];
#pragma unroll
for (int i = 0; i < S::VALS; ++i) {
  const int idx = zmlx::rms_index<T, D>(tid, i);
  v[i] = idx < D ? src[idx] : zmlx::from_float<T>(0.f);
}
const float nrm = zmlx::rms_normalizer<T, D, FMAV>(v, __int_as_float(EPS), red);
#pragma unroll
for (int i = 0; i < S::VALS; ++i) {
  const int idx = zmlx::rms_index<T, D>(tid, i);
  if (idx < D) {
    normed[idx] = zmlx::rms_scale(v[i], w[idx], nrm);
  }
}
__syncthreads();

const float pos = __fmul_rn(__int_as_float(SC), static_cast<float>(offset_in[0]));
const float lb = __int_as_float(LB);
for (int p = tid; p < HALF; p += S::BLOCK) {
  const float d = __fdiv_rn(static_cast<float>(p), static_cast<float>(HALF));
  const float inv_freq = exp2f(__fmul_rn(-d, lb));
  const float theta = __fmul_rn(pos, inv_freq);
  const float c = cosf(theta);
  const float s = sinf(theta);
  const float x1 = zmlx::to_float(normed[p]);
  const float x2 = zmlx::to_float(normed[p + HALF]);
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
  dst[p] = zmlx::from_float<T>(r1);
  dst[p + HALF] = zmlx::from_float<T>(r2);
}
