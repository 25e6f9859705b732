// zmlx fused expert SwiGLU, cooperative variant (body for MLX's fast::cuda_kernel,
// after a first part that defines `expert_of`: swiglu_ids.cu or swiglu_route.cu).
// Same contract and the same bits as expert_swiglu.cu; what differs is who
// dequantizes: dedicated warps of the block (coop.cuh), while each chain's own warp
// only multiplies.
//
// Work split: a block per TPB (pair, 16 consecutive rows n) tiles; chain 2 * lt of
// the block is tile lt's gate projection, chain 2 * lt + 1 its up projection; warp
// c < 2 * TPB routes (swiglu_route.cu) and runs chain c's mmas, warps 2 * TPB .. NW
// dequantize. The results are rounded to T and meet in shared memory, where the
// gate warp applies MLX's swiglu functors.
//
// Template arguments: T, BITS, GROUP, HID, INTER (a multiple of 16), DEQ, TPB as in
// expert_swiglu.cu; PIPE (the ring's stages, >= 3), CPS (16-byte chunks of each row
// a stage) and NW (warps a block, > 2 * TPB) as coop.cuh describes. Launch: 32 * NW
// threads a block, one block per TPB tiles. Inputs and outputs as expert_swiglu.cu.

const int PAIRS = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int GPR = HID / GROUP;          // groups per weight row
constexpr int WPR = HID * BITS / 32;      // uint32 per weight row
constexpr int TILES = INTER / 16;         // tiles per expert
constexpr int NC = 2 * TPB;               // chains a block

__shared__ T up_tile[TPB][16];
__shared__ zmlx::CoopChains<T, NC> chains;
__shared__ zmlx::CoopSmem<BITS, GPR, NC, CPS, PIPE> coop;
const int lane = threadIdx.x & 31;
const int warp = threadIdx.x >> 5;
const int lt = warp >> 1;                 // the block's tile of chain `warp`
const int proj = warp & 1;                // 0: gate, 1: up
const long long tile = static_cast<long long>(blockIdx.x) * TPB + lt;
// The last block may hold tiles past the end: their chains stay idle but their
// warps still dequantize for the others and reach every barrier.
const bool live = warp < NC && tile < static_cast<long long>(PAIRS) * TILES;
const long long pair = live ? tile / TILES : 0;
const int n0 = static_cast<int>(tile % TILES) * 16;
const long long tok = pair / TOPK;
// Where the kernel routes itself (swiglu_route.cu), the gate warp of each token's
// first tile writes the token's routing.
const bool writer = live && proj == 0 && tile % (static_cast<long long>(TOPK) * TILES) == 0;
const uint32_t e = live ? expert_of(pair, writer) : 0u;
// An out-of-range expert id (a bad routing) yields zeros rather than a stray read.
const bool valid = live && e < static_cast<uint32_t>(EXPERTS);
if (warp < NC && lane == 0) {
  // The tile's first row.
  const long long wrow = static_cast<long long>(valid ? e : 0u) * INTER + n0;
  chains.w[warp] = (proj == 0 ? w_gate : w_up) + wrow * WPR;
  chains.s[warp] = (proj == 0 ? s_gate : s_up) + wrow * GPR;
  chains.b[warp] = (proj == 0 ? b_gate : b_up) + wrow * GPR;
  chains.x[warp] = x_in + tok * HID;
  chains.live[warp] = valid ? 1 : 0;
}
__syncthreads();
float c[4];
zmlx::coop_chains<T, BITS, GROUP, HID, DEQ, NC, NW, CPS, PIPE>(coop, chains, c);
// gather_qmm writes each projection in T.
if (warp < NC && proj == 1) {
  zmlx::tile_results<16>(c, lane, [&](int r, float v) { up_tile[lt][r] = zmlx::from_float<T>(v); });
}
__syncthreads();
if (live && proj == 0) {
  T* out = h_out + pair * INTER + n0;
  zmlx::tile_results<16>(c, lane, [&](int r, float v) {
    out[r] = valid ? zmlx::mlx_swiglu<T>(zmlx::from_float<T>(v), up_tile[lt][r])
                   : zmlx::from_float<T>(0.f);
  });
}
