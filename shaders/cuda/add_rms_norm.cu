// zmlx fused residual add + RMS norm (body for MLX's fast::cuda_kernel; helpers in
// prelude.cuh and norm.cuh).
//
// h = x + r (MLX's Add functor on T, what MLX's CUDA `add` computes) and
// n = rms_norm(h, w, eps) as MLX's CUDA `fast::rms_norm` computes it (norm.cuh):
// a decoder layer's `h = x + attn(x); post_attention_layernorm(h)` in one op
// instead of two, with the same bits.
//
// Template arguments: T (f32, f16, bf16), AXIS (row length), EPS (eps's f32 bit
// pattern), FMAV (norm.cuh). Launch: RmsShape<T, AXIS>::BLOCK threads per block,
// one block per row. Inputs: x_in, r_in [ROWS, AXIS] T, w_in [AXIS] T. Outputs:
// h_out, n_out [ROWS, AXIS] T.

using S = zmlx::RmsShape<T, AXIS>;
__shared__ float red[S::WARPS];
const long long row = blockIdx.x;
const int tid = threadIdx.x;
const T* x = x_in + row * AXIS;
const T* r = r_in + row * AXIS;
T* h = h_out + row * AXIS;
T* n = n_out + row * AXIS;

T v[S::VALS];
#pragma unroll
for (int i = 0; i < S::VALS; ++i) {
  const int idx = zmlx::rms_index<T, AXIS>(tid, i);
  if (idx < AXIS) {
    v[i] = mlx::core::cu::Add{}(x[idx], r[idx]);
    h[idx] = v[i];
  } else {
    v[i] = zmlx::from_float<T>(0.f);
  }
}
const float nrm = zmlx::rms_normalizer<T, AXIS, FMAV>(v, __int_as_float(EPS), red);
#pragma unroll
for (int i = 0; i < S::VALS; ++i) {
  const int idx = zmlx::rms_index<T, AXIS>(tid, i);
  if (idx < AXIS) {
    n[idx] = zmlx::rms_scale(v[i], w_in[idx], nrm);
  }
}
