// Mock of MLX's CUDA binary functors (declarations only) for shaders/check-cuda.sh.
// No include guard, as MLX's JIT serves the real one: a second include must fail
// here too (it broke NVRTC in device run 53).
namespace mlx::core::cu {
struct Add {
  template <typename T>
  T operator()(T x, T y);
};
struct Multiply {
  template <typename T>
  T operator()(T x, T y);
};
struct Divide {
  template <typename T>
  T operator()(T x, T y);
};
}  // namespace mlx::core::cu
