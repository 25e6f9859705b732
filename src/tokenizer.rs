//! Text to token ids and back, with a checkpoint's `tokenizer.json` (Hugging Face
//! `tokenizers`). Synthetic checkpoints have none: use token ids there.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};

fn load(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} has no tokenizer.json, so text prompts cannot be encoded; give token ids instead (--prompt-ids 1,2,3)",
            dir.display()
        )));
    }
    Tokenizer::from_file(&path).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: cannot read the tokenizer: {e}",
            path.display()
        ))
    })
}

/// The token ids of `text` (without special tokens added).
///
/// # Errors
/// When `dir` has no usable `tokenizer.json`.
pub fn encode(dir: &Path, text: &str) -> Result<Vec<u32>> {
    let tok = load(dir)?;
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode the prompt: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// The text of `ids`.
///
/// # Errors
/// When `dir` has no usable `tokenizer.json`.
pub fn decode(dir: &Path, ids: &[u32]) -> Result<String> {
    let tok = load(dir)?;
    tok.decode(ids, true)
        .map_err(|e| Error::InvalidArgument(format!("cannot decode tokens: {e}")))
}
