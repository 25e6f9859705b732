//! Per-family presets and the exclude lists, each entry justified by a recorded run.

use crate::slots::SlotName;

/// The slots patched by default for a model family.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// The family (`model_type` in `config.json`).
    pub family: &'static str,
    /// The slots its preset patches.
    pub slots: &'static [SlotName],
}

/// The known presets.
pub const PRESETS: &[Preset] = &[Preset {
    family: "qwen3_moe",
    slots: &[
        SlotName::Router,
        SlotName::ExpertSwiGlu,
        SlotName::DownCombine,
        SlotName::Linear,
        SlotName::MergedProjections,
        SlotName::DecodeViews,
        SlotName::HeadNormRope,
        SlotName::AddNorm,
        SlotName::RouteSwiGlu,
    ],
}];

/// The preset of `family`, if any.
pub fn preset(family: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.family == family)
}

/// Why an entry excludes a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExclusionKind {
    /// Patching changed what the model outputs (fidelity FAIL).
    Fidelity,
    /// Patching was not faster than the reference.
    Performance,
}

/// A slot left unpatched for a family on a backend, with the run that justifies it.
#[derive(Clone, Copy, Debug)]
pub struct Exclusion {
    /// The model family.
    pub family: &'static str,
    /// The slot.
    pub slot: SlotName,
    /// The backend: "cpu", "cuda" or "metal".
    pub backend: &'static str,
    /// Fidelity or performance.
    pub kind: ExclusionKind,
    /// The recorded run (a `benchmarks/matrix.jsonl` timestamp or capsule file).
    pub evidence: &'static str,
    /// What the run showed.
    pub reason: &'static str,
}

/// The CUDA run that showed the first-generation GPU MoE kernels (fp32 dot products
/// with MLX's per-op roundings of the results, the algorithm the Metal bodies still
/// use) change greedy tokens.
const FIRST_GEN_GPU_FIDELITY_RUN: &str = "benchmarks/matrix.jsonl 2026-11-25T18:45:26Z \
    (capsule 2026-11-25T184526Z-qwen3_moe-qwen3-30b-a3b-l48-q4-mlx-seed0-cuda.json) and notebook.md 2026-11-25 18:50 UTC";

/// Why the Metal MoE slots are excluded.
const METAL_REASON: &str = "the Metal bodies use the first-generation GPU algorithm, which \
    changed greedy tokens on CUDA (38/600 matched, 48 layers), and have not been run on Apple \
    silicon; --ignore-exclusions patches them anyway";

/// The runs that showed the CUDA norm fusions (exact, but no faster than MLX's ops).
const NORM_FUSION_RUNS: &str = "benchmarks/perop/2026-11-26-device-run13-h100-perop.log \
    (each fused op beside the MLX ops it replaces, 4 alternated runs) and \
    benchmarks/matrix.jsonl 2026-11-26T00:45:17Z (with, 1.12x) vs 2026-11-26T00:47:26Z \
    (without, 1.20x); notebook.md 2026-11-26 01:00-01:25 UTC";

/// Why the CUDA norm fusions are excluded.
const NORM_FUSION_REASON: &str = "bit-identical, but on CUDA one custom kernel costs the host \
    about as much as the MLX norm/rope/add ops it replaces (MLX's own ops are cheap to issue, \
    a custom kernel is not), so no decode gain was measured; --ignore-exclusions patches it \
    anyway";

/// The exclude lists. Every entry names its evidence in `benchmarks/`.
///
/// History: the CUDA router, expert SwiGLU and down + combine slots were excluded for
/// fidelity on the evidence of `benchmarks/matrix.jsonl` 2026-11-25T18:45:26Z (greedy
/// tokens diverged: kernels 1-3 bf16 ulps off MLX). The CUDA kernels now reproduce
/// MLX's CUDA arithmetic bit for bit, and the 48-layer runs 2026-11-25T20:36:42Z,
/// 20:44:09Z and 20:50:38Z (the last: 7 paired runs, 1.19x) gave fidelity PASS with
/// identical logits, so those entries were removed. The Metal bodies were not
/// redone (there is no Apple hardware here), so their slots stay excluded on the
/// evidence of the same first-generation algorithm on CUDA.
pub const EXCLUSIONS: &[Exclusion] = &[
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::HeadNormRope,
        backend: "cuda",
        kind: ExclusionKind::Performance,
        evidence: NORM_FUSION_RUNS,
        reason: NORM_FUSION_REASON,
    },
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::AddNorm,
        backend: "cuda",
        kind: ExclusionKind::Performance,
        evidence: NORM_FUSION_RUNS,
        reason: NORM_FUSION_REASON,
    },
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::Router,
        backend: "metal",
        kind: ExclusionKind::Fidelity,
        evidence: FIRST_GEN_GPU_FIDELITY_RUN,
        reason: METAL_REASON,
    },
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::ExpertSwiGlu,
        backend: "metal",
        kind: ExclusionKind::Fidelity,
        evidence: FIRST_GEN_GPU_FIDELITY_RUN,
        reason: METAL_REASON,
    },
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::DownCombine,
        backend: "metal",
        kind: ExclusionKind::Fidelity,
        evidence: FIRST_GEN_GPU_FIDELITY_RUN,
        reason: METAL_REASON,
    },
];

/// The exclusions that apply to `family` on `backend`.
pub fn exclusions(family: &str, backend: &str) -> Vec<&'static Exclusion> {
    EXCLUSIONS
        .iter()
        .filter(|e| e.family == family && e.backend == backend)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exclusion_names_recorded_evidence() {
        for e in EXCLUSIONS {
            assert!(e.evidence.contains("benchmarks/"), "{e:?}");
            assert!(
                preset(e.family).is_some_and(|p| p.slots.contains(&e.slot)),
                "{e:?}"
            );
        }
        // On CUDA only the norm fusions are excluded (for speed, not fidelity); the
        // Metal MoE slots wait for a run on Apple silicon.
        let cuda = exclusions("qwen3_moe", "cuda");
        assert_eq!(cuda.len(), 2);
        assert!(cuda.iter().all(|e| e.kind == ExclusionKind::Performance));
        assert!(exclusions("qwen3_moe", "cpu").is_empty());
        assert_eq!(exclusions("qwen3_moe", "metal").len(), 3);
    }
}
