// zmlx fused down projection + weighted combine (body for MLX's fast::cuda_kernel;
// helpers in prelude.cuh and mma.cuh).
//
// y[t, o] = sum_j T(T(h[t, j] . down[e(t, j), o]) * score[t, j]) over the TOPK
// experts of token t, bit for bit what MLX's CUDA backend gives for mlx-lm's
// `(gather_qmm(h, down) * scores[..., None]).sum(-2)`: the projection as qmm_sm80
// computes it (mma.cuh), each product rounded to T by MLX's Multiply functor, and
// the k products summed by MLX's column reduction. Which order and accumulator
// that is, is being established on the device (notes/cuda-kernels.md), so SUMV
// selects among the candidates (zmlx::ksum in mma.cuh): 0/1 sequential in j from 0
// (col_reduce_small) in T / fp32; 2/3 a 32-lane xor butterfly with offsets 16..1
// over lanes holding the k products and zeros (col_reduce_looped's cg::reduce) in
// T / fp32; 4/5 the same butterfly with offsets 1..16. fp32 sums round once.
//
// Work split: one warp per (token, 8 consecutive output features). The k experts'
// projections are independent mma chains; JB = 4 of them run interleaved so their
// latencies overlap, and lanes 0..3 fold each finished expert into the sum in j
// order.
//
// Template arguments: T (f16 or bf16), BITS, GROUP, HID (output features, a
// multiple of 8), INTER (input features of down, a multiple of max(64, GROUP)),
// DEQ (see mma.cuh), SUMV (above). Runtime sizes in dims_in (uint32 [NTOK, TOPK, EXPERTS]).
// Inputs: h_in [NTOK, TOPK, INTER] T, expert_ids [NTOK, TOPK] uint32, dims_in,
// gate_scores [NTOK, TOPK] T, w_down [EXPERTS, HID, INTER * BITS / 32] uint32,
// s_down/b_down [EXPERTS, HID, INTER / GROUP] T. Output: y_out [NTOK, HID] T.

const int NTOK = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int VALS = 128 / BITS;
constexpr int NCH = INTER / VALS;
constexpr int KPC = VALS / 16;
constexpr int GPR = INTER / GROUP;
constexpr int WPR = INTER * BITS / 32;
constexpr int TILES = HID / 8;
constexpr int JB = 4;

const int lane = threadIdx.x & 31;
const long long warp_id =
    (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
if (warp_id >= static_cast<long long>(NTOK) * TILES) {
  return;
}
const long long tok = warp_id / TILES;
const int o0 = static_cast<int>(warp_id % TILES) * 8;
const int g = lane >> 2;
const int t = lane & 3;
const bool vec_w = zmlx::aligned16(w_down);

// Each lane of g == 0 keeps its two outputs' k products (TOPK <= MAX_K).
constexpr int MAX_K = 32;
T prod[2][MAX_K];
#pragma unroll 1
for (int j0 = 0; j0 < TOPK; j0 += JB) {
  float c[JB][4];
  bool on[JB];
  const uint32_t* dw[JB];
  const T* ds[JB];
  const T* db[JB];
  const T* hr[JB];
#pragma unroll
  for (int b = 0; b < JB; ++b) {
    const int j = j0 + b;
    c[b][0] = c[b][1] = c[b][2] = c[b][3] = 0.f;
    uint32_t e = 0;
    on[b] = j < TOPK;
    if (on[b]) {
      e = expert_ids[tok * TOPK + j];
      on[b] = e < static_cast<uint32_t>(EXPERTS);
    }
    // Pointers of an idle chain stay at expert 0 (never dereferenced).
    const long long wrow = static_cast<long long>(on[b] ? e : 0u) * HID + o0 + g;
    dw[b] = w_down + wrow * WPR;
    ds[b] = s_down + wrow * GPR;
    db[b] = b_down + wrow * GPR;
    hr[b] = h_in + (tok * TOPK + (on[b] ? j : 0)) * INTER;
  }
#pragma unroll 2
  for (int ch = 0; ch < NCH; ++ch) {
    const int grp = ch * VALS / GROUP;
#pragma unroll
    for (int b = 0; b < JB; ++b) {
      // Warp-uniform (the same j and expert for all lanes).
      if (on[b]) {
        const uint4 w = zmlx::load_packed(dw[b] + ch * 4, vec_w);
        uint32_t a[2 * KPC];
        zmlx::a_chunk<T, BITS>(hr[b] + ch * VALS, g, t, a);
        zmlx::mma_chunk<T, BITS, DEQ>(w, a, t, zmlx::to_float(ds[b][grp]),
                                      zmlx::to_float(db[b][grp]), c[b]);
      }
    }
  }
  if (g == 0) {
#pragma unroll
    for (int b = 0; b < JB; ++b) {
      const int j = j0 + b;
      if (j < TOPK) {
        // An out-of-range expert contributes T(0) * score, as zeros would.
        const T sc = gate_scores[tok * TOPK + j];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const T y = zmlx::from_float<T>(c[b][i]);
          prod[i][j] = mlx::core::cu::Multiply{}(y, sc);
        }
      }
    }
  }
}
if (g == 0) {
  T* out = y_out + tok * HID + o0 + 2 * t;
  out[0] = zmlx::ksum<T, SUMV>(prod[0], TOPK);
  out[1] = zmlx::ksum<T, SUMV>(prod[1], TOPK);
}
