//! Synthetic checkpoints: deterministic bytes, valid files, parseable config,
//! cache reuse, and layouts that describe the same model.

use std::path::Path;

use zmlx::checkpoint::{validate_checkpoint_dir, validate_safetensors};
use zmlx::config::{QuantSpec, Qwen3MoeConfig};
use zmlx::synthetic::{self, Layout, Preset, SynthSpec, WeightFormat, MARKER_FILE};

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Raw bytes of tensor `name` in a single-file checkpoint.
fn tensor_bytes(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join("model.safetensors");
    let h = validate_safetensors(&path).unwrap();
    let t = h.get(name).unwrap_or_else(|| panic!("no tensor {name}"));
    let bytes = std::fs::read(&path).unwrap();
    let start = (h.data_start() + t.data_offsets.0) as usize;
    let end = (h.data_start() + t.data_offsets.1) as usize;
    bytes[start..end].to_vec()
}

#[test]
fn same_spec_same_bytes_and_valid() {
    for format in [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Q4,
        WeightFormat::Q8,
    ] {
        let spec = SynthSpec::new(Preset::Tiny)
            .seed(7)
            .layers(2)
            .format(format);
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ca = synthetic::write_checkpoint(&spec, a.path()).unwrap();
        synthetic::write_checkpoint(&spec, b.path()).unwrap();
        assert_eq!(
            read_all(a.path()),
            read_all(b.path()),
            "{format:?} is not deterministic"
        );

        let files = validate_checkpoint_dir(a.path()).unwrap();
        let cfg = Qwen3MoeConfig::from_file(a.path().join("config.json")).unwrap();
        assert_eq!(cfg, ca.config);
        assert_eq!(cfg.num_hidden_layers, 2);
        match format {
            WeightFormat::Q4 => {
                assert_eq!(
                    cfg.quant_for("model.layers.1.mlp.gate"),
                    Some(QuantSpec::affine(64, 8))
                );
                assert_eq!(cfg.quant_for("lm_head"), Some(QuantSpec::affine(64, 4)));
                let (_, w) = files
                    .find("model.layers.0.mlp.switch_mlp.down_proj.weight")
                    .unwrap();
                assert_eq!(w.shape, vec![16, 64, 64 * 4 / 32]);
                let (_, s) = files
                    .find("model.layers.0.mlp.switch_mlp.down_proj.scales")
                    .unwrap();
                assert_eq!(
                    (s.shape.clone(), s.dtype),
                    (vec![16, 64, 1], safetensors::Dtype::BF16)
                );
                let (_, g) = files.find("model.layers.0.mlp.gate.weight").unwrap();
                assert_eq!(g.shape, vec![16, 64 * 8 / 32]);
                let (_, e) = files.find("model.embed_tokens.biases").unwrap();
                assert_eq!(e.shape, vec![512, 1]);
                let (_, n) = files.find("model.norm.weight").unwrap();
                assert_eq!(n.dtype, safetensors::Dtype::BF16);
                // The duplicate key mlx-community configs carry.
                let raw: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(a.path().join("config.json")).unwrap())
                        .unwrap();
                assert_eq!(raw["quantization"], raw["quantization_config"]);
            }
            WeightFormat::F32 => {
                assert!(cfg.quantization.is_none());
                let (_, w) = files
                    .find("model.layers.1.mlp.switch_mlp.gate_proj.weight")
                    .unwrap();
                assert_eq!(
                    (w.shape.clone(), w.dtype),
                    (vec![16, 64, 64], safetensors::Dtype::F32)
                );
            }
            _ => {}
        }
    }
}

#[test]
fn different_seed_different_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let spec = SynthSpec::new(Preset::Tiny)
        .layers(1)
        .format(WeightFormat::Q4);
    synthetic::write_checkpoint(&spec.clone().seed(1), a.path()).unwrap();
    synthetic::write_checkpoint(&spec.seed(2), b.path()).unwrap();
    assert_ne!(
        tensor_bytes(a.path(), "lm_head.weight"),
        tensor_bytes(b.path(), "lm_head.weight")
    );
}

#[test]
fn hf_and_mlx_layouts_hold_the_same_experts() {
    let spec = SynthSpec::new(Preset::Tiny)
        .layers(1)
        .format(WeightFormat::F32)
        .seed(3);
    let mlx = tempfile::tempdir().unwrap();
    let hf = tempfile::tempdir().unwrap();
    synthetic::write_checkpoint(&spec, mlx.path()).unwrap();
    synthetic::write_checkpoint(&spec.clone().layout(Layout::HuggingFace), hf.path()).unwrap();
    let stacked = tensor_bytes(mlx.path(), "model.layers.0.mlp.switch_mlp.up_proj.weight");
    let per = stacked.len() / 16;
    for e in [0usize, 5, 15] {
        let one = tensor_bytes(
            hf.path(),
            &format!("model.layers.0.mlp.experts.{e}.up_proj.weight"),
        );
        assert_eq!(one, stacked[e * per..(e + 1) * per]);
    }
    assert_eq!(
        tensor_bytes(mlx.path(), "lm_head.weight"),
        tensor_bytes(hf.path(), "lm_head.weight")
    );
}

#[test]
fn bf16_is_f32_rounded() {
    let spec = SynthSpec::new(Preset::Tiny).layers(1).seed(9);
    let f = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    synthetic::write_checkpoint(&spec.clone().format(WeightFormat::F32), f.path()).unwrap();
    synthetic::write_checkpoint(&spec.format(WeightFormat::Bf16), b.path()).unwrap();
    let f32s = tensor_bytes(f.path(), "model.layers.0.self_attn.q_proj.weight");
    let bf16s = tensor_bytes(b.path(), "model.layers.0.self_attn.q_proj.weight");
    for (x, y) in f32s.chunks(4).zip(bf16s.chunks(2)).take(100) {
        let x = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        let y = half::bf16::from_le_bytes([y[0], y[1]]);
        assert_eq!(half::bf16::from_f32(x), y);
    }
}

#[test]
fn quantized_values_dequantize_to_the_target_scale() {
    let spec = SynthSpec::new(Preset::Tiny)
        .layers(1)
        .format(WeightFormat::Q4)
        .seed(1);
    let d = tempfile::tempdir().unwrap();
    synthetic::write_checkpoint(&spec, d.path()).unwrap();
    let w = tensor_bytes(d.path(), "model.layers.0.self_attn.q_proj.weight");
    let s = tensor_bytes(d.path(), "model.layers.0.self_attn.q_proj.scales");
    let b = tensor_bytes(d.path(), "model.layers.0.self_attn.q_proj.biases");
    // Row 0, group 0 (64 values = 8 words), low bits first.
    let scale = half::bf16::from_le_bytes([s[0], s[1]]).to_f32();
    let bias = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut vals = vec![];
    for word in w[..32].chunks(4) {
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        for i in 0..8 {
            vals.push(scale * ((word >> (4 * i)) & 0xF) as f32 + bias);
        }
    }
    let rms = (vals.iter().map(|v| v * v).sum::<f32>() / 64.0).sqrt();
    // Target std is 1/sqrt(64) = 0.125; jitter and offsets keep it within 2x.
    assert!(rms > 0.06 && rms < 0.25, "rms {rms}");
}

#[test]
fn cache_reuses_and_rebuilds() {
    let cache = tempfile::tempdir().unwrap();
    let spec = SynthSpec::new(Preset::Tiny)
        .layers(1)
        .format(WeightFormat::Q4);
    let first = synthetic::ensure(&spec, cache.path()).unwrap();
    assert!(!first.reused);
    assert_eq!(first.dir, cache.path().join(spec.dir_name()));
    let second = synthetic::ensure(&spec, cache.path()).unwrap();
    assert!(second.reused);
    // A marker from other parameters does not count.
    let marker = first.dir.join(MARKER_FILE);
    let text = std::fs::read_to_string(&marker)
        .unwrap()
        .replace("\"seed\": 0", "\"seed\": 1");
    std::fs::write(&marker, text).unwrap();
    assert!(!synthetic::ensure(&spec, cache.path()).unwrap().reused);
    // Nor does a missing weight file.
    std::fs::remove_file(first.dir.join("model.safetensors")).unwrap();
    let again = synthetic::ensure(&spec, cache.path()).unwrap();
    assert!(!again.reused);
    validate_checkpoint_dir(&again.dir).unwrap();
}

#[test]
fn sharded_checkpoint_validates_through_its_index() {
    let cache = tempfile::tempdir().unwrap();
    let spec = SynthSpec::new(Preset::Tiny).layers(2).shard_bytes(50_000);
    let ck = synthetic::ensure(&spec, cache.path()).unwrap();
    assert!(ck.weight_files.len() > 2);
    let files = validate_checkpoint_dir(&ck.dir).unwrap();
    assert!(files.index.is_some());
    assert_eq!(files.files.len(), ck.weight_files.len());
}

#[test]
fn bad_specs_are_errors() {
    let spec = SynthSpec::new(Preset::Tiny)
        .format(WeightFormat::Q4)
        .layout(Layout::HuggingFace);
    assert!(spec.config().is_err());
    assert!(SynthSpec::new(Preset::Tiny).layers(0).config().is_err());
    assert!("huge".parse::<Preset>().is_err());
    assert!("q3".parse::<WeightFormat>().is_err());
}

#[test]
fn q4_f32_holds_the_same_quantized_values() {
    let spec = SynthSpec::new(Preset::Tiny).layers(1).seed(4);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    synthetic::write_checkpoint(&spec.clone().format(WeightFormat::Q4), a.path()).unwrap();
    synthetic::write_checkpoint(&spec.format(WeightFormat::Q4F32), b.path()).unwrap();
    let name = "model.layers.0.mlp.switch_mlp.up_proj";
    assert_eq!(
        tensor_bytes(a.path(), &format!("{name}.weight")),
        tensor_bytes(b.path(), &format!("{name}.weight"))
    );
    for part in ["scales", "biases"] {
        let x = tensor_bytes(a.path(), &format!("{name}.{part}"));
        let y = tensor_bytes(b.path(), &format!("{name}.{part}"));
        for (x, y) in x.chunks(2).zip(y.chunks(4)) {
            let x = half::bf16::from_le_bytes([x[0], x[1]]).to_f32();
            assert_eq!(x, f32::from_le_bytes([y[0], y[1], y[2], y[3]]));
        }
    }
}
