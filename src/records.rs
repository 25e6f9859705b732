//! Benchmark records: rows of `benchmarks/matrix.jsonl` and repro capsules.
//!
//! Every measured run appends one JSON object to the matrix and writes a capsule
//! (`benchmarks/capsules/<timestamp>-<model>.json`) with the exact command, the
//! environment, every per-run figure and the fidelity block. A run whose fidelity
//! is FAIL is recorded with `speedup: null`: it is never a speedup.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::fidelity::{Fidelity, Verdict};

/// Speed figures of one model over several runs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SpeedRuns {
    /// Decode tokens/s of each run.
    pub decode_tps: Vec<f64>,
    /// Prompt tokens/s of each run.
    pub prefill_tps: Vec<f64>,
    /// Peak memory of each run, bytes.
    pub peak_memory: Vec<usize>,
    /// Tokens generated in each run.
    pub generated_tokens: Vec<usize>,
    /// Seconds of the warm-up generation (one token) that precedes the timed
    /// generation in each process: first-call kernel compilation (MLX's JIT, and
    /// NVRTC for custom CUDA kernels, which MLX does not cache on disk) and buffer
    /// allocation. Not part of the speed figures.
    pub warmup_s: Vec<f64>,
}

/// The median of `v` (0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl SpeedRuns {
    /// Median decode tokens/s.
    pub fn decode_median(&self) -> f64 {
        median(&self.decode_tps)
    }
    /// Median prompt tokens/s.
    pub fn prefill_median(&self) -> f64 {
        median(&self.prefill_tps)
    }
    /// The largest peak memory, bytes.
    pub fn peak_max(&self) -> usize {
        self.peak_memory.iter().copied().max().unwrap_or(0)
    }
}

/// Everything a matrix row and a capsule hold.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// Model id (a preset name or a path's last component).
    pub model_id: String,
    /// Model family.
    pub family: String,
    /// Patched slots.
    pub patches: Vec<String>,
    /// Modules running fused implementations.
    pub modules_patched: usize,
    /// "cpu", "cuda" or "metal".
    pub backend: String,
    /// CPU or GPU model.
    pub hardware: String,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Unpatched figures.
    pub baseline: SpeedRuns,
    /// Patched figures.
    pub patched: SpeedRuns,
    /// The fidelity comparison.
    pub fidelity: Fidelity,
    /// The patch report, as JSON.
    pub patch_report: Value,
    /// How the speed runs were timed (e.g. each run in a fresh process, or both
    /// models in one process): figures taken differently do not compare.
    pub timing: String,
    /// Free-form notes for the capsule.
    pub notes: String,
}

impl RunRecord {
    /// Patched over baseline median decode speed; `None` unless fidelity passed.
    pub fn speedup(&self) -> Option<f64> {
        let b = self.baseline.decode_median();
        (self.fidelity.verdict == Verdict::Pass && b > 0.0)
            .then(|| self.patched.decode_median() / b)
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The git commit of the working tree (`-dirty` when it has changes), if any;
/// `ZMLX_GIT_COMMIT` overrides it (for copies of the tree without `.git`).
pub fn git_commit() -> String {
    if let Ok(c) = std::env::var("ZMLX_GIT_COMMIT") {
        return c;
    }
    let Some(head) = command_output("git", &["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = command_output("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// The CPU model (Linux) or the GPU name (NVIDIA), for records.
pub fn hardware(backend: &str) -> String {
    if backend == "cuda" {
        if let Some(name) =
            command_output("nvidia-smi", &["--query-gpu=name", "--format=csv,noheader"])
        {
            return name.lines().next().unwrap_or("").to_string();
        }
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu} ({cores} threads)")
}

/// Appends the matrix row of `r` to `dir/matrix.jsonl` and writes its capsule under
/// `dir/capsules/`; returns the capsule's path.
///
/// # Errors
/// When a file cannot be written.
pub fn record(dir: &Path, r: &RunRecord, command: &str) -> Result<PathBuf> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ts = utc_timestamp(now);
    let f = &r.fidelity;
    let row = json!({
        "timestamp": ts,
        "model_id": r.model_id,
        "family": r.family,
        "patches": r.patches,
        "modules_patched": r.modules_patched,
        "backend": r.backend,
        // The CPU kernels' precision ("exact" or "f32"), as the patch report names it;
        // null on a GPU and in rows written before 2026-11-27.
        "cpu_precision": r.patch_report.get("cpu_precision").cloned().unwrap_or(Value::Null),
        "hardware": r.hardware,
        "os": format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        "mlx_version": mlx::version(),
        "zmlx_version": env!("CARGO_PKG_VERSION"),
        "git_commit": git_commit(),
        "rustc_version": env!("ZMLX_RUSTC_VERSION"),
        "prompt_tokens": r.prompt_tokens,
        "generated_tokens": r.baseline.generated_tokens.iter().max().copied().unwrap_or(0),
        "runs": r.baseline.decode_tps.len(),
        "timing": r.timing,
        "baseline": {
            "decode_tps": r.baseline.decode_tps,
            "prefill_tps": r.baseline.prefill_tps,
            "decode_tps_median": r.baseline.decode_median(),
            "prefill_tps_median": r.baseline.prefill_median(),
            "peak_mem_gb": r.baseline.peak_max() as f64 / 1e9,
            "warmup_s": r.baseline.warmup_s,
        },
        "patched": {
            "decode_tps": r.patched.decode_tps,
            "prefill_tps": r.patched.prefill_tps,
            "decode_tps_median": r.patched.decode_median(),
            "prefill_tps_median": r.patched.prefill_median(),
            "peak_mem_gb": r.patched.peak_max() as f64 / 1e9,
            "warmup_s": r.patched.warmup_s,
        },
        "speedup": r.speedup(),
        "fidelity": {
            "verdict": f.verdict,
            "matched": f.matched,
            "total": f.total,
            "first_divergence": f.first_divergence,
            "top1_agreement": f.top1_agreement,
            "max_abs_logit_diff": f.max_abs_logit_diff,
            "mean_kl": f.mean_kl,
            "prompts": f.prompts.len(),
            "tokens_per_prompt": f.tokens_per_prompt,
        },
    });
    std::fs::create_dir_all(dir.join("capsules")).map_err(|e| Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let matrix = dir.join("matrix.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&matrix)
        .map_err(|e| Error::Io {
            path: matrix.clone(),
            source: e,
        })?;
    writeln!(file, "{row}").map_err(|e| Error::Io {
        path: matrix.clone(),
        source: e,
    })?;
    let env: serde_json::Map<String, Value> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("ZMLX_")
                || k.starts_with("MLX_")
                || k == "LD_LIBRARY_PATH"
                || k == "RAYON_NUM_THREADS"
        })
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let capsule = json!({
        "row": row,
        "command": command,
        "environment": env,
        "cwd_relative": true,
        "fidelity_detail": f,
        "patch_report": r.patch_report,
        "notes": r.notes,
    });
    let safe_id: String = r
        .model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join("capsules").join(format!(
        "{}-{safe_id}-{}.json",
        ts.replace(':', ""),
        r.backend
    ));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&capsule).unwrap_or_default(),
    )
    .map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
