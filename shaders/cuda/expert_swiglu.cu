// zmlx fused expert SwiGLU (body for MLX's fast::cuda_kernel; helpers in prelude.cuh
// and mma.cuh).
//
// h[p, n] = swiglu(x[tok(p)] . gate[e(p), n], x[tok(p)] . up[e(p), n]) for every
// (token, expert) pair p and intermediate row n, weights affine-quantized, bit for
// bit what MLX's CUDA backend gives for mlx-lm's op sequence (two gather_qmm calls
// through qmm_sm80, then the compiled swiglu): see mma.cuh for the arithmetic.
//
// Work split: one warp per (pair, 8 consecutive rows n). Lane 4g + t dequantizes
// row n0 + g of gate and of up (its B fragment values) and lanes 0..3 carry the
// activations; per 16 values of K one mma for gate and one for up, in K order.
// The 8 results of each projection land in lanes 0..3 (two each), which round them
// to T and apply MLX's swiglu functors.
//
// Template arguments (constexpr lines MLX writes above this body):
//   T (f16 or bf16), BITS (4 or 8), GROUP (32, 64, 128), HID (input features, a
//   multiple of max(64, GROUP)), INTER (rows per expert, a multiple of 8), DEQ (0 or
//   1: how weights are dequantized, see mma.cuh).
// Sizes that change between calls travel in dims_in (uint32 [PAIRS, TOPK, EXPERTS]).
// Inputs: x_in [tokens, HID], expert_ids [PAIRS] uint32, dims_in, w_gate/w_up
// [EXPERTS, INTER, HID * BITS / 32] uint32, s_gate/b_gate/s_up/b_up
// [EXPERTS, INTER, HID / GROUP] T. Output: h_out [PAIRS, INTER] T.

const int PAIRS = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int VALS = 128 / BITS;          // values in one 128-bit chunk
constexpr int NCH = HID / VALS;           // chunks per weight row
constexpr int KPC = VALS / 16;            // 16-wide K blocks per chunk
constexpr int GPR = HID / GROUP;          // groups per weight row
constexpr int WPR = HID * BITS / 32;      // uint32 per weight row
constexpr int TILES = INTER / 8;          // 8-row tiles per expert

const int lane = threadIdx.x & 31;
const long long warp_id =
    (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
// Warp-uniform: a whole warp leaves together, so every mma has all 32 lanes.
if (warp_id >= static_cast<long long>(PAIRS) * TILES) {
  return;
}
const long long pair = warp_id / TILES;
const int n0 = static_cast<int>(warp_id % TILES) * 8;
const int g = lane >> 2;
const int t = lane & 3;
const long long tok = pair / TOPK;
const uint32_t e = expert_ids[pair];

float cg[4] = {0.f, 0.f, 0.f, 0.f};
float cu[4] = {0.f, 0.f, 0.f, 0.f};
// An out-of-range expert id (a bad routing) yields zeros rather than a stray read.
const bool valid = e < static_cast<uint32_t>(EXPERTS);
if (valid) {
  const long long wrow = static_cast<long long>(e) * INTER + n0 + g;
  const uint32_t* gw = w_gate + wrow * WPR;
  const uint32_t* uw = w_up + wrow * WPR;
  const T* gs = s_gate + wrow * GPR;
  const T* gb = b_gate + wrow * GPR;
  const T* us = s_up + wrow * GPR;
  const T* ub = b_up + wrow * GPR;
  const T* xr = x_in + tok * HID;
  const bool vec_w = zmlx::aligned16(w_gate) && zmlx::aligned16(w_up);
#pragma unroll 4
  for (int ch = 0; ch < NCH; ++ch) {
    const uint4 wg = zmlx::load_packed(gw + ch * 4, vec_w);
    const uint4 wu = zmlx::load_packed(uw + ch * 4, vec_w);
    uint32_t a[2 * KPC];
    zmlx::a_chunk<T, BITS>(xr + ch * VALS, g, t, a);
    const int grp = ch * VALS / GROUP;
    zmlx::mma_chunk<T, BITS, DEQ>(wg, a, t, zmlx::to_float(gs[grp]), zmlx::to_float(gb[grp]),
                                  cg);
    zmlx::mma_chunk<T, BITS, DEQ>(wu, a, t, zmlx::to_float(us[grp]), zmlx::to_float(ub[grp]),
                                  cu);
  }
}
if (g == 0) {
  T* out = h_out + pair * INTER + n0 + 2 * t;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    T h = zmlx::from_float<T>(0.f);
    if (valid) {
      h = zmlx::mlx_swiglu<T>(zmlx::from_float<T>(cg[i]), zmlx::from_float<T>(cu[i]));
    }
    out[i] = h;
  }
}
