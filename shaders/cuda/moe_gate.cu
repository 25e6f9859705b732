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
const T* lr = logits_in + tok * EXPERTS;

// MLX's launch: NR logits a thread, BLOCK = the power of two >= 32 covering them.
constexpr int NR = 16 / static_cast<int>(sizeof(T));
constexpr int NV = (EXPERTS + NR - 1) / NR;
constexpr int NW = NV <= 32 ? 1 : (NV <= 64 ? 2 : (NV <= 128 ? 4 : 8));
static_assert(NW <= 4, "the router kernel takes up to 512 experts");
constexpr int G = NW * NR;

const float lowest = cuda::std::numeric_limits<float>::lowest();
float g[G];
float wmax[NW];
float wsum[NW];
#pragma unroll
for (int w = 0; w < NW; ++w) {
  // Virtual thread w * 32 + lane: its local max and sum (padding adds exact zeros
  // in MLX and is skipped here).
  float m = lowest;
#pragma unroll
  for (int i = 0; i < NR; ++i) {
    const int idx = (w * 32 + lane) * NR + i;
    g[w * NR + i] = idx < EXPERTS ? zmlx::to_float(lr[idx])
                                  : -cuda::std::numeric_limits<float>::infinity();
    m = fmaxf(m, g[w * NR + i]);
  }
  float n = 0.f;
#pragma unroll
  for (int i = 0; i < NR; ++i) {
    const int idx = (w * 32 + lane) * NR + i;
    if (idx < EXPERTS) {
      n = __fadd_rn(n, __expf(__fsub_rn(g[w * NR + i], m)));
    }
  }
  // First level: this warp of MLX's block.
  const float mw = zmlx::router_tile_max(m);
  wsum[w] = zmlx::router_tile_sum_lane0(n, __expf(__fsub_rn(m, mw)), fused);
  wmax[w] = mw;
}
// Second level: across MLX's warps (lanes >= NW hold zeros; adding +0 is exact).
float mx = wmax[0];
#pragma unroll
for (int w = 1; w < NW; ++w) {
  mx = fmaxf(mx, wmax[w]);
}
float q[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
for (int w = 0; w < NW; ++w) {
  q[w] = __fmul_rn(wsum[w], __expf(__fsub_rn(wmax[w], mx)));
}
const float inv = __frcp_rn(__fadd_rn(__fadd_rn(q[0], q[2]), __fadd_rn(q[1], q[3])));
#pragma unroll
for (int w = 0; w < NW; ++w) {
#pragma unroll
  for (int i = 0; i < NR; ++i) {
    const int idx = (w * 32 + lane) * NR + i;
    // Gates are >= 0; padding and taken experts sit below every gate.
    g[w * NR + i] =
        idx < EXPERTS
            ? zmlx::round_to<T>(__fmul_rn(__expf(__fsub_rn(g[w * NR + i], mx)), inv))
            : -1.f;
  }
}

// Top-k: TOPK rounds of a warp arg-max over (gate, index), larger index first among
// equal gates (the stable ascending sort puts it later). Round r is the r-th
// largest, which MLX's slice holds at position TOPK - 1 - r.
float picked[TOPK];
#pragma unroll
for (int r = 0; r < TOPK; ++r) {
  float bv = -3.f;
  int bi = -1;
#pragma unroll
  for (int j = 0; j < G; ++j) {
    const int idx = ((j / NR) * 32 + lane) * NR + (j % NR);
    if (g[j] > bv || (g[j] == bv && idx > bi)) {
      bv = g[j];
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
  for (int j = 0; j < G; ++j) {
    if (((j / NR) * 32 + lane) * NR + (j % NR) == bi) {
      g[j] = -2.f;
    }
  }
  picked[r] = bv;
  if (lane == 0) {
    ids_out[tok * TOPK + (TOPK - 1 - r)] = static_cast<uint32_t>(bi);
  }
}
if (lane == 0) {
  // sc[j]: the score at output position j (ascending gate order).
  T sc[TOPK];
#pragma unroll
  for (int j = 0; j < TOPK; ++j) {
    sc[j] = zmlx::from_float<T>(picked[TOPK - 1 - j]);
  }
  if (NORM) {
    // MLX's row reduce: per-thread chunks folded from T(0) in T, then the butterfly
    // over the (at most 4) chunk sums; zero chunks add exactly.
    const T zero = zmlx::from_float<T>(0.f);
    T c0 = zero;
    T c1 = zero;
    T c2 = zero;
    T c3 = zero;
#pragma unroll
    for (int j = 0; j < TOPK; ++j) {
      const int c = j / chunk;
      if (c == 0) {
        c0 = c0 + sc[j];
      } else if (c == 1) {
        c1 = c1 + sc[j];
      } else if (c == 2) {
        c2 = c2 + sc[j];
      } else {
        c3 = c3 + sc[j];
      }
    }
    const T total = (c0 + c2) + (c1 + c3);
#pragma unroll
    for (int j = 0; j < TOPK; ++j) {
      sc[j] = sc[j] / total;
    }
  }
#pragma unroll
  for (int j = 0; j < TOPK; ++j) {
    scores_out[tok * TOPK + j] = sc[j];
  }
}
