//! `auto` patching: keep a slot only where it is measured to help on this machine.
//!
//! For each slot of the family's preset, in order, a candidate model (the slots kept so
//! far plus this one) is compared with the current model in `pairs` paired decode runs
//! (current, then candidate, alternating so that drifting machine load hits both).
//! The slot is kept when the candidate's greedy tokens equal the unpatched model's
//! (fidelity PASS on the short decode) and its mean relative gain exceeds twice the
//! standard error of the paired gains (the noise of repeated paired runs).

use serde::Serialize;
use zmlx_patch::{patch, PatchOptions, PatchReport, SlotName};

use crate::error::Result;
use crate::generate::{generate, GenerateOptions};
use crate::models::qwen3_moe::Qwen3Moe;

/// Settings of the measurement.
#[derive(Clone, Debug)]
pub struct AutoOptions {
    /// Tokens per decode run.
    pub tokens: usize,
    /// Paired runs per slot.
    pub pairs: usize,
    /// The prompt.
    pub prompt: Vec<u32>,
}

/// The measurement and decision for one slot.
#[derive(Clone, Debug, Serialize)]
pub struct AutoDecision {
    /// The slot.
    pub slot: &'static str,
    /// Whether it was kept.
    pub kept: bool,
    /// Decode tokens/s of the current model in each pair.
    pub current_tps: Vec<f64>,
    /// Decode tokens/s of the candidate in each pair.
    pub candidate_tps: Vec<f64>,
    /// Mean relative gain of the candidate.
    pub mean_gain: f64,
    /// Standard error of the relative gains.
    pub noise: f64,
    /// Whether the candidate's greedy tokens equal the unpatched model's.
    pub fidelity_pass: bool,
    /// Why it was kept or dropped.
    pub reason: String,
}

/// Patches a copy of `baseline` slot by slot, keeping what measurably helps without
/// changing its output; returns the model, the patch report of the kept slots and
/// every decision.
///
/// # Errors
/// When generation or patching fails.
pub fn auto_patch(
    baseline: &Qwen3Moe,
    opts: &AutoOptions,
) -> Result<(Qwen3Moe, PatchReport, Vec<AutoDecision>)> {
    let gen = GenerateOptions {
        max_tokens: opts.tokens,
        ..GenerateOptions::default()
    };
    let reference = generate(baseline, &opts.prompt, &gen)?.tokens;
    let family = baseline.config.model_type.clone();
    let preset: Vec<SlotName> = zmlx_patch::preset::preset(&family)
        .map(|p| p.slots.to_vec())
        .unwrap_or_default();
    let mut kept: Vec<SlotName> = Vec::new();
    let mut current = baseline.clone();
    let mut decisions = Vec::new();
    for slot in preset {
        let mut candidate = baseline.clone();
        let mut only = kept.clone();
        only.push(slot);
        let report = patch(
            &mut candidate,
            &PatchOptions {
                only: Some(only),
                ..PatchOptions::default()
            },
        )?;
        let slot_report = report.slots.iter().find(|s| s.slot == slot.as_str());
        if slot_report.is_none_or(|s| s.skipped.is_some()) {
            let why = slot_report
                .and_then(|s| s.skipped.clone())
                .unwrap_or_default();
            decisions.push(AutoDecision {
                slot: slot.as_str(),
                kept: false,
                current_tps: vec![],
                candidate_tps: vec![],
                mean_gain: 0.0,
                noise: 0.0,
                fidelity_pass: true,
                reason: format!("not patchable here: {why}"),
            });
            continue;
        }
        let cand_tokens = generate(&candidate, &opts.prompt, &gen)?.tokens;
        let fidelity_pass = cand_tokens == reference;
        let (mut cur, mut cand) = (Vec::new(), Vec::new());
        if fidelity_pass {
            for _ in 0..opts.pairs.max(2) {
                cur.push(generate(&current, &opts.prompt, &gen)?.decode_tps);
                cand.push(generate(&candidate, &opts.prompt, &gen)?.decode_tps);
            }
        }
        let gains: Vec<f64> = cur.iter().zip(&cand).map(|(a, b)| b / a - 1.0).collect();
        let n = gains.len().max(1) as f64;
        let mean = gains.iter().sum::<f64>() / n;
        let var = gains.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let noise = (var / n).sqrt();
        let keep = fidelity_pass && mean > 2.0 * noise && mean > 0.0;
        let reason = if !fidelity_pass {
            "fidelity FAIL: greedy tokens differ from the unpatched model".to_string()
        } else if keep {
            format!(
                "gain {:+.1}% > 2 x noise {:.1}%",
                mean * 100.0,
                noise * 100.0
            )
        } else {
            format!(
                "gain {:+.1}% within 2 x noise {:.1}%",
                mean * 100.0,
                noise * 100.0
            )
        };
        if keep {
            kept.push(slot);
            current = candidate;
        }
        decisions.push(AutoDecision {
            slot: slot.as_str(),
            kept: keep,
            current_tps: cur,
            candidate_tps: cand,
            mean_gain: mean,
            noise,
            fidelity_pass,
            reason,
        });
    }
    let mut model = baseline.clone();
    let report = patch(
        &mut model,
        &PatchOptions {
            only: Some(kept),
            ..PatchOptions::default()
        },
    )?;
    Ok((model, report, decisions))
}
