// zmlx_router_swiglu, first part (expert_swiglu.cu follows): swiglu_route.cu's
// kernel that also computes the router logits (router_qmv.cuh: MLX's qmv bits), so
// the router matmul is not a launch of its own either. One token: the kernel runs as
// clusters of ZMLX_ROUTER_CLUSTER blocks (sm_90) whose tiles all belong to the token
// (gpu.rs checks); the cluster's warps split the REXP router rows, each warp writes
// its logits into every block's shared copy (distributed shared memory), and after
// one cluster barrier every warp routes from its block's copy with route_warp, as
// swiglu_route.cu does from the logits input. A cluster reads the router weights
// once (L2 hits after the first cluster), instead of each block.
// Template arguments on top of expert_swiglu.cu's: RK, REXP, NORM (as
// swiglu_route.cu), RGROUP (the router's group size), QDEQ (router_qmv.cuh), RROWS
// (router rows a warp loads at once: 1, 2 or 4; the same bits).
// dims_in[3] = the router VARIANT, dims_in[4] = its score CHUNK. Inputs: w_router
// [REXP, HID / 4] uint32 (8-bit codes) in the second slot, s_router and b_router
// [REXP, HID / RGROUP] T last. Outputs on top of h_out: ids_out, scores_out [1, RK].
__shared__ T router_logits[REXP];
{
  namespace zcg = cooperative_groups;
  const zcg::cluster_group cluster = zcg::this_cluster();
  constexpr int RW = 2 * TPB;                       // warps a block
  constexpr int CW = ZMLX_ROUTER_CLUSTER * RW;      // warps a cluster
  const int rlane = threadIdx.x & 31;
  const int rwarp = static_cast<int>(cluster.block_rank()) * RW + (threadIdx.x >> 5);
  uint4 xv[HID / 256];
  zmlx::qmv8_activations<T, HID>(x_in, zmlx::aligned16(x_in), rlane, xv);  // the one token
  constexpr int RPW = (REXP + CW - 1) / CW;  // router rows a warp
  constexpr int RB = RPW < RROWS ? RPW : RROWS;  // rows whose loads are in flight together
  // A block may write another's shared memory only once that block runs: every
  // block arrives now and waits before its first remote write, so the first rows'
  // loads overlap the barrier.
  auto started = cluster.barrier_arrive();
#pragma unroll 1
  for (int r0 = 0; r0 < RPW; r0 += RB) {
    T logit[RB];
    zmlx::qmv8_rows<T, HID, RGROUP, QDEQ, RB>(w_router, s_router, b_router, rwarp + r0 * CW, CW,
                                              REXP, xv, rlane, logit);
    if (r0 == 0) {
      cluster.barrier_wait(static_cast<decltype(started)&&>(started));
    }
#pragma unroll
    for (int r = 0; r < RB; ++r) {
      const int row = rwarp + (r0 + r) * CW;
      if (row < REXP && rlane < ZMLX_ROUTER_CLUSTER) {
        cluster.map_shared_rank(router_logits, rlane)[row] = logit[r];
      }
    }
  }
  // Every block's copy is complete after the barrier, and no block touches another's
  // shared memory after it, so a block may finish at any time from here on.
  cluster.sync();
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
