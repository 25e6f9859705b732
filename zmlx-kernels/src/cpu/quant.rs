//! MLX's "affine" quantization format: packing, validation and unpacking.
//!
//! A weight matrix `W` of logical shape `[N, K]` (out, in) is stored as
//! `packed: [N, K * bits / 32]` `u32` words, element `j` of a word being
//! `(word >> (bits * j)) & mask` (low bits first), plus `scales` and `biases` of shape
//! `[N, K / group_size]` in the activation dtype. The weight is
//! `w[n, c] = scales[n, c / gs] * q[n, c] + biases[n, c / gs]`.
//!
//! Supported: 2, 4 and 8 bits (a whole number of values per word); group sizes 32, 64
//! and 128. 3, 5 and 6 bits straddle word boundaries and are refused with
//! [`KernelError::UnsupportedBits`].

use super::dtype::Element;
use super::error::{KernelError, Result};

/// Bit width and group size of an affine-quantized matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantSpec {
    bits: u32,
    group_size: usize,
}

impl QuantSpec {
    /// Validates a quantization spec.
    ///
    /// # Errors
    /// [`KernelError::UnsupportedBits`] unless `bits` is 2, 4 or 8;
    /// [`KernelError::UnsupportedGroupSize`] unless `group_size` is 32, 64 or 128.
    pub fn new(bits: u32, group_size: usize) -> Result<Self> {
        if !matches!(bits, 2 | 4 | 8) {
            return Err(KernelError::UnsupportedBits { bits });
        }
        if !matches!(group_size, 32 | 64 | 128) {
            return Err(KernelError::UnsupportedGroupSize { group_size });
        }
        Ok(Self { bits, group_size })
    }

    /// Bits per quantized value.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of consecutive input columns sharing one scale and bias.
    pub fn group_size(&self) -> usize {
        self.group_size
    }

    /// Values per 32-bit word.
    pub fn values_per_word(&self) -> usize {
        (32 / self.bits) as usize
    }

    /// Number of `u32` words holding one row of `cols` values.
    ///
    /// # Errors
    /// [`KernelError::ColsNotGrouped`] if `cols` is not a multiple of the group size
    /// (which, for the supported widths, also makes it a whole number of words).
    pub fn words_per_row(&self, cols: usize) -> Result<usize> {
        self.check_cols(cols)?;
        Ok(cols / self.values_per_word())
    }

    /// Number of groups (scales, biases) per row of `cols` values.
    ///
    /// # Errors
    /// [`KernelError::ColsNotGrouped`] if `cols` is not a multiple of the group size.
    pub fn groups_per_row(&self, cols: usize) -> Result<usize> {
        self.check_cols(cols)?;
        Ok(cols / self.group_size)
    }

    fn check_cols(&self, cols: usize) -> Result<()> {
        if cols.is_multiple_of(self.group_size) {
            Ok(())
        } else {
            Err(KernelError::ColsNotGrouped {
                cols,
                group_size: self.group_size,
            })
        }
    }

    /// Mask of one value.
    pub(crate) fn mask(&self) -> u32 {
        (1u32 << self.bits) - 1
    }
}

/// Dequantizes one row into `out` (f32): `out[c] = scale * q + bias`, computed in f32 as
/// MLX's kernels do (no rounding of the dequantized weight to the activation dtype).
///
/// `words`, `scales`, `biases` and `out` must be exactly one row long; callers
/// guarantee it (internal invariant).
pub(crate) fn dequantize_row<T: Element>(
    words: &[u32],
    scales: &[T],
    biases: &[T],
    spec: QuantSpec,
    out: &mut [f32],
) {
    let per_word = spec.values_per_word();
    let words_per_group = spec.group_size / per_word;
    let bits = spec.bits;
    let mask = spec.mask();
    for (((gw, s), b), go) in words
        .chunks_exact(words_per_group)
        .zip(scales)
        .zip(biases)
        .zip(out.chunks_exact_mut(spec.group_size))
    {
        let (s, b) = (s.to_f32(), b.to_f32());
        for (&w, o) in gw.iter().zip(go.chunks_exact_mut(per_word)) {
            for (j, v) in o.iter_mut().enumerate() {
                let q = (w >> (bits as usize * j)) & mask;
                *v = s * q as f32 + b;
            }
        }
    }
}
