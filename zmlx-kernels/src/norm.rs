//! RMS norm: the reference is MLX's `fast::rms_norm`, as mlx's `nn.RMSNorm` calls it.

use mlx::{fast, Array, Result, StreamOrDevice};

use crate::contract::NormOp;

/// MLX's fused RMS norm.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceNorm;

impl NormOp for ReferenceNorm {
    fn name(&self) -> &'static str {
        "mlx"
    }

    fn rms_norm(&self, x: &Array, weight: &Array, eps: f32, s: StreamOrDevice) -> Result<Array> {
        fast::rms_norm(x, Some(weight), eps, s)
    }
}
