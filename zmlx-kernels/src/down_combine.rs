//! Down projection of each (token, expert) activation and the weighted sum over a
//! token's experts.
//!
//! The reference is the end of mlx-lm's `SwitchGLU` (down `gather_qmm`, unsort,
//! squeeze) and of its MoE block: `(y * scores[..., None]).sum(-2).astype(y.dtype)`.

use mlx::{ops, Array, Result, StreamOrDevice};

use crate::contract::{DownCombineOp, Support};
use crate::expert_swiglu::{switch_linear, ExpertHidden};
use crate::moe_gate::Routing;
use crate::weight::Weight;

/// The inputs of the down projection and combine.
#[derive(Clone, Copy, Debug)]
pub struct DownCombineInput<'a> {
    /// The expert activations.
    pub hidden: &'a ExpertHidden,
    /// The stacked down projections `[experts, hidden, inter]`.
    pub down: &'a Weight,
    /// The routing (its scores weight the sum).
    pub routing: &'a Routing,
}

/// mlx-lm's op sequence.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceDownCombine;

impl DownCombineOp for ReferenceDownCombine {
    fn name(&self) -> &'static str {
        "mlx"
    }

    fn supports(&self, _down: &Weight, _device: mlx::Device) -> Support {
        Support::Yes
    }

    fn forward(&self, input: &DownCombineInput<'_>, s: StreamOrDevice) -> Result<Array> {
        let hid = input.hidden;
        let inter = hid.h.shape().last().copied().unwrap_or(0);
        input.down.check_shape(
            "down_proj",
            Some(input.down.experts()),
            input.down.out_features(),
            inter,
        )?;
        let mut y = switch_linear(&hid.h, input.down, &hid.idx, hid.inv_order.is_some(), s)?;
        if let Some(inv) = &hid.inv_order {
            y = ops::take(&y, inv, Some(0), s)?;
            let mut shape = hid.indices_shape.clone();
            shape.extend_from_slice(&y.shape()[1..]);
            y = ops::reshape(&y, &shape, s)?;
        }
        let y = ops::squeeze(&y, &[-2], s)?;
        let scores = ops::expand_dims(&input.routing.scores, &[-1], s)?;
        let weighted = ops::multiply(&y, &scores, s)?;
        ops::astype(&ops::sum(&weighted, &[-2], false, s)?, y.dtype(), s)
    }
}
