// zmlx fused per-head RMS norm + rotary embedding of one token's queries and keys,
// with the token's keys and values written straight into the KV cache (body for
// MLX's fast::cuda_kernel; helpers in prelude.cuh and norm.cuh).
//
// The same arithmetic as head_norm_rope.cu (zmlx::norm_rope_head), but the normed,
// rotated keys and the values go to position `offset` of the caches instead of new
// arrays: Qwen3's `q_norm` + `k_norm` + two `rope` calls + the cache's two
// `slice_update`s of a decode step in one op instead of six.
//
// The caches are INPUTS that this kernel writes (MLX knows only that it reads them).
// That is sound only as the host side (gpu::norm::head_norm_rope_into_cache) uses
// it: the caches are dense buffers the cache object alone owns, position `offset`
// is past every view anyone holds of them, and the only reader of that position,
// this step's attention, also reads q_out, so it runs after this kernel.
//
// Template arguments: as head_norm_rope.cu. Launch: RmsShape<T, D>::BLOCK threads
// per block, one block per (token, head), queries first. Inputs: q_in [B, NQ * D] T,
// k_in, v_in [B, NK * D] T, wq_in, wk_in [D] T, pos_in [2] int32 (offset, cache
// capacity), kc_in, vc_in [B, NK, capacity, D] T (written at [b, h, offset, :]).
// Output: q_out [B, NQ, 1, D] T.

__shared__ float red[zmlx::RmsShape<T, D>::WARPS];
__shared__ T normed[D];
const long long blk = blockIdx.x;
const long long b = blk / (NQ + NK);
const int head = static_cast<int>(blk % (NQ + NK));
const int offset = pos_in[0];
const long long cap = pos_in[1];
const float pos = __fmul_rn(__int_as_float(SC), static_cast<float>(offset));
if (head < NQ) {
  const long long at = (b * NQ + head) * D;
  zmlx::norm_rope_head<T, D, FMAV, ROPEV>(q_in + at, wq_in, q_out + at, __int_as_float(EPS),
                                          pos, __int_as_float(LB), red, normed);
} else {
  const long long kh = b * NK + head - NQ;
  const long long at = kh * D;
  const long long slot = (kh * cap + offset) * D;
  zmlx::norm_rope_head<T, D, FMAV, ROPEV>(k_in + at, wk_in, const_cast<T*>(kc_in) + slot,
                                          __int_as_float(EPS), pos, __int_as_float(LB), red,
                                          normed);
  T* vdst = const_cast<T*>(vc_in) + slot;
  for (int i = threadIdx.x; i < D; i += blockDim.x) {
    vdst[i] = v_in[at + i];
  }
}
