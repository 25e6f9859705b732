// zmlx Metal prelude: the Metal counterparts of shaders/cuda/prelude.cuh, so that
// the kernel bodies in this folder follow the CUDA ones line for line.
// Not yet run on Apple silicon: compile-checked against a mock header only
// (shaders/check-metal.sh).
//
// MLX (fast::metal_kernel) puts this text after its own header (metal_stdlib and
// MLX's bfloat16_t) and before the generated kernel.

namespace zmlx {

// Element <-> float conversions; rounding to the activation dtype reproduces the
// reference's per-op roundings.
template <typename T>
inline float to_float(T v) {
  return static_cast<float>(v);
}

template <typename T>
inline T from_float(float v) {
  return static_cast<T>(v);
}

template <typename T>
inline float round_to(float v) {
  return static_cast<float>(static_cast<T>(v));
}

// Sum over aligned groups of WIDTH lanes of a SIMD group (32 lanes on Apple GPUs);
// every lane of the group gets the sum. The CUDA prelude's __shfl_xor_sync.
template <int WIDTH>
inline float group_sum(float v) {
  for (int o = WIDTH / 2; o > 0; o >>= 1) {
    v += simd_shuffle_xor(v, static_cast<ushort>(o));
  }
  return v;
}

inline float warp_sum(float v) {
  return simd_sum(v);
}

inline float warp_max(float v) {
  return simd_max(v);
}

// One 128-bit word of packed weights as four 32-bit loads (no alignment needed;
// the compiler merges them where it can).
inline uint4 load_packed(const device uint32_t* p) {
  return uint4(p[0], p[1], p[2], p[3]);
}

template <typename T, int VALS>
inline void load_acts(const device T* p, thread float* out) {
  for (int i = 0; i < VALS; ++i) {
    out[i] = static_cast<float>(p[i]);
  }
}

template <int VALS>
inline float sum_vals(const thread float* a) {
  float s = 0.f;
  for (int i = 0; i < VALS; ++i) {
    s += a[i];
  }
  return s;
}

// sum_i q_i * a_i over the 128 / BITS values of one 128-bit word, low bits first.
template <int BITS>
inline float packed_dot(uint4 w, const thread float* a) {
  constexpr int PW = 32 / BITS;
  constexpr uint32_t MASK = (1u << BITS) - 1u;
  float acc = 0.f;
  for (int m = 0; m < 4; ++m) {
    const uint32_t word = w[m];
    for (int i = 0; i < PW; ++i) {
      acc = metal::fma(static_cast<float>((word >> (BITS * i)) & MASK), a[m * PW + i], acc);
    }
  }
  return acc;
}

// MLX's sigmoid in the array's dtype: y = 1 / (1 + exp(-|x|)), x < 0 ? 1 - y : y.
template <typename T>
inline float sigmoid_as(float x) {
  const float e = round_to<T>(metal::exp(-metal::abs(x)));
  const float d = round_to<T>(1.f + e);
  const float y = round_to<T>(1.f / d);
  return x < 0.f ? round_to<T>(1.f - y) : y;
}

template <typename T>
inline float swiglu_as(float g, float u) {
  const float silu = round_to<T>(g * sigmoid_as<T>(g));
  return round_to<T>(silu * u);
}

}  // namespace zmlx
