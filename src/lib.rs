//! zmlx: fused Mixture-of-Experts kernels for MLX models.
//!
//! The pure-Rust parts of the root crate: the Qwen3-MoE [`config`], untrusted
//! [`checkpoint`] validation, deterministic [`synthetic`] checkpoints and the
//! crate's [`error`] type.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod models;
pub mod nn;
pub mod synthetic;

pub use error::{Error, Result};
