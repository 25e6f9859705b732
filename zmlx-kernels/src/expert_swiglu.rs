//! Expert SwiGLU: gather each token's experts, gate and up matmuls, `silu(gate) * up`.
//!
//! The reference is mlx-lm's `SwitchGLU` up to the down projection: for many
//! (token, expert) pairs (at least 64) the pairs are first sorted by expert
//! (`argsort`) so that each expert's weights are read once; the order and its
//! inverse travel with the activations to the down projection.

use mlx::quantization::{gather_mm, gather_qmm};
use mlx::{ops, Array, Dtype, Error, Result, StreamOrDevice};

use crate::contract::{ExpertSwiGluOp, RouterOp, Support};
use crate::moe_gate::{RouterSpec, Routing};
use crate::weight::Weight;

/// mlx-lm sorts (token, expert) pairs by expert from this many pairs on.
pub const SORT_THRESHOLD: usize = 64;

/// Scratch in which the SwiGLU kernel that computes the router logits
/// ([`ExpertSwiGluOp::forward_router_routed`], CUDA) hands the logits from the
/// blocks that compute them to the others, with two counts that the kernel leaves
/// zeroed again. The kernel writes it although MLX sees it as an input, so two calls
/// may share a scratch only when one runs after the other: give each call site (each
/// MoE layer) its own. Calls that do run at once on one scratch can make the
/// kernel's blocks wait for logits that never come; they give up after a bound (one
/// second by default, `gpu::CudaVariants::with_router_wait_us`) with a trap, which
/// reaches the caller as MLX's "unspecified launch failure" error and leaves the
/// process's CUDA context unusable. (Not `Clone`: a clone would share the buffer.)
#[derive(Debug)]
pub struct RouterScratch {
    words: Array,
}

impl RouterScratch {
    /// uint32 words: the two counts, then room for the logits of up to
    /// [`crate::gpu::MAX_ROUTER_EXPERTS`] experts in a 16-bit dtype (two a word) or
    /// 32-bit one.
    pub const WORDS: usize = 2 + crate::gpu::MAX_ROUTER_EXPERTS as usize;

    /// A zeroed scratch, materialised now (the kernel needs a dense buffer of its
    /// own, not a broadcast of a constant).
    ///
    /// # Errors
    /// When MLX fails.
    pub fn new() -> Result<RouterScratch> {
        let words = Array::from_slice(
            &[0u32; RouterScratch::WORDS],
            &[RouterScratch::WORDS as i32],
        )?;
        words.eval()?;
        Ok(RouterScratch { words })
    }

    /// The words (uint32).
    pub fn array(&self) -> &Array {
        &self.words
    }
}

/// The router matmul that [`ExpertSwiGluOp::forward_router_routed`] computes inside
/// the op: the router's weight and the call site's scratch.
#[derive(Clone, Copy, Debug)]
pub struct RouterMatmul<'a> {
    /// The router's weight, `[experts, hidden]` (the CUDA kernel takes 8-bit affine).
    pub weight: &'a Weight,
    /// The call site's own scratch.
    pub scratch: &'a RouterScratch,
}

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
    if routing.indices.ndim() == 0 || x.ndim() == 0 {
        return Err(Error::invalid(
            "expert_swiglu",
            "activations and routing indices need at least one axis",
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

/// The fused expert SwiGLU: on a CPU stream one kernel gathers each token's experts,
/// runs both matmuls and the activation ([`crate::cpu::expert_swiglu`]), reading each
/// expert's weights once for all its tokens; on a CUDA (or Metal, not yet run on
/// Apple silicon) stream one GPU kernel does the same for decode-sized batches
/// ([`crate::gpu::expert_swiglu`]; on CUDA bit-identical to MLX, and only for the
/// shapes where that is established: [`crate::gpu::cuda_shape_support`], at least
/// [`crate::gpu::MIN_EXACT_PAIRS`] pairs); elsewhere the reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct FusedExpertSwiGlu;

struct SwiGluKernel {
    layout: crate::cpu_glue::WeightLayout,
    k: usize,
}

impl mlx::primitive::CpuKernel for SwiGluKernel {
    fn name(&self) -> &str {
        "zmlx_expert_swiglu"
    }

    fn params(&self) -> Vec<u8> {
        let mut p = (self.k as u64).to_le_bytes().to_vec();
        self.layout.params(&mut p);
        p
    }

    fn eval(
        &self,
        inputs: &[mlx::primitive::Input],
        outputs: &mut [mlx::primitive::Output],
    ) -> std::result::Result<(), mlx::primitive::KernelError> {
        let x = crate::cpu_glue::floats(&inputs[0])?;
        let indices = inputs[1].as_slice::<u32>()?;
        let tokens = indices.len() / self.k.max(1);
        let n = self.layout.n_inputs();
        let gate = self.layout.view(&inputs[2..2 + n])?;
        let up = self.layout.view(&inputs[2 + n..2 + 2 * n])?;
        crate::cpu::expert_swiglu(
            x,
            tokens,
            indices,
            self.k,
            &gate,
            &up,
            crate::cpu_glue::floats_mut(&mut outputs[0])?,
        )?;
        Ok(())
    }
}

impl FusedExpertSwiGlu {
    /// Whether [`ExpertSwiGluOp::forward_routed`] has a one-op kernel for this router
    /// and these weights on `device`: CUDA only (the router kernel's code inside the
    /// SwiGLU kernel), softmax top-k routing, where the router kernel and this
    /// SwiGLU each take the case.
    pub fn supports_routed(
        &self,
        spec: &RouterSpec,
        experts: i32,
        gate: &Weight,
        up: &Weight,
        device: mlx::Device,
    ) -> Support {
        if crate::gpu::backend_for(device) != Some(mlx::kernel::KernelBackend::Cuda) {
            return Support::No(
                "the routed SwiGLU kernel is CUDA-only; here the router and the SwiGLU \
                 run as two ops"
                    .into(),
            );
        }
        if let Support::No(why) = crate::moe_gate::FusedRouter.supports(spec, experts, device) {
            return Support::No(why);
        }
        if !matches!(spec, RouterSpec::SoftmaxTopK { .. }) {
            return Support::No("the routed SwiGLU kernel does softmax top-k routing".into());
        }
        self.supports(gate, up, device)
    }

    /// What both routing SwiGLU kernels need before their own router checks: the
    /// routed op's support, and activations in the weights' dtype.
    fn routing_kernel_takes(
        &self,
        x: &Array,
        spec: &RouterSpec,
        experts: i32,
        gate: &Weight,
        up: &Weight,
        device: mlx::Device,
    ) -> bool {
        self.supports_routed(spec, experts, gate, up, device)
            .is_yes()
            && x.dtype() == gate.activation_dtype()
    }
}

impl ExpertSwiGluOp for FusedExpertSwiGlu {
    fn name(&self) -> &'static str {
        "zmlx"
    }

    fn supports(&self, gate: &Weight, up: &Weight, device: mlx::Device) -> Support {
        if device.kind != mlx::DeviceType::Cpu {
            let Some(backend) = crate::gpu::backend_for(device) else {
                return Support::No(crate::gpu::no_backend_reason());
            };
            let on_cuda = backend == mlx::kernel::KernelBackend::Cuda;
            for w in [gate, up] {
                if let Support::No(why) = crate::gpu::weight_support(w) {
                    return Support::No(why);
                }
                if on_cuda {
                    if let Support::No(why) = crate::gpu::cuda_shape_support(w) {
                        return Support::No(why);
                    }
                }
            }
            if gate.quant() != up.quant() {
                return Support::No("gate and up projections differ in layout".into());
            }
            return Support::Yes;
        }
        for w in [gate, up] {
            if let Support::No(why) = crate::cpu_glue::cpu_support(w) {
                return Support::No(why);
            }
        }
        // Float weights stay on MLX's gather_mm (BLAS order is not reproduced).
        if let Support::No(why) = crate::cpu_glue::cpu_support(gate) {
            return Support::No(why);
        }
        match (
            crate::cpu_glue::WeightLayout::of(gate),
            crate::cpu_glue::WeightLayout::of(up),
        ) {
            (Ok(g), Ok(u)) if g == u => Support::Yes,
            (Ok(_), Ok(_)) => Support::No("gate and up projections differ in layout".into()),
            (Err(e), _) | (_, Err(e)) => Support::No(e),
        }
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
        let device = s.device()?;
        if !self.supports(gate, up, device).is_yes() || x.dtype() != gate.activation_dtype() {
            return ReferenceExpertSwiGlu.forward(x, gate, up, routing, s);
        }
        if let Some(backend) = crate::gpu::backend_for(device) {
            // Prefill-sized batches: the reference sorts pairs by expert and runs
            // MLX's GEMM, which beats a per-row kernel there.
            // and on CUDA batches under MIN_EXACT_PAIRS take MLX's gather_qmv, whose
            // accumulation the kernel does not reproduce.
            let pairs = routing.indices.size();
            let too_few =
                backend == mlx::kernel::KernelBackend::Cuda && pairs < crate::gpu::MIN_EXACT_PAIRS;
            if pairs >= crate::gpu::MAX_PAIRS || too_few {
                return ReferenceExpertSwiGlu.forward(x, gate, up, routing, s);
            }
            let h = crate::gpu::expert_swiglu(backend, x, &routing.indices, gate, up, s)?;
            return Ok(ExpertHidden {
                // Already the reference layout: [..., k, 1, inter] in routing order.
                h,
                idx: routing.indices.clone(),
                inv_order: None,
                indices_shape: routing.indices.shape().to_vec(),
            });
        }
        let layout = crate::cpu_glue::WeightLayout::of(gate)
            .map_err(|e| Error::invalid("expert_swiglu", e))?;
        let indices_shape = routing.indices.shape().to_vec();
        let k = *indices_shape.last().expect("indices have an expert axis");
        let mut h_shape = indices_shape.clone();
        h_shape.push(gate.out_features());
        let mut inputs = vec![x, &routing.indices];
        inputs.extend(gate.arrays());
        inputs.extend(up.arrays());
        let kernel = SwiGluKernel {
            layout,
            k: k as usize,
        };
        let h = mlx::primitive::cpu_primitive(
            std::sync::Arc::new(kernel),
            &inputs,
            &[mlx::primitive::OutputSpec::new(&h_shape, x.dtype())],
            s,
        )?
        .into_iter()
        .next()
        .expect("one output");
        // The reference layout: [..., k, 1, inter] in routing order.
        let h = ops::expand_dims(&h, &[-2], s)?;
        Ok(ExpertHidden {
            h,
            idx: routing.indices.clone(),
            inv_order: None,
            indices_shape,
        })
    }

    fn forward_routed(
        &self,
        x: &Array,
        logits: &Array,
        spec: &RouterSpec,
        gate: &Weight,
        up: &Weight,
        s: StreamOrDevice,
    ) -> Result<Option<(ExpertHidden, Routing)>> {
        let RouterSpec::SoftmaxTopK { k, .. } = *spec else {
            return Ok(None);
        };
        let device = s.device()?;
        let experts = crate::moe_gate::check_router_args(logits, spec)?;
        if !self.routing_kernel_takes(x, spec, experts, gate, up, device)
            || logits.dtype() != x.dtype()
        {
            return Ok(None);
        }
        // The pair counts the two-op path gives the kernels (see `forward`).
        let pairs = logits.size() / experts.max(1) as usize * k as usize;
        if !(crate::gpu::MIN_EXACT_PAIRS..crate::gpu::MAX_PAIRS).contains(&pairs) {
            return Ok(None);
        }
        let (h, indices, scores) = crate::gpu::routed_expert_swiglu(
            mlx::kernel::KernelBackend::Cuda,
            x,
            logits,
            spec,
            gate,
            up,
            s,
        )?;
        Ok(Some(routed_outputs(h, indices, scores)))
    }

    fn forward_router_routed(
        &self,
        x: &Array,
        router: &RouterMatmul<'_>,
        spec: &RouterSpec,
        gate: &Weight,
        up: &Weight,
        s: StreamOrDevice,
    ) -> Result<Option<(ExpertHidden, Routing)>> {
        let RouterSpec::SoftmaxTopK { k, .. } = *spec else {
            return Ok(None);
        };
        let experts = gate.experts();
        let device = s.device()?;
        if !crate::gpu::current_cuda_variants().fused_router_on()
            || !self.routing_kernel_takes(x, spec, experts, gate, up, device)
            || !crate::gpu::router_weight_support(router.weight, x, experts).is_yes()
            || (k as usize) < crate::gpu::MIN_EXACT_PAIRS
        {
            return Ok(None);
        }
        let (h, indices, scores) = crate::gpu::router_expert_swiglu(
            mlx::kernel::KernelBackend::Cuda,
            x,
            router,
            spec,
            gate,
            up,
            s,
        )?;
        Ok(Some(routed_outputs(h, indices, scores)))
    }
}

/// The routed kernels' outputs as the two-op path returns them.
fn routed_outputs(h: Array, indices: Array, scores: Array) -> (ExpertHidden, Routing) {
    let indices_shape = indices.shape().to_vec();
    (
        ExpertHidden {
            h,
            idx: indices.clone(),
            inv_order: None,
            indices_shape,
        },
        Routing { indices, scores },
    )
}

#[cfg(test)]
mod tests {
    use super::{FusedExpertSwiGlu, ReferenceExpertSwiGlu, RouterMatmul, RouterScratch};
    use crate::contract::ExpertSwiGluOp;
    use crate::moe_gate::RouterSpec;
    use crate::weight::Weight;
    use mlx::quantization::{quantize, QuantSpec};
    use mlx::{random, Device, Dtype, StreamOrDevice};

    /// Off CUDA no implementation computes the router logits inside the op, so the
    /// model takes the router matmul and the two-op path; neither may fail.
    #[test]
    fn router_inside_the_op_declines_off_cuda() {
        let s = StreamOrDevice::Device(Device::cpu());
        let key = random::key(3).unwrap();
        let q = |shape: &[i32], bits: i32| {
            let w = random::normal(shape, Dtype::Bfloat16, 0.0, 0.02, Some(&key), s).unwrap();
            Weight::Quantized(quantize(&w, QuantSpec::affine(64, bits), s).unwrap())
        };
        let (gate, up, router) = (q(&[8, 128, 256], 4), q(&[8, 128, 256], 4), q(&[8, 256], 8));
        let x = random::normal(&[1, 256], Dtype::Bfloat16, 0.0, 1.0, Some(&key), s).unwrap();
        let scratch = RouterScratch::new().unwrap();
        let rm = RouterMatmul {
            weight: &router,
            scratch: &scratch,
        };
        let spec = RouterSpec::SoftmaxTopK {
            k: 2,
            normalize: true,
        };
        let ops: [&dyn ExpertSwiGluOp; 2] = [&FusedExpertSwiGlu, &ReferenceExpertSwiGlu];
        for op in ops {
            let got = op
                .forward_router_routed(&x, &rm, &spec, &gate, &up, s)
                .unwrap();
            assert!(
                got.is_none(),
                "{} computed the router on the CPU",
                op.name()
            );
        }
    }

    /// The kernel needs the two counts at zero and room after them for the logits of
    /// the most experts it takes, two 16-bit values a word.
    #[test]
    fn router_scratch_starts_zeroed_with_room_for_every_logit() {
        let scratch = RouterScratch::new().unwrap();
        let words = scratch.array().to_vec::<u32>().unwrap();
        assert_eq!(words.len(), RouterScratch::WORDS);
        assert!(words.iter().all(|&w| w == 0));
        assert!(RouterScratch::WORDS >= 2 + crate::gpu::MAX_ROUTER_EXPERTS as usize / 2);
    }
}
