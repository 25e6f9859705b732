//! Glue between MLX custom CPU primitives and the slice kernels of [`crate::cpu`].

use mlx::primitive::{Input, KernelError as PrimError, Output};
use mlx::quantization::QuantMode;
use mlx::Dtype;

use crate::contract::Support;
use crate::cpu::{self, Floats, FloatsMut, WeightShape, Weights};
use crate::weight::Weight;

/// An input buffer as kernel floats.
pub(crate) fn floats<'a>(input: &'a Input) -> Result<Floats<'a>, PrimError> {
    Ok(match input.dtype() {
        Dtype::Float32 => Floats::F32(input.as_slice()?),
        Dtype::Float16 => Floats::F16(input.as_slice()?),
        Dtype::Bfloat16 => Floats::Bf16(input.as_slice()?),
        d => return Err(format!("expected a float buffer, got {d:?}").into()),
    })
}

/// An output buffer as kernel floats.
pub(crate) fn floats_mut<'a>(out: &'a mut Output) -> Result<FloatsMut<'a>, PrimError> {
    Ok(match out.dtype() {
        Dtype::Float32 => FloatsMut::F32(out.as_mut_slice()?),
        Dtype::Float16 => FloatsMut::F16(out.as_mut_slice()?),
        Dtype::Bfloat16 => FloatsMut::Bf16(out.as_mut_slice()?),
        d => return Err(format!("expected a float buffer, got {d:?}").into()),
    })
}

/// How a weight is laid out in a primitive's inputs (its params are part of the
/// primitive's identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WeightLayout {
    pub shape: WeightShape,
    /// `(bits, group_size)` when quantized.
    pub quant: Option<(u32, usize)>,
}

impl WeightLayout {
    /// The layout of `w`, or why the CPU kernels cannot take it.
    pub(crate) fn of(w: &Weight) -> Result<WeightLayout, String> {
        let shape = WeightShape::stacked(
            w.experts() as usize,
            w.out_features() as usize,
            w.in_features() as usize,
        );
        let quant = match w {
            Weight::Float(a) => {
                if !a.dtype().is_float() || a.dtype() == Dtype::Float64 {
                    return Err(format!("float weight of dtype {:?}", a.dtype()));
                }
                None
            }
            Weight::Quantized(q) => {
                if q.spec.mode != QuantMode::Affine {
                    return Err(format!(
                        "{} quantization (only affine is fused)",
                        q.spec.mode.as_str()
                    ));
                }
                let spec = cpu::QuantSpec::new(q.spec.bits as u32, q.spec.group_size as usize)
                    .map_err(|e| e.to_string())?;
                if q.biases.is_none() {
                    return Err("affine weight without biases".into());
                }
                Some((spec.bits(), spec.group_size()))
            }
        };
        Ok(WeightLayout { shape, quant })
    }

    /// The number of primitive inputs the weight takes.
    pub(crate) fn n_inputs(&self) -> usize {
        if self.quant.is_some() {
            3
        } else {
            1
        }
    }

    /// Bytes that identify the layout in a primitive's params.
    pub(crate) fn params(&self, out: &mut Vec<u8>) {
        for v in [self.shape.experts, self.shape.rows, self.shape.cols] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        let (b, g) = self.quant.unwrap_or((0, 0));
        out.extend_from_slice(&b.to_le_bytes());
        out.extend_from_slice(&(g as u64).to_le_bytes());
    }

    /// The kernel view of the weight held by `inputs` (its first `n_inputs()`).
    pub(crate) fn view<'a>(&self, inputs: &'a [Input]) -> Result<Weights<'a>, PrimError> {
        Ok(match self.quant {
            Some((bits, gs)) => Weights::quantized(
                inputs[0].as_slice::<u32>()?,
                floats(&inputs[1])?,
                floats(&inputs[2])?,
                self.shape,
                cpu::QuantSpec::new(bits, gs)?,
            )?,
            None => Weights::float(floats(&inputs[0])?, self.shape)?,
        })
    }
}

/// Whether the fused CPU kernels take `w` with activations of the weight's dtype.
/// Float weights stay on MLX's own matmuls: only the quantized chains are emulated
/// bit for bit (see `cpu`), so only they keep the model's output unchanged.
pub(crate) fn cpu_support(w: &Weight) -> Support {
    if let Weight::Float(a) = w {
        return Support::No(format!(
            "float {:?} weights: MLX's own matmul is kept (fused kernels take quantized weights)",
            a.dtype()
        ));
    }
    match WeightLayout::of(w) {
        Ok(_) => Support::Yes,
        Err(why) => Support::No(why),
    }
}
