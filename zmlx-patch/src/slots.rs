//! The slot table a model calls its MoE, linear and norm ops through.

use std::sync::Arc;

use zmlx_kernels::down_combine::ReferenceDownCombine;
use zmlx_kernels::expert_swiglu::ReferenceExpertSwiGlu;
use zmlx_kernels::moe_gate::ReferenceRouter;
use zmlx_kernels::norm::ReferenceNorm;
use zmlx_kernels::quant_linear::ReferenceLinear;
use zmlx_kernels::{DownCombineOp, ExpertSwiGluOp, LinearOp, NormOp, RouterOp};

/// The names of the slots, for reports and exclude lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotName {
    /// Router gating.
    Router,
    /// Expert gather + SwiGLU.
    ExpertSwiGlu,
    /// Down projection + weighted combine.
    DownCombine,
    /// Linear layers (attention, dense MLP, router gate, lm_head).
    Linear,
    /// RMS norms.
    Norm,
    /// Projections of one input (attention's q, k, v) as one matmul
    /// ([`crate::merge`]).
    MergedProjections,
    /// One-token attention steps lay heads out with single reshapes (no
    /// transposes): the same arrays, fewer view ops.
    DecodeViews,
    /// One-token attention steps run the per-head q/k RMS norms and RoPE as one op
    /// ([`zmlx_kernels::norm::fused_head_norm_rope`]; CUDA).
    HeadNormRope,
    /// The residual add after attention and the following RMS norm as one op
    /// ([`zmlx_kernels::norm::fused_add_rms_norm`]; CUDA).
    AddNorm,
    /// Router gating inside the expert SwiGLU kernel, one op instead of two
    /// ([`zmlx_kernels::gpu::routed_expert_swiglu`]; CUDA).
    RouteSwiGlu,
    /// One-token attention steps write the new keys and values into the KV cache
    /// inside the fused q/k norm + RoPE op instead of two `slice_update`s
    /// ([`zmlx_kernels::norm::fused_head_norm_rope_into_cache`]; CUDA; needs
    /// `head_norm_rope`).
    KvWrite,
    /// The MoE block's down + combine op also computes the RMS norm that follows it
    /// (the next layer's input norm, or the model's final norm) in the same kernel
    /// ([`zmlx_kernels::DownCombineOp::forward_normed`]; CUDA; needs
    /// `down_combine`).
    DownNorm,
}

impl SlotName {
    /// Every slot.
    pub const ALL: [SlotName; 12] = [
        SlotName::Router,
        SlotName::ExpertSwiGlu,
        SlotName::DownCombine,
        SlotName::Linear,
        SlotName::Norm,
        SlotName::MergedProjections,
        SlotName::DecodeViews,
        SlotName::HeadNormRope,
        SlotName::AddNorm,
        SlotName::RouteSwiGlu,
        SlotName::KvWrite,
        SlotName::DownNorm,
    ];

    /// The slot's name as reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::Router => "router",
            SlotName::ExpertSwiGlu => "expert_swiglu",
            SlotName::DownCombine => "down_combine",
            SlotName::Linear => "linear",
            SlotName::Norm => "norm",
            SlotName::MergedProjections => "merged_proj",
            SlotName::DecodeViews => "decode_views",
            SlotName::HeadNormRope => "head_norm_rope",
            SlotName::AddNorm => "add_norm",
            SlotName::RouteSwiGlu => "route_swiglu",
            SlotName::KvWrite => "kv_write",
            SlotName::DownNorm => "down_norm",
        }
    }

    /// The slot this one extends, which must be patched for it to do anything.
    pub fn requires(self) -> Option<SlotName> {
        match self {
            SlotName::RouteSwiGlu => Some(SlotName::ExpertSwiGlu),
            SlotName::KvWrite => Some(SlotName::HeadNormRope),
            SlotName::DownNorm => Some(SlotName::DownCombine),
            _ => None,
        }
    }
}

/// The implementations a model calls. [`Slots::reference`] holds mlx-lm's op
/// sequences (the unpatched model).
#[derive(Clone)]
pub struct Slots {
    /// Router gating.
    pub router: Arc<dyn RouterOp>,
    /// Expert gather + SwiGLU.
    pub expert_swiglu: Arc<dyn ExpertSwiGluOp>,
    /// Down projection + weighted combine.
    pub down_combine: Arc<dyn DownCombineOp>,
    /// Linear layers.
    pub linear: Arc<dyn LinearOp>,
    /// RMS norms.
    pub norm: Arc<dyn NormOp>,
    /// Whether projections of one input run as one matmul (through `linear`).
    pub merge_projections: bool,
    /// Whether one-token attention steps use single reshapes for head layouts.
    pub decode_views: bool,
    /// Whether one-token attention steps run q/k norms + RoPE as one fused op
    /// (where [`zmlx_kernels::norm::head_norm_rope_support`] says so per call).
    pub fuse_head_norm_rope: bool,
    /// Whether the residual add after attention and the next norm run as one fused
    /// op (where [`zmlx_kernels::norm::add_norm_support`] says so per call).
    pub fuse_add_norm: bool,
    /// Whether MoE blocks route inside the expert SwiGLU op, and compute the router
    /// logits there too where `expert_swiglu` can
    /// ([`zmlx_kernels::ExpertSwiGluOp::forward_router_routed`], then
    /// [`zmlx_kernels::ExpertSwiGluOp::forward_routed`]; otherwise `router` then
    /// `expert_swiglu`).
    pub fuse_route_swiglu: bool,
    /// Whether the fused q/k norm + RoPE op of one-token steps also writes the keys
    /// and values into the KV cache (where the cache has room; otherwise the cache
    /// is updated with MLX's ops).
    pub fuse_kv_write: bool,
    /// Whether MoE blocks compute the next RMS norm inside the down + combine op
    /// ([`zmlx_kernels::DownCombineOp::forward_normed`], where `down_combine` has
    /// it for the case; otherwise the norm runs as its own op).
    pub fuse_down_norm: bool,
}

impl Slots {
    /// The unpatched table: every slot holds its plain-MLX reference.
    pub fn reference() -> Slots {
        Slots {
            router: Arc::new(ReferenceRouter),
            expert_swiglu: Arc::new(ReferenceExpertSwiGlu),
            down_combine: Arc::new(ReferenceDownCombine),
            linear: Arc::new(ReferenceLinear),
            norm: Arc::new(ReferenceNorm),
            merge_projections: false,
            decode_views: false,
            fuse_head_norm_rope: false,
            fuse_add_norm: false,
            fuse_route_swiglu: false,
            fuse_kv_write: false,
            fuse_down_norm: false,
        }
    }

    /// The name of the implementation in `slot`.
    pub fn implementation(&self, slot: SlotName) -> &'static str {
        match slot {
            SlotName::Router => self.router.name(),
            SlotName::ExpertSwiGlu => self.expert_swiglu.name(),
            SlotName::DownCombine => self.down_combine.name(),
            SlotName::Linear => self.linear.name(),
            SlotName::Norm => self.norm.name(),
            SlotName::MergedProjections if self.merge_projections => "zmlx",
            SlotName::MergedProjections => "mlx",
            SlotName::DecodeViews if self.decode_views => "zmlx",
            SlotName::DecodeViews => "mlx",
            SlotName::HeadNormRope if self.fuse_head_norm_rope => "zmlx",
            SlotName::HeadNormRope => "mlx",
            SlotName::AddNorm if self.fuse_add_norm => "zmlx",
            SlotName::AddNorm => "mlx",
            SlotName::RouteSwiGlu if self.fuse_route_swiglu => "zmlx",
            SlotName::RouteSwiGlu => "mlx",
            SlotName::KvWrite if self.fuse_kv_write => "zmlx",
            SlotName::KvWrite => "mlx",
            SlotName::DownNorm if self.fuse_down_norm => "zmlx",
            SlotName::DownNorm => "mlx",
        }
    }
}

impl Default for Slots {
    fn default() -> Self {
        Slots::reference()
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for s in SlotName::ALL {
            m.entry(&s.as_str(), &self.implementation(s));
        }
        m.finish()
    }
}
