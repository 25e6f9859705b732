// zmlx fused down projection + weighted combine (body for MLX's fast::cuda_kernel).
//
// y[t, o] = sum_j round(round(h[t, j] . down[e(t, j), o]) * score[t, j]) for each
// token t and output feature o, summed over the TOPK experts in fp32 and rounded
// once. This emulates the reference: gather_qmm writes each expert's output in T,
// `y * scores` rounds each product to T, and `sum(-2)` accumulates those in fp32
// and rounds once (the fp32 summation order differs, which moves the result by at
// most one rounding of T).
//
// Work split: one warp per (t, o); groups of LPR lanes each take one expert j at a
// time (32 / LPR experts in flight) and stride over its packed row with 16-byte
// loads; the group's leader applies the roundings and the warp sums the k terms.
//
// Template arguments: T, BITS, GROUP, HID (output features), INTER (input
// features of down), LPR. Runtime sizes in dims_in (uint32 [NTOK, TOPK, EXPERTS]).
// Inputs: h_in [NTOK, TOPK, INTER] T, expert_ids [NTOK, TOPK] uint32, dims_in,
// gate_scores [NTOK, TOPK] T, w_down [EXPERTS, HID, INTER * BITS / 32] uint32,
// s_down/b_down [EXPERTS, HID, INTER / GROUP] T. Output: y_out [NTOK, HID] T.

const int NTOK = static_cast<int>(dims_in[0]);
const int TOPK = static_cast<int>(dims_in[1]);
const int EXPERTS = static_cast<int>(dims_in[2]);
constexpr int VALS = 128 / BITS;
constexpr int NV = INTER / VALS;
constexpr int CPL = (NV + LPR - 1) / LPR;
constexpr int GPR = INTER / GROUP;
constexpr int RPW = 32 / LPR;
constexpr int WPR = INTER * BITS / 32;

const int lane = threadIdx.x & 31;
const long long warp_id =
    (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
const int sub = lane / LPR;
const int sl = lane % LPR;
const bool valid = warp_id < static_cast<long long>(NTOK) * HID;
const long long tok = valid ? warp_id / HID : 0;
const int o = valid ? static_cast<int>(warp_id % HID) : 0;
const bool vec_w = zmlx::aligned16(w_down);
const bool vec_h = zmlx::aligned16(h_in);

float total = 0.f;
#pragma unroll 1
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
    const long long wrow = static_cast<long long>(e) * HID + o;
    const uint32_t* dw = w_down + wrow * WPR;
    const T* ds = s_down + wrow * GPR;
    const T* db = b_down + wrow * GPR;
    const T* hr = h_in + (tok * TOPK + j) * INTER;
#pragma unroll
    for (int c = 0; c < CPL; ++c) {
      const int ch = sl + c * LPR;
      if (ch < NV) {
        const uint4 w = zmlx::load_packed(dw + ch * 4, vec_w);
        float a[VALS];
        zmlx::load_acts<T, VALS>(hr + ch * VALS, vec_h, a);
        const int grp = ch * VALS / GROUP;
        acc += zmlx::to_float(ds[grp]) * zmlx::packed_dot<BITS>(w, a) +
            zmlx::to_float(db[grp]) * zmlx::sum_vals<VALS>(a);
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
  y_out[warp_id] = zmlx::from_float<T>(total);
}
