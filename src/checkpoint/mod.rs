//! Checkpoint files: safetensors weights and their shard index.
//!
//! Everything here is pure Rust and runs before MLX sees a byte: a checkpoint
//! downloaded from the internet is untrusted input. See [`validate`].

pub mod load;
pub mod validate;

pub use validate::{
    validate_checkpoint_dir, validate_safetensors, validate_safetensors_bytes,
    validate_shard_index, CheckpointFiles, SafetensorsHeader, ShardIndex, TensorEntry,
};
