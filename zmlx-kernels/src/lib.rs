//! Fused MoE kernels for MLX.
