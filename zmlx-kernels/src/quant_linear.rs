//! Linear layers `x @ w.T`: the reference (MLX's `quantized_matmul` or `matmul`, as
//! mlx's `nn.QuantizedLinear` and `nn.Linear` call them).

use mlx::quantization::quantized_matmul;
use mlx::{ops, Array, Error, Result, StreamOrDevice};

use crate::contract::{LinearOp, Support};
use crate::weight::Weight;

/// The plain-MLX linear map.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceLinear;

impl LinearOp for ReferenceLinear {
    fn name(&self) -> &'static str {
        "mlx"
    }

    fn supports(&self, _w: &Weight, _device: mlx::Device) -> Support {
        Support::Yes
    }

    fn forward(&self, x: &Array, w: &Weight, s: StreamOrDevice) -> Result<Array> {
        let k = x.shape().last().copied().unwrap_or(0);
        if k != w.in_features() {
            return Err(Error::invalid(
                "linear",
                format!("x has {k} features, the weight takes {}", w.in_features()),
            ));
        }
        match w {
            Weight::Float(w) => ops::matmul(x, &ops::transpose(w, &[], s)?, s),
            Weight::Quantized(q) => quantized_matmul(x, q, true, s),
        }
    }
}
