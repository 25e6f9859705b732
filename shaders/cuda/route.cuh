// zmlx router (CUDA): softmax (precise) -> top-k -> optional renormalisation for
// one token in one warp, bit for bit what MLX's CUDA backend gives for mlx-lm's op
// sequence (moe_gate.cu has the derivation). Shared by the router kernel
// (moe_gate.cu) and the routed expert SwiGLU (swiglu_route.cu).

namespace zmlx {

// The 16-bit pattern of a gate that is exactly a value of T (f16 or bf16).
__device__ __forceinline__ uint32_t gate_bits(float g, __nv_bfloat16) {
  return __float_as_uint(g) >> 16;
}
__device__ __forceinline__ uint32_t gate_bits(float g, __half) {
  return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(g)));
}
// The gate whose 16-bit pattern is `b`, as a float.
__device__ __forceinline__ float gate_value(uint32_t b, __nv_bfloat16) {
  return __uint_as_float(b << 16);
}
__device__ __forceinline__ float gate_value(uint32_t b, __half) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(b)));
}

// Routes the token whose EXPERTS logits start at `lr`: the experts MLX picks and
// their gates. Every lane of the warp must call it (full-warp shuffles) and gets
// the whole result: ids[j] is output position j of MLX's order (ascending gate),
// picked[r] the gate of position TOPK - 1 - r (as a float, exactly a value of T);
// route_scores below turns the gates into MLX's scores. `fused` is VARIANT 1
// (moe_gate.cu).
template <typename T, int EXPERTS, int TOPK>
__device__ __forceinline__ void route_warp(const T* lr, bool fused, int lane,
                                           uint32_t (&ids)[TOPK], float (&picked)[TOPK]) {
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
  // NaN gates (a NaN or +inf logit makes the whole row NaN) rank above every number,
  // the larger index first among them, as MLX's stable sort puts NaN last (device
  // run 70: a NaN row gives experts E - k .. E - 1 in order, scores NaN).
  if constexpr (sizeof(T) == 2) {
    // For 16-bit T one 32-bit key per gate orders (gate, index) exactly: gates are
    // >= +0 (never -0: a product of +0 or more and a positive number), so their
    // 16-bit patterns order like their values; NaN takes 0xFFFF, above them all; the
    // low half holds index + 1 (padding and taken experts get key 0, below every
    // gate). A round is then a local max and one warp-wide max reduction instead of
    // five shuffle rounds of (value, index) pairs.
    uint32_t key[G];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      const int idx = ((j / NR) * 32 + lane) * NR + (j % NR);
      const uint32_t bits = g[j] != g[j] ? 0xffffu : gate_bits(g[j], T{});
      key[j] = g[j] < 0.f ? 0u : (bits << 16) | static_cast<uint32_t>(idx + 1);
    }
#pragma unroll
    for (int r = 0; r < TOPK; ++r) {
      uint32_t m = key[0];
#pragma unroll
      for (int j = 1; j < G; ++j) {
        m = max(m, key[j]);
      }
      m = __reduce_max_sync(0xffffffffu, m);
#pragma unroll
      for (int j = 0; j < G; ++j) {
        key[j] = key[j] == m ? 0u : key[j];
      }
      picked[r] = gate_value(m >> 16, T{});
      ids[TOPK - 1 - r] = (m & 0xffffu) - 1u;
    }
  } else {
    // f32 gates (the 16-bit branch above is not compiled for them, nor this one for
    // 16-bit gates): (gate, index) pairs compared, NaN above every number.
    auto above = [](float a, int ia, float b, int ib) {
      if (a != a) {
        return b == b || ia > ib;
      }
      return a > b || (a == b && ia > ib);
    };
    #pragma unroll
    for (int r = 0; r < TOPK; ++r) {
      float bv = -3.f;
      int bi = -1;
      #pragma unroll
      for (int j = 0; j < G; ++j) {
        const int idx = ((j / NR) * 32 + lane) * NR + (j % NR);
        if (above(g[j], idx, bv, bi)) {
          bv = g[j];
          bi = idx;
        }
      }
      #pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
        if (above(ov, oi, bv, bi)) {
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
      ids[TOPK - 1 - r] = static_cast<uint32_t>(bi);
    }
  }
}

// MLX's scores from route_warp's gates: sc[j] is the score at output position j
// (ascending gate order), renormalised when NORM with MLX's row reduction (`chunk`,
// the score chunk of MLX's sum: moe_gate.cu). Per lane, no shuffles: one lane may
// call it alone.
template <typename T, int TOPK, bool NORM>
__device__ __forceinline__ void route_scores(const float (&picked)[TOPK], int chunk,
                                             T (&sc)[TOPK]) {
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
}

}  // namespace zmlx
