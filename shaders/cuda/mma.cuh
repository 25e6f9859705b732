// zmlx CUDA prelude, part 2: what the expert kernels need to reproduce MLX's CUDA
// `gather_qmm` bit for bit. gpu.rs appends this text to prelude.cuh.
//
// Which MLX kernel is reproduced. For f16/bf16 activations, 4/8-bit affine weights,
// N % 128 == 0 and K % max(64, group) == 0, MLX 0.32's GatherQMM::eval_gpu takes
// `qmm_sm80` whenever M * B >= 8 (decode with top-8 has M = 1, B = 8 pairs; the
// sorted prefill path has B >= 64). That kernel dequantizes each weight to the
// activation type with ONE rounding, `w = T(q * scale + bias)` (a fused multiply-add
// on f16/bf16 pairs: measured, device run 1 of notes/cuda-kernels.md: rounding the
// product first, as cutlass's scalar operators would, matches ~20% of outputs; one
// rounding matches all of them), and multiplies
// with `mma.sync.m16n8k16` (fp32 accumulation) over K in 16-wide blocks, in order,
// one accumulator chain per output, then rounds once to T. The result of one MMA
// depends only on its own operands, and the hardware's internal summation of a
// block is the same whichever kernel issues it, so issuing the same instruction on
// the same values, block by block in the same order, gives the same bits. Smaller
// batches (M * B < 8) take MLX's `gather_qmv`, which accumulates differently: the
// Rust side keeps the reference there (gpu::MIN_EXACT_PAIRS).
//
// Fragment layout of mma.m16n8k16 (PTX ISA): lane = 4 * g + t. A (16 x 16, row
// major): register 0 holds row g, columns 2t and 2t + 1; register 2 holds row g,
// columns 2t + 8 and 2t + 9 (registers 1 and 3: row g + 8). B (16 x 8, column
// major): register 0 holds rows 2t, 2t + 1 of column g, register 1 rows 2t + 8,
// 2t + 9. C: c0, c1 = row g, columns 2t, 2t + 1 (c2, c3: row g + 8). The kernels
// put the one activation row in every row of A (each output depends only on its
// own row, so row 0 comes out as if alone), eight weight rows in B's columns, and
// read the results from lanes 0..3.
//
// Two tile shapes (ROWS, a template argument of the chain below):
// - ROWS = 8: as above, the activation in A, eight weight rows in B. A lane
//   dequantizes 4 weights an mma; results in lanes 0..3.
// - ROWS = 16: the roles swapped, sixteen weight rows in A (lane 4g + t: rows g and
//   g + 8) and the activation in every column of B, so one mma covers twice the
//   rows and a lane dequantizes 8 weights an mma. Output (row n) is then C + sum_k
//   w[n][k] * x[k] where MLX computes C + sum_k x[k] * w[n][k]: the same exact
//   products (a product of two 16-bit values is exact in f32) into the same
//   accumulator, and the tensor core's block sum aligns the products and C to
//   their largest exponent before adding, so which operand holds which factor does
//   not change the bits. Checked against MLX on the device (tests/
//   cuda_vs_reference.rs with ZMLX_CUDA_ROWS=16, notes/cuda-kernels.md). Results:
//   c[0] (row g) and c[2] (row g + 8) in lanes with t = 0.

// Guarded: the norm tail of the down kernel takes both mma.cuh and norm.cuh, and
// MLX's header has no include guard of its own.
#ifndef ZMLX_MLX_BINARY_OPS
#define ZMLX_MLX_BINARY_OPS
#include "mlx/backend/cuda/device/binary_ops.cuh"
#endif
#include "mlx/backend/cuda/device/unary_ops.cuh"

namespace zmlx {

template <typename T>
struct Mma;

// D = A * B + D for one 16-wide K block (bf16 inputs, fp32 accumulators), A's four
// registers and B's two in the fragment layout above.
template <>
struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ void run(float* c, uint32_t a0, uint32_t a1, uint32_t a2,
                                             uint32_t a3, uint32_t b0, uint32_t b1) {
#ifndef ZMLX_SYNTAX_ONLY
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
  }
};

// The same for f16 inputs.
template <>
struct Mma<__half> {
  static __device__ __forceinline__ void run(float* c, uint32_t a0, uint32_t a1, uint32_t a2,
                                             uint32_t a3, uint32_t b0, uint32_t b1) {
#ifndef ZMLX_SYNTAX_ONLY
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
  }
};

__device__ __forceinline__ uint32_t bits16(__half v) {
  return *reinterpret_cast<const unsigned short*>(&v);
}
__device__ __forceinline__ uint32_t bits16(__nv_bfloat16 v) {
  return *reinterpret_cast<const unsigned short*>(&v);
}

template <typename T>
__device__ __forceinline__ T from_bits(unsigned short b) {
  return *reinterpret_cast<const T*>(&b);
}

// One dequantized weight by the f32 formulations (BFrag below lists all three):
// DEQ 1, an f32 fma rounded once to T; DEQ 0, the product and the sum each rounded
// to T (gpu.rs, ZMLX_CUDA_DEQ selects).
template <typename T, int DEQ>
__device__ __forceinline__ uint32_t dequant(uint32_t q, float s, float z) {
  if (DEQ == 0) {
    const float p = round_to<T>(static_cast<float>(q) * s);
    return bits16(from_float<T>(p + z));
  }
  return bits16(from_float<T>(fmaf(static_cast<float>(q), s, z)));
}

// q (an unsigned integer below 2^23) as a float, exactly: the bits of 2^23 + q minus
// 2^23. Two FP32-pipe instructions instead of an int-to-float conversion, which runs
// on the GPU's narrow conversion pipe (Nsight Compute, device run 18: the expert
// kernels were bound by it).
__device__ __forceinline__ float exact_float(uint32_t q) {
  return __fsub_rn(__uint_as_float(0x4B000000u | q), 8388608.f);
}

// Two floats rounded to T (nearest even, as from_float) in one packed conversion,
// the first in the low half.
template <typename T>
struct Pack2;
template <>
struct Pack2<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t run(float a, float b) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
};
template <>
struct Pack2<__half> {
  static __device__ __forceinline__ uint32_t run(float a, float b) {
    const __half2 v = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
};

// Two dequantized weights packed as one B register (q0 in the low half): the same
// values as dequant<T, DEQ> of each.
template <typename T, int DEQ>
__device__ __forceinline__ uint32_t dequant2(uint32_t q0, uint32_t q1, float s, float z) {
  if (DEQ == 0) {
    return dequant<T, DEQ>(q0, s, z) | (dequant<T, DEQ>(q1, s, z) << 16);
  }
  return Pack2<T>::run(fmaf(exact_float(q0), s, z), fmaf(exact_float(q1), s, z));
}

// Packed pairs of T (low half first) for the DEQ 2 dequantization.
template <typename T>
struct Pk;
template <>
struct Pk<__nv_bfloat16> {
  using T2 = __nv_bfloat162;
  // 0x4300 is 128.0: 0x4300 | q is 128 + q for q < 128 (the ulp at 128 is 1).
  static constexpr uint32_t MAGIC = 0x43004300u;
};
template <>
struct Pk<__half> {
  using T2 = __half2;
  // 0x6400 is 1024.0: 0x6400 | q is 1024 + q for q < 1024.
  static constexpr uint32_t MAGIC = 0x64006400u;
};

template <typename T>
__device__ __forceinline__ typename Pk<T>::T2 as_pair(uint32_t v) {
  return *reinterpret_cast<const typename Pk<T>::T2*>(&v);
}

template <typename T>
__device__ __forceinline__ uint32_t pair_bits(typename Pk<T>::T2 v) {
  return *reinterpret_cast<const uint32_t*>(&v);
}

// (a & mask) | bits as ONE LOP3. Written out because ptxas, given two constants,
// emits two LOP3s with one immediate each (a LOP3 takes one immediate); given one
// lop3 it keeps one constant as the immediate and the other in a register (SASS of
// the SwiGLU body, nvdisasm: one instruction fewer per pair of 4-bit weights).
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t bits) {
#ifndef ZMLX_SYNTAX_ONLY
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(a), "r"(mask), "r"(bits));
  return d;
#else
  return (a & mask) | bits;
#endif
}

// The two 4-bit codes in byte `sel` of `w` (q0 in its bits 0..3, q1 in 4..7) as an
// exact pair of T: a byte permute moves the byte down (zeros above), a multiply by
// 0x1001 puts a copy 12 bits up (q1 lands in bits 16..19; the copies cannot carry
// into each other), one LOP3 keeps q0 and q1 and ORs in MAGIC (MAGIC + q in both
// halves), and one packed subtraction removes MAGIC. `sel` is a byte_perm selector
// (0x4440 | byte index).
template <typename T>
__device__ __forceinline__ typename Pk<T>::T2 pair_codes4(uint32_t w, uint32_t sel) {
  const uint32_t b = __byte_perm(w, 0u, sel);
  const uint32_t v = and_or(b * 0x1001u, 0x000f000fu, Pk<T>::MAGIC);
  return __hsub2(as_pair<T>(v), as_pair<T>(Pk<T>::MAGIC));
}

// The pair (q0 * s + z, q1 * s + z), each rounded ONCE to T from its exact value
// (fma.rn on packed pairs). `q` holds the codes as an exact pair, `sb`/`zb` the
// group's scale and bias bits.
template <typename T>
__device__ __forceinline__ uint32_t pair_fma(typename Pk<T>::T2 q, uint32_t sb, uint32_t zb) {
  return pair_bits<T>(__hfma2(q, as_pair<T>(sb | (sb << 16)), as_pair<T>(zb | (zb << 16))));
}

// The B registers of lane t for one 16-wide K block of the lane's weight row:
// values 2t, 2t + 1 (register 0) and 2t + 8, 2t + 9 (register 1) of the block.
// `lo` and `hi` are the block's two halves (k 0..7 and 8..15) as packed words:
// for 4 bits one uint32 each, for 8 bits two (given as lo0/lo1, hi0/hi1).
// `sb` and `zb` are the group's scale and bias as raw 16-bit patterns.
//
// DEQ 2 rounds q * s + z once from its exact value, with a packed fused
// multiply-add; DEQ 1 rounds an f32 fma (exact q * s, so one f32 rounding of the
// sum) to T; DEQ 0 rounds the product and the sum to T. DEQ 1 and 2 differ only
// where the f32 rounding lands on a midpoint of T's grid that the exact sum is
// not on, which needs a bias far below q * s (|z| below q * s's f32 half-ulp) and
// q * s itself a midpoint. tests/cuda_vs_reference.rs builds such weights
// (`dequant_rounding_matches_mlx`): MLX 0.32.4's qmm_sm80 computes DEQ 2 (device
// run 22, H200: DEQ 2 0 of 3,328 outputs differ, DEQ 1 943, DEQ 0 1,898), so DEQ 2
// is the default and the earlier DEQ 1 kernels were inexact on such weights (never
// on the random checkpoints tested). DEQ 2 also costs about 3 instructions per two
// 4-bit weights instead of about 10.
template <typename T, int BITS, int DEQ>
struct BFrag;

template <typename T, int DEQ>
struct BFrag<T, 4, DEQ> {
  static __device__ __forceinline__ void make(uint32_t lo, uint32_t hi, int t, uint32_t sb,
                                              uint32_t zb, uint32_t& b0, uint32_t& b1) {
    if constexpr (DEQ == 2) {
      const uint32_t sel = 0x4440u | static_cast<uint32_t>(t);
      b0 = pair_fma<T>(pair_codes4<T>(lo, sel), sb, zb);
      b1 = pair_fma<T>(pair_codes4<T>(hi, sel), sb, zb);
    } else {
      const uint32_t bl = (lo >> (8 * t)) & 0xffu;
      const uint32_t bh = (hi >> (8 * t)) & 0xffu;
      const float s = to_float(from_bits<T>(static_cast<unsigned short>(sb)));
      const float z = to_float(from_bits<T>(static_cast<unsigned short>(zb)));
      b0 = dequant2<T, DEQ>(bl & 0xfu, bl >> 4, s, z);
      b1 = dequant2<T, DEQ>(bh & 0xfu, bh >> 4, s, z);
    }
  }
};

template <typename T, int DEQ>
struct BFrag<T, 8, DEQ> {
  // lo = word holding k 2t, 2t + 1 (word t / 2 of the block), hi = the word holding
  // k 2t + 8, 2t + 9 (word 2 + t / 2).
  static __device__ __forceinline__ void make(uint32_t lo, uint32_t hi, int t, uint32_t sb,
                                              uint32_t zb, uint32_t& b0, uint32_t& b1) {
    const int sh = 16 * (t & 1);
    const uint32_t hl = (lo >> sh) & 0xffffu;
    const uint32_t hh = (hi >> sh) & 0xffffu;
    if constexpr (DEQ == 2) {
      // Codes up to 255 are exact in T (8 or more significand bits).
      const uint32_t ql = Pack2<T>::run(exact_float(hl & 0xffu), exact_float(hl >> 8));
      const uint32_t qh = Pack2<T>::run(exact_float(hh & 0xffu), exact_float(hh >> 8));
      b0 = pair_fma<T>(as_pair<T>(ql), sb, zb);
      b1 = pair_fma<T>(as_pair<T>(qh), sb, zb);
    } else {
      const float s = to_float(from_bits<T>(static_cast<unsigned short>(sb)));
      const float z = to_float(from_bits<T>(static_cast<unsigned short>(zb)));
      b0 = dequant2<T, DEQ>(hl & 0xffu, hl >> 8, s, z);
      b1 = dequant2<T, DEQ>(hh & 0xffu, hh >> 8, s, z);
    }
  }
};

// One 128-bit chunk of the tile's weight rows (32 4-bit or 16 8-bit values, inside
// one quantization group) multiplied into the accumulators c: KPC = 2 or 1 blocks.
// `w[0]` is the chunk of the lane's row g, `w[1]` (ROWS = 16 only) that of row
// g + 8, with the group's scale and bias bits in sb[i], zb[i]. `a` holds the
// activation registers of the chunk's blocks (a[2 * i], a[2 * i + 1] for block i,
// the same on every lane with the same t).
template <typename T, int BITS, int DEQ, int ROWS>
__device__ __forceinline__ void mma_chunk(const uint4* w, const uint32_t* a, int t,
                                          const uint32_t* sb, const uint32_t* zb, float* c) {
  constexpr int KPC = BITS == 4 ? 2 : 1;
#pragma unroll
  for (int i = 0; i < KPC; ++i) {
    // The words of this block: halves k 0..7 and 8..15.
    uint32_t lo[2], hi[2];
#pragma unroll
    for (int r = 0; r < ROWS / 8; ++r) {
      if (BITS == 4) {
        lo[r] = i == 0 ? w[r].x : w[r].z;
        hi[r] = i == 0 ? w[r].y : w[r].w;
      } else {
        lo[r] = (t < 2) ? w[r].x : w[r].y;
        hi[r] = (t < 2) ? w[r].z : w[r].w;
      }
    }
    uint32_t f0, f1;
    BFrag<T, BITS, DEQ>::make(lo[0], hi[0], t, sb[0], zb[0], f0, f1);
    if constexpr (ROWS == 8) {
      // The activation in A (every row), the weights in B.
      Mma<T>::run(c, a[2 * i], a[2 * i], a[2 * i + 1], a[2 * i + 1], f0, f1);
    } else {
      // The weights in A (rows g and g + 8), the activation in B.
      uint32_t f2, f3;
      BFrag<T, BITS, DEQ>::make(lo[1], hi[1], t, sb[1], zb[1], f2, f3);
      Mma<T>::run(c, f0, f2, f1, f3, a[2 * i], a[2 * i + 1]);
    }
  }
}

// Calls f(row, value) once for every row of a ROWS-row tile whose result this lane
// holds after the chain below (f32, before any rounding): rows 2t and 2t + 1 in
// lanes 0..3 for ROWS = 8, rows g and g + 8 in the lanes with t = 0 for ROWS = 16.
template <int ROWS, typename F>
__device__ __forceinline__ void tile_results(const float* c, int lane, F&& f) {
  const int g = lane >> 2;
  const int t = lane & 3;
  if constexpr (ROWS == 8) {
    if (g == 0) {
      f(2 * t, c[0]);
      f(2 * t + 1, c[1]);
    }
  } else {
    if (t == 0) {
      f(g, c[0]);
      f(g + 8, c[2]);
    }
  }
}

// ---- The mma chain: a per-warp ring in shared memory ----------------------------
//
// A warp owns an 8-row tile and runs its chain over K. Each lane needs 4 bytes of
// every 16-byte chunk of its row, and a chain is serial, so the weights must
// stream far ahead of the multiplies. They (and the activation row) move through a
// per-warp ring in shared memory with cp.async: every lane copies distinct 16
// bytes, STAGES - 1 stages of CPS chunks are in flight while one is
// multiplied, and no registers hold data in flight. (The first exact kernels kept
// up to 8 chunks per lane in registers, each lane of a row loading the same 16
// bytes; device runs 17-20 in notes/cuda-kernels.md.)

// cp.async (sm_80 and later): 16 bytes global -> shared without registers.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#ifndef ZMLX_SYNTAX_ONLY
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#endif
}
// The same for 4 bytes (cp.async.ca: 4, 8 or 16 bytes; .cg takes only 16).
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
#ifndef ZMLX_SYNTAX_ONLY
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifndef ZMLX_SYNTAX_ONLY
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most N of this thread's committed groups are still pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifndef ZMLX_SYNTAX_ONLY
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// 16 bytes from global to shared memory: cp.async (ALIGNED: the source is 16-byte
// aligned), else eight 16-bit loads and stores (a view at an odd offset: slow but
// correct, visible to the warp after the next __syncwarp like the rest).
template <bool ALIGNED>
__device__ __forceinline__ void copy16(uint4* dst, const void* src) {
  if constexpr (ALIGNED) {
    cp_async16(dst, src);
  } else {
    const unsigned short* s = static_cast<const unsigned short*>(src);
    unsigned short* d = reinterpret_cast<unsigned short*>(dst);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      d[i] = s[i];
    }
  }
}

// A probe's hook (examples/stage_probe.rs defines it before this file to time each
// stage of a chain; empty otherwise): called by every lane of the warp with the
// stage and a phase, 0 before the stage's wait for its copies, 1 after it.
#ifndef ZMLX_STAGE_HOOK
#define ZMLX_STAGE_HOOK(st, phase)
#endif

// One warp's ring: STAGES stages of CPS chunks of a ROWS-row weight tile
// ([chunk][row], 16 bytes each) and of the activation row, plus the tile's scales
// and biases (GPRX per row). 16-bit values are kept as raw bits. A stage is the unit
// of the copies' bookkeeping (one commit, one wait and one barrier a stage), so more
// chunks a stage spread that cost over more mmas, in fewer stages.
template <int BITS, int GPRX, int STAGES, int ROWS, int CPS>
struct PipeRing {
  static constexpr int CHUNKS = CPS;
  static constexpr int XWORDS = CPS * (128 / BITS) * 2 / 16;  // 16-byte words of T
  // One activation copy a lane.
  static_assert(XWORDS <= 32, "a stage's activation must fit one copy a lane");
  uint4 w[STAGES][CPS][ROWS];
  uint4 x[STAGES][XWORDS];
  unsigned short s[ROWS][GPRX];
  unsigned short b[ROWS][GPRX];
};

// Issues the copies of stage `st` (of K) into ring slot `slot` (st % STAGES, which
// the caller keeps as a running counter: a modulo by a STAGES like 7 costs about ten
// instructions a stage) and commits one group (an empty one past the end, so that
// group counts stay uniform).
template <typename T, int BITS, int KIN, int STAGES, int ROWS, bool ALIGNED, typename Ring>
__device__ __forceinline__ void pipe_issue(Ring& ring, int st, int slot, const uint32_t* w,
                                           const T* x, int lane) {
  constexpr int VALS = 128 / BITS;
  constexpr int NCH = KIN / VALS;
  constexpr int WPR = KIN * BITS / 32;
  constexpr int CPS = Ring::CHUNKS;
  constexpr int NST = (NCH + CPS - 1) / CPS;
  if (st < NST) {
#pragma unroll
    for (int i = lane; i < ROWS * CPS; i += 32) {
      const int r = i % ROWS;
      const int j = i / ROWS;
      const int ch = st * CPS + j;
      if (ch < NCH) {
        copy16<ALIGNED>(&ring.w[slot][j][r], w + static_cast<long long>(r) * WPR + ch * 4);
      }
    }
    const int xo = st * CPS * VALS + lane * 8;  // 8 values of T per 16 bytes
    if (lane < Ring::XWORDS && xo < KIN) {
      copy16<ALIGNED>(&ring.x[slot][lane], x + xo);
    }
  }
  cp_async_commit();
}

// c += x . w for the ROWS rows of a tile in qmm_sm80's order (one mma per 16
// values of K, in K order): `w`, `sc`, `bi` point at the tile's FIRST row (rows WPR
// words / GPR values apart), `x` at the activation row. Every lane of the warp must
// call it with the same arguments; tile_results above says which lanes end with
// which rows. ALIGNED: weights and activations start 16-byte aligned.
template <typename T, int BITS, int GROUP, int KIN, int DEQ, int STAGES, int ROWS, bool ALIGNED,
          typename Ring>
__device__ __forceinline__ void mma_tile(Ring& ring, const uint32_t* w, const T* sc,
                                         const T* bi, const T* x, int lane, float* c) {
  static_assert(ROWS == 8 || ROWS == 16, "tiles of 8 or 16 rows");
  constexpr int VALS = 128 / BITS;
  constexpr int NCH = KIN / VALS;
  constexpr int KPC = VALS / 16;
  constexpr int GPR = KIN / GROUP;
  constexpr int CPS = Ring::CHUNKS;
  constexpr int NST = (NCH + CPS - 1) / CPS;
  constexpr int WAIT = STAGES >= 2 ? STAGES - 2 : 0;
  constexpr int RPL = ROWS / 8;  // rows a lane dequantizes: g (and g + 8)
  const int g = lane >> 2;
  const int t = lane & 3;
  // The tile's scales and biases join the first group as 4-byte copies when every
  // row's run of GPR values starts 4-byte aligned; otherwise they are loaded while
  // the first stages are in flight (a round trip the chain then waits for: the
  // SASS samples of device run 23 put about a seventh of the SwiGLU's stalls on it).
  bool scales_async = false;
  if constexpr (GPR % 2 == 0) {
    if (aligned4(sc) && aligned4(bi)) {
      constexpr int WORDS = GPR / 2;
      for (int i = lane; i < ROWS * WORDS; i += 32) {
        const int r = i / WORDS;
        const int q = 2 * (i - r * WORDS);
        cp_async4(&ring.s[r][q], sc + r * GPR + q);
        cp_async4(&ring.b[r][q], bi + r * GPR + q);
      }
      scales_async = true;
    }
  }
#pragma unroll
  for (int p = 0; p < STAGES - 1; ++p) {
    pipe_issue<T, BITS, KIN, STAGES, ROWS, ALIGNED>(ring, p, p, w, x, lane);
  }
  if (!scales_async) {
    for (int i = lane; i < ROWS * GPR; i += 32) {
      const int r = i / GPR;
      const int q = i - r * GPR;
      ring.s[r][q] = static_cast<unsigned short>(bits16(sc[r * GPR + q]));
      ring.b[r][q] = static_cast<unsigned short>(bits16(bi[r * GPR + q]));
    }
  }
  // The slot of stage st, and that of stage st - 1, which stage st + STAGES - 1
  // reuses.
  int slot = 0;
  int prev = STAGES - 1;
  for (int st = 0; st < NST; ++st) {
    ZMLX_STAGE_HOOK(st, 0);
    cp_async_wait<WAIT>();
    // Stage st is in (every lane's copies), and every lane is done with the slot
    // the next issue overwrites (it held stage st - 1).
    __syncwarp();
    ZMLX_STAGE_HOOK(st, 1);
    pipe_issue<T, BITS, KIN, STAGES, ROWS, ALIGNED>(ring, st + STAGES - 1, prev, w, x, lane);
    const uint32_t* xw = reinterpret_cast<const uint32_t*>(&ring.x[slot][0]);
    // All of the stage's shared-memory loads first, then the multiplies: the
    // loads' latency is paid once a stage instead of once a chunk (Nsight Compute,
    // device run 26: short-scoreboard stalls were a sixth of the SwiGLU's; run 27
    // measured no change in duration, and it is no slower).
    uint4 wc[CPS][RPL];
    uint32_t a[CPS][2 * KPC];
    uint32_t sb[CPS][RPL];
    uint32_t zb[CPS][RPL];
#pragma unroll
    for (int j = 0; j < CPS; ++j) {
      const int ch = st * CPS + j;
      if (ch < NCH) {
        const int q = ch * VALS / GROUP;
#pragma unroll
        for (int r = 0; r < RPL; ++r) {
          wc[j][r] = ring.w[slot][j][g + 8 * r];
          sb[j][r] = ring.s[g + 8 * r][q];
          zb[j][r] = ring.b[g + 8 * r][q];
        }
#pragma unroll
        for (int i = 0; i < KPC; ++i) {
          const int o = j * VALS / 2 + 8 * i;
          a[j][2 * i] = xw[o + t];
          a[j][2 * i + 1] = xw[o + t + 4];
        }
      }
    }
#pragma unroll
    for (int j = 0; j < CPS; ++j) {
      if (st * CPS + j < NCH) {
        mma_chunk<T, BITS, DEQ, ROWS>(wc[j], a[j], t, sb[j], zb[j], c);
      }
    }
    prev = slot;
    slot = slot + 1 == STAGES ? 0 : slot + 1;
  }
  ZMLX_STAGE_HOOK(NST, 0);
  // Drain before the ring is reused (the next chain of this warp).
  cp_async_wait<0>();
  __syncwarp();
}

// mma_tile with the copy path chosen once: cp.async when both the weights and the
// activations are 16-byte aligned (always, for arrays MLX allocates), else the
// slow copies.
template <typename T, int BITS, int GROUP, int KIN, int DEQ, int STAGES, int ROWS,
          typename Ring>
__device__ __forceinline__ void mma_tile_any(Ring& ring, const uint32_t* w, const T* sc,
                                             const T* bi, const T* x, bool aligned, int lane,
                                             float* c) {
  if (aligned) {
    mma_tile<T, BITS, GROUP, KIN, DEQ, STAGES, ROWS, true>(ring, w, sc, bi, x, lane, c);
  } else {
    mma_tile<T, BITS, GROUP, KIN, DEQ, STAGES, ROWS, false>(ring, w, sc, bi, x, lane, c);
  }
}

// mlx-lm's swiglu on MLX's CUDA backend (a compiled element-wise kernel: each op
// computes in T with MLX's own functors): silu(g) * u with silu(g) = g * sigmoid(g).
template <typename T>
__device__ __forceinline__ T mlx_swiglu(T g, T u) {
  const T sig = mlx::core::cu::Sigmoid{}(g);
  const T silu = mlx::core::cu::Multiply{}(g, sig);
  return mlx::core::cu::Multiply{}(silu, u);
}

// The sum of k values v[0..k) (k <= 32) in one of the candidate orders of MLX's
// column reduction (see down_combine.cu for the list): sequential, or a 32-lane
// butterfly in which lane j < k starts with v[j] and the other lanes with 0, each
// step adding the lane at distance `o` (descending 16..1 or ascending 1..16);
// lane 0's result. A = T accumulates in T (each add rounded), A = float rounds once.
template <typename T, typename A>
__device__ __forceinline__ A ksum_acc(const T* v, int k, int variant) {
  if (variant / 2 == 0) {
    A acc = static_cast<A>(from_float<A>(0.f));
    for (int j = 0; j < k; ++j) {
      acc = mlx::core::cu::Add{}(acc, static_cast<A>(from_float<A>(to_float(v[j]))));
    }
    return acc;
  }
  A w[32];
  for (int i = 0; i < 32; ++i) {
    w[i] = from_float<A>(i < k ? to_float(v[i]) : 0.f);
  }
  for (int s = 0; s < 5; ++s) {
    const int o = variant / 2 == 1 ? (16 >> s) : (1 << s);
    A nw[32];
    for (int i = 0; i < 32; ++i) {
      nw[i] = mlx::core::cu::Add{}(w[i], w[i ^ o]);
    }
    for (int i = 0; i < 32; ++i) {
      w[i] = nw[i];
    }
  }
  return w[0];
}

template <typename T, int SUMV>
__device__ __forceinline__ T ksum(const T* v, int k) {
  if (SUMV % 2 == 0) {
    return ksum_acc<T, T>(v, k, SUMV);
  }
  return from_float<T>(ksum_acc<T, float>(v, k, SUMV));
}

}  // namespace zmlx
