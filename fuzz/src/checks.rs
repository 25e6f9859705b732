#![allow(dead_code)] // each fuzz target uses one of the two checks
//! Fuzz properties shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and the
//! plain property-test harness (`tests/fuzz_harness.rs`), which includes this file
//! by path so the same checks run on stable Rust without libFuzzer.

/// Any bytes: the validator must not panic; if it accepts the file, the
/// `safetensors` crate must accept it too, and the header must be self-consistent.
pub fn check_safetensors(data: &[u8]) {
    let Ok(header) = zmlx::checkpoint::validate_safetensors_bytes(data) else {
        return;
    };
    if let Err(e) = safetensors::SafeTensors::deserialize(data) {
        panic!("zmlx accepted a file that the safetensors crate rejects: {e}");
    }
    assert_eq!(header.file_len, data.len() as u64);
    let data_len = header.file_len - header.data_start();
    let mut cursor = 0u64;
    for t in &header.tensors {
        assert_eq!(
            t.data_offsets.0, cursor,
            "tensors must tile the data section"
        );
        assert!(t.data_offsets.1 <= data_len);
        cursor = t.data_offsets.1;
    }
    assert_eq!(cursor, data_len);
}

fn close(a: f64, b: f64) -> bool {
    // serde_json's default float parser may be off by one ulp, so a round trip is
    // compared with a tolerance rather than bit for bit.
    a == b || ((a - b).abs() <= 1e-12 * a.abs().max(b.abs()))
}

/// Any bytes as `config.json`: the parser must not panic; an accepted config must
/// validate, and survive a serialize/parse round trip.
pub fn check_config(data: &[u8]) {
    let Ok(cfg) = zmlx::config::Qwen3MoeConfig::from_json_slice(data) else {
        return;
    };
    assert!(cfg.validate().is_ok());
    let text = serde_json::to_string(&cfg).expect("a validated config serializes");
    let back = match zmlx::config::Qwen3MoeConfig::from_json_str(&text) {
        Ok(b) => b,
        Err(e) => panic!("round trip rejected: {e}\n{text}"),
    };
    assert!(close(cfg.rms_norm_eps, back.rms_norm_eps) && close(cfg.rope_theta, back.rope_theta));
    let mut back = back;
    back.rms_norm_eps = cfg.rms_norm_eps;
    back.rope_theta = cfg.rope_theta;
    assert_eq!(cfg, back);
    for l in 0..cfg.num_hidden_layers.min(64) {
        let _ = cfg.quant_for(&format!("model.layers.{l}.mlp.gate"));
        let _ = cfg.is_moe_layer(l);
    }
}
