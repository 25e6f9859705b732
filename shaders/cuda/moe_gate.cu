// zmlx fused router: softmax (precise) over the experts, top-k, optional
// renormalisation (body for MLX's fast::cuda_kernel).
//
// One warp per token; each lane holds EPL = ceil(EXPERTS / 32) gates in registers.
// The gates follow softmax(precise=True): max and sum of exp(x - max) in fp32,
// exp(x - max) / sum rounded to T. The top-k are picked in TOPK rounds of a warp
// arg-max; among equal gates the higher expert index wins (MLX's CPU argpartition
// order; MLX's CUDA order for ties is checked by tests/cuda_vs_reference.rs). The
// k scores are then renormalised as the reference does: their sum accumulated in
// fp32 and rounded to T, each score divided by it and rounded to T. Experts come
// out in descending gate order (the reference's order is unspecified; every
// consumer sums over them).
//
// Template arguments: T, EXPERTS, TOPK, EPL, NORM (bool). The token count travels
// in dims_in (uint32 [NTOK]).
// Inputs: logits_in [NTOK, EXPERTS] T, dims_in. Outputs: ids_out [NTOK, TOPK] uint32,
// scores_out [NTOK, TOPK] T.

const int NTOK = static_cast<int>(dims_in[0]);
const int lane = threadIdx.x & 31;
const long long tok =
    (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
// Warp-uniform: a whole warp leaves together, so later shuffles stay full.
if (tok >= NTOK) {
  return;
}
const T* lr = logits_in + tok * EXPERTS;

float g[EPL];
float mx = -cuda::std::numeric_limits<float>::infinity();
#pragma unroll
for (int i = 0; i < EPL; ++i) {
  const int idx = lane + 32 * i;
  g[i] = idx < EXPERTS ? zmlx::to_float(lr[idx])
                       : -cuda::std::numeric_limits<float>::infinity();
  mx = fmaxf(mx, g[i]);
}
mx = zmlx::warp_max(mx);
float sum = 0.f;
#pragma unroll
for (int i = 0; i < EPL; ++i) {
  const int idx = lane + 32 * i;
  g[i] = idx < EXPERTS ? expf(g[i] - mx) : 0.f;
  sum += g[i];
}
sum = zmlx::warp_sum(sum);
#pragma unroll
for (int i = 0; i < EPL; ++i) {
  const int idx = lane + 32 * i;
  // Gates are >= 0; padding and taken experts sit below every gate.
  g[i] = idx < EXPERTS ? zmlx::round_to<T>(g[i] / sum) : -1.f;
}

float picked[TOPK];
float psum = 0.f;
#pragma unroll
for (int r = 0; r < TOPK; ++r) {
  float bv = -3.f;
  int bi = -1;
#pragma unroll
  for (int i = 0; i < EPL; ++i) {
    const int idx = lane + 32 * i;
    if (g[i] > bv || (g[i] == bv && idx > bi)) {
      bv = g[i];
      bi = idx;
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
    if (ov > bv || (ov == bv && oi > bi)) {
      bv = ov;
      bi = oi;
    }
  }
#pragma unroll
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
#pragma unroll
  for (int r = 0; r < TOPK; ++r) {
    const float s = NORM ? zmlx::round_to<T>(picked[r] / denom) : picked[r];
    scores_out[tok * TOPK + r] = zmlx::from_float<T>(s);
  }
}
