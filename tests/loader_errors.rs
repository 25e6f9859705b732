//! Checkpoints that do not fit the model are errors that name the tensors; a damaged
//! file is an error before MLX reads it; nothing panics.

mod common;

use std::collections::BTreeMap;

use mlx::{Array, Dtype};
use zmlx::config::Qwen3MoeConfig;
use zmlx::models::qwen3_moe::Qwen3Moe;
use zmlx::synthetic::WeightFormat;
use zmlx::Error;

fn tensors(dir: &std::path::Path) -> (Qwen3MoeConfig, BTreeMap<String, Array>) {
    let config = Qwen3MoeConfig::from_file(dir.join("config.json")).unwrap();
    let t = zmlx::checkpoint::load::load_tensors(dir, mlx::Device::cpu().into()).unwrap();
    (config, t)
}

fn weights_error(r: zmlx::Result<Qwen3Moe>) -> (Vec<String>, Vec<String>, Vec<String>, String) {
    match r {
        Err(e @ Error::Weights { .. }) => {
            let text = e.to_string();
            let Error::Weights {
                missing,
                unused,
                mismatched,
                ..
            } = e
            else {
                unreachable!()
            };
            (missing, unused, mismatched, text)
        }
        Err(e) => panic!("expected Error::Weights, got {e}"),
        Ok(_) => panic!("expected Error::Weights, the model loaded"),
    }
}

#[test]
fn missing_unused_and_misshaped_tensors_are_listed() {
    let dir = common::tiny(WeightFormat::Q4, 0);
    let (config, mut t) = tensors(&dir);
    t.remove("model.layers.1.self_attn.k_norm.weight").unwrap();
    t.insert(
        "model.layers.9.extra.weight".into(),
        Array::scalar(1.0f32).unwrap(),
    );
    t.insert(
        "model.norm.weight".into(),
        mlx::ops::ones(&[7], Dtype::Bfloat16, ()).unwrap(),
    );
    let (missing, unused, mismatched, text) = weights_error(Qwen3Moe::from_tensors(
        config,
        t,
        &dir,
        mlx::Device::cpu().into(),
    ));
    assert_eq!(missing, vec!["model.layers.1.self_attn.k_norm.weight"]);
    assert_eq!(unused, vec!["model.layers.9.extra.weight"]);
    assert_eq!(mismatched.len(), 1, "{mismatched:?}");
    assert!(
        mismatched[0].starts_with("model.norm.weight: shape [7], expected [64]"),
        "{mismatched:?}"
    );
    assert!(
        text.contains("1 missing tensors: model.layers.1.self_attn.k_norm.weight"),
        "{text}"
    );
}

#[test]
fn wrong_dtypes_are_listed() {
    let dir = common::tiny(WeightFormat::Q4, 0);
    let (config, mut t) = tensors(&dir);
    t.insert(
        "model.layers.0.input_layernorm.weight".into(),
        mlx::ops::ones(&[64], Dtype::Int32, ()).unwrap(),
    );
    let scales = "model.layers.2.mlp.switch_mlp.up_proj.scales";
    let shape = t[scales].shape().to_vec();
    t.insert(
        scales.into(),
        mlx::ops::ones(&shape, Dtype::Float32, ()).unwrap(),
    );
    let (_, _, mismatched, _) = weights_error(Qwen3Moe::from_tensors(
        config,
        t,
        &dir,
        mlx::Device::cpu().into(),
    ));
    assert!(
        mismatched
            .iter()
            .any(|m| m.starts_with("model.layers.0.input_layernorm.weight: dtype Int32")),
        "{mismatched:?}"
    );
    assert!(
        mismatched
            .iter()
            .any(|m| m.starts_with(scales) && m.contains("Float32")),
        "{mismatched:?}"
    );
}

#[test]
fn a_config_that_does_not_match_the_weights_is_an_error() {
    let dir = common::tiny(WeightFormat::Q4, 0);
    let (mut config, t) = tensors(&dir);
    config.moe_intermediate_size = 32;
    let (_, _, mismatched, _) = weights_error(Qwen3Moe::from_tensors(
        config,
        t,
        &dir,
        mlx::Device::cpu().into(),
    ));
    assert!(
        mismatched
            .iter()
            .any(|m| m.contains("switch_mlp.gate_proj.weight")),
        "{mismatched:?}"
    );
}

#[test]
fn quantized_weights_without_quantization_config_are_an_error() {
    let dir = common::tiny(WeightFormat::Q4, 0);
    let (mut config, t) = tensors(&dir);
    config.quantization = None;
    let (_, _, mismatched, _) = weights_error(Qwen3Moe::from_tensors(
        config,
        t,
        &dir,
        mlx::Device::cpu().into(),
    ));
    assert!(
        mismatched
            .iter()
            .any(|m| m.contains("config.json has no quantization")),
        "{mismatched:?}"
    );
}

#[test]
fn a_truncated_checkpoint_fails_before_mlx_reads_it() {
    let src = common::tiny(WeightFormat::Q4, 0);
    let dir = std::env::temp_dir().join(format!("zmlx-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = Qwen3Moe::load(&dir, mlx::Device::cpu().into())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::Safetensors { .. }), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_checkpoint_is_an_io_error() {
    let err = Qwen3Moe::load("/nonexistent/zmlx", mlx::Device::cpu().into())
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/zmlx"), "{err}");
}
