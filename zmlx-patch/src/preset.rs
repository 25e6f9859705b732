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
pub const EXCLUSIONS: &[Exclusion] = &[];

/// The exclusions that apply to `family` on `backend`.
pub fn exclusions(family: &str, backend: &str) -> Vec<&'static Exclusion> {
    EXCLUSIONS
        .iter()
        .filter(|e| e.family == family && e.backend == backend)
        .collect()
}
