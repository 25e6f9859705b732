// zmlx fused per-head RMS norm + rotary embedding of one token's queries and keys
// (body for MLX's fast::cuda_kernel; helpers in prelude.cuh and norm.cuh).
//
// For each token and head: n = rms_norm(head, w, eps) as MLX's CUDA
// `fast::rms_norm` computes it, then MLX's CUDA `fast::rope` of n at position
// `offset` (zmlx::norm_rope_head in norm.cuh says how, and what ROPEV selects).
// Qwen3's `q_norm` + `k_norm` + two `rope` calls of a decode step in one op instead
// of four, with the same bits.
//
// Template arguments: T (f32, f16, bf16), D (head dim, even), NQ and NK (query and
// key heads per token), EPS, LB, SC (f32 bit patterns of eps, log2(base) and the
// position scale), FMAV (norm.cuh), ROPEV. Launch: RmsShape<T, D>::BLOCK threads per
// block, one block per (token, head), queries first. Inputs: q_in [B, NQ * D] T,
// k_in [B, NK * D] T, wq_in [D] T, wk_in [D] T, offset_in [1] int32 (more entries
// are not read). Outputs: q_out [B, NQ, 1, D] T, k_out [B, NK, 1, D] T.

__shared__ float red[zmlx::RmsShape<T, D>::WARPS];
__shared__ T normed[D];
const long long blk = blockIdx.x;
const long long b = blk / (NQ + NK);
const int head = static_cast<int>(blk % (NQ + NK));
const bool is_q = head < NQ;
const long long at = is_q ? (b * NQ + head) * D : (b * NK + head - NQ) * D;
const float pos = __fmul_rn(__int_as_float(SC), static_cast<float>(offset_in[0]));
zmlx::norm_rope_head<T, D, FMAV, ROPEV>((is_q ? q_in : k_in) + at, is_q ? wq_in : wk_in,
                                        (is_q ? q_out : k_out) + at, __int_as_float(EPS),
                                        pos, __int_as_float(LB), red, normed);
