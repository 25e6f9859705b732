//! Patched vs unpatched on synthetic checkpoints, on the CPU: any divergence of the
//! greedy tokens fails. bf16 activations (4- and 8-bit with bf16 scales), f32
//! activations (4-bit with f32 scales) and float weights (whose matmuls the fused
//! kernels leave to MLX: only the router is patched there), several seeds.

mod common;

use zmlx::fidelity::{compare, Verdict, DEFAULT_PROMPTS};
use zmlx::models::qwen3_moe::Qwen3Moe;
use zmlx::synthetic::WeightFormat;
use zmlx_patch::{patch, PatchOptions, SlotName};

const TOKENS: usize = 200;

/// `expect_experts`: whether the expert and linear slots are expected to be patched.
fn check(format: WeightFormat, seed: u64, expect_experts: bool) {
    let dir = common::tiny(format, seed);
    let baseline = Qwen3Moe::load(&dir, mlx::Device::cpu().into()).unwrap();
    let mut patched = baseline.clone();
    let report = patch(&mut patched, &PatchOptions::default()).unwrap();
    let slots = report.patched_slots();
    assert!(slots.contains(&"router"), "{report}");
    for slot in ["expert_swiglu", "down_combine", "linear", "merged_proj"] {
        assert_eq!(slots.contains(&slot), expect_experts, "{slot}: {report}");
    }
    assert!(slots.contains(&"decode_views"), "{report}");
    assert_same_greedy(&baseline, &patched, &dir);
}

fn assert_same_greedy(baseline: &Qwen3Moe, patched: &Qwen3Moe, dir: &std::path::Path) {
    assert_same_greedy_for(baseline, patched, dir, TOKENS);
}

fn assert_same_greedy_for(
    baseline: &Qwen3Moe,
    patched: &Qwen3Moe,
    dir: &std::path::Path,
    tokens: usize,
) {
    let prompts: Vec<Vec<u32>> = DEFAULT_PROMPTS.iter().map(|p| p.to_vec()).collect();
    let f = compare(baseline, patched, &prompts, tokens).unwrap();
    eprintln!("{}: {f}", dir.display());
    assert_eq!(f.verdict, Verdict::Pass, "{}: {f}", dir.display());
    assert_eq!(f.matched, prompts.len() * tokens);
    assert_eq!(f.top1_agreement, 1.0);
}

/// Past the KV cache's first growth (256 positions: the cache is concatenated with a
/// fresh block) the patched model still decodes the unpatched model's tokens.
#[test]
fn four_bit_bf16_past_the_cache_growth() {
    let dir = common::tiny(WeightFormat::Q4, 4);
    let baseline = Qwen3Moe::load(&dir, mlx::Device::cpu().into()).unwrap();
    let mut patched = baseline.clone();
    patch(&mut patched, &PatchOptions::default()).unwrap();
    assert_same_greedy_for(&baseline, &patched, &dir, 300);
}

#[test]
fn four_bit_bf16_seed0() {
    check(WeightFormat::Q4, 0, true);
}

#[test]
fn four_bit_bf16_seed3() {
    check(WeightFormat::Q4, 3, true);
}

#[test]
fn eight_bit_bf16_seed1() {
    check(WeightFormat::Q8, 1, true);
}

#[test]
fn four_bit_f32_seed2() {
    check(WeightFormat::Q4F32, 2, true);
}

#[test]
fn float32_weights_stay_on_mlx() {
    check(WeightFormat::F32, 0, false);
}

/// A layer whose q projection is quantized differently from k and v cannot run them
/// as one matmul: the patch report lists it as a merged_proj fallback, the other
/// layers merge, and the model still decodes the unpatched model's tokens.
#[test]
fn mixed_quantization_keeps_unmergeable_projections_separate() {
    use mlx::quantization::{dequantize, quantize, QuantSpec};
    use zmlx_kernels::Weight;

    let dir = common::tiny(WeightFormat::Q4, 0);
    let s: mlx::StreamOrDevice = mlx::Device::cpu().into();
    let mut baseline = Qwen3Moe::load(&dir, s).unwrap();
    let q = &mut baseline.layers[0].self_attn.q_proj.weight;
    let Weight::Quantized(q4) = &*q else {
        panic!("the Q4 checkpoint has quantized projections")
    };
    let dense = dequantize(q4, None, s).unwrap();
    let q8 = quantize(&dense, QuantSpec::affine(64, 8), s).unwrap();
    mlx::transforms::eval(&[&q8.weight, &q8.scales]).unwrap();
    *q = Weight::Quantized(q8);

    let mut patched = baseline.clone();
    let report = patch(&mut patched, &PatchOptions::default()).unwrap();
    let merged = report
        .slots
        .iter()
        .find(|r| r.slot == "merged_proj")
        .expect("the preset has merged_proj");
    assert_eq!(
        merged.patched_modules,
        baseline.layers.len() - 1,
        "{report}"
    );
    assert_eq!(merged.fallbacks.len(), 1, "{report}");
    assert!(
        merged.fallbacks[0].module.starts_with("model.layers.0."),
        "{report}"
    );
    assert_same_greedy(&baseline, &patched, &dir);
}

/// A slot that extends another (`kv_write` extends `head_norm_rope`, a CUDA fusion)
/// is skipped with that reason where its base is not patched, whatever order the
/// caller lists them in.
#[test]
fn a_slot_needs_the_slot_it_extends() {
    let dir = common::tiny(WeightFormat::Q4, 0);
    let mut model = Qwen3Moe::load(&dir, mlx::Device::cpu().into()).unwrap();
    let opts = PatchOptions {
        only: Some(vec![SlotName::KvWrite, SlotName::HeadNormRope]),
        ..PatchOptions::default()
    };
    let report = patch(&mut model, &opts).unwrap();
    let names: Vec<&str> = report.slots.iter().map(|s| s.slot).collect();
    assert_eq!(names, ["head_norm_rope", "kv_write"], "{report}");
    let kv = &report.slots[1];
    let why = kv.skipped.as_deref().unwrap_or("");
    assert!(why.contains("extends the head_norm_rope slot"), "{report}");
    assert_eq!(model.slots.implementation(SlotName::KvWrite), "mlx");
}
