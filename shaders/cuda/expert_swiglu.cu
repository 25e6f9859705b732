// zmlx fused expert SwiGLU (body for MLX's fast::cuda_kernel, after a first part
// that defines `expert_of`: swiglu_ids.cu, or swiglu_route.cu for the kernel that
// also routes; helpers in prelude.cuh, mma.cuh, route.cuh).
//
// h[p, n] = swiglu(x[tok(p)] . gate[e(p), n], x[tok(p)] . up[e(p), n]) for every
// (token, expert) pair p and intermediate row n, weights affine-quantized, bit for
// bit what MLX's CUDA backend gives for mlx-lm's op sequence (two gather_qmm calls
// through qmm_sm80, then the compiled swiglu): see mma.cuh for the arithmetic.
//
// Work split: two warps per (pair, ROWS consecutive rows n), TPB such tiles a
// block; the even warp of a tile runs the gate projection, the odd one the up
// projection, each streaming its ROWS-row tile and the activation row through its
// own ring in shared memory (mma_tile in mma.cuh: one mma per 16 values of K, in K
// order; which lane dequantizes which rows and ends with which results is
// described there). The results are rounded to T and meet in shared memory, where
// the gate warp applies MLX's swiglu functors.
//
// Template arguments (constexpr lines MLX writes above this body):
//   T (f16 or bf16), BITS (4 or 8), GROUP (32, 64, 128), HID (input features, a
//   multiple of max(64, GROUP)), INTER (rows per expert, a multiple of ROWS), DEQ
//   (see mma.cuh), PIPE (the ring's stages, 2..8; gpu.rs picks what fits), TPB
//   (tiles a block), ROWS (rows a tile, 8 or 16: mma.cuh), CPS (16-byte chunks a
//   ring stage, 4 or 8: PipeRing in mma.cuh).
// Sizes that change between calls travel in dims_in (uint32 [PAIRS, TOPK, EXPERTS]).
// Launch: 64 * TPB threads per block, one block per TPB (pair, ROWS-row tile)s.
// Inputs: x_in [tokens, HID], expert_ids [PAIRS] uint32 (or logits_in, see
// swiglu_route.cu), dims_in, w_gate/w_up
// [EXPERTS, INTER, HID * BITS / 32] uint32, s_gate/b_gate/s_up/b_up
// [EXPERTS, INTER, HID / GROUP] T. Output: h_out [PAIRS, INTER] T.

const int PAIRS = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int GPR = HID / GROUP;          // groups per weight row
constexpr int WPR = HID * BITS / 32;      // uint32 per weight row
constexpr int TILES = INTER / ROWS;       // tiles per expert

__shared__ T up_tile[TPB][ROWS];
__shared__ zmlx::PipeRing<BITS, GPR, PIPE, ROWS, CPS> ring[2 * TPB];
const int lane = threadIdx.x & 31;
const int warp = threadIdx.x >> 5;
const int lt = warp >> 1;                 // the block's tile this warp works on
const int proj = warp & 1;                // 0: gate, 1: up
const long long tile = static_cast<long long>(blockIdx.x) * TPB + lt;
// The last block may hold tiles past the end: their warps skip the work but still
// reach the barrier below.
const bool live = tile < static_cast<long long>(PAIRS) * TILES;
const long long pair = live ? tile / TILES : 0;
const int n0 = static_cast<int>(tile % TILES) * ROWS;
const long long tok = pair / TOPK;
// Where the kernel routes itself (swiglu_route.cu), the gate warp of each token's
// first tile writes the token's routing.
const bool writer = proj == 0 && tile % (static_cast<long long>(TOPK) * TILES) == 0;
const uint32_t e = live ? expert_of(pair, writer) : 0u;

float c[4] = {0.f, 0.f, 0.f, 0.f};
// An out-of-range expert id (a bad routing) yields zeros rather than a stray read.
const bool valid = live && e < static_cast<uint32_t>(EXPERTS);
if (valid) {
  // The tile's first row.
  const long long wrow = static_cast<long long>(e) * INTER + n0;
  const uint32_t* w = (proj == 0 ? w_gate : w_up) + wrow * WPR;
  const T* sc = (proj == 0 ? s_gate : s_up) + wrow * GPR;
  const T* bi = (proj == 0 ? b_gate : b_up) + wrow * GPR;
  const T* xr = x_in + tok * HID;
  const bool aligned = zmlx::aligned16(w) && zmlx::aligned16(xr);
  zmlx::mma_tile_any<T, BITS, GROUP, HID, DEQ, PIPE, ROWS>(ring[warp], w, sc, bi, xr, aligned,
                                                           lane, c);
}
// gather_qmm writes each projection in T.
if (proj == 1) {
  zmlx::tile_results<ROWS>(c, lane, [&](int r, float v) { up_tile[lt][r] = zmlx::from_float<T>(v); });
}
__syncthreads();
if (live && proj == 0) {
  T* out = h_out + pair * INTER + n0;
  zmlx::tile_results<ROWS>(c, lane, [&](int r, float v) {
    out[r] = valid ? zmlx::mlx_swiglu<T>(zmlx::from_float<T>(v), up_tile[lt][r])
                   : zmlx::from_float<T>(0.f);
  });
}
