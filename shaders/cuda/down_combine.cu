// zmlx fused down projection + weighted combine (body for MLX's fast::cuda_kernel;
// helpers in prelude.cuh and mma.cuh).
//
// y[t, o] = sum_j T(T(h[t, j] . down[e(t, j), o]) * score[t, j]) over the TOPK
// experts of token t, bit for bit what MLX's CUDA backend gives for mlx-lm's
// `(gather_qmm(h, down) * scores[..., None]).sum(-2)`: the projection as qmm_sm80
// computes it (mma.cuh), each product rounded to T by MLX's Multiply functor, and
// the k products summed by MLX's column reduction in the order SUMV selects
// (zmlx::ksum in mma.cuh; 0, sequential in j in T, is what MLX 0.32.4 does at
// Qwen3-30B-A3B's shapes, notes/cuda-kernels.md). With RES = 1 the output is
// res_in[t, o] + y[t, o] by MLX's Add functor on T (what MLX's CUDA `add` computes
// for two T arrays), folding a decoder layer's `h + moe(x)` into this kernel.
//
// Work split: one block of WPB = min(TOPK, 8) warps per (token, ROWS consecutive
// output features); warp w runs the mma chains of experts w, w + WPB, ... through
// its ring in shared memory (mma_tile in mma.cuh, as in expert_swiglu.cu), the
// lanes holding results put the rounded products into shared memory, and after a
// barrier lane r of warp 0 sums output r's k products in order.
//
// Template arguments: T (f16 or bf16), BITS, GROUP, HID (output features, a
// multiple of ROWS), INTER (input features of down, a multiple of max(64, GROUP)),
// DEQ (see mma.cuh), SUMV (above), RES (0 or 1: add res_in), PIPE (the stages of
// each warp's ring, 2..8), ROWS (outputs a tile, 8 or 16: mma.cuh), CPS (chunks a
// ring stage: PipeRing in mma.cuh). Runtime sizes in dims_in (uint32 [NTOK, TOPK,
// EXPERTS]); TOPK <= 32. Launch: 32 * min(TOPK, 8) threads per block, one block
// per tile.
// Inputs: h_in [NTOK, TOPK, INTER] T, expert_ids [NTOK, TOPK] uint32, dims_in,
// gate_scores [NTOK, TOPK] T, w_down [EXPERTS, HID, INTER * BITS / 32] uint32,
// s_down/b_down [EXPERTS, HID, INTER / GROUP] T, res_in [NTOK, HID] T when RES = 1
// (with RES = 0 the host passes some other T array, never read). Output: y_out
// [NTOK, HID] T.

const int NTOK = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int GPR = INTER / GROUP;
constexpr int WPR = INTER * BITS / 32;
constexpr int TILES = HID / ROWS;
constexpr int MAX_K = 32;

__shared__ T prod[ROWS][MAX_K];
// One ring per warp (at most 8 warps; mma_tile in mma.cuh).
__shared__ zmlx::PipeRing<BITS, GPR, PIPE, ROWS, CPS> ring[8];
const int lane = threadIdx.x & 31;
const int warp = threadIdx.x >> 5;
const int WPB = static_cast<int>(blockDim.x >> 5);
const long long tile = blockIdx.x;
if (tile >= static_cast<long long>(NTOK) * TILES) {
  return;
}
const long long tok = tile / TILES;
const int o0 = static_cast<int>(tile % TILES) * ROWS;

for (int j = warp; j < TOPK; j += WPB) {
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  const uint32_t e = expert_ids[tok * TOPK + j];
  // An out-of-range expert contributes T(0) * score, as zeros would.
  if (e < static_cast<uint32_t>(EXPERTS)) {
    // The tile's first row.
    const long long wrow = static_cast<long long>(e) * HID + o0;
    const uint32_t* w = w_down + wrow * WPR;
    const T* sc = s_down + wrow * GPR;
    const T* bi = b_down + wrow * GPR;
    const T* hr = h_in + (tok * TOPK + j) * INTER;
    const bool aligned = zmlx::aligned16(w) && zmlx::aligned16(hr);
    zmlx::mma_tile_any<T, BITS, GROUP, INTER, DEQ, PIPE, ROWS>(ring[warp], w, sc, bi, hr,
                                                               aligned, lane, c);
  }
  const T s = gate_scores[tok * TOPK + j];
  zmlx::tile_results<ROWS>(c, lane, [&](int r, float v) {
    prod[r][j] = mlx::core::cu::Multiply{}(zmlx::from_float<T>(v), s);
  });
}
__syncthreads();
if (warp == 0 && lane < ROWS) {
  const long long at = tok * HID + o0 + lane;
  T y = zmlx::ksum<T, SUMV>(prod[lane], TOPK);
  if (RES != 0) {
    // Residual first, as the decoder layer computes `h + moe(x)`.
    y = mlx::core::cu::Add{}(res_in[at], y);
  }
  y_out[at] = y;
}
