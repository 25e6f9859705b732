//! Router gating: which experts each token goes to, and with what weight.
//!
//! The reference follows mlx-lm exactly:
//! - [`RouterSpec::SoftmaxTopK`] (Qwen3-MoE, OLMoE, Qwen2-MoE): `softmax(logits,
//!   precise)`, `argpartition(-k)` and the last `k` indices, `take_along_axis`,
//!   optional renormalisation by the sum;
//! - [`RouterSpec::TopKSoftmax`] (Mixtral, GPT-OSS): `argpartition(-logits, k-1)` and
//!   the first `k` indices, `take_along_axis`, `softmax(precise)` over the k;
//! - [`RouterSpec::SigmoidGroupTopK`] (DeepSeek-V3, GLM-4.x-MoE, LFM2-MoE): in f32,
//!   `sigmoid`, plus the correction bias for selection only, optional group-limited
//!   selection (groups scored by the sum of their top-2, the `n_group - topk_group`
//!   lowest zeroed), top-k, weights from the unbiased sigmoid, optional
//!   renormalisation, times the routed scaling factor.
//!
//! Ties: MLX's CPU `argpartition` orders values by (value, index), so among equal
//! gates softmax routing selects the higher expert index and top-k-on-negated-logits
//! routing the lower one. The order of a token's `k` experts is argpartition's; the
//! downstream sums run in that order, so a bit-exact implementation keeps it.

use mlx::{ops, Array, Dtype, Error, Result, StreamOrDevice};

use crate::contract::{RouterOp, Support};

/// How a model family routes tokens to experts.
#[derive(Clone, Debug)]
pub enum RouterSpec {
    /// softmax over all experts, top-k, optional renormalisation (Qwen3-MoE).
    SoftmaxTopK {
        /// Experts per token.
        k: i32,
        /// Divide the k weights by their sum.
        normalize: bool,
    },
    /// top-k of the logits, softmax over the k (Mixtral, GPT-OSS), as mlx-lm's
    /// Mixtral computes it: `argpartition(-logits, kth=k-1)[..., :k]`. (mlx-lm's
    /// GPT-OSS selects with `argpartition(logits, kth=-k)[..., -k:]`, which picks the
    /// same experts except among ties and NaN, but in a different order.)
    TopKSoftmax {
        /// Experts per token.
        k: i32,
    },
    /// sigmoid scores with a selection bias and group-limited top-k (DeepSeek-V3).
    SigmoidGroupTopK {
        /// Experts per token.
        k: i32,
        /// Expert groups (1: no group limit).
        n_group: i32,
        /// Groups kept per token.
        topk_group: i32,
        /// Divide the k weights by their sum (when k > 1).
        normalize: bool,
        /// Multiplies the weights.
        routed_scaling_factor: f32,
        /// The selection-only correction bias, `[experts]` (f32).
        correction_bias: Option<Array>,
    },
}

impl RouterSpec {
    /// Experts per token.
    pub fn k(&self) -> i32 {
        match self {
            RouterSpec::SoftmaxTopK { k, .. }
            | RouterSpec::TopKSoftmax { k }
            | RouterSpec::SigmoidGroupTopK { k, .. } => *k,
        }
    }
}

/// The last `n` entries of the last axis of `a` (`from_end`) or its first `n`.
fn last_axis_part(a: &Array, n: i32, from_end: bool, s: StreamOrDevice) -> Result<Array> {
    let nd = a.ndim();
    let len = a.shape()[nd - 1];
    let mut start = vec![0; nd];
    let mut stop = a.shape().to_vec();
    if from_end {
        start[nd - 1] = len - n;
    } else {
        stop[nd - 1] = n;
    }
    ops::slice(a, &start, &stop, &vec![1; nd], s)
}

/// mlx-lm's `group_expert_select` (DeepSeek-V3).
#[allow(clippy::too_many_arguments)]
fn sigmoid_group_top_k(
    logits: &Array,
    experts: i32,
    k: i32,
    n_group: i32,
    topk_group: i32,
    normalize: bool,
    scale: f32,
    bias: Option<&Array>,
    s: StreamOrDevice,
) -> Result<Routing> {
    if n_group < 1 || experts % n_group != 0 || topk_group < 1 || topk_group > n_group {
        return Err(Error::invalid(
            "moe_gate",
            format!("n_group = {n_group} must divide {experts} experts and 1 <= topk_group = {topk_group} <= n_group"),
        ));
    }
    let orig = ops::sigmoid(&ops::astype(logits, Dtype::Float32, s)?, s)?;
    let mut scores = match bias {
        Some(b) => ops::add(&orig, b, s)?,
        None => orig.clone(),
    };
    if n_group > 1 {
        let mut grouped_shape = scores.shape()[..scores.ndim() - 1].to_vec();
        grouped_shape.extend([n_group, experts / n_group]);
        let grouped = ops::reshape(&scores, &grouped_shape, s)?;
        let group_scores = ops::sum(&ops::topk(&grouped, 2, -1, s)?, &[-1], true, s)?;
        let drop = n_group - topk_group;
        if drop > 0 {
            let part = ops::argpartition(&group_scores, drop - 1, -2, s)?;
            let nd = part.ndim();
            let mut stop = part.shape().to_vec();
            stop[nd - 2] = drop;
            let group_idx =
                ops::stop_gradient(&ops::slice(&part, &vec![0; nd], &stop, &vec![1; nd], s)?, s)?;
            let zeros = ops::zeros(group_idx.shape(), Dtype::Float32, s)?;
            let grouped = ops::put_along_axis(&grouped, &group_idx, &zeros, -2, s)?;
            scores = ops::flatten(&grouped, -2, -1, s)?;
        } else {
            scores = ops::flatten(&grouped, -2, -1, s)?;
        }
    }
    let part = ops::argpartition(&ops::negative(&scores, s)?, k - 1, -1, s)?;
    let inds = ops::stop_gradient(&last_axis_part(&part, k, false, s)?, s)?;
    let mut w = ops::take_along_axis(&orig, &inds, -1, s)?;
    if k > 1 && normalize {
        w = ops::divide(&w, &ops::sum(&w, &[-1], true, s)?, s)?;
    }
    let w = ops::multiply(&w, &Array::scalar_as(scale as f64, Dtype::Float32)?, s)?;
    Ok(Routing {
        indices: inds,
        scores: w,
    })
}

/// The routing of a batch of tokens.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Expert indices, `[..., k]`, uint32.
    pub indices: Array,
    /// Expert weights, `[..., k]`, in the logits' dtype (f32 for
    /// [`RouterSpec::SigmoidGroupTopK`], which mlx-lm computes in f32).
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
            RouterSpec::TopKSoftmax { k } => {
                let part = ops::argpartition(&ops::negative(logits, s)?, k - 1, -1, s)?;
                let inds = ops::stop_gradient(&last_axis_part(&part, k, false, s)?, s)?;
                let picked = ops::take_along_axis(logits, &inds, -1, s)?;
                Ok(Routing {
                    indices: inds,
                    scores: ops::softmax(&picked, &[-1], true, s)?,
                })
            }
            RouterSpec::SigmoidGroupTopK {
                k,
                n_group,
                topk_group,
                normalize,
                routed_scaling_factor,
                ref correction_bias,
            } => sigmoid_group_top_k(
                logits,
                experts,
                k,
                n_group,
                topk_group,
                normalize,
                routed_scaling_factor,
                correction_bias.as_ref(),
                s,
            ),
            RouterSpec::SoftmaxTopK { k, normalize } => {
                let gates = ops::softmax(logits, &[-1], true, s)?;
                let part = ops::argpartition(&gates, -k, -1, s)?;
                let inds = ops::stop_gradient(&last_axis_part(&part, k, true, s)?, s)?;
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

/// Fused router gating: on a CPU stream one kernel computes the whole routing of
/// every [`RouterSpec`] (softmax, top-k and the renormalisation; top-k and the softmax
/// over the k; sigmoid, group-limited top-k and scaling) with mlx-lm's roundings and
/// MLX's argpartition order ([`crate::cpu::route`]); on a CUDA (or Metal, not yet run on Apple silicon) stream
/// one GPU kernel does softmax top-k only ([`crate::gpu::route`], gated by
/// [`crate::gpu::ROUTER_TIES_MATCH`]); elsewhere the reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct FusedRouter;

/// The gating rules the CPU kernel reproduces bit for bit.
#[derive(Clone, Copy)]
enum CpuRule {
    SoftmaxTopK {
        normalize: bool,
    },
    TopKSoftmax,
    /// The correction bias, when present, is the kernel's second input.
    SigmoidGroupTopK {
        n_group: usize,
        topk_group: usize,
        normalize: bool,
        scale: f32,
        bias: bool,
    },
}

struct RouteKernel {
    k: usize,
    rule: CpuRule,
    experts: usize,
}

impl mlx::primitive::CpuKernel for RouteKernel {
    fn name(&self) -> &str {
        "zmlx_route"
    }

    fn params(&self) -> Vec<u8> {
        let mut p = (self.k as u64).to_le_bytes().to_vec();
        p.extend_from_slice(&(self.experts as u64).to_le_bytes());
        // The params are the primitive's identity: the rule must be part of them.
        match self.rule {
            CpuRule::SoftmaxTopK { normalize } => p.push(normalize as u8),
            CpuRule::TopKSoftmax => p.push(2),
            CpuRule::SigmoidGroupTopK {
                n_group,
                topk_group,
                normalize,
                scale,
                bias,
            } => {
                p.push(3);
                p.extend_from_slice(&(n_group as u64).to_le_bytes());
                p.extend_from_slice(&(topk_group as u64).to_le_bytes());
                p.extend_from_slice(&scale.to_bits().to_le_bytes());
                p.push(normalize as u8);
                p.push(bias as u8);
            }
        }
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
        let gating = match self.rule {
            CpuRule::SoftmaxTopK { normalize } => crate::cpu::Gating::SoftmaxTopK {
                top_k: self.k,
                renormalize: normalize,
            },
            CpuRule::TopKSoftmax => crate::cpu::Gating::TopKSoftmax { top_k: self.k },
            CpuRule::SigmoidGroupTopK {
                n_group,
                topk_group,
                normalize,
                scale,
                bias,
            } => crate::cpu::Gating::SigmoidGroupTopK {
                top_k: self.k,
                n_group,
                topk_group,
                renormalize: normalize,
                routed_scaling_factor: scale,
                correction_bias: match bias {
                    true => Some(crate::cpu_glue::floats(&inputs[1])?),
                    false => None,
                },
            },
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
            if !matches!(spec, RouterSpec::SoftmaxTopK { .. }) {
                return Support::No("the GPU router kernel only does softmax top-k routing".into());
            }
            if crate::gpu::backend_for(device).is_none() {
                return Support::No(crate::gpu::no_backend_reason());
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
        if let RouterSpec::SigmoidGroupTopK {
            n_group,
            topk_group,
            ref correction_bias,
            ..
        } = *spec
        {
            // Invalid configurations go to the reference, which reports them as MLX does.
            if n_group < 1
                || experts % n_group != 0
                || (n_group > 1 && experts / n_group < 2)
                || topk_group < 1
                || topk_group > n_group
            {
                return Support::No(format!(
                    "group configuration n_group = {n_group}, topk_group = {topk_group} \
                     for {experts} experts"
                ));
            }
            if let Some(b) = correction_bias {
                if b.shape() != [experts] || !b.dtype().is_float() || b.dtype() == Dtype::Float64 {
                    return Support::No(format!(
                        "correction bias {:?} {:?} (the kernel takes a float [{experts}])",
                        b.dtype(),
                        b.shape()
                    ));
                }
            }
        }
        Support::Yes
    }

    fn route(&self, logits: &Array, spec: &RouterSpec, s: StreamOrDevice) -> Result<Routing> {
        let experts = check_router_args(logits, spec)?;
        if !self.supports(spec, experts, s.device()?).is_yes() || logits.dtype() == Dtype::Float64 {
            return ReferenceRouter.route(logits, spec, s);
        }
        let mut inputs = vec![logits];
        // mlx-lm's DeepSeek router works in f32 whatever the logits dtype.
        let mut score_dtype = logits.dtype();
        let (k, rule) = match *spec {
            RouterSpec::SoftmaxTopK { k, normalize } => (k, CpuRule::SoftmaxTopK { normalize }),
            RouterSpec::TopKSoftmax { k } => (k, CpuRule::TopKSoftmax),
            RouterSpec::SigmoidGroupTopK {
                k,
                n_group,
                topk_group,
                normalize,
                routed_scaling_factor,
                ref correction_bias,
            } => {
                inputs.extend(correction_bias.as_ref());
                score_dtype = Dtype::Float32;
                let rule = CpuRule::SigmoidGroupTopK {
                    n_group: n_group as usize,
                    topk_group: topk_group as usize,
                    normalize,
                    scale: routed_scaling_factor,
                    bias: correction_bias.is_some(),
                };
                (k, rule)
            }
        };
        if let Some(backend) = crate::gpu::backend_for(s.device()?) {
            let CpuRule::SoftmaxTopK { normalize } = rule else {
                return ReferenceRouter.route(logits, spec, s);
            };
            let (indices, scores) = crate::gpu::route(backend, logits, k, normalize, s)?;
            return Ok(Routing { indices, scores });
        }
        let mut shape = logits.shape().to_vec();
        *shape.last_mut().expect("logits have an expert axis") = k;
        let kernel = RouteKernel {
            k: k as usize,
            rule,
            experts: experts as usize,
        };
        let mut outs = mlx::primitive::cpu_primitive(
            std::sync::Arc::new(kernel),
            &inputs,
            &[
                mlx::primitive::OutputSpec::new(&shape, Dtype::Uint32),
                mlx::primitive::OutputSpec::new(&shape, score_dtype),
            ],
            s,
        )?
        .into_iter();
        let indices = outs.next().expect("two outputs");
        let scores = outs.next().expect("two outputs");
        Ok(Routing { indices, scores })
    }
}
