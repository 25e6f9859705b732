//! The unpatched Qwen3-MoE against mlx-lm (the reference) on synthetic checkpoints:
//! the same greedy tokens over 200 tokens and the same logits, for several prompts,
//! float and 4-bit, f32 and bf16 activations. mlx-lm runs in a Python virtual
//! environment (see `common::reference_python`).

mod common;

use std::path::Path;
use std::process::Command;

use zmlx::generate::{generate, GenerateOptions};
use zmlx::models::qwen3_moe::Qwen3Moe;
use zmlx::synthetic::WeightFormat;

const PROMPTS: [&str; 3] = ["1,2,3,4,5,6,7,8", "42", "7,300,11,5"];
const TOKENS: usize = 200;

/// One bf16 ulp at the magnitude of `v`.
fn bf16_ulp(v: f32) -> f32 {
    let e = v.abs().max(f32::MIN_POSITIVE).log2().floor();
    2f32.powf(e - 7.0)
}

fn check(dir: &Path, f32_logits: bool) {
    let out = std::env::temp_dir().join(format!(
        "zmlx-parity-{}-{}.json",
        dir.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let mut cmd = Command::new(common::reference_python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/mlx_lm_reference.py"))
        .arg("--model")
        .arg(dir)
        .args(["--max-tokens", &TOKENS.to_string(), "--out"])
        .arg(&out);
    for p in PROMPTS {
        cmd.args(["--prompt", p]);
    }
    let status = cmd.status().expect("run the mlx-lm reference");
    assert!(
        status.success(),
        "mlx-lm reference failed on {}",
        dir.display()
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let logits_file = report["logits_file"]
        .as_str()
        .expect("logits file")
        .to_string();
    let ref_logits = mlx::io::load_safetensors(&logits_file, ()).unwrap();

    let model = Qwen3Moe::load(dir, mlx::Device::cpu().into()).unwrap();
    for (i, p) in PROMPTS.iter().enumerate() {
        let prompt: Vec<u32> = p.split(',').map(|t| t.parse().unwrap()).collect();
        let want: Vec<u32> = report["prompts"][i]["generated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let g = generate(
            &model,
            &prompt,
            &GenerateOptions {
                max_tokens: TOKENS,
                record_logits: true,
                ..GenerateOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            g.tokens,
            want,
            "greedy tokens differ from mlx-lm on {} prompt {p}",
            dir.display()
        );
        let r = &ref_logits.arrays[&format!("prompt{i}")];
        let vocab = r.shape()[1] as usize;
        let rv = r.to_vec::<f32>().unwrap();
        let mut worst = 0f32;
        for (t, ours) in g.logits.iter().enumerate() {
            for (v, (&a, &b)) in ours.iter().zip(&rv[t * vocab..(t + 1) * vocab]).enumerate() {
                let d = (a - b).abs();
                worst = worst.max(d);
                if f32_logits {
                    // Same ops on the same library: only summation order could differ.
                    assert!(
                        d <= 1e-4,
                        "{}: prompt {p} step {t} logit {v}: {a} vs {b}",
                        dir.display()
                    );
                } else {
                    assert!(
                        d <= bf16_ulp(b),
                        "{}: prompt {p} step {t} logit {v}: {a} vs {b}",
                        dir.display()
                    );
                }
            }
        }
        eprintln!(
            "{}: prompt {p}: {} tokens identical, max |logit diff| {worst}",
            dir.display(),
            g.tokens.len()
        );
    }
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&logits_file);
}

#[test]
fn float32_model_matches_mlx_lm() {
    check(&common::tiny(WeightFormat::F32, 0), true);
}

#[test]
fn four_bit_bf16_model_matches_mlx_lm() {
    check(&common::tiny(WeightFormat::Q4, 0), false);
}

#[test]
fn four_bit_f32_model_matches_mlx_lm() {
    check(&common::tiny(WeightFormat::Q4F32, 1), true);
}

#[test]
fn eight_bit_model_matches_mlx_lm() {
    check(&common::tiny(WeightFormat::Q8, 2), false);
}

#[test]
fn hugging_face_layout_matches_mlx_lm() {
    let spec = zmlx::synthetic::SynthSpec::new(zmlx::synthetic::Preset::Tiny)
        .format(WeightFormat::F32)
        .layout(zmlx::synthetic::Layout::HuggingFace);
    let dir = zmlx::synthetic::ensure(&spec, common::cache_dir())
        .unwrap()
        .dir;
    check(&dir, true);
}
