//! The error type of the `zmlx` crate.
//!
//! Every fallible function of the crate returns [`Result`]. Variants carry enough
//! context (file, field, tensor) to tell the user what is wrong and, through
//! [`SafetensorsProblem::hint`] and friends, what to do about it.

use std::path::PathBuf;

/// Shorthand for `std::result::Result<T, zmlx::error::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the `zmlx` crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// `config.json` is not valid JSON (or not a JSON object).
    #[error("config is not a valid JSON object: {0}")]
    ConfigJson(#[source] serde_json::Error),

    /// A field of `config.json` is missing, has the wrong type or an impossible value.
    #[error("config field `{field}`: {problem}")]
    Config {
        /// The field's name (dotted for nested fields, e.g. `quantization.bits`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A safetensors file failed validation; nothing of it was handed to MLX.
    #[error("{}: {problem}; {}", path.display(), problem.hint())]
    Safetensors {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        problem: SafetensorsProblem,
    },

    /// `model.safetensors.index.json` (the shard index) is unusable.
    #[error("{}: {problem}; {}", path.display(), problem.hint())]
    ShardIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong.
        problem: ShardIndexProblem,
    },

    /// MLX (through the `mlx` crate) reported an error.
    #[error(transparent)]
    Mlx(#[from] mlx::Error),

    /// A checkpoint's tensors do not fit the model: each list names the tensors.
    #[error("{}: {}", path.display(), describe_weight_problems(missing, unused, mismatched))]
    Weights {
        /// The checkpoint folder.
        path: PathBuf,
        /// Tensors the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Tensors of the checkpoint the model does not use.
        unused: Vec<String>,
        /// Tensors with the wrong shape or dtype, each with what was expected.
        mismatched: Vec<String>,
    },

    /// A generation or model call was given bad arguments.
    #[error("{0}")]
    InvalidArgument(String),

    /// A synthetic checkpoint could not be made as asked.
    #[error("synthetic checkpoint: {0}")]
    Synthetic(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds a [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The safetensors problem, if this is a [`Error::Safetensors`].
    pub fn safetensors_problem(&self) -> Option<&SafetensorsProblem> {
        match self {
            Error::Safetensors { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The shard-index problem, if this is a [`Error::ShardIndex`].
    pub fn shard_index_problem(&self) -> Option<&ShardIndexProblem> {
        match self {
            Error::ShardIndex { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The config field this error names, if it is a [`Error::Config`].
    pub fn config_field(&self) -> Option<&str> {
        match self {
            Error::Config { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// What is wrong with a safetensors file (see [`crate::checkpoint::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsProblem {
    /// The file is shorter than the 8-byte header length prefix.
    #[error("file is {len} bytes, shorter than the 8-byte header length")]
    TooShort {
        /// The file's length in bytes.
        len: u64,
    },
    /// The header length prefix exceeds the limit.
    #[error("header length {header_len} exceeds the limit of {limit} bytes")]
    HeaderTooLarge {
        /// The declared header length.
        header_len: u64,
        /// The largest accepted header length.
        limit: u64,
    },
    /// The header length prefix points past the end of the file.
    #[error("header length {header_len} runs past the end of the {file_len}-byte file")]
    HeaderPastEnd {
        /// The declared header length.
        header_len: u64,
        /// The file's length in bytes.
        file_len: u64,
    },
    /// The header is not UTF-8.
    #[error("header is not valid UTF-8 (at byte {valid_up_to})")]
    HeaderNotUtf8 {
        /// Length of the valid UTF-8 prefix.
        valid_up_to: usize,
    },
    /// The header is not a JSON object.
    #[error("header is not a valid JSON object: {message}")]
    BadJson {
        /// The JSON parser's message.
        message: String,
    },
    /// The same tensor name appears twice in the header.
    #[error("tensor `{tensor}` is declared twice")]
    DuplicateTensor {
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor entry lacks a field or has a malformed one.
    #[error("tensor `{tensor}`: malformed entry: {message}")]
    BadEntry {
        /// The tensor's name (or `__metadata__`).
        tensor: String,
        /// What is malformed.
        message: String,
    },
    /// A tensor's dtype is not one safetensors and MLX both know.
    #[error("tensor `{tensor}`: unknown or unsupported dtype `{dtype}`")]
    BadDtype {
        /// The tensor's name.
        tensor: String,
        /// The dtype string found in the header.
        dtype: String,
    },
    /// The element count times the dtype size overflows.
    #[error("tensor `{tensor}`: shape {shape:?} overflows when sized")]
    ShapeOverflow {
        /// The tensor's name.
        tensor: String,
        /// Its declared shape.
        shape: Vec<u64>,
    },
    /// Offsets are reversed (`end < begin`).
    #[error("tensor `{tensor}`: data_offsets [{begin}, {end}] end before they begin")]
    ReversedOffsets {
        /// The tensor's name.
        tensor: String,
        /// Declared start offset.
        begin: u64,
        /// Declared end offset.
        end: u64,
    },
    /// `shape x dtype size` differs from the byte range the offsets give.
    #[error("tensor `{tensor}`: shape {shape:?} of {dtype} needs {expected} bytes but data_offsets span {actual}")]
    SizeMismatch {
        /// The tensor's name.
        tensor: String,
        /// Its dtype string.
        dtype: String,
        /// Its shape.
        shape: Vec<u64>,
        /// Bytes implied by shape and dtype.
        expected: u64,
        /// Bytes implied by the offsets.
        actual: u64,
    },
    /// A tensor's data lies (partly) beyond the end of the file.
    #[error("tensor `{tensor}`: data ends at byte {end} of the data section, which has only {data_len} bytes")]
    OutOfRange {
        /// The tensor's name.
        tensor: String,
        /// End offset within the data section.
        end: u64,
        /// Length of the file's data section.
        data_len: u64,
    },
    /// Two tensors share bytes.
    #[error("tensors `{first}` and `{second}` overlap (at data byte {at})")]
    Overlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
        /// Where the second one begins.
        at: u64,
    },
    /// Bytes of the data section that no tensor claims (holes are forbidden by the format).
    #[error("data bytes [{begin}, {end}) belong to no tensor")]
    Gap {
        /// Start of the hole.
        begin: u64,
        /// End of the hole.
        end: u64,
    },
}

impl SafetensorsProblem {
    /// A short suggestion of what to do about the problem.
    pub fn hint(&self) -> &'static str {
        match self {
            SafetensorsProblem::TooShort { .. }
            | SafetensorsProblem::HeaderPastEnd { .. }
            | SafetensorsProblem::OutOfRange { .. } => {
                "the file looks truncated: download or copy it again and compare its size with the source"
            }
            SafetensorsProblem::HeaderTooLarge { .. }
            | SafetensorsProblem::HeaderNotUtf8 { .. }
            | SafetensorsProblem::BadJson { .. } => {
                "this is not a safetensors file (or it is corrupted): check the path and re-download it"
            }
            SafetensorsProblem::BadDtype { .. } => {
                "convert the checkpoint to a dtype MLX loads (F32, F16, BF16, integer or BOOL types)"
            }
            _ => "the header contradicts itself: the file was written by a broken tool or tampered with; re-export it",
        }
    }
}

/// What is wrong with a shard index (`model.safetensors.index.json`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardIndexProblem {
    /// The index is not JSON or lacks a `weight_map` object of strings.
    #[error("malformed index: {message}")]
    Malformed {
        /// What is malformed.
        message: String,
    },
    /// A shard name is not a plain file name inside the checkpoint directory.
    #[error("shard name `{shard}` (for tensor `{tensor}`) is not a plain file name")]
    UnsafeShardName {
        /// The tensor mapped to it.
        tensor: String,
        /// The shard name.
        shard: String,
    },
    /// A shard file named by the index does not exist.
    #[error("shard `{shard}` (holding tensor `{tensor}`) does not exist")]
    MissingShard {
        /// A tensor mapped to it.
        tensor: String,
        /// The shard name.
        shard: String,
    },
    /// The index maps a tensor to a shard whose header does not declare it.
    #[error("tensor `{tensor}` is mapped to `{shard}` but that shard does not contain it")]
    TensorNotInShard {
        /// The tensor's name.
        tensor: String,
        /// The shard name.
        shard: String,
    },
    /// A shard holds a tensor the index does not mention.
    #[error("shard `{shard}` holds tensor `{tensor}` that the index does not list")]
    UnlistedTensor {
        /// The tensor's name.
        tensor: String,
        /// The shard name.
        shard: String,
    },
}

impl ShardIndexProblem {
    /// A short suggestion of what to do about the problem.
    pub fn hint(&self) -> &'static str {
        match self {
            ShardIndexProblem::MissingShard { .. } => {
                "download the missing shard into the checkpoint directory"
            }
            ShardIndexProblem::UnsafeShardName { .. } => {
                "shard names must be file names inside the checkpoint directory; do not trust this checkpoint"
            }
            _ => "the index and the shards disagree: re-download the checkpoint (all shards and the index together)",
        }
    }
}

/// The text of an [`Error::Weights`]: each non-empty list with up to 20 names.
fn describe_weight_problems(
    missing: &[String],
    unused: &[String],
    mismatched: &[String],
) -> String {
    let mut parts = Vec::new();
    for (what, names) in [
        ("missing tensors", missing),
        ("unused tensors", unused),
        ("mis-shaped or wrongly typed tensors", mismatched),
    ] {
        if names.is_empty() {
            continue;
        }
        let shown: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
        let more = if names.len() > 20 {
            format!(" and {} more", names.len() - 20)
        } else {
            String::new()
        };
        parts.push(format!(
            "{} {what}: {}{more}",
            names.len(),
            shown.join(", ")
        ));
    }
    format!(
        "the checkpoint does not match the model config ({})",
        parts.join("; ")
    )
}
