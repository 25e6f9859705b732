// zmlx fused expert SwiGLU (body for MLX's fast::cuda_kernel; helpers in prelude.cuh).
//
// h[p, n] = swiglu(x[tok(p)] . gate[e(p), n], x[tok(p)] . up[e(p), n]) for every
// (token, expert) pair p and intermediate row n, weights affine-quantized.
//
// Work split: groups of LPR lanes own one output row and stride over its 128-bit
// packed words (coalesced 16-byte loads across the group), reading gate and up
// with the same activation chunk; partial sums meet through shuffles. Dot products
// accumulate in fp32; g and u are rounded to T as the reference's gather_qmm writes
// them, then silu and the product follow MLX's element-wise roundings.
//
// Template arguments (constexpr lines MLX writes above this body):
//   T (activation dtype), BITS (4 or 8), GROUP (group size), HID (input features),
//   INTER (output rows per expert), LPR (lanes per row).
// Sizes that change between calls travel in dims_in (uint32 [PAIRS, TOPK, EXPERTS])
// so that one compiled variant serves every batch size.
// Inputs: x_in [tokens, HID], expert_ids [PAIRS] uint32, dims_in, w_gate/w_up
// [EXPERTS, INTER, HID * BITS / 32] uint32, s_gate/b_gate/s_up/b_up
// [EXPERTS, INTER, HID / GROUP] T. Output: h_out [PAIRS, INTER] T.

const int PAIRS = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int VALS = 128 / BITS;          // values in one 128-bit packed word
constexpr int NV = HID / VALS;            // 128-bit words per weight row
constexpr int CPL = (NV + LPR - 1) / LPR; // words per lane
constexpr int GPR = HID / GROUP;          // groups per weight row
constexpr int RPW = 32 / LPR;             // rows a warp computes at once
constexpr int WPR = HID * BITS / 32;      // uint32 per weight row

const int lane = threadIdx.x & 31;
const long long warp_id =
    (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
const int sub = lane / LPR;
const int sl = lane % LPR;
const long long row = warp_id * RPW + sub;
bool valid = row < static_cast<long long>(PAIRS) * INTER;

float g_acc = 0.f;
float u_acc = 0.f;
if (valid) {
  const long long pair = row / INTER;
  const int n = static_cast<int>(row % INTER);
  const long long tok = pair / TOPK;
  const uint32_t e = expert_ids[pair];
  // An out-of-range expert id (a bad routing) yields zeros rather than a stray read.
  valid = e < static_cast<uint32_t>(EXPERTS);
  if (valid) {
    const long long wrow = static_cast<long long>(e) * INTER + n;
    const T* xr = x_in + tok * HID;
    const uint32_t* gw = w_gate + wrow * WPR;
    const uint32_t* uw = w_up + wrow * WPR;
    const T* gs = s_gate + wrow * GPR;
    const T* gb = b_gate + wrow * GPR;
    const T* us = s_up + wrow * GPR;
    const T* ub = b_up + wrow * GPR;
    const bool vec_w = zmlx::aligned16(w_gate) && zmlx::aligned16(w_up);
    const bool vec_x = zmlx::aligned16(x_in);
#pragma unroll
    for (int c = 0; c < CPL; ++c) {
      const int ch = sl + c * LPR;
      if (ch < NV) {
        const uint4 wg = zmlx::load_packed(gw + ch * 4, vec_w);
        const uint4 wu = zmlx::load_packed(uw + ch * 4, vec_w);
        float a[VALS];
        zmlx::load_acts<T, VALS>(xr + ch * VALS, vec_x, a);
        const float sa = zmlx::sum_vals<VALS>(a);
        const int grp = ch * VALS / GROUP;
        g_acc += zmlx::to_float(gs[grp]) * zmlx::packed_dot<BITS>(wg, a) +
            zmlx::to_float(gb[grp]) * sa;
        u_acc += zmlx::to_float(us[grp]) * zmlx::packed_dot<BITS>(wu, a) +
            zmlx::to_float(ub[grp]) * sa;
      }
    }
  }
}
// Every lane takes part in the shuffles, valid or not.
g_acc = zmlx::group_sum<LPR>(g_acc);
u_acc = zmlx::group_sum<LPR>(u_acc);
if (row < static_cast<long long>(PAIRS) * INTER && sl == 0) {
  float h = 0.f;
  if (valid) {
    h = zmlx::swiglu_as<T>(zmlx::round_to<T>(g_acc), zmlx::round_to<T>(u_acc));
  }
  h_out[row] = zmlx::from_float<T>(h);
}
