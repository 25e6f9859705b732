// zmlx fused down projection + weighted combine, Metal body for MLX's
// fast::metal_kernel. Not yet run on Apple silicon. Same algorithm and roundings as
// shaders/cuda/down_combine.cu: one SIMD group per (token, output feature), LPR
// lanes per expert, y = sum_j round(round(dot_j) * score_j) in fp32, rounded once.
// Template arguments: T, BITS, GROUP, HID, INTER, LPR, RES; dims_in = [NTOK, TOPK,
// EXPERTS]. With RES = 1 the output is T(float(res_in) + float(y)) (a decoder
// layer's `h + moe(x)`; MLX's Metal `add` on T); with RES = 0 res_in is some other T
// array, never read.

const int NTOK = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int VALS = 128 / BITS;
constexpr int NV = INTER / VALS;
constexpr int CPL = (NV + LPR - 1) / LPR;
constexpr int GPR = INTER / GROUP;
constexpr int RPW = 32 / LPR;
constexpr int WPR = INTER * BITS / 32;

const int lane = static_cast<int>(thread_index_in_simdgroup);
const long warp_id = static_cast<long>(thread_position_in_grid.x) / 32;
const int sub = lane / LPR;
const int sl = lane % LPR;
const bool valid = warp_id < static_cast<long>(NTOK) * HID;
const long tok = valid ? warp_id / HID : 0;
const int o = valid ? static_cast<int>(warp_id % HID) : 0;

float total = 0.f;
for (int j0 = 0; j0 < TOPK; j0 += RPW) {
  const int j = j0 + sub;
  bool on = valid && j < TOPK;
  uint32_t e = 0;
  if (on) {
    e = expert_ids[tok * TOPK + j];
    on = e < static_cast<uint32_t>(EXPERTS);
  }
  float acc = 0.f;
  if (on) {
    const long wrow = static_cast<long>(e) * HID + o;
    const device uint32_t* dw = w_down + wrow * WPR;
    const device T* hr = h_in + (tok * TOPK + j) * INTER;
    for (int c = 0; c < CPL; ++c) {
      const int ch = sl + c * LPR;
      if (ch < NV) {
        const uint4 w = zmlx::load_packed(dw + ch * 4);
        float a[VALS];
        zmlx::load_acts<T, VALS>(hr + ch * VALS, a);
        const long grp = wrow * GPR + ch * VALS / GROUP;
        acc += zmlx::to_float(s_down[grp]) * zmlx::packed_dot<BITS>(w, a) +
            zmlx::to_float(b_down[grp]) * zmlx::sum_vals<VALS>(a);
      }
    }
  }
  acc = zmlx::group_sum<LPR>(acc);
  if (on && sl == 0) {
    const float yj = zmlx::round_to<T>(acc);
    const float sc = zmlx::to_float(gate_scores[tok * TOPK + j]);
    total += zmlx::round_to<T>(yj * sc);
  }
}
total = zmlx::warp_sum(total);
if (valid && lane == 0) {
  T y = zmlx::from_float<T>(total);
  if (RES != 0) {
    y = zmlx::from_float<T>(zmlx::to_float(res_in[warp_id]) + zmlx::to_float(y));
  }
  y_out[warp_id] = y;
}
