//! `patch` and `unpatch`, and the report of what was done.

use std::sync::Arc;

use serde::Serialize;
use zmlx_kernels::down_combine::FusedDownCombine;
use zmlx_kernels::expert_swiglu::FusedExpertSwiGlu;
use zmlx_kernels::moe_gate::{FusedRouter, RouterSpec};
use zmlx_kernels::norm::{
    add_norm_support, head_norm_rope_support, kv_write_support, HeadNormRopeSpec,
};
use zmlx_kernels::quant_linear::FusedLinear;
use zmlx_kernels::{DownCombineOp, ExpertSwiGluOp, LinearOp, RouterOp, Support, Weight};

use crate::merge::merge_support;
use crate::preset::{exclusions, preset, ExclusionKind};
use crate::slots::{SlotName, Slots};

/// One module of a model, as the patch layer sees it.
pub enum Module<'a> {
    /// A linear layer.
    Linear {
        /// Its path in the checkpoint (e.g. `model.layers.0.self_attn.q_proj`).
        path: String,
        /// Its weight.
        weight: &'a Weight,
    },
    /// An MoE block.
    Moe {
        /// Its path (e.g. `model.layers.0.mlp`).
        path: String,
        /// Its routing.
        router: &'a RouterSpec,
        /// Its number of experts.
        experts: i32,
        /// Stacked gate projections.
        gate: &'a Weight,
        /// Stacked up projections.
        up: &'a Weight,
        /// Stacked down projections.
        down: &'a Weight,
    },
    /// An attention module (its head layout ops, its q/k norms and RoPE, and the
    /// residual add + norm that follow it).
    Attention {
        /// Its path (e.g. `model.layers.0.self_attn`).
        path: String,
        /// Its per-head q/k norms and RoPE, if it has q/k norms.
        head_norm_rope: Option<HeadNormRopeSpec>,
        /// The model's hidden size (the rows of the norm after attention).
        hidden: i32,
    },
    /// Projections that read the same input (e.g. attention's q, k, v), which the
    /// `merged_proj` slot runs as one matmul.
    Projections {
        /// The path of their parent (e.g. `model.layers.0.self_attn`).
        path: String,
        /// Their weights, in merge order.
        weights: Vec<&'a Weight>,
    },
}

/// A model the patch layer can work on.
pub trait Patchable {
    /// The model family (`config.json`'s `model_type`).
    fn family(&self) -> &str;
    /// The device the model runs on.
    fn device(&self) -> mlx::Result<mlx::Device>;
    /// Its modules.
    fn modules(&self) -> Vec<Module<'_>>;
    /// Its slot table.
    fn slots_mut(&mut self) -> &mut Slots;
}

/// What to patch.
#[derive(Clone, Debug, Default)]
pub struct PatchOptions {
    /// Patch exactly these slots (`None`: the family's preset).
    pub only: Option<Vec<SlotName>>,
    /// Leave these slots unpatched.
    pub exclude: Vec<SlotName>,
    /// Ignore the recorded exclude lists (to re-measure an excluded slot).
    pub ignore_exclusions: bool,
}

/// A module that keeps the reference implementation inside a patched slot.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Fallback {
    /// The module's path.
    pub module: String,
    /// Why the fused implementation does not take it.
    pub reason: String,
}

/// What happened to one slot.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SlotReport {
    /// The slot.
    pub slot: &'static str,
    /// The implementation now in the slot.
    pub implementation: &'static str,
    /// Modules that run the fused implementation.
    pub patched_modules: usize,
    /// Modules that keep the reference, with the reason.
    pub fallbacks: Vec<Fallback>,
    /// Why the slot was not patched at all (excluded, or no module could use it).
    pub skipped: Option<String>,
}

/// The result of [`patch`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PatchReport {
    /// The model family.
    pub family: String,
    /// The backend the decisions were made for ("cpu", "gpu").
    pub backend: String,
    /// On the CPU, the arithmetic of the fused quantized matmuls: "exact" (MLX's bits,
    /// the default) or "f32" (f32 accumulation, chosen with `ZMLX_CPU_PRECISION=f32`;
    /// see `zmlx_kernels::cpu::Precision`). `None` on a GPU.
    pub cpu_precision: Option<&'static str>,
    /// One entry per considered slot.
    pub slots: Vec<SlotReport>,
}

impl PatchReport {
    /// The number of modules running fused implementations.
    pub fn patched_modules(&self) -> usize {
        self.slots.iter().map(|s| s.patched_modules).sum()
    }

    /// The slots that hold a fused implementation.
    pub fn patched_slots(&self) -> Vec<&'static str> {
        self.slots
            .iter()
            .filter(|s| s.skipped.is_none())
            .map(|s| s.slot)
            .collect()
    }
}

impl std::fmt::Display for PatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cpu_precision {
            Some(p) => writeln!(
                f,
                "patch report ({}, {}, quantized matmuls: {p}):",
                self.family, self.backend
            )?,
            None => writeln!(f, "patch report ({}, {}):", self.family, self.backend)?,
        }
        for s in &self.slots {
            match &s.skipped {
                Some(why) => writeln!(f, "  {:<14} unpatched: {why}", s.slot)?,
                None => {
                    writeln!(
                        f,
                        "  {:<14} {} on {} modules",
                        s.slot, s.implementation, s.patched_modules
                    )?;
                    for fb in s.fallbacks.iter().take(5) {
                        writeln!(f, "  {:<14}   fallback {}: {}", "", fb.module, fb.reason)?;
                    }
                    if s.fallbacks.len() > 5 {
                        writeln!(
                            f,
                            "  {:<14}   ... and {} more fallbacks",
                            "",
                            s.fallbacks.len() - 5
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The name of a backend as exclude lists use it.
pub fn backend_name(device: mlx::Device) -> mlx::Result<&'static str> {
    Ok(match device.kind {
        mlx::DeviceType::Cpu => "cpu",
        mlx::DeviceType::Gpu if mlx::cuda_is_available()? => "cuda",
        mlx::DeviceType::Gpu if mlx::metal_is_available()? => "metal",
        mlx::DeviceType::Gpu => "gpu",
    })
}

fn check(support: Support, path: &str, fallbacks: &mut Vec<Fallback>) -> bool {
    match support {
        Support::Yes => true,
        Support::No(reason) => {
            fallbacks.push(Fallback {
                module: path.to_string(),
                reason,
            });
            false
        }
    }
}

/// Swaps the slots of `model` for fused implementations, following its family's
/// preset, the exclude lists and `opts`, and reports what it did. Fused
/// implementations fall back to the reference per module where they cannot run it;
/// the report lists each such module with the reason.
///
/// # Errors
/// When MLX cannot tell the device.
pub fn patch(model: &mut impl Patchable, opts: &PatchOptions) -> mlx::Result<PatchReport> {
    let family = model.family().to_string();
    let device = model.device()?;
    let backend = backend_name(device)?;
    let mut wanted: Vec<SlotName> = match &opts.only {
        Some(v) => v.clone(),
        None => preset(&family)
            .map(|p| p.slots.to_vec())
            .unwrap_or_default(),
    };
    // In declaration order, so that a slot comes after the one it extends.
    wanted.sort();
    wanted.dedup();
    let excluded = if opts.ignore_exclusions {
        Vec::new()
    } else {
        exclusions(&family, backend)
    };
    let mut report = PatchReport {
        family: family.clone(),
        backend: backend.to_string(),
        cpu_precision: (backend == "cpu").then(|| zmlx_kernels::cpu::detected_precision().name()),
        slots: Vec::new(),
    };
    if wanted.is_empty() {
        return Ok(report);
    }
    let modules = model.modules();
    let mut new_slots = Vec::new();
    for slot in wanted {
        let mut r = SlotReport {
            slot: slot.as_str(),
            implementation: "mlx",
            patched_modules: 0,
            fallbacks: Vec::new(),
            skipped: None,
        };
        if opts.exclude.contains(&slot) {
            r.skipped = Some("excluded by the caller".into());
            report.slots.push(r);
            continue;
        }
        if let Some(req) = slot.requires().filter(|r| !new_slots.contains(r)) {
            r.skipped = Some(format!(
                "it extends the {} slot, which is not patched",
                req.as_str()
            ));
            report.slots.push(r);
            continue;
        }
        if let Some(e) = excluded.iter().find(|e| e.slot == slot) {
            let kind = match e.kind {
                ExclusionKind::Fidelity => "fidelity",
                ExclusionKind::Performance => "performance",
            };
            r.skipped = Some(format!(
                "{kind} exclude list: {} (evidence: {})",
                e.reason, e.evidence
            ));
            report.slots.push(r);
            continue;
        }
        for m in &modules {
            let ok = match (slot, m) {
                (SlotName::Linear, Module::Linear { path, weight }) => {
                    check(FusedLinear.supports(weight, device), path, &mut r.fallbacks)
                }
                (
                    SlotName::Router,
                    Module::Moe {
                        path,
                        router,
                        experts,
                        ..
                    },
                ) => check(
                    FusedRouter.supports(router, *experts, device),
                    path,
                    &mut r.fallbacks,
                ),
                (SlotName::ExpertSwiGlu, Module::Moe { path, gate, up, .. }) => check(
                    FusedExpertSwiGlu.supports(gate, up, device),
                    path,
                    &mut r.fallbacks,
                ),
                (
                    SlotName::RouteSwiGlu,
                    Module::Moe {
                        path,
                        router,
                        experts,
                        gate,
                        up,
                        ..
                    },
                ) => check(
                    FusedExpertSwiGlu.supports_routed(router, *experts, gate, up, device),
                    path,
                    &mut r.fallbacks,
                ),
                (SlotName::DownCombine, Module::Moe { path, down, .. }) => check(
                    FusedDownCombine.supports(down, device),
                    path,
                    &mut r.fallbacks,
                ),
                (SlotName::DecodeViews, Module::Attention { .. }) => true,
                (
                    SlotName::HeadNormRope | SlotName::KvWrite,
                    Module::Attention {
                        path,
                        head_norm_rope,
                        ..
                    },
                ) => {
                    let support = match head_norm_rope {
                        Some(spec) if slot == SlotName::KvWrite => {
                            kv_write_support(spec, None, device)
                        }
                        Some(spec) => head_norm_rope_support(spec, 1, None, device),
                        None => Support::No("no per-head q/k norms".into()),
                    };
                    check(support, path, &mut r.fallbacks)
                }
                (SlotName::DownNorm, Module::Moe { path, down, .. }) => check(
                    FusedDownCombine.supports_normed(down, device),
                    path,
                    &mut r.fallbacks,
                ),
                (SlotName::AddNorm, Module::Attention { path, hidden, .. }) => check(
                    add_norm_support(*hidden, None, device),
                    path,
                    &mut r.fallbacks,
                ),
                (SlotName::MergedProjections, Module::Projections { path, weights }) => {
                    check(merge_support(weights), path, &mut r.fallbacks)
                }
                _ => continue,
            };
            r.patched_modules += ok as usize;
        }
        if r.patched_modules == 0 {
            r.skipped = Some(match r.fallbacks.first() {
                Some(f) => format!("no module can use the fused implementation ({})", f.reason),
                None => "the model has no module for this slot".into(),
            });
        } else {
            r.implementation = "zmlx";
            new_slots.push(slot);
        }
        report.slots.push(r);
    }
    let slots = model.slots_mut();
    for slot in new_slots {
        match slot {
            SlotName::Router => slots.router = Arc::new(FusedRouter),
            SlotName::ExpertSwiGlu => slots.expert_swiglu = Arc::new(FusedExpertSwiGlu),
            SlotName::DownCombine => slots.down_combine = Arc::new(FusedDownCombine),
            SlotName::Linear => slots.linear = Arc::new(FusedLinear),
            SlotName::Norm => {}
            SlotName::MergedProjections => slots.merge_projections = true,
            SlotName::DecodeViews => slots.decode_views = true,
            SlotName::HeadNormRope => slots.fuse_head_norm_rope = true,
            SlotName::AddNorm => slots.fuse_add_norm = true,
            SlotName::RouteSwiGlu => slots.fuse_route_swiglu = true,
            SlotName::KvWrite => slots.fuse_kv_write = true,
            SlotName::DownNorm => slots.fuse_down_norm = true,
        }
    }
    Ok(report)
}

/// Restores every slot of `model` to its reference.
pub fn unpatch(model: &mut impl Patchable) {
    *model.slots_mut() = Slots::reference();
}
