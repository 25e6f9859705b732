//! zmlx: fused Mixture-of-Experts kernels for MLX models.
//!
//! The models and everything around them:
//! - [`models::qwen3_moe`]: Qwen3-MoE computing what mlx-lm computes, its MoE, linear
//!   and norm ops called through a slot table that `zmlx_patch::patch` can swap;
//! - [`config`] and [`checkpoint`]: `config.json` parsing, untrusted safetensors checks
//!   and loading (one file or shards, mlx-community or Hugging Face layouts);
//! - [`generate`]: chunked prefill, pipelined decode, sampling, speed figures;
//! - [`fidelity`] and [`autopatch`]: patched vs unpatched comparisons and measured
//!   patching;
//! - [`synthetic`]: deterministic synthetic checkpoints; [`records`]: benchmark rows
//!   and repro capsules; [`tokenizer`]: `tokenizer.json` support;
//! - [`error`]: the crate's [`Error`].
#![warn(missing_docs)]

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
