//! Times the decode MoE block (router + expert SwiGLU + down/combine) on MLX's GPU
//! backend: the plain-MLX reference against zmlx's fused kernels, at
//! Qwen3-30B-A3B's shapes (hidden 2048, moe_intermediate 768, 128 experts, top-8,
//! bf16 activations, 4-bit g64 experts, 8-bit g64 router gate), one token.
//!
//! Variants (all start from the same router logits op, `quantized_matmul`):
//! - `reference`: mlx-lm's op sequence;
//! - `fused`: the reference router, then `FusedExpertSwiGlu` and `FusedDownCombine`;
//! - `fused+router`: the same with `FusedRouter` (the GPU router kernel);
//! - `routed`: the SwiGLU kernel that routes (`FusedExpertSwiGlu::forward_routed`,
//!   the `route_swiglu` slot), then `FusedDownCombine`: three ops a block;
//! - `routed+res`: the same with the residual add inside down + combine (as the
//!   patched model runs it): three ops a block with the add;
//! - `router+res`: `routed+res` with the router matmul inside the SwiGLU kernel too
//!   (`forward_router_routed`): two ops a block.
//!
//! Every variant is timed and compared as the block a decoder runs, `x + moe(x)`.
//!
//! Before timing, one block of each variant is compared with the reference: the
//! count of outputs whose bits differ (0 = bit-identical) and the max difference.
//! That block runs with its kernels' outputs poisoned (NaN before the kernel runs),
//! so a kernel that leaves an output unwritten cannot pass on a recycled buffer.
//!
//! Each timed iteration chains `--layers` blocks (x <- x + moe(x), cycling through
//! `--weights` distinct weight sets so that the expert weights come from HBM),
//! evaluates the last output and synchronizes; the figure is the median over
//! `--iters` iterations divided by the layer count. That figure is the host's graph
//! building plus the GPU's work (MLX encodes while the GPU runs, but builds first).
//! The "pipelined" figure is what a decode loop sees: `--iters` such chains queued
//! with `async_eval`, so the host builds chain i + 1 while the GPU runs chain i; the
//! wall time of all of them divided by the block count (median of 3). The memory floor is the bytes
//! one block reads (router gate and the k experts' packed weights, scales and
//! biases) at 3.0 TB/s. Then the chained timing once more with the reference and
//! the two patched blocks (`routed+res`, `router+res`) interleaved, one chain each
//! per iteration: the median of the per-iteration ratios, which the host's drift
//! between variants does not move.
//!
//! Then the per-op costs: single MLX ops, each fused kernel, and the attention-side
//! fusions (q/k norms + RoPE, residual add + norm) beside the MLX ops they replace.
//!
//! `--host-cost` instead splits each op's cost into graph building, MLX's encoding
//! (`async_eval`) and the rest (GPU time not hidden behind the host): a chain of
//! `--layers` copies of one op (or of one small op group) is built, encoded and
//! synchronized, and each phase is divided by the chain length. A last column gives
//! the part of the build spent inside MLX by zmlx's custom-kernel calls
//! (`mlx::kernel::set_call_timing`); the rest of a fused op's build is zmlx's own
//! Rust code around the call.
//!
//! Usage: `cuda_moe_bench [--iters N] [--layers L] [--weights W] [--tokens T]
//! [--per-op-only | --block-only | --host-cost]` (the first skips the block timing,
//! the second the per-op costs). `ZMLX_GPU_MINIFY=0` passes
//! the kernel sources to MLX as written (with comments), for A/B timing.

use std::time::Instant;

use mlx::quantization::{quantize, quantized_matmul, QuantSpec, QuantizedWeight};
use mlx::{ops, random, Array, Device, Dtype, StreamOrDevice};
use zmlx_kernels::down_combine::{DownCombineInput, FusedDownCombine, ReferenceDownCombine};
use zmlx_kernels::expert_swiglu::{
    FusedExpertSwiGlu, ReferenceExpertSwiGlu, RouterMatmul, RouterScratch,
};
use zmlx_kernels::moe_gate::{FusedRouter, ReferenceRouter, RouterSpec, Routing};
use zmlx_kernels::norm::{fused_add_rms_norm, fused_head_norm_rope, HeadNormRopeSpec};
use zmlx_kernels::{gpu, DownCombineOp, ExpertSwiGluOp, RouterOp, Weight};

const HIDDEN: i32 = 2048;
const INTER: i32 = 768;
const EXPERTS: i32 = 128;
const TOPK: i32 = 8;
/// Qwen3-MoE's routing: softmax over the experts, top-8, renormalised.
const QWEN3_ROUTER: RouterSpec = RouterSpec::SoftmaxTopK {
    k: TOPK,
    normalize: true,
};

struct Layer {
    router: QuantizedWeight,
    /// The same router weight, as the fused router takes it.
    router_w: Weight,
    /// The fused router's scratch (the blocks of one chain use each layer's one
    /// after another).
    scratch: RouterScratch,
    gate: Weight,
    up: Weight,
    down: Weight,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Reference,
    Fused,
    FusedRouterKernel,
    Routed,
    RoutedResidual,
    RouterResidual,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Reference => "reference",
            Variant::Fused => "fused",
            Variant::FusedRouterKernel => "fused+router",
            Variant::Routed => "routed",
            Variant::RoutedResidual => "routed+res",
            Variant::RouterResidual => "router+res",
        }
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn qw(
    shape: &[i32],
    spec: QuantSpec,
    seed: u64,
    s: StreamOrDevice,
) -> mlx::Result<QuantizedWeight> {
    let key = random::key(seed)?;
    let w = random::normal(shape, Dtype::Bfloat16, 0.0, 0.02, Some(&key), s)?;
    let q = quantize(&w, spec, s)?;
    let mut parts = vec![&q.weight, &q.scales];
    parts.extend(q.biases.as_ref());
    mlx::transforms::eval(&parts)?;
    Ok(q)
}

/// `x + moe(x)`, the residual added by its own op or (`routed+res`) inside the down
/// kernel.
fn step(l: &Layer, x: &Array, v: Variant, s: StreamOrDevice) -> mlx::Result<Array> {
    match v {
        Variant::RoutedResidual | Variant::RouterResidual => block(l, x, v, Some(x), s),
        _ => ops::add(x, &block(l, x, v, None, s)?, s),
    }
}

fn block(
    l: &Layer,
    x: &Array,
    v: Variant,
    residual: Option<&Array>,
    s: StreamOrDevice,
) -> mlx::Result<Array> {
    let spec = QWEN3_ROUTER;
    if v == Variant::RouterResidual {
        let (h, routing) = FusedExpertSwiGlu
            .forward_router_routed(
                x,
                &RouterMatmul {
                    weight: &l.router_w,
                    scratch: &l.scratch,
                },
                &spec,
                &l.gate,
                &l.up,
                s,
            )?
            .ok_or_else(|| {
                mlx::Error::invalid(
                    "cuda_moe_bench",
                    "the router-computing SwiGLU kernel declined this block",
                )
            })?;
        let input = DownCombineInput {
            hidden: &h,
            down: &l.down,
            routing: &routing,
            residual,
        };
        return FusedDownCombine.forward(&input, s);
    }
    let logits = quantized_matmul(x, &l.router, true, s)?;
    let (h, routing) = match v {
        Variant::Routed | Variant::RoutedResidual => FusedExpertSwiGlu
            .forward_routed(x, &logits, &spec, &l.gate, &l.up, s)?
            .ok_or_else(|| {
                mlx::Error::invalid(
                    "cuda_moe_bench",
                    "the routed SwiGLU kernel declined this block",
                )
            })?,
        Variant::Reference => {
            let routing = ReferenceRouter.route(&logits, &spec, s)?;
            let h = ReferenceExpertSwiGlu.forward(x, &l.gate, &l.up, &routing, s)?;
            (h, routing)
        }
        // `fused`: the expert kernels with the reference router.
        Variant::Fused | Variant::FusedRouterKernel | Variant::RouterResidual => {
            let routing = match v {
                Variant::Fused => ReferenceRouter.route(&logits, &spec, s)?,
                _ => FusedRouter.route(&logits, &spec, s)?,
            };
            let h = FusedExpertSwiGlu.forward(x, &l.gate, &l.up, &routing, s)?;
            (h, routing)
        }
    };
    let input = DownCombineInput {
        hidden: &h,
        down: &l.down,
        routing: &routing,
        residual,
    };
    match v {
        Variant::Reference => ReferenceDownCombine.forward(&input, s),
        _ => FusedDownCombine.forward(&input, s),
    }
}

fn chain(
    layers: &[Layer],
    n: usize,
    x0: &Array,
    v: Variant,
    s: StreamOrDevice,
) -> mlx::Result<Array> {
    let mut x = x0.clone();
    for i in 0..n {
        x = step(&layers[i % layers.len()], &x, v, s)?;
    }
    Ok(x)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn main() -> mlx::Result<()> {
    let iters = arg("--iters", 50);
    let n_layers = arg("--layers", 48);
    let n_weights = arg("--weights", 8);
    let tokens = arg("--tokens", 1) as i32;
    let s = StreamOrDevice::Device(Device::gpu());
    println!(
        "device: GPU, cuda={} metal={}; MLX {}",
        mlx::cuda_is_available()?,
        mlx::metal_is_available()?,
        env!("CARGO_PKG_VERSION")
    );
    let espec = QuantSpec::affine(64, 4);
    let rspec = QuantSpec::affine(64, 8);
    let mut layers = Vec::new();
    for i in 0..n_weights as u64 {
        let router = qw(&[EXPERTS, HIDDEN], rspec, 10 * i + 1, s)?;
        layers.push(Layer {
            router_w: Weight::Quantized(router.clone()),
            scratch: RouterScratch::new()?,
            router,
            gate: Weight::Quantized(qw(&[EXPERTS, INTER, HIDDEN], espec, 10 * i + 2, s)?),
            up: Weight::Quantized(qw(&[EXPERTS, INTER, HIDDEN], espec, 10 * i + 3, s)?),
            down: Weight::Quantized(qw(&[EXPERTS, HIDDEN, INTER], espec, 10 * i + 4, s)?),
        });
    }
    let dev = s.device()?;
    println!(
        "supports on this device: swiglu {:?}, down {:?}, router {:?}",
        FusedExpertSwiGlu.supports(&layers[0].gate, &layers[0].up, dev),
        FusedDownCombine.supports(&layers[0].down, dev),
        FusedRouter.supports(&QWEN3_ROUTER, EXPERTS, dev)
    );
    let key = random::key(99)?;
    let x0 = random::normal(&[tokens, HIDDEN], Dtype::Bfloat16, 0.0, 1.0, Some(&key), s)?;
    x0.eval()?;
    if std::env::args().any(|a| a == "--host-cost") {
        return host_costs(&layers, &x0, n_layers, iters, s);
    }
    if std::env::args().any(|a| a == "--per-op-only") {
        return per_op_costs(&layers, &x0, n_layers, iters, s);
    }

    // Agreement of one block (same input and weights) before timing.
    let yr = step(&layers[0], &x0, Variant::Reference, s)?;
    for v in [
        Variant::Fused,
        Variant::FusedRouterKernel,
        Variant::Routed,
        Variant::RoutedResidual,
        Variant::RouterResidual,
    ] {
        // Outputs poisoned with NaN: an output a kernel never writes could otherwise
        // hold the reference's values from a recycled buffer.
        let poisoned = gpu::process_cuda_variants().with_poisoned_outputs(true);
        let yf = gpu::with_cuda_variants(poisoned, || step(&layers[0], &x0, v, s))?;
        let d = ops::astype(&ops::subtract(&yf, &yr, s)?, Dtype::Float32, s)?;
        let dv = d.to_vec::<f32>()?;
        let rv = ops::astype(&yr, Dtype::Float32, s)?.to_vec::<f32>()?;
        let maxd = dv.iter().fold(0f32, |m, x| m.max(x.abs()));
        let maxr = rv.iter().fold(0f32, |m, x| m.max(x.abs()));
        let fv = ops::astype(&yf, Dtype::Float32, s)?.to_vec::<f32>()?;
        let differ = fv
            .iter()
            .zip(&rv)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        println!(
            "one block, {}: {differ}/{} outputs differ in bits, max |fused - reference| = {maxd:.3e} (max |reference| = {maxr:.3e})",
            v.label(),
            fv.len()
        );
    }

    // Bytes one block reads (per token the k experts; tokens may share experts,
    // so this is the floor for distinct experts = tokens * k, capped at E).
    let active = (tokens * TOPK).min(EXPERTS) as f64;
    let packed =
        |rows: i32, cols: i32, bits: i32| (rows as f64) * (cols as f64) * bits as f64 / 8.0;
    let groups = |rows: i32, cols: i32| (rows as f64) * (cols as f64) / 64.0 * 2.0 * 2.0;
    let expert_bytes = 3.0 * (packed(INTER, HIDDEN, 4) + groups(INTER, HIDDEN));
    let router_bytes = packed(EXPERTS, HIDDEN, 8) + groups(EXPERTS, HIDDEN);
    let bytes = active * expert_bytes + router_bytes;
    let floor_us = bytes / 3.0e12 * 1e6;
    println!(
        "memory floor: {:.2} MB per block -> {floor_us:.2} us at 3.0 TB/s",
        bytes / 1e6
    );

    // One chain of `n_layers` blocks built, evaluated and waited for: us per block.
    let time_chain = |v: Variant| -> mlx::Result<f64> {
        let t = Instant::now();
        let y = chain(&layers, n_layers, &x0, v, s)?;
        y.eval()?;
        mlx::synchronize()?;
        Ok(t.elapsed().as_secs_f64() * 1e6 / n_layers as f64)
    };
    let mut results = Vec::new();
    for v in [
        Variant::Reference,
        Variant::Fused,
        Variant::FusedRouterKernel,
        Variant::Routed,
        Variant::RoutedResidual,
        Variant::RouterResidual,
    ] {
        let label = v.label();
        for _ in 0..3 {
            chain(&layers, n_layers, &x0, v, s)?.eval()?;
        }
        mlx::synchronize()?;
        let mut chained = (0..iters)
            .map(|_| time_chain(v))
            .collect::<mlx::Result<Vec<_>>>()?;
        let mut single = Vec::with_capacity(iters);
        for i in 0..iters {
            let t = Instant::now();
            let y = step(&layers[i % layers.len()], &x0, v, s)?;
            y.eval()?;
            mlx::synchronize()?;
            single.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let c = median(&mut chained);
        let one = median(&mut single);
        // Pipelined, as a decode loop runs: the host builds and encodes chain i + 1
        // while the GPU runs chain i, so a block costs the larger of its host and
        // GPU time rather than their sum (the figure above).
        let mut piped = Vec::with_capacity(3);
        for _ in 0..3 {
            let t = Instant::now();
            let mut in_flight = Vec::with_capacity(iters);
            for _ in 0..iters {
                let y = chain(&layers, n_layers, &x0, v, s)?;
                mlx::async_eval(&[&y])?;
                in_flight.push(y);
            }
            mlx::synchronize()?;
            piped.push(t.elapsed().as_secs_f64() * 1e6 / (iters * n_layers) as f64);
        }
        let p = median(&mut piped);
        println!(
            "{label:>13}: {c:8.1} us per block ({n_layers} chained, median of {iters}); one block + sync {one:8.1} us; floor fraction {:.3}; pipelined {p:8.1} us",
            floor_us / c
        );
        results.push((label, c, p));
    }
    // The same chained timing with the variants interleaved: each iteration times
    // the reference and then each fused block once, and the ratio is taken within
    // the iteration. The host's speed drifts over seconds (the reference ran 111-176
    // us a block within one session), which the figures above, one variant after
    // another, take into their ratios; a paired ratio does not.
    {
        let fused = [Variant::RoutedResidual, Variant::RouterResidual];
        let mut ratios = vec![Vec::with_capacity(iters); fused.len()];
        for _ in 0..iters {
            let r = time_chain(Variant::Reference)?;
            for (v, ratios) in fused.iter().zip(&mut ratios) {
                ratios.push(r / time_chain(*v)?);
            }
        }
        for (v, ratios) in fused.iter().zip(&mut ratios) {
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            let at_3x = ratios.iter().filter(|&&x| x >= 3.0).count();
            println!(
                "interleaved chained, {}: reference / fused median {:.2}x (range {lo:.2}-{hi:.2}x, 3x or more in {at_3x} of {iters})",
                v.label(),
                median(ratios)
            );
        }
    }
    // The two expert kernels alone on a fixed routing (no router, no residual):
    // how much of a fused block is kernel time rather than per-op overhead.
    {
        let spec = QWEN3_ROUTER;
        let routings: Vec<Routing> = layers
            .iter()
            .map(|l| ReferenceRouter.route(&quantized_matmul(&x0, &l.router, true, s)?, &spec, s))
            .collect::<mlx::Result<_>>()?;
        for r in &routings {
            mlx::transforms::eval(&[&r.indices, &r.scores])?;
        }
        let us = independent_calls(n_layers, iters, |i| {
            let l = &layers[i % layers.len()];
            let r = &routings[i % layers.len()];
            let h = FusedExpertSwiGlu.forward(&x0, &l.gate, &l.up, r, s)?;
            let input = DownCombineInput {
                hidden: &h,
                down: &l.down,
                routing: r,
                residual: None,
            };
            FusedDownCombine.forward(&input, s)
        })?;
        println!(
            "swiglu+down kernels only: {us:8.1} us per block ({n_layers} per eval, median of {iters})"
        );
    }
    // The routing SwiGLU alone (48 independent calls an eval): MLX's router matmul
    // then the kernel that routes from its logits, against the kernel that computes
    // the logits itself.
    {
        let spec = QWEN3_ROUTER;
        // The calls of one eval are independent graph nodes, which MLX may run at the
        // same time: each gets a scratch of its own.
        let scratches = (0..n_layers)
            .map(|_| RouterScratch::new())
            .collect::<mlx::Result<Vec<_>>>()?;
        for fused_router in [false, true] {
            let us = independent_calls(n_layers, iters, |i| {
                let l = &layers[i % layers.len()];
                let got = if fused_router {
                    FusedExpertSwiGlu.forward_router_routed(
                        &x0,
                        &RouterMatmul {
                            weight: &l.router_w,
                            scratch: &scratches[i],
                        },
                        &spec,
                        &l.gate,
                        &l.up,
                        s,
                    )?
                } else {
                    let logits = quantized_matmul(&x0, &l.router, true, s)?;
                    FusedExpertSwiGlu.forward_routed(&x0, &logits, &spec, &l.gate, &l.up, s)?
                };
                let (h, _) = got.ok_or_else(|| {
                    mlx::Error::invalid("cuda_moe_bench", "a routing SwiGLU kernel declined")
                })?;
                Ok(h.h)
            })?;
            println!(
                "{}: {us:8.1} us per call ({n_layers} per eval, median of {iters})",
                if fused_router {
                    "router swiglu kernel (logits inside)"
                } else {
                    "router matmul + routed swiglu kernel"
                }
            );
        }
    }
    if !std::env::args().any(|a| a == "--block-only") {
        per_op_costs(&layers, &x0, n_layers, iters, s)?;
    }
    let (_, r, rp) = results[0];
    for (label, c, p) in &results[1..] {
        println!(
            "speedup {label} vs reference: {:.2}x chained, {:.2}x pipelined",
            r / c,
            rp / p
        );
    }
    Ok(())
}

/// Times `n` independent calls of `call` (call `i` gets `i`), all evaluated at once,
/// and returns the median cost per call in us over `iters` iterations (after 3
/// unmeasured ones).
fn independent_calls(
    n: usize,
    iters: usize,
    call: impl Fn(usize) -> mlx::Result<Array>,
) -> mlx::Result<f64> {
    let mut times = Vec::with_capacity(iters);
    for it in 0..iters + 3 {
        let t = Instant::now();
        let outs = (0..n).map(&call).collect::<mlx::Result<Vec<_>>>()?;
        mlx::transforms::eval(&outs.iter().collect::<Vec<_>>())?;
        mlx::synchronize()?;
        if it >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    Ok(median(&mut times))
}

/// Times `n` chained copies of one op (each takes the previous output, so the ops
/// run one after another as in a decode) and returns the median cost per op in us.
fn per_op(
    n: usize,
    iters: usize,
    x0: &Array,
    op: &dyn Fn(&Array) -> mlx::Result<Array>,
) -> mlx::Result<f64> {
    let mut times = Vec::with_capacity(iters);
    for it in 0..iters + 3 {
        let t = Instant::now();
        let mut x = x0.clone();
        for _ in 0..n {
            x = op(&x)?;
        }
        x.eval()?;
        mlx::synchronize()?;
        if it >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    Ok(median(&mut times))
}

/// Weights and constants of the per-op tables: a 4096 x 2048 4-bit projection, norm
/// weights for a hidden vector and for one head, the scalar 0.5, and Qwen3's
/// attention shape for `head_norm_rope` (16 query and 4 key heads of 128).
struct OpFixtures {
    proj: QuantizedWeight,
    norm_w: Array,
    head_w: Array,
    half: Array,
    head_spec: HeadNormRopeSpec,
}

fn op_fixtures(s: StreamOrDevice) -> mlx::Result<OpFixtures> {
    let proj = qw(&[4096, HIDDEN], QuantSpec::affine(64, 4), 77, s)?;
    let norm_w = ops::ones(&[HIDDEN], Dtype::Bfloat16, s)?;
    let head_w = ops::ones(&[128], Dtype::Bfloat16, s)?;
    let half = Array::scalar_as(0.5, Dtype::Bfloat16)?;
    mlx::transforms::eval(&[&norm_w, &head_w, &half])?;
    Ok(OpFixtures {
        proj,
        norm_w,
        head_w,
        half,
        head_spec: HeadNormRopeSpec {
            q_heads: 16,
            kv_heads: 4,
            head_dim: 128,
            eps: 1e-6,
            rope_base: 1e6,
            rope_scale: 1.0,
        },
    })
}

/// Per-op cost of single MLX ops and of each fused kernel at decode shapes. A
/// trivial element-wise op shows what any op costs (launch and host work); the
/// others are timed as "op, then sum + multiply + add back into the chained
/// input" (which keeps the chain whatever the op's output shape), so their own
/// cost is the figure minus three trivial ops. This decides whether a decode layer
/// is bound by its op count or by its kernels.
fn per_op_costs(
    layers: &[Layer],
    x0: &Array,
    n: usize,
    iters: usize,
    s: StreamOrDevice,
) -> mlx::Result<()> {
    let spec = QWEN3_ROUTER;
    let l = &layers[0];
    let routing = ReferenceRouter.route(&quantized_matmul(x0, &l.router, true, s)?, &spec, s)?;
    mlx::transforms::eval(&[&routing.indices, &routing.scores])?;
    let h0 = FusedExpertSwiGlu.forward(x0, &l.gate, &l.up, &routing, s)?;
    h0.h.eval()?;
    let OpFixtures {
        proj,
        norm_w,
        head_w,
        half,
        head_spec,
    } = op_fixtures(s)?;
    // `y` folded back into the chained input `x`: sum, multiply, add.
    let fold = |x: &Array, y: &Array| -> mlx::Result<Array> {
        let r = ops::sum_all(y, false, s)?;
        ops::add(x, &ops::multiply(&r, &half, s)?, s)
    };
    // Two outputs folded back: two sums, an add, multiply, add.
    let fold2 = |x: &Array, a: &Array, b: &Array| -> mlx::Result<Array> {
        let r = ops::add(&ops::sum_all(a, false, s)?, &ops::sum_all(b, false, s)?, s)?;
        ops::add(x, &ops::multiply(&r, &half, s)?, s)
    };

    let trivial = per_op(n, iters, x0, &|x| ops::multiply(x, &half, s))?;
    // Three view ops (reshape, transpose of a size-1 axis, reshape): no kernel,
    // only MLX's host-side work per op. Reported per view op.
    let views = per_op(n, iters, x0, &|x| {
        let y = ops::reshape(x, &[1, 1, 16, HIDDEN / 16], s)?;
        let y = ops::transpose(&y, &[0, 2, 1, 3], s)?;
        ops::reshape(&y, &[1, HIDDEN], s)
    })? / 3.0;
    let costs: Vec<(&str, f64)> = vec![
        (
            "rms_norm [1, 2048]",
            per_op(n, iters, x0, &|x| {
                fold(x, &mlx::fast::rms_norm(x, Some(&norm_w), 1e-6, s)?)
            })?,
        ),
        (
            "quantized_matmul 4-bit 4096x2048",
            per_op(n, iters, x0, &|x| {
                fold(x, &quantized_matmul(x, &proj, true, s)?)
            })?,
        ),
        (
            "router quantized_matmul 8-bit 128x2048",
            per_op(n, iters, x0, &|x| {
                fold(x, &quantized_matmul(x, &l.router, true, s)?)
            })?,
        ),
        (
            "router kernel (FusedRouter)",
            per_op(n, iters, x0, &|x| {
                let logits = ops::slice(x, &[0, 0], &[1, EXPERTS], &[1, 1], s)?;
                fold(x, &FusedRouter.route(&logits, &spec, s)?.scores)
            })?,
        ),
        (
            "fused expert SwiGLU",
            per_op(n, iters, x0, &|x| {
                fold(
                    x,
                    &FusedExpertSwiGlu.forward(x, &l.gate, &l.up, &routing, s)?.h,
                )
            })?,
        ),
        (
            "fused down + combine",
            per_op(n, iters, &h0.h, &|h| {
                let hidden = zmlx_kernels::expert_swiglu::ExpertHidden {
                    h: h.clone(),
                    ..h0.clone()
                };
                let input = DownCombineInput {
                    hidden: &hidden,
                    down: &l.down,
                    routing: &routing,
                    residual: None,
                };
                fold(h, &FusedDownCombine.forward(&input, s)?)
            })?,
        ),
        // Attention's q/k norms + RoPE of one token (16 query and 4 key heads of 128
        // from the chained input), then both outputs folded back: MLX's four ops
        // (two rms_norm, two rope; reshapes and transposes are views) against
        // the fused op. The difference is what the fusion saves per layer.
        (
            "q/k rms_norm x2 + rope x2 (mlx), + fold2",
            per_op(n, iters, x0, &|x| {
                let q = ops::reshape(x, &[1, 1, 16, 128], s)?;
                let k = ops::reshape(
                    &ops::slice(x, &[0, 0], &[1, 512], &[1, 1], s)?,
                    &[1, 1, 4, 128],
                    s,
                )?;
                let heads = |a: &Array, w: &Array| -> mlx::Result<Array> {
                    let n = mlx::fast::rms_norm(a, Some(w), 1e-6, s)?;
                    let n = ops::transpose(&n, &[0, 2, 1, 3], s)?;
                    mlx::fast::rope(&n, 128, false, 1e6, 1.0, 7, s)
                };
                fold2(x, &heads(&q, &head_w)?, &heads(&k, &head_w)?)
            })?,
        ),
        (
            "head_norm_rope (fused), + fold2",
            per_op(n, iters, x0, &|x| {
                let q = ops::reshape(x, &[1, 1, 2048], s)?;
                let k = ops::slice(&q, &[0, 0, 0], &[1, 1, 512], &[1, 1, 1], s)?;
                let (qo, ko) = fused_head_norm_rope(&q, &k, &head_w, &head_w, &head_spec, 7, s)?;
                fold2(x, &qo, &ko)
            })?,
        ),
        // The residual add after attention and the next norm: MLX's two ops
        // against the fused op (one trivial op makes the residual in both).
        (
            "add + rms_norm (mlx), + fold",
            per_op(n, iters, x0, &|x| {
                let r = ops::multiply(x, &half, s)?;
                let h = ops::add(x, &r, s)?;
                let n = mlx::fast::rms_norm(&h, Some(&norm_w), 1e-6, s)?;
                fold(&h, &n)
            })?,
        ),
        (
            "add_norm (fused), + fold",
            per_op(n, iters, x0, &|x| {
                let r = ops::multiply(x, &half, s)?;
                let (h, n) = fused_add_rms_norm(x, &r, &norm_w, 1e-6, s)?;
                fold(&h, &n)
            })?,
        ),
    ];
    println!("per-op cost (us, {n} chained, median of {iters}):");
    println!("  {:<40} {trivial:8.1}", "trivial multiply [1, 2048]");
    println!("  {:<40} {views:8.1}", "view op (reshape / transpose)");
    for (label, c) in costs {
        println!(
            "  {label:<40} {c:8.1}  (op alone ~{:.1})",
            c - 3.0 * trivial
        );
    }
    Ok(())
}

/// Median host and GPU cost per chain element of `n` chained calls of `op`: (build,
/// encode, rest) in us, where build is the graph building, encode MLX's
/// `async_eval` and rest the wait for the GPU after both.
fn phase_costs(
    n: usize,
    iters: usize,
    x0: &Array,
    op: &dyn Fn(&Array) -> mlx::Result<Array>,
) -> mlx::Result<(f64, f64, f64, f64)> {
    let (mut build, mut encode, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    let mut in_mlx = Vec::new();
    mlx::kernel::set_call_timing(true);
    for it in 0..iters + 3 {
        mlx::kernel::take_call_timing();
        let t0 = Instant::now();
        let mut x = x0.clone();
        for _ in 0..n {
            x = op(&x)?;
        }
        let t1 = Instant::now();
        let (_, kernel_calls) = mlx::kernel::take_call_timing();
        mlx::async_eval(&[&x])?;
        let t2 = Instant::now();
        mlx::synchronize()?;
        let t3 = Instant::now();
        if it >= 3 {
            let per = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e6 / n as f64;
            build.push(per(t0, t1));
            encode.push(per(t1, t2));
            rest.push(per(t2, t3));
            in_mlx.push(kernel_calls.as_secs_f64() * 1e6 / n as f64);
        }
    }
    mlx::kernel::set_call_timing(false);
    Ok((
        median(&mut build),
        median(&mut encode),
        median(&mut rest),
        median(&mut in_mlx),
    ))
}

/// One element of a timed chain: the next activation from the previous one.
type ChainOp<'a> = dyn Fn(&Array) -> mlx::Result<Array> + 'a;

/// `--host-cost`: where each decode op's cost goes (build, encode, GPU wait), for
/// MLX's ops and zmlx's kernels at Qwen3-30B-A3B's decode shapes. Each row chains
/// one op, or the group of ops a fusion replaces, keeping the [1, 2048] activation
/// shape with views only (views are listed at their own cost).
fn host_costs(
    layers: &[Layer],
    x0: &Array,
    n: usize,
    iters: usize,
    s: StreamOrDevice,
) -> mlx::Result<()> {
    let l = &layers[0];
    let OpFixtures {
        proj,
        norm_w,
        head_w,
        half,
        head_spec,
    } = op_fixtures(s)?;
    // q (16 heads) and k (4 heads) of one token taken from x by views.
    let qk = |x: &Array| -> mlx::Result<(Array, Array)> {
        let q = ops::reshape(x, &[1, 1, HIDDEN], s)?;
        let k = ops::slice(&q, &[0, 0, 0], &[1, 1, 512], &[1, 1, 1], s)?;
        Ok((q, k))
    };
    // Back to x's [1, 2048] from q: one view.
    let back = |q: &Array| ops::reshape(q, &[1, HIDDEN], s);
    let rows: Vec<(&str, Box<ChainOp<'_>>)> = vec![
        (
            "view (reshape)",
            Box::new(|x| ops::reshape(x, &[1, HIDDEN], s)),
        ),
        (
            "multiply [1, 2048]",
            Box::new(|x| ops::multiply(x, &half, s)),
        ),
        (
            "rms_norm [1, 2048]",
            Box::new(|x| mlx::fast::rms_norm(x, Some(&norm_w), 1e-6, s)),
        ),
        (
            "quantized_matmul 4-bit 4096x2048 + slice",
            Box::new(|x| {
                let y = quantized_matmul(x, &proj, true, s)?;
                ops::slice(&y, &[0, 0], &[1, HIDDEN], &[1, 1], s)
            }),
        ),
        (
            "rope [1, 16, 1, 128] + 2 views",
            Box::new(|x| {
                let q = ops::reshape(x, &[1, 16, 1, 128], s)?;
                back(&mlx::fast::rope(&q, 128, false, 1e6, 1.0, 7, s)?)
            }),
        ),
        (
            "q/k: 2 rms_norm + 2 rope (mlx) + views",
            Box::new(|x| {
                let (q, k) = qk(x)?;
                let q = ops::reshape(&q, &[1, 16, 1, 128], s)?;
                let k = ops::reshape(&k, &[1, 4, 1, 128], s)?;
                let q = mlx::fast::rms_norm(&q, Some(&head_w), 1e-6, s)?;
                let k = mlx::fast::rms_norm(&k, Some(&head_w), 1e-6, s)?;
                let q = mlx::fast::rope(&q, 128, false, 1e6, 1.0, 7, s)?;
                let _k = mlx::fast::rope(&k, 128, false, 1e6, 1.0, 7, s)?;
                back(&q)
            }),
        ),
        (
            "q/k: head_norm_rope (fused) + views",
            Box::new(|x| {
                let (q, k) = qk(x)?;
                let (qo, _ko) = fused_head_norm_rope(&q, &k, &head_w, &head_w, &head_spec, 7, s)?;
                back(&qo)
            }),
        ),
        (
            "add + rms_norm (mlx)",
            Box::new(|x| {
                let h = ops::add(x, x, s)?;
                mlx::fast::rms_norm(&h, Some(&norm_w), 1e-6, s)
            }),
        ),
        (
            "add_norm (fused)",
            Box::new(|x| Ok(fused_add_rms_norm(x, x, &norm_w, 1e-6, s)?.1)),
        ),
        (
            "MoE block reference (+ residual add)",
            Box::new(|x| step(l, x, Variant::Reference, s)),
        ),
        (
            "MoE block fused+router (+ residual add)",
            Box::new(|x| step(l, x, Variant::FusedRouterKernel, s)),
        ),
        (
            "MoE block routed, residual folded (3 ops)",
            Box::new(|x| step(l, x, Variant::RoutedResidual, s)),
        ),
        (
            // One layer's scratch for the whole chain: each element takes the
            // previous one's output, so the calls run one after another.
            "MoE block, router inside SwiGLU (2 ops)",
            Box::new(|x| step(l, x, Variant::RouterResidual, s)),
        ),
    ];
    println!("host cost per chain element (us; {n} chained, median of {iters}): build / encode / GPU wait after / total; custom-kernel calls' time inside MLX (part of build)");
    for (label, op) in &rows {
        let (b, e, r, m) = phase_costs(n, iters, x0, op.as_ref())?;
        println!(
            "  {label:<44} {b:7.2} {e:7.2} {r:7.2} {:8.2}   {m:6.2}",
            b + e + r
        );
    }
    Ok(())
}
