// Mock of MLX's CUDA binary functors (declarations only) for shaders/check-cuda.sh.
#pragma once
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
