//! Safetensors files: checked, then loaded and saved by MLX.
//!
//! MLX trusts the files it reads. Before handing a file to MLX, [`load_safetensors`]
//! checks its header in Rust ([`validate_safetensors`]): a sane header length, valid
//! JSON, known dtypes, shapes that match byte lengths, offsets inside the file that
//! do not overlap. A truncated or hostile file is an [`Error`], never
//! a crash inside MLX.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use mlx_sys as sys;

use crate::array::Array;
use crate::device::StreamOrDevice;
use crate::dtype::Dtype;
use crate::error::{check, Error, Result};

/// Headers above this size are refused (real checkpoints stay far below it).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// One tensor entry of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<i32>,
    /// Byte range inside the data section.
    pub data_offsets: (u64, u64),
}

/// The checked header of a safetensors file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::invalid(
        "safetensors",
        format!("{} is not a valid safetensors file: {what}", path.display()),
    )
}

fn dtype_from_name(name: &str) -> Option<Dtype> {
    Some(match name {
        "BOOL" => Dtype::Bool,
        "U8" => Dtype::Uint8,
        "U16" => Dtype::Uint16,
        "U32" => Dtype::Uint32,
        "U64" => Dtype::Uint64,
        "I8" => Dtype::Int8,
        "I16" => Dtype::Int16,
        "I32" => Dtype::Int32,
        "I64" => Dtype::Int64,
        "F16" => Dtype::Float16,
        "BF16" => Dtype::Bfloat16,
        "F32" => Dtype::Float32,
        "F64" => Dtype::Float64,
        "C64" => Dtype::Complex64,
        _ => return None,
    })
}

/// Reads and checks the header of the safetensors file at `path`, reading only the
/// header bytes and the file's length.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::InvalidArgument`] naming the
/// problem when the header is malformed or does not fit the file.
pub fn validate_safetensors(path: impl AsRef<Path>) -> Result<SafetensorsHeader> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|_| {
        bad(
            path,
            format!("it is {file_len} bytes long, shorter than the 8-byte header length"),
        )
    })?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
        return Err(bad(
            path,
            format!("its header claims {header_len} bytes but the file has {file_len}"),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| io_err(path, e))?;
    let data_len = file_len - 8 - header_len;
    parse_header(&header, data_len).map_err(|msg| bad(path, msg))
}

/// Checks a header's JSON against a data section of `data_len` bytes.
fn parse_header(header: &[u8], data_len: u64) -> std::result::Result<SafetensorsHeader, String> {
    let text = std::str::from_utf8(header).map_err(|_| "the header is not UTF-8".to_string())?;
    let json: serde_json::Value = serde_json::from_str(text.trim_end_matches(' '))
        .map_err(|e| format!("the header is not JSON ({e})"))?;
    let obj = json.as_object().ok_or("the header is not a JSON object")?;
    let mut out = SafetensorsHeader::default();
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            // MLX itself writes `"__metadata__": null` when there is no metadata.
            if entry.is_null() {
                continue;
            }
            let meta = entry.as_object().ok_or("__metadata__ is not an object")?;
            for (k, v) in meta {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("metadata {k:?} is not a string"))?;
                out.metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let e = entry
            .as_object()
            .ok_or_else(|| format!("tensor {name:?} is not an object"))?;
        let dtype_name = e
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| format!("tensor {name:?} has no dtype"))?;
        let dtype = dtype_from_name(dtype_name)
            .ok_or_else(|| format!("tensor {name:?} has unsupported dtype {dtype_name:?}"))?;
        let shape_json = e
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| format!("tensor {name:?} has no shape"))?;
        let mut shape = Vec::with_capacity(shape_json.len());
        let mut elements: u64 = 1;
        for d in shape_json {
            let d = d
                .as_u64()
                .filter(|&d| d <= i32::MAX as u64)
                .ok_or_else(|| format!("tensor {name:?} has an invalid dimension {d}"))?;
            elements = elements
                .checked_mul(d)
                .ok_or_else(|| format!("tensor {name:?} has too many elements"))?;
            shape.push(d as i32);
        }
        let offs = e
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| format!("tensor {name:?} has no [begin, end] data_offsets"))?;
        let (begin, end) = match (offs[0].as_u64(), offs[1].as_u64()) {
            (Some(b), Some(e)) if b <= e => (b, e),
            _ => return Err(format!("tensor {name:?} has invalid data_offsets")),
        };
        let bytes = elements
            .checked_mul(dtype.size() as u64)
            .ok_or_else(|| format!("tensor {name:?} is too large"))?;
        if end - begin != bytes {
            return Err(format!(
                "tensor {name:?} of shape {shape:?} and dtype {dtype_name} needs {bytes} bytes but its offsets span {}",
                end - begin
            ));
        }
        if end > data_len {
            return Err(format!(
                "tensor {name:?} ends at byte {end} of a {data_len}-byte data section (truncated file?)"
            ));
        }
        ranges.push((begin, end, name));
        out.tensors.insert(
            name.clone(),
            TensorInfo {
                dtype,
                shape,
                data_offsets: (begin, end),
            },
        );
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(format!(
                "tensors {:?} and {:?} overlap",
                pair[0].2, pair[1].2
            ));
        }
    }
    Ok(out)
}

/// The arrays and metadata of a safetensors file.
#[derive(Debug, Default)]
pub struct Safetensors {
    /// Arrays by name (lazy: read when evaluated).
    pub arrays: BTreeMap<String, Array>,
    /// The file's `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

/// Checks (see [`validate_safetensors`]) and loads a safetensors file.
///
/// ```
/// use mlx::{io, Array};
/// let dir = std::env::temp_dir().join(format!("mlx-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("a.safetensors");
/// let a = Array::from_slice(&[1u32, 2, 3], &[3])?;
/// io::save_safetensors(&path, &[("a", &a)], &[("format", "mlx")])?;
/// let loaded = io::load_safetensors(&path, ())?;
/// assert_eq!(loaded.arrays["a"].to_vec::<u32>()?, vec![1, 2, 3]);
/// assert_eq!(loaded.metadata["format"], "mlx");
/// # Ok::<(), mlx::Error>(())
/// ```
///
/// # Errors
/// A missing, unreadable, truncated or malformed file.
#[track_caller]
pub fn load_safetensors(
    path: impl AsRef<Path>,
    s: impl Into<StreamOrDevice>,
) -> Result<Safetensors> {
    let path = path.as_ref();
    validate_safetensors(path)?;
    let cpath = c_path(path)?;
    let mut map: sys::mlxs_map = std::ptr::null_mut();
    // SAFETY: NUL-terminated path, out-pointer.
    check(unsafe { sys::mlxs_load_safetensors(&mut map, cpath.as_ptr(), s.into().raw()) })?;
    let map = MapGuard(map);
    let mut out = Safetensors::default();
    // SAFETY: map is valid; names are copied before the map is freed.
    unsafe {
        for i in 0..sys::mlxs_map_len(map.0) {
            let mut name: *const std::os::raw::c_char = std::ptr::null();
            let arr = Array::build(|a| sys::mlxs_map_get(map.0, i, &mut name, a))?;
            out.arrays
                .insert(CStr::from_ptr(name).to_string_lossy().into_owned(), arr);
        }
        for i in 0..sys::mlxs_map_meta_len(map.0) {
            let (mut k, mut v) = (std::ptr::null(), std::ptr::null());
            check(sys::mlxs_map_meta_get(map.0, i, &mut k, &mut v))?;
            out.metadata.insert(
                CStr::from_ptr(k).to_string_lossy().into_owned(),
                CStr::from_ptr(v).to_string_lossy().into_owned(),
            );
        }
    }
    Ok(out)
}

/// Saves arrays and string metadata to a safetensors file (evaluating the arrays).
///
/// # Errors
/// When the file cannot be written or a name holds a NUL byte.
#[track_caller]
pub fn save_safetensors(
    path: impl AsRef<Path>,
    arrays: &[(&str, &Array)],
    metadata: &[(&str, &str)],
) -> Result<()> {
    let path = path.as_ref();
    let mut map: sys::mlxs_map = std::ptr::null_mut();
    // SAFETY: out-pointer.
    check(unsafe { sys::mlxs_map_new(&mut map) })?;
    let map = MapGuard(map);
    for (name, arr) in arrays {
        let n = c_str("save_safetensors", name)?;
        // SAFETY: valid map and handle; the map copies the name.
        check(unsafe { sys::mlxs_map_insert(map.0, n.as_ptr(), arr.as_raw()) })?;
    }
    for (k, v) in metadata {
        let (k, v) = (c_str("save_safetensors", k)?, c_str("save_safetensors", v)?);
        // SAFETY: valid map; strings copied.
        check(unsafe { sys::mlxs_map_meta_insert(map.0, k.as_ptr(), v.as_ptr()) })?;
    }
    let cpath = c_path(path)?;
    // SAFETY: valid map, NUL-terminated path.
    check(unsafe { sys::mlxs_save_safetensors(cpath.as_ptr(), map.0) })
}

struct MapGuard(sys::mlxs_map);

impl Drop for MapGuard {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlxs_map_free(self.0) }
    }
}

fn c_str(op: &'static str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(op, format!("{s:?} contains a NUL byte")))
}

fn c_path(path: &Path) -> Result<CString> {
    let s = path.to_str().ok_or_else(|| {
        Error::invalid(
            "safetensors",
            format!("path {} is not UTF-8", path.display()),
        )
    })?;
    c_str("safetensors", s)
}

#[cfg(test)]
mod tests {
    use super::parse_header;

    #[test]
    fn header_checks() {
        let ok =
            br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"k":"v"}}"#;
        let h = parse_header(ok, 8).unwrap();
        assert_eq!(h.tensors["a"].shape, vec![2]);
        assert_eq!(h.metadata["k"], "v");
        assert!(parse_header(ok, 7).unwrap_err().contains("truncated"));
        let wrong_len = br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        assert!(parse_header(wrong_len, 8)
            .unwrap_err()
            .contains("needs 12 bytes"));
        let overlap = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
        assert!(parse_header(overlap, 8).unwrap_err().contains("overlap"));
        let bad_dtype = br#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#;
        assert!(parse_header(bad_dtype, 8)
            .unwrap_err()
            .contains("unsupported dtype"));
        assert!(parse_header(b"{not json", 8)
            .unwrap_err()
            .contains("not JSON"));
    }
}
