//! Shared helpers of the integration tests: synthetic checkpoints and the mlx-lm
//! reference environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use zmlx::synthetic::{self, Preset, SynthSpec, WeightFormat};

/// The folder synthetic test checkpoints are cached in.
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("zmlx-cache")
}

/// A tiny synthetic checkpoint of `format` and `seed` (written once, then reused).
pub fn tiny(format: WeightFormat, seed: u64) -> PathBuf {
    let spec = SynthSpec::new(Preset::Tiny).seed(seed).format(format);
    synthetic::ensure(&spec, cache_dir())
        .expect("synthetic checkpoint")
        .dir
}

/// A Python with mlx 0.32.4 (CPU) and mlx-lm: `$ZMLX_REFERENCE_PYTHON`, else a
/// virtual environment under `target/` that this creates on first use with pip.
pub fn reference_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("ZMLX_REFERENCE_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("mlx-lm-venv");
        let py = venv.join("bin").join("python");
        let ready = venv.join("zmlx-ready");
        if !ready.is_file() {
            let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "could not create {} with `python3 -m venv`", venv.display());
            let ok = Command::new(&py)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(["mlx==0.32.4", "mlx-cpu==0.32.4", "mlx-lm==0.32.2", "numpy"])
                .status()
                .map(|s| s.success());
            assert!(
                matches!(ok, Ok(true)),
                "pip could not install mlx-lm into {} (network to PyPI needed, or set ZMLX_REFERENCE_PYTHON)",
                venv.display()
            );
            std::fs::write(&ready, "mlx==0.32.4 mlx-cpu==0.32.4 mlx-lm==0.32.2\n").expect("marker");
        }
        py
    })
    .clone()
}
