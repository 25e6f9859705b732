//! How the CPU kernels multiply quantized weights: MLX's arithmetic bit for bit, or
//! plain f32 accumulation.
//!
//! MLX's CPU backend rounds every dequantized weight, product and partial sum of a
//! quantized matmul to the activation dtype, in one sequential chain per output
//! (`chain.rs`). Reproducing that is what lets a patched model give exactly the
//! unpatched model's tokens, but for bf16 it costs four roundings per weight and makes
//! the kernels compute-bound (notes/cpu-kernels.md). [`Precision::F32`] instead
//! accumulates each group's `q . x` in f32 and applies `scale * (q . x) + bias * sum(x)`,
//! rounding once at the end: far fewer operations per weight, and a result closer to
//! the exact real-number value than MLX's, but not MLX's bits. A model patched with it
//! can therefore choose a different greedy token wherever two logits are within a few
//! bf16 ulps, so it is not the default; the fidelity harness says whether it does.
//!
//! Float (unquantized) weights always take the f32 path: MLX multiplies them with BLAS,
//! whose summation order is not reproduced in either mode.

use std::cell::Cell;
use std::sync::OnceLock;

/// The arithmetic of quantized-weight matmuls on the CPU (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Bit-identical to MLX's CPU backend (the default).
    MlxExact,
    /// f32 accumulation per group, one rounding to the activation dtype at the end;
    /// within the error bounds stated in `tests/cpu/tol.rs`.
    F32,
}

impl Precision {
    /// The name in reports and in `ZMLX_CPU_PRECISION` (`exact`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::MlxExact => "exact",
            Precision::F32 => "f32",
        }
    }
}

/// The process-wide [`Precision`]: `ZMLX_CPU_PRECISION=f32` selects
/// [`Precision::F32`], `exact` or no variable [`Precision::MlxExact`]. An unknown value
/// is reported once on stderr and ignored.
pub fn detected_precision() -> Precision {
    static PRECISION: OnceLock<Precision> = OnceLock::new();
    *PRECISION.get_or_init(|| match std::env::var("ZMLX_CPU_PRECISION") {
        Err(_) => Precision::MlxExact,
        Ok(v) => [Precision::MlxExact, Precision::F32]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(v.trim()))
            .unwrap_or_else(|| {
                eprintln!("zmlx: ignoring ZMLX_CPU_PRECISION={v:?} (expected exact or f32)");
                Precision::MlxExact
            }),
    })
}

thread_local! {
    static OVERRIDE: Cell<Option<Precision>> = const { Cell::new(None) };
}

/// The [`Precision`] kernels called from this thread use now.
pub fn current_precision() -> Precision {
    crate::thread_override::current(&OVERRIDE, detected_precision)
}

/// Runs `f` with kernels called from this thread using `precision`, then restores the
/// previous one (also if `f` panics). Tests use it to check both paths, benchmarks to
/// time both.
pub fn with_precision<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    crate::thread_override::with_override(&OVERRIDE, precision, f)
}
