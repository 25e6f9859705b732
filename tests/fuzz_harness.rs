//! The fuzz properties of `fuzz/src/checks.rs`, run as plain property tests on
//! stable Rust (no libFuzzer), plus every saved input in `tests/fuzz_regressions/`.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use proptest::prelude::*;

/// A small valid safetensors file to mutate.
fn seed_file() -> Vec<u8> {
    let header = br#"{"__metadata__":{"format":"mlx"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&[7u8; 19]);
    out
}

const SEED_CONFIG: &str = r#"{"model_type":"qwen3_moe","hidden_size":64,"num_hidden_layers":2,"intermediate_size":128,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"num_experts":8,"num_experts_per_tok":2,"moe_intermediate_size":64,"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":true,"rms_norm_eps":1e-6,"vocab_size":256,"rope_theta":1000000.0,"tie_word_embeddings":false,"max_position_embeddings":4096,"quantization":{"group_size":64,"bits":4,"model.layers.0.mlp.gate":{"group_size":64,"bits":8},"lm_head":false}}"#;

#[test]
fn seeds_are_accepted() {
    assert!(zmlx::checkpoint::validate_safetensors_bytes(&seed_file()).is_ok());
    assert!(zmlx::config::Qwen3MoeConfig::from_json_str(SEED_CONFIG).is_ok());
    checks::check_safetensors(&seed_file());
    checks::check_config(SEED_CONFIG.as_bytes());
}

#[test]
fn saved_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).unwrap();
        if name.starts_with("safetensors_header") {
            checks::check_safetensors(&data);
        } else if name.starts_with("config_json") {
            checks::check_config(&data);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_safetensors(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        checks::check_safetensors(&data);
    }

    #[test]
    fn mutated_safetensors(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut data = seed_file();
        for (i, b) in edits {
            let i = i.index(data.len());
            data[i] = b;
        }
        checks::check_safetensors(&data);
        let n = cut.index(data.len() + 1);
        checks::check_safetensors(&data[..n]);
    }

    #[test]
    fn mutated_config(edits in proptest::collection::vec((any::<prop::sample::Index>(), proptest::char::range(' ', '~')), 1..4)) {
        let mut text: Vec<char> = SEED_CONFIG.chars().collect();
        for (i, c) in edits {
            let i = i.index(text.len());
            text[i] = c;
        }
        let s: String = text.into_iter().collect();
        checks::check_config(s.as_bytes());
    }

    #[test]
    fn random_bytes_config(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        checks::check_config(&data);
    }
}
