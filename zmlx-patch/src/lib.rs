//! The zmlx patch layer.
//!
//! A model calls its MoE, linear and norm ops through a [`Slots`] table it holds.
//! The unpatched table holds the plain-MLX references (mlx-lm's op sequences);
//! [`patch()`] swaps slots for fused implementations following the family's
//! [`preset`](preset::preset) and the exclude lists ([`preset::EXCLUSIONS`], each
//! entry naming the recorded run behind it), and returns a [`PatchReport`]: what was
//! patched, on how many modules, and which modules fell back to the reference and
//! why. [`unpatch`] restores the references.
#![warn(missing_docs)]

pub mod merge;
pub mod patch;
pub mod preset;
pub mod slots;

pub use patch::{
    patch, unpatch, Fallback, Module, PatchOptions, PatchReport, Patchable, SlotReport,
};
pub use slots::{SlotName, Slots};
