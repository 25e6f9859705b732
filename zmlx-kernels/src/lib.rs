//! Fused Mixture-of-Experts kernels for MLX.
//!
//! Each patchable op is one module holding its contract (shapes, dtypes, quantization
//! modes), its reference (the plain-MLX op sequence mlx-lm runs, which is also the
//! unpatched path) and its backends. The traits in [`contract`] are the slots a model
//! calls through; `zmlx-patch` decides which implementation fills each slot.
//!
//! - [`moe_gate`]: router gating;
//! - [`expert_swiglu`]: gather + gate/up matmuls + SwiGLU;
//! - [`down_combine`]: down projection + weighted sum over experts;
//! - [`dispatch`]: token-to-expert ordering for prefill and its inverse;
//! - [`quant_linear`]: `x @ w.T` for quantized or float `w`;
//! - [`norm`]: RMS norm, and the fused add + norm and q/k norm + RoPE ops;
//! - [`cpu`]: the CPU kernels in Rust, over plain slices;
//! - [`gpu`]: the CUDA kernels (and the Metal ones, not yet run on Apple silicon).
#![warn(missing_docs)]

pub mod contract;
pub mod cpu;
mod cpu_glue;
pub mod dispatch;
pub mod down_combine;
pub mod expert_swiglu;
pub mod gpu;
pub mod moe_gate;
pub mod norm;
pub mod quant_linear;
mod thread_override;
pub mod weight;

pub use contract::{DownCombineOp, ExpertSwiGluOp, LinearOp, NormOp, RouterOp, Support};
pub use weight::Weight;
