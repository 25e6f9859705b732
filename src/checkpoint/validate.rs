//! Validation of untrusted safetensors files and shard indexes, in Rust, before
//! MLX ever reads them.
//!
//! MLX's loader trusts the header it reads: a crafted or truncated file can make it
//! read out of bounds or allocate absurd amounts. Here only the 8-byte length prefix
//! and the JSON header are read (never the multi-GB data), and every claim of the
//! header is checked against the file's real length:
//!
//! - the header length is at most [`MAX_HEADER_BYTES`] and inside the file;
//! - the header is UTF-8 JSON, an object, with no tensor declared twice;
//! - every dtype is one both safetensors and MLX 0.32 know ([`MLX_DTYPES`]);
//! - `shape x dtype size == end - begin`, without overflow;
//! - every tensor lies inside the data section, no two overlap, and (as the format
//!   requires) the tensors cover the data section with no hole and nothing after.
//!
//! The parsed entries are then also fed to the `safetensors` crate's own
//! [`safetensors::tensor::Metadata`] validation as a second opinion.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, TensorInfo};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result, SafetensorsProblem, ShardIndexProblem};

/// Largest header accepted, the same limit as the `safetensors` crate's.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Largest shard index accepted (real ones are well under 1 MiB).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// The dtype names MLX 0.32's `dtype_from_safetensor_str` accepts (`F8_E4M3` is
/// loaded as `uint8`). Other safetensors dtypes (F64, F4, ...) would make MLX throw.
pub const MLX_DTYPES: [&str; 14] = [
    "BOOL", "U8", "I8", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "I64",
    "U64",
];

/// One tensor of a validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Its name (e.g. `model.layers.0.mlp.gate.weight`).
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape (row-major).
    pub shape: Vec<usize>,
    /// Byte range `[begin, end)` relative to the start of the data section.
    pub data_offsets: (u64, u64),
}

impl TensorEntry {
    /// Number of bytes of its data.
    pub fn byte_len(&self) -> u64 {
        self.data_offsets.1 - self.data_offsets.0
    }
}

/// The validated header of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// Length of the JSON header in bytes (the 8-byte prefix's value).
    pub header_len: u64,
    /// Length of the whole file in bytes.
    pub file_len: u64,
    /// The tensors, sorted by data offset.
    pub tensors: Vec<TensorEntry>,
    /// The optional `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
}

impl SafetensorsHeader {
    /// Offset of the data section from the start of the file (`8 + header_len`).
    pub fn data_start(&self) -> u64 {
        8 + self.header_len
    }

    /// The entry called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor names, in data order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }
}

/// Validates the safetensors file at `path`, reading only its header.
pub fn validate_safetensors(path: impl AsRef<Path>) -> Result<SafetensorsHeader> {
    let path = path.as_ref();
    let wrap = |problem| Error::Safetensors {
        path: path.to_path_buf(),
        problem,
    };
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if file_len < 8 {
        return Err(wrap(SafetensorsProblem::TooShort { len: file_len }));
    }
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)
        .map_err(|e| Error::io(path, e))?;
    let header_len = u64::from_le_bytes(prefix);
    check_header_len(header_len, file_len).map_err(wrap)?;
    // Bounded by MAX_HEADER_BYTES and by the file length (checked just above), so
    // this allocation is safe whatever the file claims.
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    parse_header(&header, file_len).map_err(wrap)
}

/// Validates an in-memory safetensors file (prefix, header and data).
///
/// Same checks as [`validate_safetensors`]; this is what the fuzz target drives.
pub fn validate_safetensors_bytes(
    bytes: &[u8],
) -> std::result::Result<SafetensorsHeader, SafetensorsProblem> {
    let file_len = bytes.len() as u64;
    let Some(prefix) = bytes.get(..8) else {
        return Err(SafetensorsProblem::TooShort { len: file_len });
    };
    let mut arr = [0u8; 8];
    arr.copy_from_slice(prefix);
    let header_len = u64::from_le_bytes(arr);
    check_header_len(header_len, file_len)?;
    let header = &bytes[8..8 + header_len as usize];
    parse_header(header, file_len)
}

fn check_header_len(header_len: u64, file_len: u64) -> std::result::Result<(), SafetensorsProblem> {
    if header_len > MAX_HEADER_BYTES {
        return Err(SafetensorsProblem::HeaderTooLarge {
            header_len,
            limit: MAX_HEADER_BYTES,
        });
    }
    // `header_len <= MAX_HEADER_BYTES`, so `8 + header_len` cannot overflow.
    if 8 + header_len > file_len {
        return Err(SafetensorsProblem::HeaderPastEnd {
            header_len,
            file_len,
        });
    }
    Ok(())
}

/// The header as an ordered list of (key, value) pairs, so that duplicate keys are
/// seen (a JSON map keeps only the last one, and two parsers may disagree on which).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object mapping tensor names to entries")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn dtype_from_str(s: &str) -> Option<Dtype> {
    if !MLX_DTYPES.contains(&s) {
        return None;
    }
    serde_json::from_value(Value::String(s.to_string())).ok()
}

fn parse_entry(name: &str, value: &Value) -> std::result::Result<TensorEntry, SafetensorsProblem> {
    let bad = |message: &str| SafetensorsProblem::BadEntry {
        tensor: name.to_string(),
        message: message.to_string(),
    };
    let obj = value.as_object().ok_or_else(|| bad("expected an object"))?;
    let dtype_str = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing or non-string `dtype`"))?;
    let dtype = dtype_from_str(dtype_str).ok_or_else(|| SafetensorsProblem::BadDtype {
        tensor: name.to_string(),
        dtype: dtype_str.to_string(),
    })?;
    let shape_json = obj
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing or non-array `shape`"))?;
    let mut shape = Vec::with_capacity(shape_json.len());
    for d in shape_json {
        let d = d
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .ok_or_else(|| bad("`shape` must hold non-negative integers"))?;
        shape.push(d);
    }
    let offsets = obj
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing or non-array `data_offsets`"))?;
    let (begin, end) = match offsets.as_slice() {
        [b, e] => match (b.as_u64(), e.as_u64()) {
            (Some(b), Some(e)) => (b, e),
            _ => return Err(bad("`data_offsets` must hold non-negative integers")),
        },
        _ => return Err(bad("`data_offsets` must be [begin, end]")),
    };
    if end < begin {
        return Err(SafetensorsProblem::ReversedOffsets {
            tensor: name.to_string(),
            begin,
            end,
        });
    }
    let shape_u64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let bits = shape_u64
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize() as u64))
        .ok_or_else(|| SafetensorsProblem::ShapeOverflow {
            tensor: name.to_string(),
            shape: shape_u64.clone(),
        })?;
    // Every MLX dtype is a whole number of bytes, so `bits` is a multiple of 8.
    let expected = bits / 8;
    if end - begin != expected {
        return Err(SafetensorsProblem::SizeMismatch {
            tensor: name.to_string(),
            dtype: dtype_str.to_string(),
            shape: shape_u64,
            expected,
            actual: end - begin,
        });
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape,
        data_offsets: (begin, end),
    })
}

/// Validates header bytes (without the 8-byte prefix) against a file of
/// `file_len` bytes.
pub fn parse_header(
    header: &[u8],
    file_len: u64,
) -> std::result::Result<SafetensorsHeader, SafetensorsProblem> {
    let header_len = header.len() as u64;
    let text = std::str::from_utf8(header).map_err(|e| SafetensorsProblem::HeaderNotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let Entries(entries) = serde_json::from_str(text).map_err(|e| SafetensorsProblem::BadJson {
        message: e.to_string(),
    })?;

    let data_len =
        file_len
            .checked_sub(8 + header_len)
            .ok_or(SafetensorsProblem::HeaderPastEnd {
                header_len,
                file_len,
            })?;

    let mut seen = BTreeSet::new();
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, value) in &entries {
        if !seen.insert(name.as_str()) {
            return Err(SafetensorsProblem::DuplicateTensor {
                tensor: name.clone(),
            });
        }
        if name == "__metadata__" {
            let obj = value
                .as_object()
                .ok_or_else(|| SafetensorsProblem::BadEntry {
                    tensor: name.clone(),
                    message: "expected an object of strings".into(),
                })?;
            for (k, v) in obj {
                let v = v.as_str().ok_or_else(|| SafetensorsProblem::BadEntry {
                    tensor: name.clone(),
                    message: format!("value of `{k}` is not a string"),
                })?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        tensors.push(parse_entry(name, value)?);
    }

    for t in &tensors {
        if t.data_offsets.1 > data_len {
            return Err(SafetensorsProblem::OutOfRange {
                tensor: t.name.clone(),
                end: t.data_offsets.1,
                data_len,
            });
        }
    }

    // Sort by (begin, end) so that overlaps and holes show up between neighbours;
    // empty tensors sort before a non-empty one at the same offset.
    tensors.sort_by(|a, b| {
        a.data_offsets
            .cmp(&b.data_offsets)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut cursor = 0u64;
    let mut prev: Option<&TensorEntry> = None;
    for t in &tensors {
        let (begin, end) = t.data_offsets;
        if begin < cursor {
            // `prev` is set: cursor > 0 only after a non-empty tensor.
            let first = prev.map(|p| p.name.clone()).unwrap_or_default();
            return Err(SafetensorsProblem::Overlap {
                first,
                second: t.name.clone(),
                at: begin,
            });
        }
        if begin > cursor {
            return Err(SafetensorsProblem::Gap {
                begin: cursor,
                end: begin,
            });
        }
        if end > begin {
            prev = Some(t);
        }
        cursor = end;
    }
    if cursor < data_len {
        return Err(SafetensorsProblem::Gap {
            begin: cursor,
            end: data_len,
        });
    }

    // Second opinion from the `safetensors` crate on the same entries.
    let infos: Vec<(String, TensorInfo)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                TensorInfo {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    data_offsets: (t.data_offsets.0 as usize, t.data_offsets.1 as usize),
                },
            )
        })
        .collect();
    let meta_map: Option<HashMap<String, String>> = if metadata.is_empty() {
        None
    } else {
        Some(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    };
    match Metadata::new(meta_map, infos) {
        Ok(m) if m.data_len() as u64 == data_len => {}
        Ok(_) | Err(_) => {
            // Unreachable if the checks above are right; report rather than panic.
            return Err(SafetensorsProblem::BadEntry {
                tensor: "<header>".into(),
                message: "the safetensors crate rejects this header".into(),
            });
        }
    }

    Ok(SafetensorsHeader {
        header_len,
        file_len,
        tensors,
        metadata,
    })
}

/// A validated shard index (`model.safetensors.index.json`) and its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIndex {
    /// Tensor name -> shard file name.
    pub weight_map: BTreeMap<String, String>,
    /// The distinct shard file names, sorted.
    pub shards: Vec<String>,
    /// The `metadata` object, if any (e.g. `total_size`).
    pub metadata: Option<Value>,
}

impl ShardIndex {
    /// Parses the index JSON (without touching the shards).
    pub fn parse(text: &[u8]) -> std::result::Result<Self, ShardIndexProblem> {
        let malformed = |message: String| ShardIndexProblem::Malformed { message };
        let value: Value =
            serde_json::from_slice(text).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| malformed("expected a JSON object".into()))?;
        let map = obj
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("missing `weight_map` object".into()))?;
        let mut weight_map = BTreeMap::new();
        for (tensor, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| malformed(format!("shard of `{tensor}` is not a string")))?;
            // The shard name is joined to the checkpoint directory: refuse anything
            // that could escape it (`../x`, `/etc/x`, `a/b`).
            let plain = !shard.is_empty()
                && shard != "."
                && shard != ".."
                && !shard.contains('/')
                && !shard.contains('\\')
                && !shard.contains('\0');
            if !plain {
                return Err(ShardIndexProblem::UnsafeShardName {
                    tensor: tensor.clone(),
                    shard: shard.to_string(),
                });
            }
            weight_map.insert(tensor.clone(), shard.to_string());
        }
        let shards: BTreeSet<String> = weight_map.values().cloned().collect();
        Ok(ShardIndex {
            weight_map,
            shards: shards.into_iter().collect(),
            metadata: obj.get("metadata").cloned(),
        })
    }
}

/// Everything validated about a checkpoint directory's weights.
#[derive(Debug, Clone)]
pub struct CheckpointFiles {
    /// The directory.
    pub dir: PathBuf,
    /// The shard index, if the checkpoint has one.
    pub index: Option<ShardIndex>,
    /// Each weight file (file name) with its validated header, sorted by name.
    pub files: Vec<(String, SafetensorsHeader)>,
}

impl CheckpointFiles {
    /// Total number of tensors over all files.
    pub fn num_tensors(&self) -> usize {
        self.files.iter().map(|(_, h)| h.tensors.len()).sum()
    }

    /// The file and entry holding tensor `name`.
    pub fn find(&self, name: &str) -> Option<(&str, &TensorEntry)> {
        self.files
            .iter()
            .find_map(|(f, h)| h.get(name).map(|t| (f.as_str(), t)))
    }
}

/// Validates the shard index at `index_path` and every shard it names: each shard
/// must exist and pass [`validate_safetensors`], each tensor must be in its shard,
/// and no shard may hold a tensor the index does not list.
pub fn validate_shard_index(index_path: impl AsRef<Path>) -> Result<CheckpointFiles> {
    let index_path = index_path.as_ref();
    let wrap = |problem| Error::ShardIndex {
        path: index_path.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(index_path).map_err(|e| Error::io(index_path, e))?;
    if meta.len() > MAX_INDEX_BYTES {
        return Err(wrap(ShardIndexProblem::Malformed {
            message: format!(
                "{} bytes is more than the {MAX_INDEX_BYTES} accepted",
                meta.len()
            ),
        }));
    }
    let text = std::fs::read(index_path).map_err(|e| Error::io(index_path, e))?;
    let index = ShardIndex::parse(&text).map_err(wrap)?;
    let dir = index_path.parent().unwrap_or(Path::new(".")).to_path_buf();

    let mut files = Vec::new();
    for shard in &index.shards {
        let shard_path = dir.join(shard);
        if !shard_path.is_file() {
            let tensor = index
                .weight_map
                .iter()
                .find(|(_, s)| *s == shard)
                .map(|(t, _)| t.clone())
                .unwrap_or_default();
            return Err(wrap(ShardIndexProblem::MissingShard {
                tensor,
                shard: shard.clone(),
            }));
        }
        let header = validate_safetensors(&shard_path)?;
        let names: BTreeSet<&str> = header.names().collect();
        for (tensor, s) in &index.weight_map {
            if s == shard && !names.contains(tensor.as_str()) {
                return Err(wrap(ShardIndexProblem::TensorNotInShard {
                    tensor: tensor.clone(),
                    shard: shard.clone(),
                }));
            }
        }
        for name in &names {
            if index.weight_map.get(*name) != Some(shard) {
                return Err(wrap(ShardIndexProblem::UnlistedTensor {
                    tensor: name.to_string(),
                    shard: shard.clone(),
                }));
            }
        }
        files.push((shard.clone(), header));
    }
    Ok(CheckpointFiles {
        dir,
        index: Some(index),
        files,
    })
}

/// Validates the weights of a checkpoint directory: through
/// `model.safetensors.index.json` if present, else every `model*.safetensors`
/// file (the files mlx-lm would load). Also checks no tensor name appears in two files.
pub fn validate_checkpoint_dir(dir: impl AsRef<Path>) -> Result<CheckpointFiles> {
    let dir = dir.as_ref();
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.is_file() {
        return validate_shard_index(&index_path);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no model*.safetensors file and no model.safetensors.index.json: not a checkpoint directory",
            ),
        ));
    }
    let mut files = Vec::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    for name in names {
        let header = validate_safetensors(dir.join(&name))?;
        for t in &header.tensors {
            if let Some(other) = owner.insert(t.name.clone(), name.clone()) {
                return Err(Error::Safetensors {
                    path: dir.join(&name),
                    problem: SafetensorsProblem::DuplicateTensor {
                        tensor: format!("{} (also in {other})", t.name),
                    },
                });
            }
        }
        files.push((name, header));
    }
    Ok(CheckpointFiles {
        dir: dir.to_path_buf(),
        index: None,
        files,
    })
}
