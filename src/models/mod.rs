//! Model architectures, one file each.

pub mod qwen3_moe;
