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

/// The CUDA run that showed the fused GPU MoE kernels change greedy tokens.
const CUDA_FIDELITY_RUN: &str = "benchmarks/matrix.jsonl 2026-11-25T18:45:26Z \
    (capsule 2026-11-25T184526Z-qwen3_moe-qwen3-30b-a3b-l48-q4-mlx-seed0-cuda.json) and notebook.md 2026-11-25 18:50 UTC";

/// The exclude lists. Every entry names its evidence in `benchmarks/`.
pub const EXCLUSIONS: &[Exclusion] = &[
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::Router,
        backend: "cuda",
        kind: ExclusionKind::Fidelity,
        evidence: CUDA_FIDELITY_RUN,
        reason:
            "the CUDA router's scores differ from MLX's softmax by up to 2 bf16 ulps; alone it \
                 changed greedy tokens of a 4-layer model after 17 tokens",
    },
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::ExpertSwiGlu,
        backend: "cuda",
        kind: ExclusionKind::Fidelity,
        evidence: CUDA_FIDELITY_RUN,
        reason: "fp32 warp sums round differently from MLX's tensor-core gather_qmm (up to 3 bf16 \
                 ulps); greedy tokens changed after 17 tokens (4 layers) and 2 tokens (48 layers)",
    },
    Exclusion {
        family: "qwen3_moe",
        slot: SlotName::DownCombine,
        backend: "cuda",
        kind: ExclusionKind::Fidelity,
        evidence: CUDA_FIDELITY_RUN,
        reason: "rounds differently from MLX's gather_qmm + combine (up to 2 bf16 ulps); greedy \
                 tokens changed after 23 tokens on a 4-layer model",
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
        assert_eq!(exclusions("qwen3_moe", "cuda").len(), 3);
        assert!(exclusions("qwen3_moe", "cpu").is_empty());
    }
}
