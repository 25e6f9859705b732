//! Safetensors: a round trip with metadata, and every malformed-file path returns
//! an `Err` naming the problem (never an abort inside MLX).

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};
use mlx::{io, Array, Error};

/// Writes a safetensors file by hand: 8-byte little-endian header length, the
/// header, the data section.
fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn load_err(path: &Path) -> String {
    let e = io::load_safetensors(path, ()).expect_err("a malformed file must not load");
    // validate_safetensors reports the same problem without loading.
    assert!(io::validate_safetensors(path).is_err());
    e.to_string()
}

#[test]
fn round_trip_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let f = Array::from_slice(&[1.0f32, -2.5, 3.25, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let h = Array::from_slice(&[f16::from_f32(0.5), f16::from_f32(-1.0)], &[2]).unwrap();
    let b = Array::from_slice(&[bf16::from_f32(7.0)], &[1, 1]).unwrap();
    let i = Array::from_slice(&[i64::MIN, 0, i64::MAX], &[3]).unwrap();
    let u = Array::from_slice(&[0u8, 255], &[2]).unwrap();
    let t = Array::from_slice(&[true, false], &[2]).unwrap();
    let lazy = f.multiply(&f).unwrap(); // saving evaluates
    io::save_safetensors(
        &path,
        &[
            ("f", &f),
            ("h", &h),
            ("b", &b),
            ("i", &i),
            ("u", &u),
            ("t", &t),
            ("sq", &lazy),
        ],
        &[("format", "mlx"), ("note", "ünïcode ✓")],
    )
    .unwrap();
    let header = io::validate_safetensors(&path).unwrap();
    assert_eq!(header.tensors.len(), 7);
    assert_eq!(header.tensors["f"].shape, vec![2, 3]);
    let l = io::load_safetensors(&path, ()).unwrap();
    let want_meta: BTreeMap<String, String> = [("format", "mlx"), ("note", "ünïcode ✓")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(l.metadata, want_meta);
    assert_eq!(l.arrays["f"].shape(), &[2, 3]);
    assert_eq!(
        l.arrays["f"].to_vec::<f32>().unwrap(),
        f.to_vec::<f32>().unwrap()
    );
    assert_eq!(
        l.arrays["h"].to_vec::<f16>().unwrap(),
        h.to_vec::<f16>().unwrap()
    );
    assert_eq!(
        l.arrays["b"].to_vec::<bf16>().unwrap(),
        b.to_vec::<bf16>().unwrap()
    );
    assert_eq!(
        l.arrays["i"].to_vec::<i64>().unwrap(),
        vec![i64::MIN, 0, i64::MAX]
    );
    assert_eq!(l.arrays["u"].to_vec::<u8>().unwrap(), vec![0, 255]);
    assert_eq!(l.arrays["t"].to_vec::<bool>().unwrap(), vec![true, false]);
    assert_eq!(
        l.arrays["sq"].to_vec::<f32>().unwrap(),
        vec![1.0, 6.25, 10.5625, 16.0, 25.0, 36.0]
    );
}

#[test]
fn round_trip_without_metadata() {
    // MLX writes "__metadata__": null when there is none; that must load.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let a = Array::from_slice(&[1u32, 2, 3], &[3]).unwrap();
    io::save_safetensors(&path, &[("a", &a)], &[]).unwrap();
    let l = io::load_safetensors(&path, ()).unwrap();
    assert!(l.metadata.is_empty());
    assert_eq!(l.arrays["a"].to_vec::<u32>().unwrap(), vec![1, 2, 3]);
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.safetensors");
    let e = io::load_safetensors(&path, ()).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("nope.safetensors"), "{e}");
}

#[test]
fn malformed_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(format!("{n}.safetensors"));
    let good = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;

    // Shorter than the 8-byte length prefix.
    std::fs::write(p("tiny"), [1u8, 2, 3]).unwrap();
    let e = load_err(&p("tiny"));
    assert!(e.contains("shorter than the 8-byte header length"), "{e}");

    // Header length larger than the file.
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(good.as_bytes());
    std::fs::write(p("long_header"), bytes).unwrap();
    let e = load_err(&p("long_header"));
    assert!(e.contains("header claims 1000000 bytes"), "{e}");

    // Corrupt header JSON.
    write_raw(
        &p("bad_json"),
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]"#,
        &[0; 8],
    );
    let e = load_err(&p("bad_json"));
    assert!(e.contains("not JSON"), "{e}");

    // Not UTF-8.
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc]);
    std::fs::write(p("not_utf8"), bytes).unwrap();
    assert!(load_err(&p("not_utf8")).contains("not UTF-8"));

    // Truncated data section: a valid file with its tail cut off.
    let a = Array::from_slice(&[1.0f32; 64], &[64]).unwrap();
    io::save_safetensors(p("trunc"), &[("a", &a)], &[]).unwrap();
    let len = std::fs::metadata(p("trunc")).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(p("trunc"))
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let e = load_err(&p("trunc"));
    assert!(e.contains("truncated"), "{e}");

    // Overlapping offsets.
    write_raw(
        &p("overlap"),
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
        &[0; 8],
    );
    assert!(load_err(&p("overlap")).contains("overlap"));

    // Byte length that does not match shape x dtype.
    write_raw(
        &p("wrong_len"),
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 12],
    );
    let e = load_err(&p("wrong_len"));
    assert!(e.contains("needs 12 bytes but its offsets span 8"), "{e}");

    // Unknown dtype, reversed offsets, negative dimension, missing fields.
    write_raw(
        &p("dtype"),
        r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(load_err(&p("dtype")).contains("unsupported dtype"));
    write_raw(
        &p("reversed"),
        r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#,
        &[0; 4],
    );
    assert!(load_err(&p("reversed")).contains("invalid data_offsets"));
    write_raw(
        &p("negdim"),
        r#"{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(load_err(&p("negdim")).contains("invalid dimension"));
    write_raw(
        &p("noshape"),
        r#"{"a":{"dtype":"U8","data_offsets":[0,1]}}"#,
        &[0],
    );
    assert!(load_err(&p("noshape")).contains("no shape"));
    write_raw(&p("array"), "[1, 2]", &[]);
    assert!(load_err(&p("array")).contains("not a JSON object"));
    write_raw(&p("meta"), r#"{"__metadata__":{"k":1}}"#, &[]);
    assert!(load_err(&p("meta")).contains("is not a string"));

    // After all that, MLX still works.
    assert_eq!(a.sum(&[0], false).unwrap().item::<f32>().unwrap(), 64.0);
}

#[test]
fn file_truncated_after_loading_fails_at_eval() {
    // load_safetensors checks the file, then MLX reads it lazily: a file cut short
    // in between makes the eval fail with MLX's read error, not crash.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    let a = Array::from_slice(&vec![1.0f32; 1000], &[1000]).unwrap();
    io::save_safetensors(&path, &[("a", &a)], &[]).unwrap();
    let l = io::load_safetensors(&path, ()).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 2000)
        .unwrap();
    let e = l.arrays["a"].eval().unwrap_err();
    assert!(e.to_string().contains("read"), "{e}");
    let two = Array::scalar(2.0f32).unwrap();
    assert_eq!(two.add(&two).unwrap().item::<f32>().unwrap(), 4.0);
}

#[test]
fn save_appends_the_extension() {
    // MLX's save_safetensors appends ".safetensors" to a path without it; pinned
    // here because callers then load from a different path than they saved to.
    let dir = tempfile::tempdir().unwrap();
    let a = Array::scalar(1.0f32).unwrap();
    io::save_safetensors(dir.path().join("w"), &[("a", &a)], &[]).unwrap();
    assert!(!dir.path().join("w").exists());
    assert!(dir.path().join("w.safetensors").exists());
}

#[test]
fn names_with_nul_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = Array::scalar(1.0f32).unwrap();
    let e = io::save_safetensors(dir.path().join("x"), &[("a\0b", &a)], &[]).unwrap_err();
    assert!(e.to_string().contains("NUL"), "{e}");
}
