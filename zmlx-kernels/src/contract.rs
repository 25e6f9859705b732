//! The contracts of the patchable ops: one trait per slot.
//!
//! A model calls these ops through a slot table (see `zmlx-patch`). The reference
//! implementation of each trait is the plain-MLX op sequence that mlx-lm runs; fused
//! implementations compute the same thing with fewer, larger kernels. An
//! implementation states what it supports ([`Support`]) so that the patch layer can
//! keep the reference, and say why, for anything else.

use mlx::{Array, Result, StreamOrDevice};

use crate::down_combine::{DownCombineInput, NextNorm};
use crate::expert_swiglu::{ExpertHidden, RouterMatmul};
use crate::moe_gate::{RouterSpec, Routing};
use crate::weight::Weight;

/// Whether an implementation can run a case, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// It runs this case.
    Yes,
    /// It does not; the reason is shown in the patch report.
    No(String),
}

impl Support {
    /// True for [`Support::Yes`].
    pub fn is_yes(&self) -> bool {
        matches!(self, Support::Yes)
    }
}

/// `y = x @ w.T` for a float or quantized `w`.
pub trait LinearOp: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Whether this implementation handles `w` on `device`.
    fn supports(&self, w: &Weight, device: mlx::Device) -> Support;
    /// Computes `x @ w.T` over the last axis of `x`.
    ///
    /// # Errors
    /// On shape or dtype mismatches, or when MLX fails.
    fn forward(&self, x: &Array, w: &Weight, s: StreamOrDevice) -> Result<Array>;
}

/// Router gating: expert indices and weights from router logits.
pub trait RouterOp: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Whether this implementation handles `spec` for `experts` experts on `device`.
    fn supports(&self, spec: &RouterSpec, experts: i32, device: mlx::Device) -> Support;
    /// Routes each token (rows of `logits`, `[..., experts]`).
    ///
    /// # Errors
    /// On a bad spec or shapes, or when MLX fails.
    fn route(&self, logits: &Array, spec: &RouterSpec, s: StreamOrDevice) -> Result<Routing>;
}

/// Gather + gate and up matmuls + `silu(gate) * up` for each token's experts.
pub trait ExpertSwiGluOp: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Whether this implementation handles these expert weights on `device`.
    fn supports(&self, gate: &Weight, up: &Weight, device: mlx::Device) -> Support;
    /// `x` is `[..., hidden]`; returns the activations of every (token, expert).
    ///
    /// # Errors
    /// On shape or dtype mismatches, or when MLX fails.
    fn forward(
        &self,
        x: &Array,
        gate: &Weight,
        up: &Weight,
        routing: &Routing,
        s: StreamOrDevice,
    ) -> Result<ExpertHidden>;

    /// Routes each token (`logits`, `[..., experts]`, by `spec`) and computes
    /// [`forward`](Self::forward) on that routing in one op; returns the activations
    /// and the routing, the same arrays as the router and `forward` would give.
    /// `Ok(None)` where the implementation has no such op for this case: the caller
    /// then routes and calls `forward`. The default has none.
    ///
    /// # Errors
    /// On shape or dtype mismatches, or when MLX fails.
    fn forward_routed(
        &self,
        x: &Array,
        logits: &Array,
        spec: &RouterSpec,
        gate: &Weight,
        up: &Weight,
        s: StreamOrDevice,
    ) -> Result<Option<(ExpertHidden, Routing)>> {
        let _ = (x, logits, spec, gate, up, s);
        Ok(None)
    }

    /// [`forward_routed`](Self::forward_routed) that also computes the router
    /// logits (`x @ router.T`, `router` being `[experts, hidden]`) inside the op, bit
    /// for bit as MLX's matmul would: the router, the routing and the expert SwiGLU
    /// in one op. The scratch in `router` is the call site's own (see
    /// [`RouterScratch`](crate::expert_swiglu::RouterScratch)).
    /// `Ok(None)` where the implementation has no such op for this case: the caller
    /// then computes the logits and calls `forward_routed`. The default has none.
    ///
    /// # Errors
    /// On shape or dtype mismatches, or when MLX fails.
    fn forward_router_routed(
        &self,
        x: &Array,
        router: &RouterMatmul<'_>,
        spec: &RouterSpec,
        gate: &Weight,
        up: &Weight,
        s: StreamOrDevice,
    ) -> Result<Option<(ExpertHidden, Routing)>> {
        let _ = (x, router, spec, gate, up, s);
        Ok(None)
    }
}

/// Down projection of each (token, expert) activation and the weighted sum over
/// a token's experts.
pub trait DownCombineOp: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// Whether this implementation handles `down` on `device`.
    fn supports(&self, down: &Weight, device: mlx::Device) -> Support;
    /// Returns `[..., hidden]` in the activation dtype.
    ///
    /// # Errors
    /// On shape or dtype mismatches, or when MLX fails.
    fn forward(&self, input: &DownCombineInput<'_>, s: StreamOrDevice) -> Result<Array>;

    /// [`forward`](Self::forward) and the RMS norm of its output (`norm`: the next
    /// layer's input norm, say) in one op: returns the output and its norm, the
    /// same arrays as `forward` then MLX's `fast::rms_norm` would give. `Ok(None)`
    /// where the implementation has no such op for this case: the caller then runs
    /// `forward` and the norm. The default has none.
    ///
    /// # Errors
    /// On shape or dtype mismatches, or when MLX fails.
    fn forward_normed(
        &self,
        input: &DownCombineInput<'_>,
        norm: &NextNorm<'_>,
        s: StreamOrDevice,
    ) -> Result<Option<(Array, Array)>> {
        let _ = (input, norm, s);
        Ok(None)
    }
}

/// RMS normalisation over the last axis.
pub trait NormOp: Send + Sync {
    /// A short name for reports.
    fn name(&self) -> &'static str;
    /// `x / sqrt(mean(x^2) + eps) * weight`.
    ///
    /// # Errors
    /// On shape mismatches, or when MLX fails.
    fn rms_norm(&self, x: &Array, weight: &Array, eps: f32, s: StreamOrDevice) -> Result<Array>;
}
