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

/// The exclude lists. Every entry names its evidence in `benchmarks/`.
///
/// Empty today. History: the CUDA router, expert SwiGLU and down + combine slots were
/// excluded for fidelity on the evidence of `benchmarks/matrix.jsonl`
/// 2026-11-25T18:45:26Z (greedy tokens diverged: kernels 1-3 bf16 ulps off MLX). The
/// kernels now reproduce MLX's CUDA arithmetic bit for bit, and the 48-layer runs
/// 2026-11-25T20:36:42Z, 20:44:09Z and 20:50:38Z (the last: 7 paired runs, 1.19x)
/// gave fidelity PASS with identical logits, so the entries were removed.
pub const EXCLUSIONS: &[Exclusion] = &[];

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
        // Every Qwen3-MoE slot is patched on every backend (see EXCLUSIONS' history).
        assert!(exclusions("qwen3_moe", "cuda").is_empty());
        assert!(exclusions("qwen3_moe", "cpu").is_empty());
    }
}
