//! The zmlx patch layer.
//!
//! A model calls its MoE, linear and norm ops through a [`Slots`] table it holds.
//! The unpatched table holds the plain-MLX references (mlx-lm's op sequences);
//! patching swaps slots for fused implementations and reports what it did.

pub mod slots;

pub use slots::{SlotName, Slots};
