// zmlx fused down projection + weighted combine, cooperative variant (body for
// MLX's fast::cuda_kernel; down_combine_norm.cu may follow). Same contract and the
// same bits as down_combine.cu; what differs is who dequantizes: dedicated warps of
// the block (coop.cuh), while each chain's own warp only multiplies.
//
// Work split: one block per (token, 16 consecutive output features); the token's
// experts go in passes of NC, chain c of a pass being expert j = j0 + c, run by warp
// c; warps NC .. NW dequantize. The lanes holding results put the rounded products
// into shared memory, and after a barrier lane r of warp 0 sums output r's k
// products in order.
//
// Template arguments: T, BITS, GROUP, HID (a multiple of 16), INTER, DEQ, SUMV, RES
// as in down_combine.cu; NC (chains a pass, <= 8), PASSES (ceil(TOPK / NC)); PIPE
// (the ring's stages, >= 3), CPS (16-byte chunks of each row a stage) and NW (warps
// a block, > NC) as coop.cuh describes. Launch: 32 * NW threads a block, one block
// per tile. Inputs and outputs as down_combine.cu.

const int NTOK = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int GPR = INTER / GROUP;
constexpr int WPR = INTER * BITS / 32;
constexpr int TILES = HID / 16;
constexpr int MAX_K = 32;

__shared__ T prod[16][MAX_K];
__shared__ zmlx::CoopChains<T, NC> chains;
__shared__ zmlx::CoopSmem<BITS, GPR, NC, CPS, PIPE> coop;
const int lane = threadIdx.x & 31;
const int warp = threadIdx.x >> 5;
const long long tile = blockIdx.x;
if (tile >= static_cast<long long>(NTOK) * TILES) {
  return;
}
const long long tok = tile / TILES;
const int o0 = static_cast<int>(tile % TILES) * 16;

// PASSES = ceil(TOPK / NC), a constant: as a loop over the runtime TOPK the
// inlined chain engine took 128-157 registers a thread (ptxas, sm_90) against 72
// for one pass, and a 512-thread block may use at most 128.
#pragma unroll
for (int pass = 0; pass < PASSES; ++pass) {
  const int j0 = pass * NC;
  const int j = j0 + warp;
  if (warp < NC && lane == 0) {
    const uint32_t e = j < TOPK ? expert_ids[tok * TOPK + j] : 0u;
    // An out-of-range expert contributes T(0) * score, as zeros would.
    const bool valid = j < TOPK && e < static_cast<uint32_t>(EXPERTS);
    // The tile's first row.
    const long long wrow = static_cast<long long>(valid ? e : 0u) * HID + o0;
    chains.w[warp] = w_down + wrow * WPR;
    chains.s[warp] = s_down + wrow * GPR;
    chains.b[warp] = b_down + wrow * GPR;
    chains.x[warp] = h_in + (tok * TOPK + (j < TOPK ? j : 0)) * INTER;
    chains.live[warp] = valid ? 1 : 0;
  }
  __syncthreads();
  float c[4];
  zmlx::coop_chains<T, BITS, GROUP, INTER, DEQ, NC, NW, CPS, PIPE>(coop, chains, c);
  if (warp < NC && j < TOPK) {
    const T s = gate_scores[tok * TOPK + j];
    zmlx::tile_results<16>(c, lane, [&](int r, float v) {
      prod[r][j] = mlx::core::cu::Multiply{}(zmlx::from_float<T>(v), s);
    });
  }
}
__syncthreads();
if (warp == 0 && lane < 16) {
  const long long at = tok * HID + o0 + lane;
  T y = zmlx::ksum<T, SUMV>(prod[lane], TOPK);
  if (RES != 0) {
    // Residual first, as the decoder layer computes `h + moe(x)`.
    y = mlx::core::cu::Add{}(res_in[at], y);
  }
  y_out[at] = y;
}
