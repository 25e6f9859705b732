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
//! The process chooses once ([`detected_precision`]: [`set_precision`], else
//! `ZMLX_CPU_PRECISION`); [`with_precision`] overrides it for one thread's calls.
//!
//! Float (unquantized) weights always take the f32 path: MLX multiplies them with BLAS,
//! whose summation order is not reproduced in either mode.

use std::cell::Cell;
use std::sync::OnceLock;

use super::error::{KernelError, Result};

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

static PRECISION: OnceLock<Precision> = OnceLock::new();

/// The process-wide [`Precision`], fixed at its first use: what [`set_precision`] set
/// before that, else `ZMLX_CPU_PRECISION=f32` ([`Precision::F32`]) or `exact` / no
/// variable ([`Precision::MlxExact`]). An unknown value of the variable is reported
/// once on stderr and ignored.
pub fn detected_precision() -> Precision {
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

/// Sets the process-wide [`Precision`] (what MLX's own threads use when they run the
/// fused CPU ops; the environment variable is then not read). It can be set once,
/// before any kernel has read it.
///
/// # Errors
/// [`KernelError::InvalidArgument`] if the process-wide precision is already fixed
/// (set earlier, or read by a kernel call or [`detected_precision`]) to a different
/// value; setting the value it already has succeeds.
pub fn set_precision(precision: Precision) -> Result<()> {
    let fixed = *PRECISION.get_or_init(|| precision);
    if fixed == precision {
        Ok(())
    } else {
        Err(KernelError::InvalidArgument {
            op: "set_precision",
            detail: format!(
                "the CPU kernels' precision is already fixed to {} for this process; set it \
                 before the first kernel call",
                fixed.name()
            ),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The process-wide value is fixed once: the same value can be set again, another
    /// one is refused, and a thread override still applies on its thread.
    #[test]
    fn set_once_then_refuse_a_change() {
        let fixed = detected_precision();
        let other = match fixed {
            Precision::MlxExact => Precision::F32,
            Precision::F32 => Precision::MlxExact,
        };
        assert!(set_precision(fixed).is_ok());
        let err = set_precision(other).unwrap_err().to_string();
        assert!(err.contains("already fixed"), "{err}");
        assert_eq!(detected_precision(), fixed);
        assert_eq!(with_precision(other, current_precision), other);
        assert_eq!(current_precision(), fixed);
    }
}
