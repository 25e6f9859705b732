//! Token-to-expert dispatch for many tokens (prefill): the order that sorts the
//! (token, expert) pairs by expert, and its inverse.
//!
//! The reference is mlx-lm's `_gather_sort`: `order = argsort(indices.flatten())`
//! (MLX's argsort is stable) and `inv_order = argsort(order)`. The fused CPU op
//! computes both in one counting sort ([`crate::cpu::dispatch_into`]); being stable,
//! it gives exactly the reference's permutation. Decode needs none (a single token's
//! `k` experts are read directly).

use mlx::{ops, Array, Dtype, Error, Result, StreamOrDevice};

/// The permutation of the flattened pairs by expert, and its inverse (both uint32,
/// `[pairs]`).
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// Pair positions sorted by expert (stable).
    pub order: Array,
    /// `inverse[p]` is the position of pair `p` in `order`.
    pub inverse: Array,
}

fn check(indices: &Array) -> Result<()> {
    if indices.dtype() != Dtype::Uint32 {
        return Err(Error::invalid(
            "dispatch",
            format!("expert indices must be uint32, got {:?}", indices.dtype()),
        ));
    }
    Ok(())
}

/// mlx-lm's op sequence.
///
/// # Errors
/// For non-uint32 indices, or when MLX fails.
pub fn reference_dispatch(indices: &Array, s: StreamOrDevice) -> Result<Dispatch> {
    check(indices)?;
    let flat = ops::flatten(indices, 0, -1, s)?;
    let order = ops::argsort(&flat, 0, s)?;
    let inverse = ops::argsort(&order, 0, s)?;
    Ok(Dispatch { order, inverse })
}

struct DispatchKernel {
    experts: usize,
}

impl mlx::primitive::CpuKernel for DispatchKernel {
    fn name(&self) -> &str {
        "zmlx_dispatch"
    }

    fn params(&self) -> Vec<u8> {
        (self.experts as u64).to_le_bytes().to_vec()
    }

    fn eval(
        &self,
        inputs: &[mlx::primitive::Input],
        outputs: &mut [mlx::primitive::Output],
    ) -> std::result::Result<(), mlx::primitive::KernelError> {
        let indices = inputs[0].as_slice::<u32>()?;
        let (order, inverse) = outputs.split_at_mut(1);
        let mut offsets = vec![0u32; self.experts + 1];
        crate::cpu::dispatch_into(
            indices,
            self.experts,
            order[0].as_mut_slice::<u32>()?,
            inverse[0].as_mut_slice::<u32>()?,
            &mut offsets,
        )?;
        Ok(())
    }
}

/// The fused dispatch: one counting sort on a CPU stream; the reference elsewhere.
/// `experts` bounds the indices (an index `>= experts` is an error at evaluation).
///
/// # Errors
/// For non-uint32 indices, or when MLX fails.
pub fn fused_dispatch(indices: &Array, experts: usize, s: StreamOrDevice) -> Result<Dispatch> {
    check(indices)?;
    if s.device()?.kind != mlx::DeviceType::Cpu {
        return reference_dispatch(indices, s);
    }
    let n = indices.size() as i32;
    let mut outs = mlx::primitive::cpu_primitive(
        std::sync::Arc::new(DispatchKernel { experts }),
        &[indices],
        &[
            mlx::primitive::OutputSpec::new(&[n], Dtype::Uint32),
            mlx::primitive::OutputSpec::new(&[n], Dtype::Uint32),
        ],
        s,
    )?
    .into_iter();
    let order = outs.next().expect("two outputs");
    let inverse = outs.next().expect("two outputs");
    Ok(Dispatch { order, inverse })
}
