// zmlx_router_swiglu, first part (expert_swiglu.cu follows): swiglu_route.cu's
// kernel that also computes the router logits (router_qmv.cuh: MLX's qmv bits), so
// the router matmul is not a launch of its own either. One token.
//
// The first PB blocks (PB = the blocks whose warps cover the REXP router rows, one
// row a warp, or all blocks if there are fewer) compute the logits into the scratch
// rscr_in and count themselves in rscr_in[0] (a fence, then a device-wide atomic);
// every block waits for that count, copies the logits into shared memory through
// L2, and routes from its copy with route_warp, as swiglu_route.cu does from the
// logits input. The last block to take its copy (rscr_in[1]) zeroes both counts,
// so the next call finds them zero. The waiting needs the producers to run while
// other blocks wait: they are the lowest block indices, which the GPU starts first,
// and a one-token grid (k * INTER / ROWS / TPB blocks) fits on the GPU at once.
// Calls that share a scratch must run one after another (gpu.rs says so); if either
// assumption fails, the wait ends in a trap after RWAIT microseconds, not a hang.
// Template arguments on top of expert_swiglu.cu's: RK, REXP, NORM (as
// swiglu_route.cu), RGROUP (the router's group size), QDEQ (router_qmv.cuh), RROWS
// (router rows a warp loads at once: 1, 2 or 4; the same bits), RWAIT (how many
// microseconds a block waits for the logits before it traps).
// dims_in[3] = the router VARIANT, dims_in[4] = its score CHUNK. Inputs: w_router
// [REXP, HID / 4] uint32 (8-bit codes) in the second slot, s_router and b_router
// [REXP, HID / RGROUP] T and rscr_in (uint32, 2 + REXP words, words 0 and 1 zero
// between calls) last. Outputs on top of h_out: ids_out, scores_out [1, RK].
__shared__ T router_logits[REXP];
{
  // Warps a block: 2 * TPB, fewer if MLX narrowed the block to a smaller grid.
  const int rw = static_cast<int>(blockDim.x) >> 5;
  const int rlane = threadIdx.x & 31;
  const int rblocks = static_cast<int>(gridDim.x);
  const int producers = min(rblocks, (REXP + rw - 1) / rw);
  const int pw = producers * rw;  // producing warps
  unsigned int* counts = const_cast<unsigned int*>(rscr_in);
  T* shared_logits = reinterpret_cast<T*>(counts + 2);
  if (static_cast<int>(blockIdx.x) < producers) {
    const int rwarp = static_cast<int>(blockIdx.x) * rw + (threadIdx.x >> 5);
    uint4 xv[HID / 256];
    zmlx::qmv8_activations<T, HID>(x_in, zmlx::aligned16(x_in), rlane, xv);  // the one token
    const int rpw = (REXP + pw - 1) / pw;  // router rows a warp
#pragma unroll 1
    for (int r0 = 0; r0 < rpw; r0 += RROWS) {
      T logit[RROWS];
      zmlx::qmv8_rows<T, HID, RGROUP, QDEQ, RROWS>(w_router, s_router, b_router,
                                                   rwarp + r0 * pw, pw, REXP, xv, rlane, logit);
#pragma unroll
      for (int r = 0; r < RROWS; ++r) {
        const int row = rwarp + (r0 + r) * pw;
        if (row < REXP && r0 + r < rpw && rlane == 0) {
          shared_logits[row] = logit[r];
        }
      }
    }
    // Every warp's logits are written before thread 0 publishes the block's count
    // (the barrier orders them within the block, the fence device-wide).
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(counts, 1u);
    }
  }
  if (threadIdx.x == 0) {
    // The wait is bounded: logits that have not come after RWAIT microseconds never
    // will (producers not scheduled, or a scratch shared by calls running at once,
    // whose last block zeroed the count early), and a trap fails the launch, which
    // MLX reports, where spinning on would hang the GPU.
    const unsigned long long start = zmlx::global_ns();
    while (atomicAdd(counts, 0u) < static_cast<unsigned int>(producers)) {
      if (zmlx::global_ns() - start > static_cast<unsigned long long>(RWAIT) * 1000ull) {
        __trap();
      }
      __nanosleep(64);
    }
    __threadfence();
  }
  __syncthreads();
  for (int i = threadIdx.x; i < REXP; i += blockDim.x) {
    router_logits[i] = __ldcg(shared_logits + i);  // from L2: L1 is not coherent
  }
  __syncthreads();
  if (threadIdx.x == 0 &&
      atomicAdd(counts + 1, 1u) == static_cast<unsigned int>(rblocks - 1)) {
    // Every block has its copy: the counts go back to zero for the next call.
    atomicExch(counts, 0u);
    atomicExch(counts + 1, 0u);
  }
}
auto expert_of = [&](long long p, bool writer) -> uint32_t {
  const int ln = threadIdx.x & 31;
  uint32_t rid[RK];
  float picked[RK];
  zmlx::route_warp<T, REXP, RK>(router_logits, dims_in[3] == 1u, ln, rid, picked);
  if (writer && ln == 0) {
    T rsc[RK];
    zmlx::route_scores<T, RK, NORM>(picked, static_cast<int>(dims_in[4]), rsc);
#pragma unroll
    for (int j = 0; j < RK; ++j) {
      ids_out[j] = rid[j];
      scores_out[j] = rsc[j];
    }
  }
  const int slot = static_cast<int>(p % RK);
  uint32_t id = 0u;
#pragma unroll
  for (int j = 0; j < RK; ++j) {
    id = j == slot ? rid[j] : id;
  }
  return id;
};
