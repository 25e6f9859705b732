//! The one error type of the CPU kernels.
//!
//! Every contract violation (a wrong buffer length, an unsupported quantization, an
//! expert index out of range, ...) is reported as a [`KernelError`]; the kernels never
//! panic on caller input.

use super::dtype::Dtype;

/// Why a CPU kernel refused its arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// A buffer does not hold exactly the number of elements its shape implies.
    #[error("[{op}] `{what}` has {actual} elements, expected {expected}")]
    LengthMismatch {
        /// The kernel that refused the call.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// Elements implied by the shape.
        expected: usize,
        /// Elements in the buffer.
        actual: usize,
    },
    /// Two arguments that must agree on a dimension do not.
    #[error("[{op}] {what}: {left} != {right}")]
    DimMismatch {
        /// The kernel that refused the call.
        op: &'static str,
        /// Which dimensions.
        what: &'static str,
        /// One side.
        left: usize,
        /// The other side.
        right: usize,
    },
    /// An argument has a dtype the kernel cannot pair with the others.
    #[error("[{op}] `{what}` is {actual:?}, expected {expected}")]
    DtypeMismatch {
        /// The kernel that refused the call.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// What the contract asks for (e.g. "the activation dtype").
        expected: &'static str,
        /// What was passed.
        actual: Dtype,
    },
    /// Bit width outside the supported set.
    #[error("unsupported quantization: {bits} bits (supported: 2, 4, 8; 3, 5 and 6 straddle 32-bit words)")]
    UnsupportedBits {
        /// The requested bit width.
        bits: u32,
    },
    /// Group size outside the supported set.
    #[error("unsupported quantization group size {group_size} (supported: 32, 64, 128)")]
    UnsupportedGroupSize {
        /// The requested group size.
        group_size: usize,
    },
    /// The input dimension of a quantized matrix is not a whole number of groups.
    #[error("quantized matrix has {cols} columns, not a multiple of the group size {group_size}")]
    ColsNotGrouped {
        /// Logical input dimension K.
        cols: usize,
        /// Quantization group size.
        group_size: usize,
    },
    /// An expert index is not below the number of experts.
    #[error("[{op}] expert index {index} out of range for {experts} experts")]
    ExpertOutOfRange {
        /// The kernel that refused the call.
        op: &'static str,
        /// The offending index.
        index: u32,
        /// Number of experts.
        experts: usize,
    },
    /// A scalar argument is outside its valid range.
    #[error("[{op}] invalid argument: {detail}")]
    InvalidArgument {
        /// The kernel that refused the call.
        op: &'static str,
        /// What is wrong, in words.
        detail: String,
    },
    /// A shape whose element count does not fit in `usize`.
    #[error("[{op}] shape too large: element count overflows usize")]
    Overflow {
        /// The kernel that refused the call.
        op: &'static str,
    },
}

/// Shorthand for results of the CPU kernels.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Multiplies dimensions, reporting overflow as [`KernelError::Overflow`].
pub(crate) fn checked_prod(op: &'static str, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(KernelError::Overflow { op })
}

/// Checks that a buffer has exactly `expected` elements.
pub(crate) fn check_len(
    op: &'static str,
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            op,
            what,
            expected,
            actual,
        })
    }
}
