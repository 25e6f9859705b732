// Mock of MLX's CUDA unary functors (declarations only) for shaders/check-cuda.sh.
#pragma once
namespace mlx::core::cu {
struct Sigmoid {
  template <typename T>
  T operator()(T x);
};
struct Exp {
  template <typename T>
  T operator()(T x);
};
}  // namespace mlx::core::cu
