// zmlx fused router: softmax (precise) over the experts, top-k, optional
// renormalisation (body for MLX's fast::cuda_kernel). It reproduces, bit for bit,
// what MLX's CUDA backend computes for mlx-lm's op sequence
//   gates  = softmax(logits, precise=True)
//   inds   = argpartition(gates, -k)[..., -k:]
//   scores = take_along_axis(gates, inds); scores / scores.sum(-1, keepdims=True)
// (notes/cuda-kernels.md, "Router exactness (design)", has the derivation):
//
// * Softmax (MLX's cu::softmax, AccT = float): MLX gives each thread of a block of
//   BLOCK = pow2 >= 32 threads NR = 16 / sizeof(T) consecutive logits (a 16-byte
//   vector); thread t keeps a local max m_t (from float lowest) and the sum n_t of
//   __expf(x - m_t) in element order. Per warp: M_w = max m_t, n_t * __expf(m_t -
//   M_w) summed by a cooperative_groups butterfly (lane 0's value is kept). Over the
//   warps: M = max M_w, q_w = S_w * __expf(M_w - M), summed by a butterfly over
//   lanes holding q_0 .. q_{NW-1} (zeros elsewhere); inv = 1 / S (IEEE); gate =
//   T(__expf(x - M) * inv). Here one warp per token plays MLX's whole block: lane l
//   holds virtual threads w * 32 + l, w < NW.
// * argpartition on CUDA is a stable ascending merge sort of the whole row (ties in
//   index order), so [..., -k:] is the k largest gates in ascending (gate, index)
//   order. The kernel picks by descending (gate, index) and writes from the end.
// * sum over k (row_reduce_simple, accumulator T): each thread folds a chunk of
//   CHUNK consecutive scores from T(0) with T's operator+, chunks then combine by a
//   butterfly: total = (c0 + c2) + (c1 + c3). CHUNK = 16 / sizeof(T) for [..., k]
//   rows; 8 when the scores are 1-D (MLX's all_reduce). Then score / total with T's
//   operator/ (MLX's Divide functor is `x / y`).
//
// VARIANT (dims_in[1]): 0 = rounded product then addition (the default: the one
// that matched MLX 0.32.4 on an H100 for every dtype), 1 = the per-warp product
// n_t * e_t contracted into the first butterfly addition (fma). MLX's softmax.cu
// leaves this to the compiler; it only matters when more than 16 lanes of a warp
// hold logits (E > 16 * NR). tests/cuda_vs_reference.rs tries both.
//
// Template arguments: T, EXPERTS (<= 512), TOPK (<= 16), NORM (bool); EPL is passed
// for the Metal mirror and unused here. dims_in = [NTOK, VARIANT, CHUNK] (uint32).
// Inputs: logits_in [NTOK, EXPERTS] T, dims_in. Outputs: ids_out [NTOK, TOPK]
// uint32, scores_out [NTOK, TOPK] T, both in MLX's order (ascending gate).

const int NTOK = static_cast<int>(dims_in[0]);
const bool fused = dims_in[1] == 1u;
const int chunk = static_cast<int>(dims_in[2]);
const int lane = threadIdx.x & 31;
const long long tok =
    (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
// Warp-uniform: a whole warp leaves together, so later shuffles stay full.
if (tok >= NTOK) {
  return;
}
uint32_t ids[TOPK];
float picked[TOPK];
zmlx::route_warp<T, EXPERTS, TOPK>(logits_in + tok * EXPERTS, fused, lane, ids, picked);
if (lane == 0) {
  T sc[TOPK];
  zmlx::route_scores<T, TOPK, NORM>(picked, chunk, sc);
#pragma unroll
  for (int j = 0; j < TOPK; ++j) {
    ids_out[tok * TOPK + j] = ids[j];
    scores_out[tok * TOPK + j] = sc[j];
  }
}
