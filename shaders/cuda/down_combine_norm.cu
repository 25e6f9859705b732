// zmlx: tail of down_combine.cu for the variant that also normalises its output
// (appended to that body; helpers in norm.cuh). The MoE block's output y is the
// next layer's input, and the next thing a decoder computes is the RMS norm of it
// (the next layer's input norm, or the model's final norm): n = rms_norm(y, w, eps)
// as MLX's CUDA `fast::rms_norm` computes it (norm.cuh), here instead of in a
// separate op.
//
// A row of y is written by TILES blocks. Each block, after its outputs are written,
// counts itself in cnt_in[token] (a device-wide atomic after a fence); the block
// that counts last reads the whole row back from L2 and normalises it with MLX's
// launch shape (its first RmsShape<T, HID>::BLOCK threads play MLX's threads, the
// rest hold zeros), then resets the counter to 0 for the next call. cnt_in is an
// INPUT this kernel writes: the host passes a zeroed counter that only calls
// ordered one after another share (gpu::down_combine).
//
// More template arguments: EPS (eps's f32 bit pattern), FMAV (norm.cuh). More
// inputs: wn_in [HID] T (the norm's weight), cnt_in [>= NTOK] uint32 (zeros). More
// outputs: n_out [NTOK, HID] T.

__shared__ bool zmlx_last;
__shared__ float zmlx_red[zmlx::RmsShape<T, HID>::WARPS];
// This block's writes of y reach L2 before it counts itself.
__threadfence();
__syncthreads();
if (threadIdx.x == 0) {
  unsigned int* cnt = const_cast<unsigned int*>(cnt_in) + tok;
  zmlx_last = atomicAdd(cnt, 1u) == static_cast<unsigned int>(TILES - 1);
  if (zmlx_last) {
    *cnt = 0u;
  }
}
__syncthreads();
if (!zmlx_last) {
  return;
}
__threadfence();
{
  using NS = zmlx::RmsShape<T, HID>;
  const int tid = threadIdx.x;
  const T* yr = y_out + tok * HID;
  T v[NS::VALS];
#pragma unroll
  for (int i = 0; i < NS::VALS; ++i) {
    const int idx = zmlx::rms_index<T, HID>(tid, i);
    // L2 reads (__ldcg): other blocks wrote these values; this SM's L1 may not
    // have seen them.
    v[i] = tid < NS::BLOCK && idx < HID ? __ldcg(yr + idx) : zmlx::from_float<T>(0.f);
  }
  const float nrm = zmlx::rms_normalizer<T, HID, FMAV>(v, __int_as_float(EPS), zmlx_red);
  if (tid < NS::BLOCK) {
#pragma unroll
    for (int i = 0; i < NS::VALS; ++i) {
      const int idx = zmlx::rms_index<T, HID>(tid, i);
      if (idx < HID) {
        n_out[tok * HID + idx] = zmlx::rms_scale(v[i], wn_in[idx], nrm);
      }
    }
  }
}
