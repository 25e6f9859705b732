//! Loading a checkpoint's tensors into MLX, after checking them in Rust.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use mlx::{Array, StreamOrDevice};

use crate::checkpoint::validate::validate_checkpoint_dir;
use crate::error::Result;

/// Every tensor of the checkpoint in `dir` (one file or shards), checked before MLX
/// reads anything. Arrays are lazy: [`eval_with_progress`] reads them.
pub fn load_tensors(dir: &Path, s: StreamOrDevice) -> Result<BTreeMap<String, Array>> {
    let files = validate_checkpoint_dir(dir)?;
    let mut out = BTreeMap::new();
    for (file, _) in &files.files {
        let loaded = mlx::io::load_safetensors(files.dir.join(file), s)?;
        out.extend(loaded.arrays);
    }
    Ok(out)
}

/// Evaluates `arrays` in chunks, drawing a progress bar on stderr when it is a
/// terminal and the load is large (above 256 MiB).
pub fn eval_with_progress(label: &str, arrays: &[&Array]) -> Result<()> {
    let total: usize = arrays.iter().map(|a| a.nbytes()).sum();
    let show = std::io::stderr().is_terminal() && total > 256 << 20;
    let start = Instant::now();
    let mut done = 0usize;
    let mut chunk: Vec<&Array> = Vec::new();
    let mut chunk_bytes = 0usize;
    for (i, a) in arrays.iter().enumerate() {
        chunk.push(a);
        chunk_bytes += a.nbytes();
        if chunk_bytes >= 64 << 20 || i + 1 == arrays.len() {
            mlx::eval(&chunk)?;
            done += chunk_bytes;
            chunk.clear();
            chunk_bytes = 0;
            if show {
                let frac = done as f64 / total.max(1) as f64;
                let bar = "#".repeat((frac * 30.0) as usize);
                eprint!(
                    "\r{label}: [{bar:<30}] {:.2}/{:.2} GB {:.1}s",
                    done as f64 / 1e9,
                    total as f64 / 1e9,
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }
    if show {
        eprintln!();
    }
    Ok(())
}
