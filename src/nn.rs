//! The layers models are built from, calling their ops through the slot table.

use mlx::quantization::dequantize;
use mlx::{ops, Array, Dtype, StreamOrDevice};
use zmlx_kernels::Weight;
use zmlx_patch::Slots;

use crate::error::Result;

/// `y = x @ w.T` (no bias), float or quantized.
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight, `[out, in]`.
    pub weight: Weight,
}

impl Linear {
    /// Applies the layer through the `linear` slot.
    pub fn forward(&self, slots: &Slots, x: &Array, s: StreamOrDevice) -> Result<Array> {
        Ok(slots.linear.forward(x, &self.weight, s)?)
    }
}

/// Token embeddings, float or quantized (`[vocab, hidden]`).
#[derive(Clone, Debug)]
pub struct Embedding {
    /// The table.
    pub weight: Weight,
}

impl Embedding {
    /// The rows of `tokens` (uint32, any shape): mlx's `weight[tokens]`, or for a
    /// quantized table `dequantize(weight[tokens], scales[tokens], biases[tokens])`.
    pub fn forward(&self, tokens: &Array, s: StreamOrDevice) -> Result<Array> {
        Ok(match &self.weight {
            Weight::Float(w) => ops::take(w, tokens, Some(0), s)?,
            Weight::Quantized(q) => {
                let rows = mlx::quantization::QuantizedWeight {
                    weight: ops::take(&q.weight, tokens, Some(0), s)?,
                    scales: ops::take(&q.scales, tokens, Some(0), s)?,
                    biases: q
                        .biases
                        .as_ref()
                        .map(|b| ops::take(b, tokens, Some(0), s))
                        .transpose()?,
                    spec: q.spec,
                };
                dequantize(&rows, None, s)?
            }
        })
    }

    /// The table used as the output projection (tied embeddings): mlx's
    /// `as_linear`, i.e. `x @ weight.T`.
    pub fn as_linear(&self, slots: &Slots, x: &Array, s: StreamOrDevice) -> Result<Array> {
        Ok(slots.linear.forward(x, &self.weight, s)?)
    }

    /// The dtype of the embeddings it returns.
    pub fn dtype(&self) -> Dtype {
        self.weight.activation_dtype()
    }
}

/// RMS norm with a learned scale.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// The scale, `[dim]`.
    pub weight: Array,
    /// Added to the mean square.
    pub eps: f32,
}

impl RmsNorm {
    /// Applies the norm through the `norm` slot.
    pub fn forward(&self, slots: &Slots, x: &Array, s: StreamOrDevice) -> Result<Array> {
        Ok(slots.norm.rms_norm(x, &self.weight, self.eps, s)?)
    }
}
