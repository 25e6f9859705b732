// zmlx_expert_swiglu, first part (expert_swiglu.cu follows): each pair's expert comes
// from the routing the router op computed. Input: expert_ids [PAIRS] uint32.
auto expert_of = [&](long long p, bool /* writer */) -> uint32_t { return expert_ids[p]; };
