//! Writes (or reuses) a synthetic Qwen3-MoE checkpoint and prints its directory.
//!
//! ```text
//! cargo run --release --example synth -- [--preset tiny|qwen3-30b-a3b] [--seed N]
//!     [--layers N] [--format f32|bf16|q4|q8|q4-f32|q8-f32] [--layout mlx|hf] [--shard-bytes N]
//!     [--cache-dir DIR] [--validate]
//! ```
//!
//! Only the path goes to stdout (so scripts can capture it); progress goes to stderr.

use std::process::ExitCode;
use std::time::Instant;

use zmlx::synthetic::{self, Layout, Preset, SynthSpec, WeightFormat};

fn usage() -> &'static str {
    "usage: synth [--preset tiny|qwen3-30b-a3b] [--seed N] [--layers N] [--format f32|bf16|q4|q8|q4-f32|q8-f32] \
     [--layout mlx|hf] [--shard-bytes N] [--cache-dir DIR] [--validate]"
}

fn run() -> Result<(), String> {
    let mut spec = SynthSpec::new(Preset::Tiny);
    let mut cache_dir = synthetic::default_cache_dir();
    let mut validate = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--validate" {
            validate = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--preset" => spec.preset = value.parse::<Preset>().map_err(|e| e.to_string())?,
            "--seed" => spec.seed = num(&value)?,
            "--layers" => spec.num_layers = Some(num(&value)? as usize),
            "--format" => spec.format = value.parse::<WeightFormat>().map_err(|e| e.to_string())?,
            "--layout" => spec.layout = value.parse::<Layout>().map_err(|e| e.to_string())?,
            "--shard-bytes" => spec.max_shard_bytes = Some(num(&value)?),
            "--cache-dir" => cache_dir = value.into(),
            _ => return Err(format!("unknown flag {flag}\n{}", usage())),
        }
    }
    let t = Instant::now();
    let ckpt = synthetic::ensure(&spec, &cache_dir).map_err(|e| e.to_string())?;
    eprintln!(
        "{} {} in {:.2}s",
        if ckpt.reused { "reused" } else { "wrote" },
        spec.dir_name(),
        t.elapsed().as_secs_f64()
    );
    if validate {
        let t = Instant::now();
        let files =
            zmlx::checkpoint::validate_checkpoint_dir(&ckpt.dir).map_err(|e| e.to_string())?;
        eprintln!(
            "validated {} tensors in {} file(s) in {:.3}s",
            files.num_tensors(),
            files.files.len(),
            t.elapsed().as_secs_f64()
        );
    }
    println!("{}", ckpt.dir.display());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synth: {e}");
            ExitCode::FAILURE
        }
    }
}
