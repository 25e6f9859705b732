//! Safetensors and shard-index validation: good files pass, each kind of bad file
//! is rejected with the matching problem.

use std::path::Path;

use serde_json::json;
use zmlx::checkpoint::{
    validate_checkpoint_dir, validate_safetensors, validate_safetensors_bytes, validate_shard_index,
};
use zmlx::error::{SafetensorsProblem as P, ShardIndexProblem as S};

/// A file from a JSON header value and `data_len` data bytes.
fn file(header: &serde_json::Value, data_len: usize) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend((0..data_len).map(|i| i as u8));
    out
}

fn good_header() -> serde_json::Value {
    json!({
        "__metadata__": {"format": "mlx"},
        "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
        "c": {"dtype": "U32", "shape": [0, 5], "data_offsets": [32, 32]},
    })
}

fn problem(bytes: &[u8]) -> P {
    validate_safetensors_bytes(bytes).expect_err("file should be rejected")
}

#[test]
fn good_file_passes_and_matches_the_crate() {
    let bytes = file(&good_header(), 32);
    let h = validate_safetensors_bytes(&bytes).unwrap();
    assert_eq!(h.tensors.len(), 3);
    assert_eq!(h.get("a").unwrap().shape, vec![2, 3]);
    assert_eq!(h.metadata.get("format").map(String::as_str), Some("mlx"));
    assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
}

#[test]
fn crate_written_file_passes() {
    let data = vec![0u8; 4 * 6];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &data).unwrap();
    let bytes = safetensors::serialize([("w", view)], None).unwrap();
    let h = validate_safetensors_bytes(&bytes).unwrap();
    assert_eq!(h.tensors[0].name, "w");
}

#[test]
fn too_short_and_header_past_end() {
    assert!(matches!(problem(&[1, 2, 3]), P::TooShort { len: 3 }));
    let mut bytes = file(&good_header(), 32);
    bytes.truncate(20);
    assert!(matches!(problem(&bytes), P::HeaderPastEnd { .. }));
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert!(matches!(problem(&huge), P::HeaderTooLarge { .. }));
}

#[test]
fn truncated_data_is_out_of_range() {
    let mut bytes = file(&good_header(), 32);
    bytes.truncate(bytes.len() - 4);
    match problem(&bytes) {
        P::OutOfRange {
            tensor,
            end,
            data_len,
        } => {
            assert_eq!((tensor.as_str(), end, data_len), ("b", 32, 28));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_json_and_utf8() {
    let mut bytes = 5u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"a\":");
    assert!(matches!(problem(&bytes), P::BadJson { .. }));
    let mut bytes = 2u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"[]");
    assert!(matches!(problem(&bytes), P::BadJson { .. }));
    let mut bytes = 3u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b'{', 0xff, b'}']);
    assert!(matches!(
        problem(&bytes),
        P::HeaderNotUtf8 { valid_up_to: 1 }
    ));
}

#[test]
fn bad_dtype() {
    for dtype in ["F65", "F64", "f32", "F4"] {
        let h = json!({"a": {"dtype": dtype, "shape": [2], "data_offsets": [0, 16]}});
        match problem(&file(&h, 16)) {
            P::BadDtype { tensor, dtype: d } => {
                assert_eq!((tensor.as_str(), d.as_str()), ("a", dtype))
            }
            other => panic!("{dtype}: unexpected {other:?}"),
        }
    }
}

#[test]
fn size_mismatch_and_overflow() {
    let h = json!({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}});
    assert!(matches!(
        problem(&file(&h, 20)),
        P::SizeMismatch {
            expected: 24,
            actual: 20,
            ..
        }
    ));
    let h = json!({"a": {"dtype": "F32", "shape": [u64::MAX, 2], "data_offsets": [0, 8]}});
    assert!(matches!(problem(&file(&h, 8)), P::ShapeOverflow { .. }));
    let h = json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}});
    assert!(matches!(problem(&file(&h, 8)), P::ReversedOffsets { .. }));
}

#[test]
fn overlap_gap_and_trailing_bytes() {
    let h = json!({
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
    });
    match problem(&file(&h, 16)) {
        P::Overlap { first, second, at } => {
            assert_eq!((first.as_str(), second.as_str(), at), ("a", "b", 8))
        }
        other => panic!("unexpected {other:?}"),
    }
    let h = json!({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]},
    });
    assert!(matches!(
        problem(&file(&h, 20)),
        P::Gap { begin: 8, end: 12 }
    ));
    let h = json!({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}});
    assert!(matches!(problem(&file(&h, 9)), P::Gap { begin: 8, end: 9 }));
}

#[test]
fn duplicates_and_malformed_entries() {
    let text = br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text);
    bytes.push(0);
    assert!(matches!(problem(&bytes), P::DuplicateTensor { .. }));
    for entry in [
        json!({"dtype": "U8", "shape": [1]}),
        json!({"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]}),
        json!({"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}),
        json!({"dtype": 3, "shape": [1], "data_offsets": [0, 1]}),
        json!([1, 2]),
    ] {
        assert!(matches!(
            problem(&file(&json!({"a": entry}), 1)),
            P::BadEntry { .. }
        ));
    }
    let h = json!({"__metadata__": {"k": 1}});
    assert!(matches!(problem(&file(&h, 0)), P::BadEntry { .. }));
}

#[test]
fn file_api_reads_only_the_header_and_reports_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut bytes = file(&good_header(), 32);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(validate_safetensors(&path).unwrap().tensors.len(), 3);
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&path, &bytes).unwrap();
    let err = validate_safetensors(&path).unwrap_err();
    assert!(matches!(
        err.safetensors_problem(),
        Some(P::OutOfRange { .. })
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

fn write_shards(dir: &Path) {
    let a = json!({"x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}});
    let b = json!({"y": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}});
    std::fs::write(dir.join("model-00001-of-00002.safetensors"), file(&a, 2)).unwrap();
    std::fs::write(dir.join("model-00002-of-00002.safetensors"), file(&b, 1)).unwrap();
    let two = json!({
        "x": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
        "w": {"dtype": "U8", "shape": [1], "data_offsets": [2, 3]},
    });
    std::fs::write(dir.join("extra.safetensors"), file(&two, 3)).unwrap();
}

fn write_index(dir: &Path, map: serde_json::Value) -> std::path::PathBuf {
    let path = dir.join("model.safetensors.index.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"metadata": {}, "weight_map": map})).unwrap(),
    )
    .unwrap();
    path
}

#[test]
fn shard_index() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path());
    let ok =
        json!({"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"});
    let path = write_index(dir.path(), ok);
    let files = validate_shard_index(&path).unwrap();
    assert_eq!(files.num_tensors(), 2);
    assert_eq!(
        files.find("y").unwrap().0,
        "model-00002-of-00002.safetensors"
    );
    assert_eq!(validate_checkpoint_dir(dir.path()).unwrap().files.len(), 2);

    let cases = [
        (
            json!({"x": "model-00001-of-00002.safetensors", "y": "missing.safetensors"}),
            "missing",
        ),
        (
            json!({"x": "model-00001-of-00002.safetensors", "y": "model-00001-of-00002.safetensors"}),
            "not-in",
        ),
        (json!({"x": "extra.safetensors"}), "unlisted"),
        (
            json!({"x": "../model-00001-of-00002.safetensors"}),
            "unsafe",
        ),
        (json!({"x": 3}), "malformed"),
    ];
    for (map, what) in cases {
        let path = write_index(dir.path(), map);
        let err = validate_shard_index(&path).unwrap_err();
        let p = err.shard_index_problem().cloned();
        let ok = match what {
            "missing" => matches!(p, Some(S::MissingShard { .. })),
            "not-in" => matches!(p, Some(S::TensorNotInShard { .. })),
            "unlisted" => matches!(p, Some(S::UnlistedTensor { .. })),
            "unsafe" => matches!(p, Some(S::UnsafeShardName { .. })),
            _ => matches!(p, Some(S::Malformed { .. })),
        };
        assert!(ok, "{what}: {err}");
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        b"{not json",
    )
    .unwrap();
    assert!(matches!(
        validate_shard_index(dir.path().join("model.safetensors.index.json"))
            .unwrap_err()
            .shard_index_problem(),
        Some(S::Malformed { .. })
    ));
}

#[test]
fn bad_shard_is_reported_as_safetensors_error() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path());
    let shard = dir.path().join("model-00002-of-00002.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes.pop();
    std::fs::write(&shard, bytes).unwrap();
    let ok =
        json!({"x": "model-00001-of-00002.safetensors", "y": "model-00002-of-00002.safetensors"});
    let err = validate_shard_index(write_index(dir.path(), ok)).unwrap_err();
    assert!(
        matches!(err.safetensors_problem(), Some(P::OutOfRange { .. })),
        "{err}"
    );
}
