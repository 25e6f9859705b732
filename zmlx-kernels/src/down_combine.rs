//! Down projection of each (token, expert) activation and the weighted sum over a
//! token's experts.
//!
//! The reference is the end of mlx-lm's `SwitchGLU` (down `gather_qmm`, unsort,
//! squeeze) and of its MoE block: `(y * scores[..., None]).sum(-2).astype(y.dtype)`.

use mlx::{ops, Array, Error, Result, StreamOrDevice};

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
    /// Added to the combined output when given: `residual + combine` with MLX's
    /// `add`, in the activation dtype, so a layer's `h + moe(x)` is one op; shape
    /// `[..., hidden]` like the output.
    pub residual: Option<&'a Array>,
}

/// The RMS norm that follows a down + combine op (the next layer's input norm, or a
/// model's final norm), for [`DownCombineOp::forward_normed`].
#[derive(Clone, Copy, Debug)]
pub struct NextNorm<'a> {
    /// The norm's weight, `[hidden]` in the activation dtype.
    pub weight: &'a Array,
    /// Added to the mean square.
    pub eps: f32,
    /// Scratch the fused kernel counts its finished blocks in.
    pub counter: &'a NormCounter,
}

/// Zeroed scratch that the normalising down kernel counts finished blocks in (one
/// slot per token; the kernel leaves it zeroed again). The kernel writes it
/// although MLX sees it as an input, so two calls may share a counter only when
/// one runs after the other: give each call site (each MoE layer) its own. (Not
/// `Clone`: a clone would share the buffer.)
#[derive(Debug)]
pub struct NormCounter {
    counts: Array,
}

impl NormCounter {
    /// The most tokens one call takes (the fused GPU down kernel's batch limit).
    pub const SLOTS: usize = crate::expert_swiglu::SORT_THRESHOLD;

    /// A zeroed counter of [`NormCounter::SLOTS`] slots, materialised now (the
    /// kernel needs a dense buffer of its own, not a broadcast of a constant).
    ///
    /// # Errors
    /// When MLX fails.
    pub fn new() -> Result<NormCounter> {
        let counts = Array::from_slice(&[0u32; NormCounter::SLOTS], &[NormCounter::SLOTS as i32])?;
        counts.eval()?;
        Ok(NormCounter { counts })
    }

    /// The counts (uint32).
    pub fn array(&self) -> &Array {
        &self.counts
    }

    /// How many tokens a call may have.
    pub fn slots(&self) -> usize {
        self.counts.size()
    }
}

impl DownCombineInput<'_> {
    /// The output shape: the routing's leading axes, then the hidden size.
    fn out_shape(&self) -> Vec<i32> {
        let ish = &self.hidden.indices_shape;
        let mut shape = ish[..ish.len().saturating_sub(1)].to_vec();
        shape.push(self.down.out_features());
        shape
    }

    /// Whether the activations, the weights' activation dtype and the scores share
    /// one dtype (what the fused kernels take; anything else goes to the reference).
    fn dtypes_agree(&self) -> bool {
        let dt = self.hidden.h.dtype();
        dt == self.down.activation_dtype() && self.routing.scores.dtype() == dt
    }

    /// Checks that the down projections take the activations' width.
    fn check_down(&self) -> Result<()> {
        let inter = self.hidden.h.shape().last().copied().unwrap_or(0);
        self.down.check_shape(
            "down_proj",
            Some(self.down.experts()),
            self.down.out_features(),
            inter,
        )
    }

    /// The residual, if any, after checking it has the output's shape and the
    /// activations' dtype (no broadcasting: the fused kernels add element for
    /// element).
    fn checked_residual(&self) -> Result<Option<&Array>> {
        let Some(r) = self.residual else {
            return Ok(None);
        };
        let want = self.out_shape();
        if r.shape() != want.as_slice() {
            return Err(Error::invalid(
                "down_combine",
                format!(
                    "residual of shape {:?}, the output is {want:?}: pass the residual \
                     stream with exactly the output's shape (no broadcasting)",
                    r.shape()
                ),
            ));
        }
        let dt = self.hidden.h.dtype();
        if r.dtype() != dt {
            return Err(Error::invalid(
                "down_combine",
                format!(
                    "residual of dtype {:?}, the activations are {dt:?}: cast the residual \
                     to the activation dtype",
                    r.dtype()
                ),
            ));
        }
        Ok(Some(r))
    }
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
        let residual = input.checked_residual()?;
        let hid = input.hidden;
        input.check_down()?;
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
        let y = ops::astype(&ops::sum(&weighted, &[-2], false, s)?, y.dtype(), s)?;
        match residual {
            // Residual first: the decoder layer computes `h + r`.
            Some(r) => ops::add(r, &y, s),
            None => Ok(y),
        }
    }
}

/// The fused down projection + combine: on a CPU stream one kernel computes each
/// token's weighted sum of expert outputs without a `[tokens, k, hidden]`
/// intermediate ([`crate::cpu::expert_down_combine`]); on a CUDA (or Metal, not yet
/// run on Apple silicon) stream one GPU kernel for decode-sized batches
/// ([`crate::gpu::down_combine`]; on CUDA bit-identical to MLX on the shapes
/// [`crate::gpu::cuda_shape_support`] admits); elsewhere the reference. A residual
/// ([`DownCombineInput::residual`]) is added inside the same kernel, with MLX's
/// arithmetic for `add` (CPU: both widened to f32, added, rounded once to the
/// activation dtype; CUDA: MLX's `Add` functor on T).
#[derive(Clone, Copy, Debug, Default)]
pub struct FusedDownCombine;

struct DownKernel {
    layout: crate::cpu_glue::WeightLayout,
    k: usize,
    /// Whether the last input is a residual added to the output.
    residual: bool,
}

impl mlx::primitive::CpuKernel for DownKernel {
    fn name(&self) -> &str {
        "zmlx_down_combine"
    }

    fn params(&self) -> Vec<u8> {
        let mut p = (self.k as u64).to_le_bytes().to_vec();
        self.layout.params(&mut p);
        p.push(u8::from(self.residual));
        p
    }

    fn eval(
        &self,
        inputs: &[mlx::primitive::Input],
        outputs: &mut [mlx::primitive::Output],
    ) -> std::result::Result<(), mlx::primitive::KernelError> {
        let h = crate::cpu_glue::floats(&inputs[0])?;
        let indices = inputs[1].as_slice::<u32>()?;
        let scores = crate::cpu_glue::floats(&inputs[2])?;
        let tokens = indices.len() / self.k.max(1);
        let down = self.layout.view(&inputs[3..])?;
        crate::cpu::expert_down_combine(
            h,
            tokens,
            indices,
            self.k,
            scores,
            &down,
            crate::cpu_glue::floats_mut(&mut outputs[0])?,
        )?;
        if self.residual {
            let res = inputs.last().expect("the residual is the last input");
            crate::cpu::add_residual(
                crate::cpu_glue::floats(res)?,
                crate::cpu_glue::floats_mut(&mut outputs[0])?,
            )?;
        }
        Ok(())
    }
}

impl FusedDownCombine {
    /// Whether [`DownCombineOp::forward_normed`] has a fused op for `down` on
    /// `device`: the CUDA kernel (where [`FusedDownCombine`] runs it) with the norm
    /// in its tail. Per call it also needs one token's experts to fill MLX's norm
    /// launch (4 or more experts a token at hidden sizes over 512 bf16 values);
    /// other calls return `None`.
    pub fn supports_normed(&self, down: &Weight, device: mlx::Device) -> Support {
        match crate::gpu::backend_for(device) {
            Some(mlx::kernel::KernelBackend::Cuda) => self.supports(down, device),
            Some(_) => Support::No("the normalising down kernel is CUDA only".into()),
            None if device.kind == mlx::DeviceType::Cpu => {
                Support::No("the CPU kernels keep the norm as its own op".into())
            }
            None => Support::No(crate::gpu::no_backend_reason()),
        }
    }

    /// The GPU backend whose kernel takes this call, or `None` where the reference
    /// must (prefill-sized batches, sorted activations, and on CUDA batches or
    /// expert counts outside what the kernel reproduces).
    fn gpu_backend(
        &self,
        input: &DownCombineInput<'_>,
        device: mlx::Device,
    ) -> Result<Option<mlx::kernel::KernelBackend>> {
        let Some(backend) = crate::gpu::backend_for(device) else {
            return Ok(None);
        };
        let hid = input.hidden;
        // Prefill-sized batches (and activations the reference sorted) keep the
        // reference: sorted pairs and MLX's GEMM.
        // On CUDA, batches under MIN_EXACT_PAIRS take MLX's gather_qmv, whose
        // accumulation the kernel does not reproduce.
        // The CUDA kernel also caps the experts per token.
        let pairs = input.routing.indices.size();
        let k = input.routing.indices.shape().last().copied().unwrap_or(1);
        let outside = backend == mlx::kernel::KernelBackend::Cuda
            && (pairs < crate::gpu::MIN_EXACT_PAIRS || k > crate::gpu::MAX_CUDA_COMBINE_K);
        if hid.inv_order.is_some() || pairs >= crate::gpu::MAX_PAIRS || outside {
            return Ok(None);
        }
        input.check_down()?;
        Ok(Some(backend))
    }
}

impl DownCombineOp for FusedDownCombine {
    fn name(&self) -> &'static str {
        "zmlx"
    }

    fn supports(&self, down: &Weight, device: mlx::Device) -> Support {
        if device.kind != mlx::DeviceType::Cpu {
            let Some(backend) = crate::gpu::backend_for(device) else {
                return Support::No(crate::gpu::no_backend_reason());
            };
            if let Support::No(why) = crate::gpu::weight_support(down) {
                return Support::No(why);
            }
            if backend == mlx::kernel::KernelBackend::Cuda {
                return crate::gpu::cuda_shape_support(down);
            }
            return Support::Yes;
        }
        crate::cpu_glue::cpu_support(down)
    }

    fn forward(&self, input: &DownCombineInput<'_>, s: StreamOrDevice) -> Result<Array> {
        // Checked here too so that the kernels never see a mis-shaped residual (the
        // reference checks it on every fallback).
        let residual = input.checked_residual()?;
        let hid = input.hidden;
        let dtype = hid.h.dtype();
        let device = s.device()?;
        if !self.supports(input.down, device).is_yes() || !input.dtypes_agree() {
            return ReferenceDownCombine.forward(input, s);
        }
        if let Some(backend) = self.gpu_backend(input, device)? {
            return crate::gpu::down_combine(
                backend,
                &hid.h,
                &input.routing.indices,
                &input.routing.scores,
                input.down,
                residual,
                s,
            );
        }
        if crate::gpu::backend_for(device).is_some() {
            return ReferenceDownCombine.forward(input, s);
        }
        input.check_down()?;
        let layout = crate::cpu_glue::WeightLayout::of(input.down)
            .map_err(|e| Error::invalid("down_combine", e))?;
        // Activations sorted by expert (the reference's prefill path) go back to
        // routing order first; the kernel groups by expert itself.
        let h = match &hid.inv_order {
            Some(inv) => ops::take(&hid.h, inv, Some(0), s)?,
            None => hid.h.clone(),
        };
        let indices = &input.routing.indices;
        let k = *hid
            .indices_shape
            .last()
            .expect("indices have an expert axis");
        let y_shape = input.out_shape();
        let mut inputs = vec![&h, indices, &input.routing.scores];
        inputs.extend(input.down.arrays());
        // The residual goes last (the weight's inputs start at index 3); MLX hands it
        // over row-contiguous, as every input.
        inputs.extend(residual);
        let kernel = DownKernel {
            layout,
            k: k as usize,
            residual: residual.is_some(),
        };
        let y = mlx::primitive::cpu_primitive(
            std::sync::Arc::new(kernel),
            &inputs,
            &[mlx::primitive::OutputSpec::new(&y_shape, dtype)],
            s,
        )?;
        Ok(y.into_iter().next().expect("one output"))
    }

    fn forward_normed(
        &self,
        input: &DownCombineInput<'_>,
        norm: &NextNorm<'_>,
        s: StreamOrDevice,
    ) -> Result<Option<(Array, Array)>> {
        let residual = input.checked_residual()?;
        let hid = input.hidden;
        let dtype = hid.h.dtype();
        let device = s.device()?;
        if !self.supports_normed(input.down, device).is_yes()
            || !input.dtypes_agree()
            || norm.weight.dtype() != dtype
            || norm.weight.shape() != [input.down.out_features()]
        {
            return Ok(None);
        }
        let Some(backend) = self.gpu_backend(input, device)? else {
            return Ok(None);
        };
        // The norm's launch needs as many threads a block as MLX's (the kernel's
        // blocks have a warp per expert, up to 8), and a counter slot per token.
        let k = input.routing.indices.shape().last().copied().unwrap_or(1);
        let tokens = input.routing.indices.size() / k.max(1) as usize;
        let need = crate::norm::rms_threads(input.down.out_features(), dtype);
        let threads = crate::gpu::down_combine_block_threads(k);
        if need.is_none_or(|n| threads < n) || tokens > norm.counter.slots() {
            return Ok(None);
        }
        crate::gpu::down_combine_normed(
            backend,
            &hid.h,
            &input.routing.indices,
            &input.routing.scores,
            input.down,
            residual,
            norm,
            s,
        )
        .map(Some)
    }
}
