//! The fidelity harness: does a patched model say what the unpatched one says?
//!
//! Two measures, on several prompts:
//! - greedy decode of N tokens by both models, compared position by position
//!   (matched / total and the first divergence);
//! - teacher forcing: the patched model is scored along the baseline's tokens, giving
//!   top-1 agreement with the baseline's choices, the largest absolute logit
//!   difference and the mean KL divergence KL(baseline || patched) per step.
//!
//! The verdict is PASS only when every greedy token is identical.

use serde::Serialize;

use crate::error::Result;
use crate::generate::{generate, teacher_forced_logits, GenerateOptions};
use crate::models::qwen3_moe::Qwen3Moe;

/// Prompts used besides the caller's (token ids valid for any vocabulary of 512+).
pub const DEFAULT_PROMPTS: [&[u32]; 3] = [&[1, 2, 3, 4, 5, 6, 7, 8], &[42], &[7, 300, 11, 5]];

/// The most cached positions over which MLX's CUDA backend (0.32.4) decodes
/// deterministically with its default settings. From 256 positions on (mlx-lm's
/// cache step), for one-token attention over keys that are slices of a cache, MLX
/// chooses per call between cuDNN's attention and its own vector kernel, and part of
/// that test is whether the keys' array is still in flight on the GPU: a race. The
/// two kernels round differently, so one model run twice can give different tokens
/// past this length (notebook.md, device runs 59-60: even the unpatched model
/// against itself; with `MLX_CUDA_USE_CUDNN_SDPA=0` both the unpatched and the
/// patched model matched over 600 tokens).
pub const CUDA_DETERMINISTIC_POSITIONS: usize = 256;

/// Why a comparison on `device` over contexts of up to `positions` cached positions
/// (prompt plus generated tokens) can differ for a reason outside the models, if it
/// can: on CUDA past [`CUDA_DETERMINISTIC_POSITIONS`] unless MLX's cuDNN attention is
/// switched off (`MLX_CUDA_USE_CUDNN_SDPA=0` in the environment before MLX starts).
pub fn nondeterminism_warning(device: mlx::Device, positions: usize) -> Option<String> {
    let cudnn_off = std::env::var("MLX_CUDA_USE_CUDNN_SDPA")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        == Some(0);
    let cuda = device.kind == mlx::DeviceType::Gpu && mlx::cuda_is_available().unwrap_or(false);
    (cuda && !cudnn_off && positions >= CUDA_DETERMINISTIC_POSITIONS).then(|| {
        format!(
            "contexts of up to {positions} positions on CUDA: from \
             {CUDA_DETERMINISTIC_POSITIONS} cached positions on, MLX picks cuDNN's or its \
             own attention kernel by a race, so even one model can differ from itself \
             there; set MLX_CUDA_USE_CUDNN_SDPA=0 for a deterministic comparison"
        )
    })
}

/// PASS or FAIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every greedy token identical.
    #[serde(rename = "PASS")]
    Pass,
    /// Some greedy token differs.
    #[serde(rename = "FAIL")]
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
        })
    }
}

/// The comparison on one prompt.
#[derive(Clone, Debug, Serialize)]
pub struct PromptFidelity {
    /// The prompt.
    pub prompt: Vec<u32>,
    /// The baseline's greedy tokens.
    pub baseline_tokens: Vec<u32>,
    /// The patched model's greedy tokens.
    pub patched_tokens: Vec<u32>,
    /// Positions where both agree.
    pub matched: usize,
    /// Positions compared (the longer of the two outputs).
    pub total: usize,
    /// The first position where they differ.
    pub first_divergence: Option<usize>,
    /// Fraction of teacher-forced steps whose argmax is the baseline's token.
    pub top1_agreement: f64,
    /// The largest |baseline logit - patched logit| over all teacher-forced steps.
    pub max_abs_logit_diff: f64,
    /// The mean over steps of KL(baseline || patched), in nats.
    pub mean_kl: f64,
}

/// The comparison over all prompts.
#[derive(Clone, Debug, Serialize)]
pub struct Fidelity {
    /// PASS when every greedy token of every prompt is identical.
    pub verdict: Verdict,
    /// Matched positions, all prompts.
    pub matched: usize,
    /// Compared positions, all prompts.
    pub total: usize,
    /// The first divergence as (prompt index, position), if any.
    pub first_divergence: Option<(usize, usize)>,
    /// Mean top-1 agreement over all teacher-forced steps.
    pub top1_agreement: f64,
    /// The largest absolute logit difference.
    pub max_abs_logit_diff: f64,
    /// The mean KL divergence per step.
    pub mean_kl: f64,
    /// Tokens generated per prompt.
    pub tokens_per_prompt: usize,
    /// Per-prompt details.
    pub prompts: Vec<PromptFidelity>,
}

impl std::fmt::Display for Fidelity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let div = match self.first_divergence {
            Some((p, t)) => format!("prompt {p}, token {t}"),
            None => "none".into(),
        };
        write!(
            f,
            "fidelity {}: greedy {}/{} tokens identical over {} prompts (first divergence: {div}); \
             teacher-forced top-1 agreement {:.4}, max |logit diff| {:.3e}, mean KL {:.3e}",
            self.verdict,
            self.matched,
            self.total,
            self.prompts.len(),
            self.top1_agreement,
            self.max_abs_logit_diff,
            self.mean_kl
        )
    }
}

fn log_softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = v.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    v.iter().map(|&x| x as f64 - lse).collect()
}

fn argmax(v: &[f32]) -> usize {
    // The first maximum, as MLX's argmax.
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Compares `patched` with `baseline` on `prompts`, `max_tokens` greedy tokens each.
///
/// # Errors
/// When generation fails.
pub fn compare(
    baseline: &Qwen3Moe,
    patched: &Qwen3Moe,
    prompts: &[Vec<u32>],
    max_tokens: usize,
) -> Result<Fidelity> {
    let opts = GenerateOptions {
        max_tokens,
        record_logits: true,
        ..GenerateOptions::default()
    };
    let mut per = Vec::new();
    for prompt in prompts {
        let b = generate(baseline, prompt, &opts)?;
        let p = generate(
            patched,
            prompt,
            &GenerateOptions {
                record_logits: false,
                ..opts.clone()
            },
        )?;
        let total = b.tokens.len().max(p.tokens.len());
        let matched = b
            .tokens
            .iter()
            .zip(&p.tokens)
            .filter(|(x, y)| x == y)
            .count();
        let first_divergence = (0..total).find(|&i| b.tokens.get(i) != p.tokens.get(i));
        let forced = teacher_forced_logits(patched, prompt, &b.tokens)?;
        let (mut agree, mut max_diff, mut kl) = (0usize, 0f64, 0f64);
        for ((bl, pl), &tok) in b.logits.iter().zip(&forced).zip(&b.tokens) {
            agree += (argmax(pl) == tok as usize) as usize;
            for (x, y) in bl.iter().zip(pl) {
                max_diff = max_diff.max((*x as f64 - *y as f64).abs());
            }
            let (lb, lp) = (log_softmax(bl), log_softmax(pl));
            kl += lb
                .iter()
                .zip(&lp)
                .map(|(a, c)| a.exp() * (a - c))
                .sum::<f64>();
        }
        let steps = forced.len().max(1) as f64;
        per.push(PromptFidelity {
            prompt: prompt.clone(),
            baseline_tokens: b.tokens,
            patched_tokens: p.tokens,
            matched,
            total,
            first_divergence,
            top1_agreement: agree as f64 / steps,
            max_abs_logit_diff: max_diff,
            mean_kl: kl / steps,
        });
    }
    let matched = per.iter().map(|p| p.matched).sum();
    let total = per.iter().map(|p| p.total).sum();
    let steps: usize = per
        .iter()
        .map(|p| p.baseline_tokens.len())
        .sum::<usize>()
        .max(1);
    let weighted = |f: fn(&PromptFidelity) -> f64| {
        per.iter()
            .map(|p| f(p) * p.baseline_tokens.len() as f64)
            .sum::<f64>()
            / steps as f64
    };
    Ok(Fidelity {
        verdict: if per.iter().all(|p| p.first_divergence.is_none()) {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        matched,
        total,
        first_divergence: per
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.first_divergence.map(|t| (i, t))),
        top1_agreement: weighted(|p| p.top1_agreement),
        max_abs_logit_diff: per.iter().map(|p| p.max_abs_logit_diff).fold(0.0, f64::max),
        mean_kl: weighted(|p| p.mean_kl),
        tokens_per_prompt: max_tokens,
        prompts: per,
    })
}

#[cfg(test)]
mod determinism_tests {
    use super::*;

    /// The CPU decodes deterministically at any length; the warning is for CUDA.
    #[test]
    fn no_warning_on_the_cpu() {
        assert!(nondeterminism_warning(mlx::Device::cpu(), 10_000).is_none());
    }
}
