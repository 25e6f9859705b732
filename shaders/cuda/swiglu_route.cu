// zmlx_routed_swiglu, first part (expert_swiglu.cu follows): the kernel routes each
// pair's token itself, so the router is not a launch of its own. Every live warp runs
// zmlx::route_warp (route.cuh, the router kernel's own code, hence the same bits) on
// its token's logits and takes the expert at its pair's position; the gate warp of
// each token's first tile writes the token's routing (ids_out, scores_out: what the
// router kernel returns) for the down projection.
// Template arguments on top of expert_swiglu.cu's: RK (top-k, = dims_in[1]), REXP
// (experts, = dims_in[2]), NORM. dims_in[3] = the router VARIANT, dims_in[4] = its
// score CHUNK (moe_gate.cu). Input: logits_in [tokens, REXP] T. Outputs on top of
// h_out: ids_out [tokens, RK] uint32, scores_out [tokens, RK] T.
auto expert_of = [&](long long p, bool writer) -> uint32_t {
  const int ln = threadIdx.x & 31;
  const long long tk = p / RK;
  uint32_t rid[RK];
  float picked[RK];
  zmlx::route_warp<T, REXP, RK>(logits_in + tk * REXP, dims_in[3] == 1u, ln, rid, picked);
  if (writer && ln == 0) {
    // Only the writer needs the scores.
    T rsc[RK];
    zmlx::route_scores<T, RK, NORM>(picked, static_cast<int>(dims_in[4]), rsc);
#pragma unroll
    for (int j = 0; j < RK; ++j) {
      ids_out[tk * RK + j] = rid[j];
      scores_out[tk * RK + j] = rsc[j];
    }
  }
  // rid[p % RK] without a dynamically indexed (local memory) array.
  const int slot = static_cast<int>(p % RK);
  uint32_t id = 0u;
#pragma unroll
  for (int j = 0; j < RK; ++j) {
    id = j == slot ? rid[j] : id;
  }
  return id;
};
