//! Qwen3-MoE, unpatched and patched, side by side: same tokens, more tokens per second.
//!
//! ```text
//! cargo run --release --example qwen3_moe            # the embedded default model
//! cargo run --release --example qwen3_moe -- --preset qwen3-30b-a3b --layers 4 --quant 4 --record
//! cargo run --release --example qwen3_moe -- --model path/to/mlx-community/Qwen3-30B-A3B-4bit --prompt-ids 1,2,3
//! ```
//!
//! With no `--model`, a synthetic checkpoint (deterministic from preset, seed, layers
//! and quantization) is written to `target/zmlx-cache/` on first use and reused after.
//! Run with `--help` for every flag.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use zmlx::autopatch::{auto_patch, AutoOptions};
use zmlx::fidelity::{compare, Verdict, DEFAULT_PROMPTS};
use zmlx::generate::{generate, GenerateOptions};
use zmlx::models::qwen3_moe::Qwen3Moe;
use zmlx::records::{hardware, median, record, RunRecord, SpeedRuns};
use zmlx::synthetic::{self, Layout, Preset, SynthSpec, WeightFormat};
use zmlx_patch::{patch, PatchOptions, SlotName};

const USAGE: &str = "\
usage: qwen3_moe [options]
  --model PATH          a real checkpoint folder (config.json + safetensors)
  --preset NAME         synthetic preset when no --model: tiny (default), qwen3-30b-a3b
  --layers N            layer count override of the preset
  --seed N              seed of the synthetic weights (default 0)
  --quant Q             none (bf16), f32, 4, 8, 4-f32, 8-f32 (default 4: mlx-community 4-bit g64)
  --prompt TEXT         a text prompt (needs the checkpoint's tokenizer.json)
  --prompt-ids 1,2,3    a prompt as token ids (default 1,2,3,4,5,6,7,8)
  --max-tokens N        tokens to generate in speed runs (default 200)
  --runs N              paired speed runs (default 3): each run times the baseline and
                        the patched model, each in a fresh process of this example,
                        the first of the two alternating between runs
  --in-process          time both models in this process instead (baseline then
                        patched each run: faster to run, but the two models share
                        MLX's caches and the order never changes)
  --fidelity-tokens N   greedy tokens per fidelity prompt (default: --max-tokens)
  --fidelity-prompts N  prompts in the fidelity check: yours plus built-ins (default 3)
  --device cpu|gpu      where MLX runs (default cpu)
  --slots a,b           patch only these slots (router, expert_swiglu, down_combine,
                        linear, norm, merged_proj, decode_views, head_norm_rope,
                        add_norm, route_swiglu)
  --exclude a,b         leave these slots unpatched
  --ignore-exclusions   also patch slots the preset's exclude lists leave out
                        (to re-measure an exclusion)
  --auto                keep only slots measured faster here with identical tokens
  --baseline-only       run only the unpatched model (speed runs, no fidelity)
  --patched-only        run only the patched model (speed runs, no fidelity; for
                        profilers)
  --json                print one JSON object as the last line
  --record              append to benchmarks/matrix.jsonl and write a capsule
  --notes TEXT          notes stored in the capsule";

struct Args {
    model: Option<PathBuf>,
    preset: Preset,
    layers: Option<usize>,
    seed: u64,
    format: WeightFormat,
    prompt_text: Option<String>,
    prompt_ids: Vec<u32>,
    max_tokens: usize,
    runs: usize,
    fidelity_tokens: Option<usize>,
    fidelity_prompts: usize,
    device: mlx::Device,
    only: Option<Vec<SlotName>>,
    exclude: Vec<SlotName>,
    ignore_exclusions: bool,
    json: bool,
    record: bool,
    baseline_only: bool,
    patched_only: bool,
    in_process: bool,
    auto: bool,
    notes: String,
}

fn parse_slots(v: &str) -> Result<Vec<SlotName>, String> {
    v.split(',')
        .map(|s| {
            SlotName::ALL
                .into_iter()
                .find(|n| n.as_str() == s.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = SlotName::ALL.iter().map(|n| n.as_str()).collect();
                    format!("unknown slot {s:?} (slots: {})", names.join(", "))
                })
        })
        .collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: None,
        preset: Preset::Tiny,
        layers: None,
        seed: 0,
        format: WeightFormat::Q4,
        prompt_text: None,
        prompt_ids: vec![1, 2, 3, 4, 5, 6, 7, 8],
        max_tokens: 200,
        runs: 3,
        fidelity_tokens: None,
        fidelity_prompts: 3,
        device: mlx::Device::cpu(),
        only: None,
        exclude: Vec::new(),
        ignore_exclusions: false,
        json: false,
        record: false,
        baseline_only: false,
        patched_only: false,
        in_process: false,
        auto: false,
        notes: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--json" => {
                a.json = true;
                continue;
            }
            "--record" => {
                a.record = true;
                continue;
            }
            "--patched-only" => {
                a.patched_only = true;
                continue;
            }
            "--in-process" => {
                a.in_process = true;
                continue;
            }
            "--baseline-only" => {
                a.baseline_only = true;
                continue;
            }
            "--auto" => {
                a.auto = true;
                continue;
            }
            "--ignore-exclusions" => {
                a.ignore_exclusions = true;
                continue;
            }
            _ => {}
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--model" => a.model = Some(PathBuf::from(v)),
            "--preset" => a.preset = v.parse().map_err(|e: zmlx::Error| e.to_string())?,
            "--layers" => a.layers = Some(num(&v)?),
            "--seed" => a.seed = num(&v)? as u64,
            "--quant" => {
                a.format = match v.as_str() {
                    "none" | "bf16" => WeightFormat::Bf16,
                    "f32" => WeightFormat::F32,
                    "4" => WeightFormat::Q4,
                    "8" => WeightFormat::Q8,
                    "4-f32" => WeightFormat::Q4F32,
                    "8-f32" => WeightFormat::Q8F32,
                    _ => {
                        return Err(format!(
                            "--quant {v}: expected none, f32, 4, 8, 4-f32 or 8-f32"
                        ))
                    }
                }
            }
            "--prompt" => a.prompt_text = Some(v),
            "--prompt-ids" => {
                a.prompt_ids = v
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse::<u32>()
                            .map_err(|e| format!("--prompt-ids {t}: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--max-tokens" => a.max_tokens = num(&v)?,
            "--runs" => a.runs = num(&v)?.max(1),
            "--fidelity-tokens" => a.fidelity_tokens = Some(num(&v)?),
            "--fidelity-prompts" => a.fidelity_prompts = num(&v)?.max(1),
            "--device" => {
                a.device = match v.as_str() {
                    "cpu" => mlx::Device::cpu(),
                    "gpu" => mlx::Device::gpu(),
                    _ => return Err(format!("--device {v}: expected cpu or gpu")),
                }
            }
            "--slots" => a.only = Some(parse_slots(&v)?),
            "--exclude" => a.exclude = parse_slots(&v)?,
            "--notes" => a.notes = v,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    if args.device.kind == mlx::DeviceType::Gpu && !mlx::gpu_is_available()? {
        return Err(
            "--device gpu: this MLX has no GPU backend (run with MLX's CUDA or Metal library)"
                .into(),
        );
    }
    args.device.set_default()?;
    let (dir, model_id) = match &args.model {
        Some(p) => (
            p.clone(),
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        None => {
            let mut spec = SynthSpec::new(args.preset)
                .seed(args.seed)
                .format(args.format);
            spec.layout = Layout::MlxCommunity;
            if let Some(l) = args.layers {
                spec = spec.layers(l);
            }
            eprintln!("preparing the synthetic checkpoint (cached after the first run) ...");
            let ck = synthetic::ensure(&spec, synthetic::default_cache_dir())?;
            let id = ck
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (ck.dir, id)
        }
    };
    let s = mlx::StreamOrDevice::Device(args.device);
    let baseline = Qwen3Moe::load(&dir, s)?;
    let prompt = match &args.prompt_text {
        Some(text) => zmlx::tokenizer::encode(&dir, text)?,
        None => args.prompt_ids.clone(),
    };
    if args.baseline_only {
        return run_single(&args, &baseline, "baseline", &prompt, &model_id);
    }
    let (patched, report) = if args.auto {
        let auto = AutoOptions {
            tokens: 32,
            pairs: 3,
            prompt: prompt.clone(),
        };
        eprintln!(
            "auto: measuring each slot ({} paired runs of {} tokens) ...",
            auto.pairs, auto.tokens
        );
        let (m, r, decisions) = auto_patch(&baseline, &auto)?;
        for d in &decisions {
            eprintln!(
                "auto: {:<14} {} ({})",
                d.slot,
                if d.kept { "kept" } else { "dropped" },
                d.reason
            );
        }
        (m, r)
    } else {
        let mut m = baseline.clone();
        let r = patch(
            &mut m,
            &PatchOptions {
                only: args.only.clone(),
                exclude: args.exclude.clone(),
                ignore_exclusions: args.ignore_exclusions,
            },
        )?;
        (m, r)
    };
    let backend = report.backend.clone();
    eprintln!(
        "model: {model_id} ({} layers, {:?}) on {backend}, MLX {}",
        baseline.layers.len(),
        baseline.dtype(),
        mlx::version()
    );
    eprint!("{report}");
    if args.patched_only {
        return run_single(&args, &patched, "patched", &prompt, &model_id);
    }

    let mut prompts = vec![prompt.clone()];
    for p in DEFAULT_PROMPTS {
        if prompts.len() >= args.fidelity_prompts {
            break;
        }
        if p != prompt.as_slice() {
            prompts.push(p.to_vec());
        }
    }
    let fid_tokens = args.fidelity_tokens.unwrap_or(args.max_tokens);
    eprintln!(
        "fidelity: {} prompts x {fid_tokens} greedy tokens, both models ...",
        prompts.len()
    );
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) + fid_tokens;
    if let Some(why) = zmlx::fidelity::nondeterminism_warning(args.device, longest) {
        eprintln!("warning: {why}");
    }
    let fidelity = compare(&baseline, &patched, &prompts, fid_tokens)?;
    eprintln!("{fidelity}");

    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        ..GenerateOptions::default()
    };
    let (mut base_runs, mut patch_runs) = (SpeedRuns::default(), SpeedRuns::default());
    let mut base_tokens = Vec::new();
    let mut patch_tokens = Vec::new();
    let patched_slots = report.patched_slots();
    let timing = if args.in_process {
        "one process: baseline then patched each run"
    } else {
        "a fresh process per model and run, the first model alternating"
    };
    if !args.in_process {
        eprintln!("speed runs: each model in a fresh process of this example ...");
    }
    for r in 0..args.runs {
        let mut order = [
            (&baseline, &mut base_runs, &mut base_tokens, "baseline"),
            (&patched, &mut patch_runs, &mut patch_tokens, "patched"),
        ];
        if !args.in_process && r % 2 == 1 {
            order.swap(0, 1);
        }
        for (model, runs, toks, label) in order {
            let one = if args.in_process {
                let warmup_s = warm_up(model, &prompt)?;
                let g = generate(model, &prompt, &opts)?;
                OneRun {
                    decode_tps: g.decode_tps,
                    prefill_tps: g.prompt_tps,
                    peak_memory: g.peak_memory,
                    tokens: g.tokens,
                    warmup_s,
                }
            } else {
                child_run(label, &patched_slots)?
            };
            runs.decode_tps.push(one.decode_tps);
            runs.prefill_tps.push(one.prefill_tps);
            runs.peak_memory.push(one.peak_memory);
            runs.generated_tokens.push(one.tokens.len());
            runs.warmup_s.push(one.warmup_s);
            *toks = one.tokens;
        }
        eprintln!(
            "run {}/{}: baseline {:.2} tok/s, patched {:.2} tok/s",
            r + 1,
            args.runs,
            base_runs.decode_tps[r],
            patch_runs.decode_tps[r]
        );
    }
    let b = base_runs.decode_median();
    let p = patch_runs.decode_median();
    let pass = fidelity.verdict == Verdict::Pass;
    let speedup = (pass && b > 0.0).then(|| p / b);
    println!();
    println!("                      baseline      patched");
    println!(
        "decode tokens/s     {b:>10.2}   {p:>10.2}   (median of {} runs, {} tokens)",
        args.runs, args.max_tokens
    );
    println!(
        "prompt tokens/s     {:>10.2}   {:>10.2}   ({} prompt tokens)",
        base_runs.prefill_median(),
        patch_runs.prefill_median(),
        prompt.len()
    );
    println!(
        "peak memory (GB)    {:>10.3}   {:>10.3}",
        base_runs.peak_max() as f64 / 1e9,
        patch_runs.peak_max() as f64 / 1e9
    );
    println!(
        "warm-up (s)         {:>10.2}   {:>10.2}   (median; one token before each timed run: \
         first-call compilation)",
        median(&base_runs.warmup_s),
        median(&patch_runs.warmup_s)
    );
    match speedup {
        Some(x) => println!("speedup             {x:.2}x   (fidelity PASS)"),
        None => println!(
            "speedup             not reported: fidelity {}",
            fidelity.verdict
        ),
    }
    println!("{fidelity}");

    let record_row = RunRecord {
        model_id: model_id.clone(),
        family: baseline.config.model_type.clone(),
        patches: report
            .patched_slots()
            .iter()
            .map(|s| s.to_string())
            .collect(),
        modules_patched: report.patched_modules(),
        backend: backend.clone(),
        hardware: hardware(&backend),
        prompt_tokens: prompt.len(),
        baseline: base_runs.clone(),
        patched: patch_runs.clone(),
        fidelity: fidelity.clone(),
        patch_report: serde_json::to_value(&report)?,
        timing: timing.to_string(),
        notes: args.notes.clone(),
    };
    if args.record {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let path = record(std::path::Path::new("benchmarks"), &record_row, &command)?;
        eprintln!("recorded: benchmarks/matrix.jsonl and {}", path.display());
    }
    if args.json {
        let obj = json!({
            "model": model_id,
            "model_path": dir,
            "device": backend,
            "mlx_version": mlx::version(),
            "prompt_ids": prompt,
            "baseline": {
                "tokens": base_tokens,
                "decode_tps": b,
                "prefill_tps": base_runs.prefill_median(),
                "peak_mem_gb": base_runs.peak_max() as f64 / 1e9,
                "warmup_s": median(&base_runs.warmup_s),
            },
            "patched": {
                "tokens": patch_tokens,
                "decode_tps": p,
                "prefill_tps": patch_runs.prefill_median(),
                "peak_mem_gb": patch_runs.peak_max() as f64 / 1e9,
                "warmup_s": median(&patch_runs.warmup_s),
            },
            "fidelity": {
                "verdict": fidelity.verdict,
                "matched": fidelity.matched,
                "total": fidelity.total,
                "first_divergence": fidelity.first_divergence,
                "top1_agreement": fidelity.top1_agreement,
                "max_abs_logit_diff": fidelity.max_abs_logit_diff,
                "mean_kl": fidelity.mean_kl,
            },
            "speedup": speedup,
            "patch_report": report,
        });
        println!("{obj}");
    }
    Ok(())
}

/// One speed run's figures.
struct OneRun {
    decode_tps: f64,
    prefill_tps: f64,
    peak_memory: usize,
    tokens: Vec<u32>,
    /// Seconds of the warm-up generation before it (see [`warm_up`]).
    warmup_s: f64,
}

/// One generation of a single token before the timed one, so that first-call
/// costs (kernel compilation: MLX's JIT, and NVRTC for custom CUDA kernels, which
/// MLX keeps in memory only; buffer allocation) stay out of the prompt tokens/s of
/// the timed run. Returns its duration, which the report shows as start-up cost.
fn warm_up(model: &Qwen3Moe, prompt: &[u32]) -> Result<f64, Box<dyn std::error::Error>> {
    let t = std::time::Instant::now();
    let opts = GenerateOptions {
        max_tokens: 1,
        ..GenerateOptions::default()
    };
    generate(model, prompt, &opts)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Options of this invocation that a child speed run must not inherit: (flag, takes
/// a value).
const NOT_FOR_CHILDREN: &[(&str, bool)] = &[
    ("--runs", true),
    ("--fidelity-tokens", true),
    ("--fidelity-prompts", true),
    ("--notes", true),
    ("--slots", true),
    ("--exclude", true),
    ("--record", false),
    ("--json", false),
    ("--auto", false),
    ("--baseline-only", false),
    ("--patched-only", false),
    ("--in-process", false),
];

/// One speed run of one model in a fresh process of this example (same model,
/// prompt and device options; the patched child patches exactly `slots`, the slots
/// this process patched, which also carries over `--auto`'s choice).
fn child_run(label: &str, slots: &[&str]) -> Result<OneRun, Box<dyn std::error::Error>> {
    let mut args = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match NOT_FOR_CHILDREN.iter().find(|(f, _)| *f == a) {
            Some((_, true)) => {
                it.next();
            }
            Some((_, false)) => {}
            None => args.push(a),
        }
    }
    args.extend(["--runs".into(), "1".into(), "--json".into()]);
    // With no slot patched the "patched" model is the baseline.
    let key = if label == "patched" && !slots.is_empty() {
        args.extend(["--patched-only".into(), "--slots".into(), slots.join(",")]);
        "patched"
    } else {
        args.push("--baseline-only".into());
        "baseline"
    };
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(&args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "the {label} speed run ({}) failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let obj: serde_json::Value = serde_json::from_str(last)
        .map_err(|e| format!("the {label} speed run printed no JSON line ({e})"))?;
    let m = &obj[key];
    let num = |k: &str| {
        m[k].as_f64()
            .ok_or_else(|| format!("the {label} speed run's JSON has no {key}.{k}"))
    };
    let tokens = m["tokens"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default();
    Ok(OneRun {
        decode_tps: num("decode_tps")?,
        prefill_tps: num("prefill_tps")?,
        peak_memory: (num("peak_mem_gb")? * 1e9).round() as usize,
        tokens,
        warmup_s: num("warmup_s")?,
    })
}

/// Speed runs of one model alone: the unpatched one (to compare with mlx-lm on one
/// checkpoint) or the patched one (under a profiler). `label` names it.
fn run_single(
    args: &Args,
    model: &Qwen3Moe,
    label: &str,
    prompt: &[u32],
    model_id: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        ..GenerateOptions::default()
    };
    let mut runs = SpeedRuns::default();
    let mut tokens = Vec::new();
    let warmup_s = warm_up(model, prompt)?;
    eprintln!("warm-up (one token, first-call compilation): {warmup_s:.2} s");
    runs.warmup_s.push(warmup_s);
    for r in 0..args.runs {
        let g = generate(model, prompt, &opts)?;
        eprintln!(
            "run {}/{}: {:.3} tok/s decode, {:.2} tok/s prompt",
            r + 1,
            args.runs,
            g.decode_tps,
            g.prompt_tps
        );
        runs.decode_tps.push(g.decode_tps);
        runs.prefill_tps.push(g.prompt_tps);
        runs.peak_memory.push(g.peak_memory);
        tokens = g.tokens;
    }
    println!(
        "{label} {model_id}: decode {:.3} tok/s (median of {}: {:?}), prompt {:.2} tok/s, peak {:.3} GB",
        runs.decode_median(),
        args.runs,
        runs.decode_tps,
        runs.prefill_median(),
        runs.peak_max() as f64 / 1e9
    );
    if args.json {
        let mut obj = json!({
            "model": model_id,
            "device": if args.device.kind == mlx::DeviceType::Gpu { "gpu" } else { "cpu" },
            "mlx_version": mlx::version(),
            "prompt_ids": prompt,
        });
        obj[label] = json!({
            "tokens": tokens,
            "decode_tps": runs.decode_median(),
            "decode_tps_runs": runs.decode_tps,
            "prefill_tps": runs.prefill_median(),
            "peak_mem_gb": runs.peak_max() as f64 / 1e9,
            "warmup_s": warmup_s,
        });
        println!("{obj}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
