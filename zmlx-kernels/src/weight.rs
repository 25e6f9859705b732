//! Weights of linear layers and expert stacks: float or quantized.

use mlx::quantization::{QuantSpec, QuantizedWeight};
use mlx::{Array, Dtype, Error, Result};

/// The weight of a linear map `x @ w.T`: `[out, in]`, or `[experts, out, in]` for an
/// expert stack. Quantized weights keep `in` packed (see [`QuantizedWeight`]).
#[derive(Clone, Debug)]
pub enum Weight {
    /// A float weight (f32, f16 or bf16).
    Float(Array),
    /// An affine (or other MLX mode) quantized weight.
    Quantized(QuantizedWeight),
}

impl Weight {
    /// The number of output features (the second-to-last logical axis).
    pub fn out_features(&self) -> i32 {
        let w = match self {
            Weight::Float(w) => w,
            Weight::Quantized(q) => &q.weight,
        };
        w.shape()[w.ndim() - 2]
    }

    /// The number of input features (unpacked).
    pub fn in_features(&self) -> i32 {
        match self {
            Weight::Float(w) => w.shape()[w.ndim() - 1],
            Weight::Quantized(q) => q.scales.shape()[q.scales.ndim() - 1] * q.spec.group_size,
        }
    }

    /// The number of experts of a stacked weight (1 for a plain one).
    pub fn experts(&self) -> i32 {
        let w = match self {
            Weight::Float(w) => w,
            Weight::Quantized(q) => &q.weight,
        };
        if w.ndim() == 3 {
            w.shape()[0]
        } else {
            1
        }
    }

    /// The arrays the weight is made of: the float weight, or the packed values, the
    /// scales and (affine) the biases, in that order.
    pub fn arrays(&self) -> Vec<&Array> {
        match self {
            Weight::Float(a) => vec![a],
            Weight::Quantized(q) => [Some(&q.weight), Some(&q.scales), q.biases.as_ref()]
                .into_iter()
                .flatten()
                .collect(),
        }
    }

    /// The bytes of all its arrays (what reading it once costs).
    pub fn nbytes(&self) -> usize {
        self.arrays().iter().map(|a| a.nbytes()).sum()
    }

    /// The quantization settings, if quantized.
    pub fn quant(&self) -> Option<QuantSpec> {
        match self {
            Weight::Float(_) => None,
            Weight::Quantized(q) => Some(q.spec),
        }
    }

    /// The dtype activations take with this weight: the float weight's dtype or the
    /// scales' dtype.
    pub fn activation_dtype(&self) -> Dtype {
        match self {
            Weight::Float(w) => w.dtype(),
            Weight::Quantized(q) => q.scales.dtype(),
        }
    }

    /// Checks that this is a 2-d (`stacked = false`) or 3-d expert stack weight
    /// with the stated logical shape, naming `what` in the error.
    ///
    /// # Errors
    /// When the rank or a dimension differs.
    pub fn check_shape(&self, what: &str, experts: Option<i32>, out: i32, inp: i32) -> Result<()> {
        let (w, rank) = match self {
            Weight::Float(w) => (w, w.ndim()),
            Weight::Quantized(q) => (&q.weight, q.weight.ndim()),
        };
        let want_rank = if experts.is_some() { 3 } else { 2 };
        let ok = rank == want_rank
            && experts.is_none_or(|e| w.shape()[0] == e)
            && self.out_features() == out
            && self.in_features() == inp;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(
                "weight",
                format!(
                    "{what}: expected {} x {out} x {inp} (out x in), got weight shape {:?}",
                    experts.map_or("".to_string(), |e| format!("{e} experts x")),
                    w.shape()
                ),
            ))
        }
    }
}
