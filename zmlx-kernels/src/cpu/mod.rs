//! CPU backend of the fused kernels: pure Rust over row-contiguous slices.
//!
//! Everything here works on borrowed buffers with explicit shapes, so that an MLX
//! custom primitive can hand over its (row-contiguous) inputs and preallocated outputs.
//! Strided or broadcast arrays must be made contiguous by the caller first (MLX's
//! `contiguous` when the graph is built); the kernels never look at strides.
//!
//! | op | function |
//! | --- | --- |
//! | quantized / float linear layer | [`qmm`] |
//! | expert gate+up with SwiGLU | [`expert_swiglu`] |
//! | expert down projection + weighted combine | [`expert_down_combine`] |
//! | residual add of the combine's output (MLX's `add`) | [`add_residual`] |
//! | router gating | [`route`] with a [`Gating`] rule |
//! | token-to-expert dispatch | [`ExpertDispatch`], [`dispatch_into`] |
//!
//! Activations are f32, f16 or bf16 ([`Floats`]). With quantized weights every kernel
//! reproduces MLX's CPU backend bit for bit by default (the reference mlx-lm runs;
//! [`Precision::F32`] trades that for plain f32 accumulation, see [`Precision`]): the matmuls
//! follow MLX's sequential per-output chain in the activation dtype (`chain.rs`),
//! element-wise tails use MLX's own `exp`/`sigmoid` (`mlx_math.rs`), reductions
//! accumulate as MLX does; each module documents its exact semantics. Float weights
//! take an f32-accumulating path that is NOT bit-exact (MLX multiplies float weights
//! with BLAS, whose summation order is not reproduced); the MLX glue keeps the
//! reference for them.
//!
//! Vector kernels (AVX-512F, AVX2+FMA+F16C, NEON, portable) are picked at runtime, see
//! [`simd`].

mod chain;
mod dispatch;
mod down_combine;
mod dtype;
mod error;
mod gating;
mod linear;
mod mlx_math;
mod par;
mod precision;
mod prep;
mod qmm;
mod quant;
pub mod simd;
mod swiglu;
mod weights;

pub use dispatch::{dispatch_into, ExpertDispatch};
pub use down_combine::{add_residual, expert_down_combine};
pub use dtype::{Dtype, Element, Floats, FloatsMut};
pub use error::{KernelError, Result};
pub use gating::{route, Gating};
pub use precision::{
    current_precision, detected_precision, set_precision, with_precision, Precision,
};
pub use qmm::qmm;
pub use quant::QuantSpec;
pub use swiglu::expert_swiglu;
pub use weights::{WeightShape, Weights};
