//! The layers models are built from, calling their ops through the slot table.

use std::sync::OnceLock;

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

/// Linear layers that read the same input, run as one matmul over their stacked
/// rows when the slot table says so (`merge_projections`, see
/// [`zmlx_patch::merge`]), else one by one. The stacked weight is built on first
/// merged use and kept (a copy of the parts' weights: the parts stay for the
/// unpatched path); changing a part's weight afterwards is not seen by it. Parts
/// that cannot be merged (different quantization, say: the patch report lists them
/// as fallbacks) keep running one by one.
#[derive(Clone, Debug, Default)]
pub struct MergedProjection {
    /// The stacked weight, or `None` when the parts cannot be merged.
    stacked: OnceLock<Option<Weight>>,
}

impl MergedProjection {
    /// `[x @ p.T for p in parts]`, in order.
    ///
    /// # Errors
    /// When MLX fails.
    pub fn forward(
        &self,
        slots: &Slots,
        parts: &[&Linear],
        x: &Array,
        s: StreamOrDevice,
    ) -> Result<Vec<Array>> {
        let stacked = if slots.merge_projections {
            self.stacked(parts, s)?
        } else {
            None
        };
        let Some(w) = stacked else {
            return parts.iter().map(|p| p.forward(slots, x, s)).collect();
        };
        let y = slots.linear.forward(x, w, s)?;
        let sizes: Vec<i32> = parts.iter().map(|p| p.weight.out_features()).collect();
        Ok(zmlx_patch::merge::split_outputs(&y, &sizes, -1, s)?)
    }

    /// For one token (`x` is `[b, 1, in]`): the parts' outputs laid out per head,
    /// `[b, heads[i], 1, head_dim]` each, from one reshape of the merged output and
    /// one split (two view ops where splitting and reshaping each part take four).
    /// The same arrays the parts' outputs give after a `[b, heads, 1, d]` reshape.
    /// `None` when the parts are not merged or `x` is not one token.
    ///
    /// # Errors
    /// When the heads do not cover the merged output, or when MLX fails.
    pub fn forward_heads(
        &self,
        slots: &Slots,
        parts: &[&Linear],
        x: &Array,
        heads: &[i32],
        head_dim: i32,
        s: StreamOrDevice,
    ) -> Result<Option<Vec<Array>>> {
        if !slots.merge_projections || x.ndim() != 3 || x.shape()[1] != 1 {
            return Ok(None);
        }
        let Some(w) = self.stacked(parts, s)? else {
            return Ok(None);
        };
        let total: i32 = heads.iter().sum();
        if total * head_dim != w.out_features() {
            return Err(crate::error::Error::InvalidArgument(format!(
                "{total} heads of {head_dim} do not cover the merged projection's {} \
                 features",
                w.out_features()
            )));
        }
        let y = slots.linear.forward(x, w, s)?;
        let y = ops::reshape(&y, &[x.shape()[0], total, 1, head_dim], s)?;
        Ok(Some(zmlx_patch::merge::split_outputs(&y, heads, 1, s)?))
    }

    /// The stacked weight of `parts`, built and evaluated on first use.
    fn stacked(&self, parts: &[&Linear], s: StreamOrDevice) -> Result<Option<&Weight>> {
        if let Some(w) = self.stacked.get() {
            return Ok(w.as_ref());
        }
        let weights: Vec<&Weight> = parts.iter().map(|p| &p.weight).collect();
        let w = if zmlx_patch::merge::merge_support(&weights).is_yes() {
            let w = zmlx_patch::merge::merge_rows(&weights, s)?;
            w.arrays().iter().try_for_each(|a| a.eval())?;
            Some(w)
        } else {
            None
        };
        Ok(self.stacked.get_or_init(|| w).as_ref())
    }
}
