// zmlx fused expert SwiGLU, Metal body for MLX's fast::metal_kernel.
// Not yet run on Apple silicon. Same algorithm, inputs and roundings as
// shaders/cuda/expert_swiglu.cu: groups of LPR SIMD lanes own one output row of
// h [PAIRS, INTER], stride over its packed 128-bit words for gate and up with the
// same activation chunk, and meet through SIMD shuffles.
// Template arguments: T, BITS, GROUP, HID, INTER, LPR; dims_in = [PAIRS, TOPK, EXPERTS].

const int PAIRS = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int VALS = 128 / BITS;
constexpr int NV = HID / VALS;
constexpr int CPL = (NV + LPR - 1) / LPR;
constexpr int GPR = HID / GROUP;
constexpr int RPW = 32 / LPR;
constexpr int WPR = HID * BITS / 32;

const int lane = static_cast<int>(thread_index_in_simdgroup);
const long warp_id = static_cast<long>(thread_position_in_grid.x) / 32;
const int sub = lane / LPR;
const int sl = lane % LPR;
const long row = warp_id * RPW + sub;
const long rows = static_cast<long>(PAIRS) * INTER;
bool valid = row < rows;

float g_acc = 0.f;
float u_acc = 0.f;
if (valid) {
  const long pair = row / INTER;
  const int n = static_cast<int>(row % INTER);
  const long tok = pair / TOPK;
  const uint32_t e = expert_ids[pair];
  valid = e < static_cast<uint32_t>(EXPERTS);
  if (valid) {
    const long wrow = static_cast<long>(e) * INTER + n;
    const device T* xr = x_in + tok * HID;
    const device uint32_t* gw = w_gate + wrow * WPR;
    const device uint32_t* uw = w_up + wrow * WPR;
    for (int c = 0; c < CPL; ++c) {
      const int ch = sl + c * LPR;
      if (ch < NV) {
        const uint4 wg = zmlx::load_packed(gw + ch * 4);
        const uint4 wu = zmlx::load_packed(uw + ch * 4);
        float a[VALS];
        zmlx::load_acts<T, VALS>(xr + ch * VALS, a);
        const float sa = zmlx::sum_vals<VALS>(a);
        const long grp = wrow * GPR + ch * VALS / GROUP;
        g_acc += zmlx::to_float(s_gate[grp]) * zmlx::packed_dot<BITS>(wg, a) +
            zmlx::to_float(b_gate[grp]) * sa;
        u_acc += zmlx::to_float(s_up[grp]) * zmlx::packed_dot<BITS>(wu, a) +
            zmlx::to_float(b_up[grp]) * sa;
      }
    }
  }
}
g_acc = zmlx::group_sum<LPR>(g_acc);
u_acc = zmlx::group_sum<LPR>(u_acc);
if (row < rows && sl == 0) {
  float h = 0.f;
  if (valid) {
    h = zmlx::swiglu_as<T>(zmlx::round_to<T>(g_acc), zmlx::round_to<T>(u_acc));
  }
  h_out[row] = zmlx::from_float<T>(h);
}
