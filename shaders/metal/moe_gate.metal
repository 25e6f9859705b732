// zmlx fused router, Metal body for MLX's fast::metal_kernel. Not yet run on Apple
// silicon. Same algorithm as shaders/cuda/moe_gate.cu: one SIMD group per token,
// softmax(precise) in fp32 rounded to T, TOPK rounds of a SIMD arg-max (ties to the
// higher expert index), renormalisation with the reference's roundings.
// Template arguments: T, EXPERTS, TOPK, EPL, NORM; dims_in = [NTOK].

const int NTOK = static_cast<int>(dims_in[0]);
const int lane = static_cast<int>(thread_index_in_simdgroup);
const long tok = static_cast<long>(thread_position_in_grid.x) / 32;
if (tok >= NTOK) {
  return;
}
const device T* lr = logits_in + tok * EXPERTS;

float g[EPL];
float mx = -INFINITY;
for (int i = 0; i < EPL; ++i) {
  const int idx = lane + 32 * i;
  g[i] = idx < EXPERTS ? zmlx::to_float(lr[idx]) : -INFINITY;
  mx = metal::max(mx, g[i]);
}
mx = zmlx::warp_max(mx);
float sum = 0.f;
for (int i = 0; i < EPL; ++i) {
  const int idx = lane + 32 * i;
  g[i] = idx < EXPERTS ? metal::exp(g[i] - mx) : 0.f;
  sum += g[i];
}
sum = zmlx::warp_sum(sum);
for (int i = 0; i < EPL; ++i) {
  const int idx = lane + 32 * i;
  g[i] = idx < EXPERTS ? zmlx::round_to<T>(g[i] / sum) : -1.f;
}

float picked[TOPK];
float psum = 0.f;
for (int r = 0; r < TOPK; ++r) {
  float bv = -3.f;
  int bi = -1;
  for (int i = 0; i < EPL; ++i) {
    const int idx = lane + 32 * i;
    if (g[i] > bv || (g[i] == bv && idx > bi)) {
      bv = g[i];
      bi = idx;
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = simd_shuffle_xor(bv, static_cast<ushort>(off));
    const int oi = simd_shuffle_xor(bi, static_cast<ushort>(off));
    if (ov > bv || (ov == bv && oi > bi)) {
      bv = ov;
      bi = oi;
    }
  }
  for (int i = 0; i < EPL; ++i) {
    if (lane + 32 * i == bi) {
      g[i] = -2.f;
    }
  }
  picked[r] = bv;
  psum += bv;
  if (lane == 0) {
    ids_out[tok * TOPK + r] = static_cast<uint32_t>(bi);
  }
}
if (lane == 0) {
  const float denom = zmlx::round_to<T>(psum);
  for (int r = 0; r < TOPK; ++r) {
    const float s = NORM ? zmlx::round_to<T>(picked[r] / denom) : picked[r];
    scores_out[tok * TOPK + r] = zmlx::from_float<T>(s);
  }
}
