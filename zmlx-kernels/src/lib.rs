//! Fused MoE kernels for MLX.

pub mod cpu;
