//! zmlx: fused Mixture-of-Experts kernels for MLX models.
