//! Router gating: which experts each token goes to, and with what weight.
//!
//! The reference follows mlx-lm exactly. For softmax routing (Qwen3-MoE, OLMoE,
//! Qwen2-MoE): `softmax(logits, precise)`, `argpartition(-k)` and the last `k`
//! indices, `take_along_axis`, optional renormalisation by the sum. The order of the
//! `k` experts of a token is whatever `argpartition` gives (unspecified); everything
//! downstream is a sum over them, so implementations may order them differently.

use mlx::{ops, Array, Dtype, Error, Result, StreamOrDevice};

use crate::contract::{RouterOp, Support};

/// How a model family routes tokens to experts.
#[derive(Clone, Debug, PartialEq)]
pub enum RouterSpec {
    /// softmax over all experts, top-k, optional renormalisation (Qwen3-MoE).
    SoftmaxTopK {
        /// Experts per token.
        k: i32,
        /// Divide the k weights by their sum.
        normalize: bool,
    },
}

impl RouterSpec {
    /// Experts per token.
    pub fn k(&self) -> i32 {
        match self {
            RouterSpec::SoftmaxTopK { k, .. } => *k,
        }
    }
}

/// The routing of a batch of tokens.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Expert indices, `[..., k]`, uint32.
    pub indices: Array,
    /// Expert weights, `[..., k]`, in the logits' dtype.
    pub scores: Array,
}

/// Checks `logits` against `spec`.
pub(crate) fn check_router_args(logits: &Array, spec: &RouterSpec) -> Result<i32> {
    let experts = logits.shape().last().copied().unwrap_or(0);
    let k = spec.k();
    if k < 1 || k > experts {
        return Err(Error::invalid(
            "moe_gate",
            format!("k = {k} must be between 1 and the number of experts ({experts})"),
        ));
    }
    if !logits.dtype().is_float() {
        return Err(Error::invalid(
            "moe_gate",
            format!("logits must be float, got {:?}", logits.dtype()),
        ));
    }
    Ok(experts)
}

/// mlx-lm's router op sequence.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceRouter;

impl RouterOp for ReferenceRouter {
    fn name(&self) -> &'static str {
        "mlx"
    }

    fn supports(&self, _spec: &RouterSpec, _experts: i32, _device: mlx::Device) -> Support {
        Support::Yes
    }

    fn route(&self, logits: &Array, spec: &RouterSpec, s: StreamOrDevice) -> Result<Routing> {
        let experts = check_router_args(logits, spec)?;
        match *spec {
            RouterSpec::SoftmaxTopK { k, normalize } => {
                let gates = ops::softmax(logits, &[-1], true, s)?;
                let part = ops::argpartition(&gates, -k, -1, s)?;
                let nd = part.ndim();
                let mut start = vec![0; nd];
                start[nd - 1] = experts - k;
                let stop = part.shape().to_vec();
                let inds = ops::slice(&part, &start, &stop, &vec![1; nd], s)?;
                let inds = ops::stop_gradient(&inds, s)?;
                let mut scores = ops::take_along_axis(&gates, &inds, -1, s)?;
                if normalize {
                    let total = ops::sum(&scores, &[-1], true, s)?;
                    scores = ops::divide(&scores, &total, s)?;
                }
                debug_assert_eq!(inds.dtype(), Dtype::Uint32);
                Ok(Routing {
                    indices: inds,
                    scores,
                })
            }
        }
    }
}

/// Fused router gating: on a CPU stream one kernel computes softmax, top-k and the
/// renormalisation with mlx-lm's roundings ([`crate::cpu::route`]); elsewhere the
/// reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct FusedRouter;

struct RouteKernel {
    k: usize,
    normalize: bool,
    experts: usize,
}

impl mlx::primitive::CpuKernel for RouteKernel {
    fn name(&self) -> &str {
        "zmlx_route"
    }

    fn params(&self) -> Vec<u8> {
        let mut p = (self.k as u64).to_le_bytes().to_vec();
        p.extend_from_slice(&(self.experts as u64).to_le_bytes());
        p.push(self.normalize as u8);
        p
    }

    fn eval(
        &self,
        inputs: &[mlx::primitive::Input],
        outputs: &mut [mlx::primitive::Output],
    ) -> std::result::Result<(), mlx::primitive::KernelError> {
        let logits = crate::cpu_glue::floats(&inputs[0])?;
        let tokens = logits.len() / self.experts.max(1);
        let (idx, scores) = outputs.split_at_mut(1);
        let gating = crate::cpu::Gating::SoftmaxTopK {
            top_k: self.k,
            renormalize: self.normalize,
        };
        crate::cpu::route(
            logits,
            tokens,
            self.experts,
            &gating,
            idx[0].as_mut_slice::<u32>()?,
            crate::cpu_glue::floats_mut(&mut scores[0])?,
        )?;
        Ok(())
    }
}

impl RouterOp for FusedRouter {
    fn name(&self) -> &'static str {
        "zmlx"
    }

    fn supports(&self, spec: &RouterSpec, experts: i32, device: mlx::Device) -> Support {
        if device.kind != mlx::DeviceType::Cpu {
            if crate::gpu::backend_for(device).is_none() {
                return Support::No("no fused kernel for this GPU backend".into());
            }
            if !crate::gpu::ROUTER_TIES_MATCH {
                return Support::No(
                    "the GPU router kernel exists (crate::gpu::route) but MLX's GPU \
                     argpartition order for tied gates is not established"
                        .into(),
                );
            }
            if experts > crate::gpu::MAX_ROUTER_EXPERTS || spec.k() > crate::gpu::MAX_ROUTER_K {
                return Support::No(format!(
                    "{experts} experts, top-{} (the GPU kernel takes up to 512 and 16)",
                    spec.k()
                ));
            }
            return Support::Yes;
        }
        if experts > 512 {
            return Support::No(format!("{experts} experts (the kernel takes up to 512)"));
        }
        Support::Yes
    }

    fn route(&self, logits: &Array, spec: &RouterSpec, s: StreamOrDevice) -> Result<Routing> {
        let experts = check_router_args(logits, spec)?;
        if !self.supports(spec, experts, s.device()?).is_yes() || logits.dtype() == Dtype::Float64 {
            return ReferenceRouter.route(logits, spec, s);
        }
        let RouterSpec::SoftmaxTopK { k, normalize } = *spec;
        if let Some(backend) = crate::gpu::backend_for(s.device()?) {
            let (indices, scores) = crate::gpu::route(backend, logits, k, normalize, s)?;
            return Ok(Routing { indices, scores });
        }
        let mut shape = logits.shape().to_vec();
        *shape.last_mut().expect("logits have an expert axis") = k;
        let kernel = RouteKernel {
            k: k as usize,
            normalize,
            experts: experts as usize,
        };
        let mut outs = mlx::primitive::cpu_primitive(
            std::sync::Arc::new(kernel),
            &[logits],
            &[
                mlx::primitive::OutputSpec::new(&shape, Dtype::Uint32),
                mlx::primitive::OutputSpec::new(&shape, logits.dtype()),
            ],
            s,
        )?
        .into_iter();
        let indices = outs.next().expect("two outputs");
        let scores = outs.next().expect("two outputs");
        Ok(Routing { indices, scores })
    }
}
