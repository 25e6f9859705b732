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

/// The fused linear map: on a CPU stream, zmlx's multi-threaded kernel reading each
/// quantized weight once ([`crate::cpu::qmm`]); elsewhere, or for weights it does not
/// take (see [`LinearOp::supports`]), the reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct FusedLinear;

struct QmmKernel {
    layout: crate::cpu_glue::WeightLayout,
}

impl mlx::primitive::CpuKernel for QmmKernel {
    fn name(&self) -> &str {
        "zmlx_qmm"
    }

    fn params(&self) -> Vec<u8> {
        let mut p = Vec::new();
        self.layout.params(&mut p);
        p
    }

    fn eval(
        &self,
        inputs: &[mlx::primitive::Input],
        outputs: &mut [mlx::primitive::Output],
    ) -> std::result::Result<(), mlx::primitive::KernelError> {
        let x = crate::cpu_glue::floats(&inputs[0])?;
        let m = x.len() / self.layout.shape.cols.max(1);
        let w = self.layout.view(&inputs[1..])?;
        crate::cpu::qmm(x, m, &w, crate::cpu_glue::floats_mut(&mut outputs[0])?)?;
        Ok(())
    }
}

impl LinearOp for FusedLinear {
    fn name(&self) -> &'static str {
        "zmlx"
    }

    fn supports(&self, w: &Weight, device: mlx::Device) -> Support {
        if device.kind != mlx::DeviceType::Cpu {
            return Support::No("no fused GPU linear kernel (MLX's own is used)".into());
        }
        crate::cpu_glue::cpu_support(w)
    }

    fn forward(&self, x: &Array, w: &Weight, s: StreamOrDevice) -> Result<Array> {
        let device = s.device()?;
        if !self.supports(w, device).is_yes() || x.dtype() != w.activation_dtype() {
            return ReferenceLinear.forward(x, w, s);
        }
        let k = x.shape().last().copied().unwrap_or(0);
        if k != w.in_features() {
            return Err(Error::invalid(
                "linear",
                format!("x has {k} features, the weight takes {}", w.in_features()),
            ));
        }
        let layout =
            crate::cpu_glue::WeightLayout::of(w).map_err(|e| Error::invalid("linear", e))?;
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("x has a feature axis") = w.out_features();
        let mut inputs = vec![x];
        inputs.extend(w.arrays());
        let outs = mlx::primitive::cpu_primitive(
            std::sync::Arc::new(QmmKernel { layout }),
            &inputs,
            &[mlx::primitive::OutputSpec::new(&out_shape, x.dtype())],
            s,
        )?;
        Ok(outs.into_iter().next().expect("one output"))
    }
}
