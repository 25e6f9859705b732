// zmlx fused expert SwiGLU (body for MLX's fast::cuda_kernel; helpers in prelude.cuh
// and mma.cuh).
//
// h[p, n] = swiglu(x[tok(p)] . gate[e(p), n], x[tok(p)] . up[e(p), n]) for every
// (token, expert) pair p and intermediate row n, weights affine-quantized, bit for
// bit what MLX's CUDA backend gives for mlx-lm's op sequence (two gather_qmm calls
// through qmm_sm80, then the compiled swiglu): see mma.cuh for the arithmetic.
//
// Work split: one block of two warps per (pair, 8 consecutive rows n); warp 0 runs
// the gate projection, warp 1 the up projection, each streaming its 8-row tile and
// the activation row through its own ring in shared memory (mma_tile in mma.cuh).
// In a warp, lane 4g + t dequantizes row n0 + g (its B fragment values) and every
// lane carries the activations; one mma per 16 values of K, in K order. The 8
// results land in lanes 0..3 (two each), are rounded to T and meet in shared
// memory, where warp 0 applies MLX's swiglu functors.
//
// Template arguments (constexpr lines MLX writes above this body):
//   T (f16 or bf16), BITS (4 or 8), GROUP (32, 64, 128), HID (input features, a
//   multiple of max(64, GROUP)), INTER (rows per expert, a multiple of 8), DEQ (see
//   mma.cuh), PIPE (the ring's stages, 2..8; gpu.rs picks what fits).
// Sizes that change between calls travel in dims_in (uint32 [PAIRS, TOPK, EXPERTS]).
// Launch: 64 threads per block, one block per (pair, 8-row tile).
// Inputs: x_in [tokens, HID], expert_ids [PAIRS] uint32, dims_in, w_gate/w_up
// [EXPERTS, INTER, HID * BITS / 32] uint32, s_gate/b_gate/s_up/b_up
// [EXPERTS, INTER, HID / GROUP] T. Output: h_out [PAIRS, INTER] T.

const int PAIRS = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int GPR = HID / GROUP;          // groups per weight row
constexpr int WPR = HID * BITS / 32;      // uint32 per weight row
constexpr int TILES = INTER / 8;          // 8-row tiles per expert

__shared__ T up_tile[8];
__shared__ zmlx::PipeRing<BITS, GPR, PIPE> ring[2];
const int lane = threadIdx.x & 31;
const int proj = threadIdx.x >> 5;        // 0: gate, 1: up
const long long tile = blockIdx.x;
// Block-uniform: a whole block leaves together.
if (tile >= static_cast<long long>(PAIRS) * TILES) {
  return;
}
const long long pair = tile / TILES;
const int n0 = static_cast<int>(tile % TILES) * 8;
const int g = lane >> 2;
const int t = lane & 3;
const long long tok = pair / TOPK;
const uint32_t e = expert_ids[pair];

float c[4] = {0.f, 0.f, 0.f, 0.f};
// An out-of-range expert id (a bad routing) yields zeros rather than a stray read.
const bool valid = e < static_cast<uint32_t>(EXPERTS);
if (valid) {
  // The tile's first row.
  const long long wrow = static_cast<long long>(e) * INTER + n0;
  const uint32_t* w = (proj == 0 ? w_gate : w_up) + wrow * WPR;
  const T* sc = (proj == 0 ? s_gate : s_up) + wrow * GPR;
  const T* bi = (proj == 0 ? b_gate : b_up) + wrow * GPR;
  const T* xr = x_in + tok * HID;
  const bool aligned = zmlx::aligned16(w) && zmlx::aligned16(xr);
  zmlx::mma_tile_any<T, BITS, GROUP, HID, DEQ, PIPE>(ring[proj], w, sc, bi, xr, aligned, lane,
                                                     c);
}
// gather_qmm writes each projection in T.
if (proj == 1 && g == 0) {
  up_tile[2 * t] = zmlx::from_float<T>(c[0]);
  up_tile[2 * t + 1] = zmlx::from_float<T>(c[1]);
}
__syncthreads();
if (proj == 0 && g == 0) {
  T* out = h_out + pair * INTER + n0 + 2 * t;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    T h = zmlx::from_float<T>(0.f);
    if (valid) {
      h = zmlx::mlx_swiglu<T>(zmlx::from_float<T>(c[i]), up_tile[2 * t + i]);
    }
    out[i] = h;
  }
}
