//! Weight matrices as the kernels see them: quantized or float, optionally stacked by
//! expert, validated once at construction.

use super::dtype::{Dtype, Element, Floats};
use super::error::{check_len, checked_prod, KernelError, Result};
use super::quant::QuantSpec;
use half::{bf16, f16};

/// Logical shape of a (possibly expert-stacked) weight: `[experts, rows, cols]` =
/// `[E, N, K]` (out, in). A plain linear layer has `experts == 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightShape {
    /// Number of stacked matrices (1 for a plain linear layer).
    pub experts: usize,
    /// Output features N.
    pub rows: usize,
    /// Input features K.
    pub cols: usize,
}

impl WeightShape {
    /// Shape of a single `[rows, cols]` matrix.
    pub fn matrix(rows: usize, cols: usize) -> Self {
        Self {
            experts: 1,
            rows,
            cols,
        }
    }

    /// Shape of `experts` stacked `[rows, cols]` matrices.
    pub fn stacked(experts: usize, rows: usize, cols: usize) -> Self {
        Self {
            experts,
            rows,
            cols,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Storage<'a> {
    Quantized {
        packed: &'a [u32],
        scales: Floats<'a>,
        biases: Floats<'a>,
        spec: QuantSpec,
    },
    Float(Floats<'a>),
}

/// A validated weight: borrowed row-contiguous buffers plus their shape.
///
/// Strided or broadcast MLX arrays must be made row-contiguous by the caller before
/// their buffers are borrowed here.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    shape: WeightShape,
    storage: Storage<'a>,
}

impl<'a> Weights<'a> {
    /// Affine-quantized weights: `packed` is `[E, N, K * bits / 32]`, `scales` and
    /// `biases` are `[E, N, K / group_size]`, all row-contiguous.
    ///
    /// # Errors
    /// [`KernelError::ColsNotGrouped`] if K is not a multiple of the group size;
    /// [`KernelError::LengthMismatch`] if a buffer has the wrong length;
    /// [`KernelError::DtypeMismatch`] if scales and biases differ in dtype;
    /// [`KernelError::Overflow`] if the shape overflows `usize`.
    pub fn quantized(
        packed: &'a [u32],
        scales: Floats<'a>,
        biases: Floats<'a>,
        shape: WeightShape,
        spec: QuantSpec,
    ) -> Result<Self> {
        const OP: &str = "weights";
        let wpr = spec.words_per_row(shape.cols)?;
        let gpr = spec.groups_per_row(shape.cols)?;
        check_len(
            OP,
            "packed",
            checked_prod(OP, &[shape.experts, shape.rows, wpr])?,
            packed.len(),
        )?;
        let n_groups = checked_prod(OP, &[shape.experts, shape.rows, gpr])?;
        check_len(OP, "scales", n_groups, scales.len())?;
        check_len(OP, "biases", n_groups, biases.len())?;
        if scales.dtype() != biases.dtype() {
            return Err(KernelError::DtypeMismatch {
                op: OP,
                what: "biases",
                expected: "the dtype of the scales",
                actual: biases.dtype(),
            });
        }
        Ok(Self {
            shape,
            storage: Storage::Quantized {
                packed,
                scales,
                biases,
                spec,
            },
        })
    }

    /// Unquantized weights `[E, N, K]`, row-contiguous.
    ///
    /// # Errors
    /// [`KernelError::LengthMismatch`] if `data` has the wrong length;
    /// [`KernelError::Overflow`] if the shape overflows `usize`.
    pub fn float(data: Floats<'a>, shape: WeightShape) -> Result<Self> {
        const OP: &str = "weights";
        check_len(
            OP,
            "data",
            checked_prod(OP, &[shape.experts, shape.rows, shape.cols])?,
            data.len(),
        )?;
        Ok(Self {
            shape,
            storage: Storage::Float(data),
        })
    }

    /// The logical shape `[E, N, K]`.
    pub fn shape(&self) -> WeightShape {
        self.shape
    }

    /// The dtype of the scales and biases (quantized) or of the values (float); the
    /// kernels require it to equal the activation dtype.
    pub fn dtype(&self) -> Dtype {
        match self.storage {
            Storage::Quantized { scales, .. } => scales.dtype(),
            Storage::Float(d) => d.dtype(),
        }
    }

    /// The quantization spec, or `None` for float weights.
    pub fn spec(&self) -> Option<QuantSpec> {
        match self.storage {
            Storage::Quantized { spec, .. } => Some(spec),
            Storage::Float(_) => None,
        }
    }

    /// Views the weights with element type `T`, which must be their dtype.
    pub(crate) fn typed<T: Element + Pick>(&self, op: &'static str) -> Result<Typed<'a, T>> {
        let mismatch = |actual| KernelError::DtypeMismatch {
            op,
            what: "weights",
            expected: "the activation dtype",
            actual,
        };
        let wrong = mismatch(self.dtype());
        let shape = self.shape;
        match self.storage {
            Storage::Quantized {
                packed,
                scales,
                biases,
                spec,
            } => {
                let (Some(scales), Some(biases)) = (T::pick(scales), T::pick(biases)) else {
                    return Err(wrong);
                };
                let wpr = shape.cols / spec.values_per_word();
                let gpr = shape.cols / spec.group_size();
                Ok(Typed::Quant(QuantView {
                    packed,
                    scales,
                    biases,
                    spec,
                    shape,
                    wpr,
                    gpr,
                }))
            }
            Storage::Float(d) => match T::pick(d) {
                Some(data) => Ok(Typed::Float(FloatView { data, shape })),
                None => Err(wrong),
            },
        }
    }
}

/// Extracts a typed slice from [`Floats`] when the dtype matches.
pub(crate) trait Pick: Sized {
    fn pick(f: Floats<'_>) -> Option<&[Self]>;
    /// The same slice as bf16 when this type is bf16 (for kernels that exist for bf16
    /// only, on x86_64).
    #[cfg(target_arch = "x86_64")]
    fn as_bf16(_: &[Self]) -> Option<&[bf16]> {
        None
    }
}

impl Pick for f32 {
    fn pick(f: Floats<'_>) -> Option<&[Self]> {
        match f {
            Floats::F32(s) => Some(s),
            _ => None,
        }
    }
}
impl Pick for f16 {
    fn pick(f: Floats<'_>) -> Option<&[Self]> {
        match f {
            Floats::F16(s) => Some(s),
            _ => None,
        }
    }
}
impl Pick for bf16 {
    fn pick(f: Floats<'_>) -> Option<&[Self]> {
        match f {
            Floats::Bf16(s) => Some(s),
            _ => None,
        }
    }
    #[cfg(target_arch = "x86_64")]
    fn as_bf16(s: &[Self]) -> Option<&[bf16]> {
        Some(s)
    }
}

/// Typed view of quantized weights with precomputed row strides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuantView<'a, T> {
    pub packed: &'a [u32],
    pub scales: &'a [T],
    pub biases: &'a [T],
    pub spec: QuantSpec,
    pub shape: WeightShape,
    /// Words per row.
    pub wpr: usize,
    /// Groups per row.
    pub gpr: usize,
}

/// Typed view of float weights.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatView<'a, T> {
    pub data: &'a [T],
    pub shape: WeightShape,
}

/// Weights with their element type resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Typed<'a, T> {
    Quant(QuantView<'a, T>),
    Float(FloatView<'a, T>),
}

/// One weight row (`w[e, n, :]`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Row<'a, T> {
    Quant {
        words: &'a [u32],
        scales: &'a [T],
        biases: &'a [T],
        spec: QuantSpec,
    },
    Float(&'a [T]),
}

impl<'a, T: Copy> Typed<'a, T> {
    pub fn shape(&self) -> WeightShape {
        match self {
            Typed::Quant(q) => q.shape,
            Typed::Float(f) => f.shape,
        }
    }

    pub fn spec(&self) -> Option<QuantSpec> {
        match self {
            Typed::Quant(q) => Some(q.spec),
            Typed::Float(_) => None,
        }
    }

    /// Row `n` of expert `e`; callers keep `e < E` and `n < N` (checked indices).
    #[inline]
    pub fn row(&self, e: usize, n: usize) -> Row<'a, T> {
        match *self {
            Typed::Quant(q) => {
                let r = e * q.shape.rows + n;
                Row::Quant {
                    words: &q.packed[r * q.wpr..(r + 1) * q.wpr],
                    scales: &q.scales[r * q.gpr..(r + 1) * q.gpr],
                    biases: &q.biases[r * q.gpr..(r + 1) * q.gpr],
                    spec: q.spec,
                }
            }
            Typed::Float(f) => {
                let k = f.shape.cols;
                let r = e * f.shape.rows + n;
                Row::Float(&f.data[r * k..(r + 1) * k])
            }
        }
    }
}
