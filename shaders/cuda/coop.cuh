// zmlx CUDA prelude, part 3: the cooperative chain engine of the expert kernels
// (expert_swiglu_coop.cu, down_combine_coop.cu). gpu.rs appends this text to
// prelude.cuh and mma.cuh.
//
// Why. The arithmetic is fixed by exactness (mma.cuh): one mma per 16 values of K,
// in K order, one accumulator chain per 16-row tile, so a decode step has only as
// many chains as tiles (768 for Qwen3-30B-A3B's SwiGLU, about 6 a streaming
// multiprocessor). With one warp per chain that warp also dequantizes every weight
// of its tile, and the dependent steps of that work (byte permute, multiply, LOP3,
// packed subtract and fma, then the mma) leave the schedulers idle two thirds of
// the time (Nsight Compute, notes/cuda-kernels.md, device run 66b). But only the
// mmas form a chain; the dequantization of one K block does not depend on any
// other. Here a block of NW warps runs NC chains: warp c < NC only runs chain c's
// mmas, and the other NW - NC warps dequantize, each K block of each chain into the
// exact A fragments the chain's mma takes, so a multiprocessor has several times
// more warps to issue from. The values, the mma instruction, its operands and its
// order are those of mma_tile, so the bits are too.
//
// Data flow, per block. Raw weight chunks (16 bytes of a row) and the activation
// rows stream through a ring of R stages with cp.async (CPS chunks of each of a
// chain's 16 rows a stage); every thread issues the same few copies each stage.
// Dequantized fragments go to a double buffer: stage st + 1's fragments are
// produced while the chains multiply stage st's, each dequantizing warp taking the
// same (chain, block) units every stage. One barrier a
// stage orders the three: the copies of stage st + 1 are in, the fragments of
// stage st are complete, and everyone is done with the slots the next copies and
// fragments overwrite.
//
// Fragment layout: frag[buf][c][kb][lane] holds lane's four A registers (mma.cuh,
// ROWS = 16: rows g and g + 8, values 2t, 2t + 1 and 2t + 8, 2t + 9 of the block) in
// the order the mma takes them, so that the chain reads one 16-byte word a mma and
// 32 lanes read 512 consecutive bytes.

namespace zmlx {

// Where each chain of a pass reads: its tile's first weight row (rows WPR words
// apart), scales, biases (rows GPR values apart) and activation row, and whether it
// runs at all. Written by the caller (one thread a chain) before coop_chains.
template <typename T, int NC>
struct CoopChains {
  const uint32_t* w[NC];
  const T* s[NC];
  const T* b[NC];
  const T* x[NC];
  int live[NC];
};

// Shared memory of one pass. 16-bit values as raw bits.
template <int BITS, int GPR, int NC, int CPS, int R>
struct CoopSmem {
  static constexpr int VALS = 128 / BITS;         // values of a 16-byte chunk
  static constexpr int KB = CPS * VALS / 16;      // mma blocks a stage
  static constexpr int XW = CPS * VALS * 2 / 16;  // 16-byte words of activation a stage
  uint4 w[R][NC][CPS][16];                        // raw chunks [stage][chain][chunk][row]
  uint4 x[R][NC][XW];                             // activation values of the stage
  uint4 frag[2][NC][KB][32];                      // A fragments [buffer][chain][block][lane]
  unsigned short s[NC][16 * GPR];                 // scales, row-major
  unsigned short b[NC][16 * GPR];                 // biases
};

// One thread's share of a stage's copies, fixed for the whole chain: the copy's
// source at stage 0 (null when it has none), its destination in ring slot 0, and
// its chunk index within a stage (for the end of K).
struct CoopCopy {
  const unsigned char* src;
  uint4* dst;
  int j;
  bool aligned;
};

// The weight copies (first WPT) and activation copies (next XPT) thread `tid` issues
// every stage: NC * CPS * 16 weight chunks and NC * XW activation words a stage,
// spread over the block's threads.
template <typename T, int BITS, int K, int NC, int NT, int CPS, typename Smem>
__device__ __forceinline__ void coop_copies(Smem& sm, const CoopChains<T, NC>& ch, int tid,
                                            CoopCopy* cp) {
  constexpr int WPR = K * BITS / 32;
  constexpr int WPT = (NC * CPS * 16 + NT - 1) / NT;
  constexpr int XPT = (NC * Smem::XW + NT - 1) / NT;
#pragma unroll
  for (int m = 0; m < WPT; ++m) {
    const int i = tid + m * NT;
    const int c = i / (CPS * 16);
    const int j = (i / 16) % CPS;
    const int r = i % 16;
    const bool on = i < NC * CPS * 16 && ch.live[c];
    cp[m].src = on ? reinterpret_cast<const unsigned char*>(ch.w[c] + static_cast<long long>(r) * WPR + j * 4)
                   : nullptr;
    cp[m].dst = on ? &sm.w[0][c][j][r] : nullptr;
    cp[m].j = j;
    cp[m].aligned = aligned16(cp[m].src);
  }
#pragma unroll
  for (int m = 0; m < XPT; ++m) {
    const int i = tid + m * NT;
    const int c = i / Smem::XW;
    const int l = i % Smem::XW;
    const bool on = i < NC * Smem::XW && ch.live[c];
    cp[WPT + m].src = on ? reinterpret_cast<const unsigned char*>(ch.x[c] + l * 8) : nullptr;
    cp[WPT + m].dst = on ? &sm.x[0][c][l] : nullptr;
    cp[WPT + m].j = l;
    cp[WPT + m].aligned = aligned16(cp[WPT + m].src);
  }
}

// Issues stage st's copies into its ring slot and commits one cp.async group (empty
// past the end, so that group counts stay uniform).
template <typename T, int BITS, int K, int NC, int NT, int CPS, int R, typename Smem>
__device__ __forceinline__ void coop_issue(const CoopCopy* cp, int st) {
  constexpr int VALS = 128 / BITS;
  constexpr int NCH = K / VALS;
  constexpr int NST = (NCH + CPS - 1) / CPS;
  constexpr int WPT = (NC * CPS * 16 + NT - 1) / NT;
  constexpr int XPT = (NC * Smem::XW + NT - 1) / NT;
  constexpr int WSLOT = NC * CPS * 16;      // uint4 of a weight slot
  constexpr int XSLOT = NC * Smem::XW;      // uint4 of an activation slot
  if (st < NST) {
    const int slot = st % R;
#pragma unroll
    for (int m = 0; m < WPT; ++m) {
      if (cp[m].src != nullptr && st * CPS + cp[m].j < NCH) {
        const unsigned char* src = cp[m].src + st * CPS * 16;
        if (cp[m].aligned) {
          copy16<true>(cp[m].dst + slot * WSLOT, src);
        } else {
          copy16<false>(cp[m].dst + slot * WSLOT, src);
        }
      }
    }
#pragma unroll
    for (int m = WPT; m < WPT + XPT; ++m) {
      // 8 values of T per 16 bytes; K is a multiple of 64, so a word is all in or out.
      if (cp[m].src != nullptr && st * CPS * VALS + cp[m].j * 8 < K) {
        const unsigned char* src = cp[m].src + st * CPS * VALS * 2;
        if (cp[m].aligned) {
          copy16<true>(cp[m].dst + slot * XSLOT, src);
        } else {
          copy16<false>(cp[m].dst + slot * XSLOT, src);
        }
      }
    }
  }
  cp_async_commit();
}

// One producer unit, fixed for the whole chain: chain c's block kb of every stage,
// dequantized by one warp (lane g, t as mma_chunk's lane).
struct CoopUnit {
  const uint4* w;              // the raw chunk of row g in ring slot 0
  const unsigned short* s;     // row g's scales (row g + 8: + 8 * GPR)
  const unsigned short* b;     // row g's biases
  uint4* frag;                 // this lane's fragment in buffer 0
  int kb;                      // the block within a stage
  bool live;
};

// The A fragments of stage st (from ring slot st % R) into frag[st % 2].
template <typename T, int BITS, int GROUP, int K, int DEQ, int NC, int CPS, int R, int UPW,
          typename Smem>
__device__ __forceinline__ void coop_produce(const CoopUnit* un, int st, int t) {
  constexpr int VALS = 128 / BITS;
  constexpr int KPC = VALS / 16;
  constexpr int KB = Smem::KB;
  constexpr int NKB = K / 16;
  constexpr int GPR = K / GROUP;
  constexpr int WSLOT = NC * CPS * 16;
  constexpr int FBUF = NC * KB * 32;
  const int slot = st % R;
  const int buf = st & 1;
#pragma unroll
  for (int m = 0; m < UPW; ++m) {
    const int kg = st * KB + un[m].kb;  // the block's index in K
    if (un[m].live && kg < NKB) {
      const int i = un[m].kb % KPC;
      const int q = kg * 16 / GROUP;
      const uint4* w = un[m].w + slot * WSLOT;
      uint32_t lo[2], hi[2], sb[2], zb[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t* wr = reinterpret_cast<const uint32_t*>(w + 8 * r);
        if (BITS == 4) {
          lo[r] = wr[2 * i];
          hi[r] = wr[2 * i + 1];
        } else {
          lo[r] = wr[t >> 1];
          hi[r] = wr[2 + (t >> 1)];
        }
        sb[r] = un[m].s[8 * r * GPR + q];
        zb[r] = un[m].b[8 * r * GPR + q];
      }
      uint32_t f0, f1, f2, f3;
      BFrag<T, BITS, DEQ>::make(lo[0], hi[0], t, sb[0], zb[0], f0, f1);
      BFrag<T, BITS, DEQ>::make(lo[1], hi[1], t, sb[1], zb[1], f2, f3);
      // The mma's A order: row g k-low, row g + 8 k-low, row g k-high, row g + 8 k-high.
      un[m].frag[buf * FBUF] = make_uint4(f0, f2, f1, f3);
    }
  }
}

// Chain c's mmas over stage st's fragments (warp c, every lane).
template <typename T, int K, int NC, int R, typename Smem>
__device__ __forceinline__ void coop_consume(Smem& sm, int c, int st, int lane, float* acc) {
  constexpr int KB = Smem::KB;
  constexpr int NKB = K / 16;
  const int slot = st % R;
  const int buf = st & 1;
  const int t = lane & 3;
  const uint32_t* xw = reinterpret_cast<const uint32_t*>(&sm.x[slot][c][0]);
  uint4 a[KB];
  uint32_t b0[KB], b1[KB];
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
    if (st * KB + kb < NKB) {
      a[kb] = sm.frag[buf][c][kb][lane];
      b0[kb] = xw[kb * 8 + t];
      b1[kb] = xw[kb * 8 + t + 4];
    }
  }
#pragma unroll
  for (int kb = 0; kb < KB; ++kb) {
    if (st * KB + kb < NKB) {
      Mma<T>::run(acc, a[kb].x, a[kb].y, a[kb].z, a[kb].w, b0[kb], b1[kb]);
    }
  }
}

// Runs the NC chains described in `ch` (shared memory, written and made visible by
// the caller) with the block's NW warps: warp c < NC runs chain c's mmas and the
// other NW - NC warps dequantize, each the same UPW (chain, block) units of every
// stage. On return warp c < NC holds chain c's accumulators in acc, laid out as
// mma_tile's with ROWS = 16 (tile_results<16>), and every warp may reuse `sm` (the
// ring is drained and a barrier passed). Every thread of the block must call it.
template <typename T, int BITS, int GROUP, int K, int DEQ, int NC, int NW, int CPS, int R,
          typename Smem>
__device__ __forceinline__ void coop_chains(Smem& sm, const CoopChains<T, NC>& ch, float* acc) {
  static_assert(R >= 3, "the ring needs three stages: in use, complete, in flight");
  static_assert(NW > NC, "a warp a chain and at least one dequantizing warp");
  constexpr int VALS = 128 / BITS;
  constexpr int NCH = K / VALS;
  constexpr int NST = (NCH + CPS - 1) / CPS;
  constexpr int GPR = K / GROUP;
  constexpr int NT = NW * 32;
  constexpr int KB = Smem::KB;
  constexpr int NP = NW - NC;
  constexpr int UPW = (NC * KB + NP - 1) / NP;
  constexpr int WPT = (NC * CPS * 16 + NT - 1) / NT;
  constexpr int XPT = (NC * Smem::XW + NT - 1) / NT;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5;
  const int lane = tid & 31;
  acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
  // Scales and biases of every chain: one contiguous run of 16 * GPR values each
  // (the tile's rows are consecutive), copied with the first stage's group.
  constexpr int SW = 16 * GPR * 2 / 16;  // 16-byte words a chain
  for (int i = tid; i < 2 * NC * SW; i += NT) {
    const int which = i / (NC * SW);
    const int c = (i / SW) % NC;
    const int l = i % SW;
    if (ch.live[c]) {
      const T* src = (which == 0 ? ch.s[c] : ch.b[c]) + l * 8;
      uint4* dst = reinterpret_cast<uint4*>(which == 0 ? sm.s[c] : sm.b[c]) + l;
      if (aligned16(src)) {
        copy16<true>(dst, src);
      } else {
        copy16<false>(dst, src);
      }
    }
  }
  CoopCopy cp[WPT + XPT];
  coop_copies<T, BITS, K, NC, NT, CPS>(sm, ch, tid, cp);
#pragma unroll
  for (int p = 0; p < R - 1; ++p) {
    coop_issue<T, BITS, K, NC, NT, CPS, R, Smem>(cp, p);
  }
  // This warp's units (producers only).
  CoopUnit un[UPW];
  const int g = lane >> 2;
  const int t = lane & 3;
#pragma unroll
  for (int m = 0; m < UPW; ++m) {
    const int u = (warp - NC) + m * NP;
    const int c = u / KB;
    const int kb = u % KB;
    un[m].live = warp >= NC && u < NC * KB && ch.live[c];
    const int cc = un[m].live ? c : 0;
    un[m].kb = kb;
    un[m].w = &sm.w[0][cc][kb / (VALS / 16)][g];
    un[m].s = &sm.s[cc][g * GPR];
    un[m].b = &sm.b[cc][g * GPR];
    un[m].frag = &sm.frag[0][cc][kb][lane];
  }
  cp_async_wait<R - 2>();
  __syncthreads();
  coop_produce<T, BITS, GROUP, K, DEQ, NC, CPS, R, UPW, Smem>(un, 0, t);
  const bool chain = warp < NC && ch.live[warp < NC ? warp : 0];
  // One copy of the stage's code (the stage count is a constant the compiler
  // could unroll by).
#pragma unroll 1
  for (int st = 0; st < NST; ++st) {
    // Stage st + 1's copies are in and stage st's fragments complete (everyone's),
    // and nobody still reads the ring slot and fragment buffer written next.
    cp_async_wait<R - 3>();
    __syncthreads();
    coop_issue<T, BITS, K, NC, NT, CPS, R, Smem>(cp, st + R - 1);
    if (chain) {
      coop_consume<T, K, NC, R>(sm, warp, st, lane, acc);
    } else if (st + 1 < NST) {
      coop_produce<T, BITS, GROUP, K, DEQ, NC, CPS, R, UPW, Smem>(un, st + 1, t);
    }
  }
  cp_async_wait<0>();
  __syncthreads();
}

}  // namespace zmlx
