//! Expert SwiGLU: gather each token's experts, gate and up matmuls, `silu(gate) * up`.
//!
//! The reference is mlx-lm's `SwitchGLU` up to the down projection: for many
//! (token, expert) pairs (at least 64) the pairs are first sorted by expert
//! (`argsort`) so that each expert's weights are read once; the order and its
//! inverse travel with the activations to the down projection.

use mlx::quantization::{gather_mm, gather_qmm};
use mlx::{ops, Array, Dtype, Error, Result, StreamOrDevice};

use crate::contract::{ExpertSwiGluOp, Support};
use crate::moe_gate::Routing;
use crate::weight::Weight;

/// mlx-lm sorts (token, expert) pairs by expert from this many pairs on.
pub const SORT_THRESHOLD: usize = 64;

/// The activations of every (token, expert) pair, as the down projection takes them.
#[derive(Clone, Debug)]
pub struct ExpertHidden {
    /// `silu(x @ gate.T) * (x @ up.T)`: `[..., k, 1, inter]` in routing order, or
    /// `[pairs, 1, inter]` in expert order when `inv_order` is set.
    pub h: Array,
    /// The expert of each row of `h` (the routing indices, or sorted and flat).
    pub idx: Array,
    /// When sorted: the permutation that restores routing order.
    pub inv_order: Option<Array>,
    /// The shape of the routing indices, `[..., k]`.
    pub indices_shape: Vec<i32>,
}

/// `x[idx] @ w[idx].T` as mlx-lm's `SwitchLinear` / `QuantizedSwitchLinear` compute it.
pub(crate) fn switch_linear(
    x: &Array,
    w: &Weight,
    idx: &Array,
    sorted: bool,
    s: StreamOrDevice,
) -> Result<Array> {
    match w {
        Weight::Quantized(q) => gather_qmm(x, q, None, Some(idx), true, sorted, s),
        Weight::Float(w) => gather_mm(x, &ops::swapaxes(w, -1, -2, s)?, None, Some(idx), sorted, s),
    }
}

/// `silu(gate) * up`, as mlx-lm's `swiglu` (with `silu(x) = x * sigmoid(x)`).
pub fn swiglu(gate: &Array, up: &Array, s: StreamOrDevice) -> Result<Array> {
    ops::multiply(&ops::silu(gate, s)?, up, s)
}

/// Checks the expert weights against `x` and the routing.
pub(crate) fn check_expert_args(
    x: &Array,
    gate: &Weight,
    up: &Weight,
    routing: &Routing,
) -> Result<()> {
    let hidden = x.shape().last().copied().unwrap_or(0);
    let experts = gate.experts();
    let inter = gate.out_features();
    gate.check_shape("gate_proj", Some(experts), inter, hidden)?;
    up.check_shape("up_proj", Some(experts), inter, hidden)?;
    if routing.indices.dtype() != Dtype::Uint32 {
        return Err(Error::invalid(
            "expert_swiglu",
            "expert indices must be uint32",
        ));
    }
    if routing.indices.shape()[..routing.indices.ndim() - 1] != x.shape()[..x.ndim() - 1] {
        return Err(Error::invalid(
            "expert_swiglu",
            format!(
                "routing indices {:?} do not match the tokens of x {:?}",
                routing.indices.shape(),
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// mlx-lm's op sequence.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceExpertSwiGlu;

impl ExpertSwiGluOp for ReferenceExpertSwiGlu {
    fn name(&self) -> &'static str {
        "mlx"
    }

    fn supports(&self, _gate: &Weight, _up: &Weight, _device: mlx::Device) -> Support {
        Support::Yes
    }

    fn forward(
        &self,
        x: &Array,
        gate: &Weight,
        up: &Weight,
        routing: &Routing,
        s: StreamOrDevice,
    ) -> Result<ExpertHidden> {
        check_expert_args(x, gate, up, routing)?;
        let x = ops::expand_dims(x, &[-2, -3], s)?;
        let inds = ops::stop_gradient(&routing.indices, s)?;
        let indices_shape = inds.shape().to_vec();
        let do_sort = inds.size() >= SORT_THRESHOLD;
        let (x, idx, inv_order) = if do_sort {
            let k = *indices_shape.last().expect("indices have an expert axis");
            let flat = ops::flatten(&inds, 0, -1, s)?;
            let order = ops::argsort(&flat, 0, s)?;
            let inv = ops::argsort(&order, 0, s)?;
            let token = ops::floor_divide(&order, &Array::scalar_as(k as f64, Dtype::Uint32)?, s)?;
            let xs = ops::take(&ops::flatten(&x, 0, -3, s)?, &token, Some(0), s)?;
            let idx = ops::take(&flat, &order, Some(0), s)?;
            (xs, idx, Some(inv))
        } else {
            (x, inds, None)
        };
        let x_up = switch_linear(&x, up, &idx, do_sort, s)?;
        let x_gate = switch_linear(&x, gate, &idx, do_sort, s)?;
        Ok(ExpertHidden {
            h: swiglu(&x_gate, &x_up, s)?,
            idx,
            inv_order,
            indices_shape,
        })
    }
}
