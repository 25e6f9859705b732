//! Each fused MoE op beside its MLX reference, through MLX, at Qwen3-30B-A3B shapes
//! (hidden 2048, 128 experts, top-8, moe_intermediate 768, 4-bit g64, bf16
//! activations; lm_head 151936 x 2048): decode (1 token) and prefill (512 tokens),
//! with each op's memory floor (bytes it must read / measured read bandwidth).
//!
//! ```text
//! cargo bench --bench moe_ops                  # the default device (CPU with mlx-cpu)
//! cargo bench --bench moe_ops -- --prefill     # also 512-token prefill (slow reference)
//! cargo bench --bench moe_ops -- --reps 20 --json
//! ```
//!
//! The floor uses the measured read bandwidth of the device that runs the ops: on the
//! CPU this machine's multi-threaded read of 1 GiB, on a GPU MLX's own `sum` over a
//! 1 GiB array (median of 5); `--bandwidth-gbs N` overrides it.

use std::time::Instant;

use mlx::quantization::{quantize, QuantSpec};
use mlx::{random, Array, Dtype, StreamOrDevice};
use zmlx_kernels::down_combine::{DownCombineInput, FusedDownCombine, ReferenceDownCombine};
use zmlx_kernels::expert_swiglu::{FusedExpertSwiGlu, ReferenceExpertSwiGlu};
use zmlx_kernels::moe_gate::{FusedRouter, ReferenceRouter, RouterSpec};
use zmlx_kernels::quant_linear::{FusedLinear, ReferenceLinear};
use zmlx_kernels::{DownCombineOp, ExpertSwiGluOp, LinearOp, RouterOp, Weight};

const HIDDEN: i32 = 2048;
const EXPERTS: i32 = 128;
const TOP_K: i32 = 8;
const INTER: i32 = 768;
const VOCAB: i32 = 151_936;

fn quantized(shape: &[i32], key: u64) -> Weight {
    let k = random::key(key).unwrap();
    let w = random::normal(shape, Dtype::Bfloat16, 0.0, 0.02, Some(&k), ()).unwrap();
    Weight::Quantized(quantize(&w, QuantSpec::affine(64, 4), ()).unwrap())
}

/// Median seconds of `f` over `reps` runs (after one warm-up).
fn time(reps: usize, mut f: impl FnMut() -> Array) -> f64 {
    f().eval().unwrap();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f().eval().unwrap();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Multi-threaded read bandwidth of this machine in bytes/s (sum over 1 GiB).
fn cpu_bandwidth() -> f64 {
    let n: usize = 1 << 27; // 128 Mi u64 = 1 GiB
    let data: Vec<u64> = (0..n as u64).collect();
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1);
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let chunk = n.div_ceil(threads);
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = data
                .chunks(chunk)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        best = best.max((n * 8) as f64 / t.elapsed().as_secs_f64());
    }
    best
}

/// Read bandwidth of a GPU in bytes/s, as MLX's own full reduction of a 1 GiB f32
/// array reaches it (median of 5 timed sums after a warm-up).
fn gpu_bandwidth(s: StreamOrDevice) -> f64 {
    let n = 1i32 << 28; // 256 Mi f32 = 1 GiB
    let a = mlx::ops::arange(0.0, f64::from(n), 1.0, Dtype::Float32, s).unwrap();
    a.eval().unwrap();
    let secs = time(5, || mlx::ops::sum(&a, &[0], false, s).unwrap());
    4.0 * f64::from(n) / secs
}

struct Line {
    op: String,
    tokens: i32,
    reference_ms: Option<f64>,
    fused_ms: f64,
    floor_ms: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let reps = value("--reps").map_or(10, |v| v as usize);
    let device = mlx::Device::default_device().unwrap();
    let s = StreamOrDevice::Device(device);
    let bandwidth = value("--bandwidth-gbs")
        .map(|g| g * 1e9)
        .unwrap_or_else(|| match device.kind {
            mlx::DeviceType::Cpu => cpu_bandwidth(),
            _ => gpu_bandwidth(s),
        });
    eprintln!(
        "device {:?}, MLX {}, read bandwidth {:.1} GB/s, {reps} reps",
        device.kind,
        mlx::version(),
        bandwidth / 1e9
    );

    let gate = quantized(&[EXPERTS, INTER, HIDDEN], 1);
    let up = quantized(&[EXPERTS, INTER, HIDDEN], 2);
    let down = quantized(&[EXPERTS, HIDDEN, INTER], 3);
    let router_w = quantized(&[EXPERTS, HIDDEN], 4);
    let lm_head = quantized(&[VOCAB, HIDDEN], 5);
    let expert_matrix = gate.nbytes() / EXPERTS as usize;
    mlx::eval(&[]).unwrap();
    let spec = RouterSpec::SoftmaxTopK {
        k: TOP_K,
        normalize: true,
    };
    let mut lines = Vec::new();
    let mut token_counts = vec![1];
    if flag("--prefill") {
        token_counts.push(512);
    }
    for &t in &token_counts {
        let key = random::key(100 + t as u64).unwrap();
        let x = random::normal(&[1, t, HIDDEN], Dtype::Bfloat16, 0.0, 1.0, Some(&key), ()).unwrap();
        let logits = ReferenceLinear.forward(&x, &router_w, s).unwrap();
        logits.eval().unwrap();
        let routing = ReferenceRouter.route(&logits, &spec, s).unwrap();
        mlx::eval(&[&routing.indices, &routing.scores]).unwrap();
        // Experts a batch must read: all distinct ones it routes to.
        let mut ids = routing
            .indices
            .reshape(&[-1])
            .unwrap()
            .to_vec::<u32>()
            .unwrap();
        ids.sort_unstable();
        ids.dedup();
        let distinct = ids.len();
        let slow_ref = t > 1 && device.kind == mlx::DeviceType::Cpu;
        let ref_reps = if slow_ref { 1 } else { reps };

        let routing_ms = |r: &dyn RouterOp| {
            time(reps, || {
                let o = r.route(&logits, &spec, s).unwrap();
                o.scores
            }) * 1e3
        };
        lines.push(Line {
            op: "router (softmax, top-8, renorm)".into(),
            tokens: t,
            reference_ms: Some(routing_ms(&ReferenceRouter)),
            fused_ms: routing_ms(&FusedRouter),
            floor_ms: logits.nbytes() as f64 / bandwidth * 1e3,
        });
        // Mixtral's rule (top-k of the logits, softmax over the k) at Mixtral's shape
        // (8 experts, top-2) and at 128 experts, top-8, on bf16 logits.
        for (experts, k) in [(8, 2), (EXPERTS, TOP_K)] {
            let key = random::key(200 + t as u64).unwrap();
            let logits =
                random::normal(&[1, t, experts], Dtype::Bfloat16, 0.0, 1.0, Some(&key), ())
                    .unwrap();
            logits.eval().unwrap();
            let spec = RouterSpec::TopKSoftmax { k };
            let ms =
                |r: &dyn RouterOp| time(reps, || r.route(&logits, &spec, s).unwrap().scores) * 1e3;
            lines.push(Line {
                op: format!("router (top-{k} of {experts}, softmax)"),
                tokens: t,
                reference_ms: Some(ms(&ReferenceRouter)),
                fused_ms: ms(&FusedRouter),
                floor_ms: logits.nbytes() as f64 / bandwidth * 1e3,
            });
        }

        let sw = |op: &dyn ExpertSwiGluOp, n: usize| {
            time(n, || op.forward(&x, &gate, &up, &routing, s).unwrap().h) * 1e3
        };
        lines.push(Line {
            op: "expert SwiGLU (gate+up, 4-bit)".into(),
            tokens: t,
            reference_ms: Some(sw(&ReferenceExpertSwiGlu, ref_reps)),
            fused_ms: sw(&FusedExpertSwiGlu, reps),
            floor_ms: (2 * distinct * expert_matrix) as f64 / bandwidth * 1e3,
        });

        let hidden = ReferenceExpertSwiGlu
            .forward(&x, &gate, &up, &routing, s)
            .unwrap();
        hidden.h.eval().unwrap();
        let input = DownCombineInput {
            hidden: &hidden,
            down: &down,
            routing: &routing,
            residual: None,
        };
        let dc =
            |op: &dyn DownCombineOp, n: usize| time(n, || op.forward(&input, s).unwrap()) * 1e3;
        lines.push(Line {
            op: "down + combine (4-bit)".into(),
            tokens: t,
            reference_ms: Some(dc(&ReferenceDownCombine, ref_reps)),
            fused_ms: dc(&FusedDownCombine, reps),
            floor_ms: (distinct * down.nbytes() / EXPERTS as usize) as f64 / bandwidth * 1e3,
        });

        let lin =
            |op: &dyn LinearOp, n: usize| time(n, || op.forward(&x, &lm_head, s).unwrap()) * 1e3;
        let ref_lm = if t == 1 || flag("--full") {
            Some(lin(
                &ReferenceLinear,
                if device.kind == mlx::DeviceType::Cpu {
                    3
                } else {
                    reps
                },
            ))
        } else {
            None
        };
        lines.push(Line {
            op: "lm_head 151936x2048 (4-bit)".into(),
            tokens: t,
            reference_ms: ref_lm,
            fused_ms: lin(&FusedLinear, reps),
            floor_ms: lm_head.nbytes() as f64 / bandwidth * 1e3,
        });
    }
    println!(
        "{:<34} {:>6} {:>12} {:>10} {:>9} {:>9} {:>10}",
        "op", "tokens", "mlx ms", "zmlx ms", "speedup", "floor ms", "floor/zmlx"
    );
    for l in &lines {
        let r = l
            .reference_ms
            .map_or("not run".to_string(), |r| format!("{r:.3}"));
        let sp = l
            .reference_ms
            .map_or("-".to_string(), |r| format!("{:.1}x", r / l.fused_ms));
        println!(
            "{:<34} {:>6} {:>12} {:>10.3} {:>9} {:>9.3} {:>9.0}%",
            l.op,
            l.tokens,
            r,
            l.fused_ms,
            sp,
            l.floor_ms,
            100.0 * l.floor_ms / l.fused_ms
        );
    }
    if flag("--json") {
        let rows: Vec<_> = lines
            .iter()
            .map(|l| serde_json::json!({"op": l.op, "tokens": l.tokens, "reference_ms": l.reference_ms, "fused_ms": l.fused_ms, "floor_ms": l.floor_ms}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"device": format!("{:?}", device.kind), "mlx_version": mlx::version(), "bandwidth_gbs": bandwidth / 1e9, "reps": reps, "ops": rows})
        );
    }
}
