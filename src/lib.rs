//! zmlx: fused Mixture-of-Experts kernels for MLX models.
//!
//! The pure-Rust parts of the root crate: the Qwen3-MoE [`config`], untrusted
//! [`checkpoint`] validation, deterministic [`synthetic`] checkpoints and the
//! crate's [`error`] type.

pub mod autopatch;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod fidelity;
pub mod generate;
pub mod kv_cache;
pub mod models;
pub mod nn;
pub mod records;
pub mod synthetic;
pub mod tokenizer;

pub use error::{Error, Result};
