//! The GPU kernels of `zmlx_kernels::gpu` against the plain-MLX reference, both run
//! on MLX's CUDA backend. Without CUDA every test prints "skipped: no CUDA" and
//! returns (CI has no GPU; the runs are recorded in notes/cuda-kernels.md).
//!
//! Tolerances, in units of one ulp of the output dtype at the tensor's magnitude
//! (`eps * 2^floor(log2(max |reference|))`, eps = 2^-7 bf16, 2^-10 f16, 2^-23 f32):
//! the kernels reproduce every rounding of the reference, so the only difference is
//! the order of fp32 accumulations inside the dot products and the k-sum, which can
//! flip a rounding of an intermediate by one ulp of that intermediate.
//! - expert SwiGLU `h`, bf16/f16: 4 units (a flipped rounding of g, of u and of
//!   silu(g), each moving h by up to about one ulp of h, plus the output's own
//!   rounding); f32: 64 units (a different fp32 summation order over a few
//!   hundred to a few thousand products, no rounding to hide it).
//! - down + combine `y`, bf16/f16: 4 units (flipped roundings of the k expert
//!   outputs and products, each at most one ulp of a term no larger than the
//!   output's scale, plus the final rounding); f32: 64 units.
//! - router scores: 2 units for bf16/f16, 8 for f32 (the exp and the division of
//!   the softmax may be computed differently from MLX's, e.g. a reciprocal
//!   multiply, and f32 output has no coarse rounding to hide that); expert sets must match except where the reference's
//!   gates tie at the top-k boundary (reported separately).

use mlx::quantization::{quantize, QuantSpec, QuantizedWeight};
use mlx::{ops, random, Array, Device, Dtype, StreamOrDevice};
use zmlx_kernels::down_combine::{DownCombineInput, ReferenceDownCombine};
use zmlx_kernels::expert_swiglu::{ExpertHidden, ReferenceExpertSwiGlu};
use zmlx_kernels::gpu;
use zmlx_kernels::moe_gate::{ReferenceRouter, RouterSpec, Routing};
use zmlx_kernels::{DownCombineOp, ExpertSwiGluOp, RouterOp, Weight};

fn cuda() -> bool {
    if mlx::cuda_is_available().unwrap_or(false) {
        true
    } else {
        println!("skipped: no CUDA");
        false
    }
}

fn gpu_stream() -> StreamOrDevice {
    StreamOrDevice::Device(Device::gpu())
}

/// Unwraps, printing MLX's message in full (NVRTC logs included) before failing.
fn ok<T>(r: mlx::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{what}: MLX error:\n{e}");
            panic!("{what} failed: {e}");
        }
    }
}

fn host(a: &Array) -> Vec<f32> {
    let s = gpu_stream();
    ok(
        ok(ops::astype(a, Dtype::Float32, s), "astype").to_vec::<f32>(),
        "to_vec",
    )
}

fn eps(dt: Dtype) -> f64 {
    match dt {
        Dtype::Bfloat16 => 2f64.powi(-7),
        Dtype::Float16 => 2f64.powi(-10),
        _ => 2f64.powi(-23),
    }
}

/// Max |a - b| in ulps of `dt` at the magnitude of max |b|.
fn err_units(a: &[f32], b: &[f32], dt: Dtype) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let unit = eps(dt) * 2f64.powf(scale.max(1e-30).log2().floor());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (*x as f64 - *y as f64).abs() / unit
            }
        })
        .fold(0.0, f64::max)
}

fn name(dt: Dtype) -> &'static str {
    match dt {
        Dtype::Bfloat16 => "bf16",
        Dtype::Float16 => "f16",
        _ => "f32",
    }
}

fn qweight(shape: &[i32], dt: Dtype, spec: QuantSpec, seed: u64) -> Weight {
    let s = gpu_stream();
    let key = ok(random::key(seed), "key");
    let w = ok(
        random::normal(shape, dt, 0.0, 0.05, Some(&key), s),
        "normal",
    );
    let q: QuantizedWeight = ok(quantize(&w, spec, s), "quantize");
    Weight::Quantized(q)
}

struct Case {
    tokens: i32,
    k: i32,
    experts: i32,
}

/// Every token count (1, 3, 8), k (1, 4, 8, 16) and expert count of `experts`
/// appears, in combinations rather than the full product: MLX JIT-compiles its own
/// kernels per shape on CUDA, which makes each new shape cost a compile.
fn cases(experts: &[i32]) -> Vec<Case> {
    let mut v = Vec::new();
    for &e in experts {
        let list: &[(i32, i32)] = match e {
            8 => &[(1, 1), (3, 4), (8, 8)],
            128 => &[(1, 8), (3, 8), (8, 4), (1, 16)],
            _ => &[(8, 16), (3, 1), (1, 8)],
        };
        for &(t, k) in list {
            v.push(Case {
                tokens: t,
                k,
                experts: e,
            });
        }
    }
    v
}

fn routing(c: &Case, dt: Dtype, seed: u64) -> Routing {
    let s = gpu_stream();
    let key = ok(random::key(seed), "key");
    let keys = ok(random::split(&key, 2, s), "split");
    let k0 = ok(
        ops::take(&keys, &ok(Array::scalar(0i32), "i"), Some(0), s),
        "take",
    );
    let k1 = ok(
        ops::take(&keys, &ok(Array::scalar(1i32), "i"), Some(0), s),
        "take",
    );
    let indices = ok(
        random::randint(0, c.experts, &[c.tokens, c.k], Dtype::Uint32, Some(&k0), s),
        "randint",
    );
    let scores = ok(
        random::uniform(0.0, 1.0, &[c.tokens, c.k], dt, Some(&k1), s),
        "uniform",
    );
    Routing { indices, scores }
}

/// Runs SwiGLU and down+combine over every case for one (dtype, bits, group) and
/// returns the max errors in units.
fn run_class(
    dt: Dtype,
    bits: i32,
    gs: i32,
    hidden: i32,
    inter: i32,
    experts: &[i32],
) -> (f64, f64, usize) {
    let s = gpu_stream();
    let spec = QuantSpec::affine(gs, bits);
    let (mut e_h, mut e_y, mut n) = (0f64, 0f64, 0usize);
    for (ei, &e) in experts.iter().enumerate() {
        let seed = (bits * 1000 + gs + ei as i32) as u64;
        let gate = qweight(&[e, inter, hidden], dt, spec, seed);
        let up = qweight(&[e, inter, hidden], dt, spec, seed + 7);
        let down = qweight(&[e, hidden, inter], dt, spec, seed + 13);
        for (ci, c) in cases(&[e]).iter().enumerate() {
            let key = ok(random::key(seed * 100 + ci as u64), "key");
            let x = ok(
                random::normal(&[c.tokens, hidden], dt, 0.0, 1.0, Some(&key), s),
                "x",
            );
            let r = routing(c, dt, seed * 100 + ci as u64 + 50);
            // SwiGLU: the reference (sorted for >= 64 pairs) back in routing order.
            let refh = ok(
                ReferenceExpertSwiGlu.forward(&x, &gate, &up, &r, s),
                "ref swiglu",
            );
            let mut hr = refh.h.clone();
            if let Some(inv) = &refh.inv_order {
                hr = ok(ops::take(&hr, inv, Some(0), s), "unsort");
            }
            let hr = ok(ops::reshape(&hr, &[c.tokens, c.k, inter], s), "reshape");
            let hf = ok(
                gpu::expert_swiglu(
                    mlx::kernel::KernelBackend::Cuda,
                    &x,
                    &r.indices,
                    &gate,
                    &up,
                    s,
                ),
                &format!(
                    "fused swiglu {} {bits}b g{gs} T{} k{} E{e}",
                    name(dt),
                    c.tokens,
                    c.k
                ),
            );
            let eh = err_units(&host(&hf), &host(&hr), dt);
            // Down + combine on the same activations (routing order, unsorted).
            let hid = ExpertHidden {
                h: ok(ops::expand_dims(&hr, &[-2], s), "expand"),
                idx: r.indices.clone(),
                inv_order: None,
                indices_shape: vec![c.tokens, c.k],
            };
            let input = DownCombineInput {
                hidden: &hid,
                down: &down,
                routing: &r,
            };
            let yr = ok(ReferenceDownCombine.forward(&input, s), "ref down");
            let yf = ok(
                gpu::down_combine(
                    mlx::kernel::KernelBackend::Cuda,
                    &hr,
                    &r.indices,
                    &r.scores,
                    &down,
                    s,
                ),
                &format!(
                    "fused down {} {bits}b g{gs} T{} k{} E{e}",
                    name(dt),
                    c.tokens,
                    c.k
                ),
            );
            let ey = err_units(&host(&yf), &host(&yr), dt);
            if eh > e_h || ey > e_y {
                println!(
                    "  {} {bits}b g{gs} H{hidden} I{inter} T{} k{} E{e}: h {eh:.2} y {ey:.2} units",
                    name(dt),
                    c.tokens,
                    c.k
                );
            }
            e_h = e_h.max(eh);
            e_y = e_y.max(ey);
            n += 1;
        }
    }
    (e_h, e_y, n)
}

/// dtype, bits, group size, hidden, intermediate, expert counts.
type Class<'a> = (Dtype, i32, i32, i32, i32, &'a [i32]);

fn check_classes(classes: &[Class<'_>]) {
    let mut failed = Vec::new();
    for &(dt, bits, gs, hidden, inter, experts) in classes {
        let half = dt != Dtype::Float32;
        let (th, ty) = if half { (4.0, 4.0) } else { (64.0, 64.0) };
        let t0 = std::time::Instant::now();
        let (eh, ey, n) = run_class(dt, bits, gs, hidden, inter, experts);
        let pass = eh <= th && ey <= ty;
        let label = format!(
            "{} {bits}-bit g{gs} H{hidden} I{inter} E{experts:?}",
            name(dt)
        );
        println!(
            "CLASS {label}: {n} cases, swiglu max {eh:.2} units (tol {th}), down+combine max {ey:.2} units (tol {ty}): {} ({:.1} s)",
            if pass { "PASS" } else { "FAIL" },
            t0.elapsed().as_secs_f64()
        );
        if !pass {
            failed.push(label);
        }
    }
    assert!(failed.is_empty(), "failed classes: {failed:?}");
}

/// Every bits x group size for one dtype, with an odd number of groups (3) in the
/// intermediate size.
fn dtype_classes(dt: Dtype) {
    if !cuda() {
        return;
    }
    let mut classes = Vec::new();
    for bits in [4, 8] {
        for gs in [32, 64, 128] {
            classes.push((dt, bits, gs, 256, 3 * gs, &[8, 128, 512][..]));
        }
    }
    check_classes(&classes);
}

#[test]
fn expert_kernels_bf16() {
    dtype_classes(Dtype::Bfloat16);
}

#[test]
fn expert_kernels_f16() {
    dtype_classes(Dtype::Float16);
}

#[test]
fn expert_kernels_f32() {
    dtype_classes(Dtype::Float32);
}

/// Qwen3-30B-A3B's shapes: hidden 2048, moe_intermediate 768, 128 experts.
#[test]
fn expert_kernels_qwen3_30b_a3b() {
    if !cuda() {
        return;
    }
    check_classes(&[(Dtype::Bfloat16, 4, 64, 2048, 768, &[128])]);
}

/// Per token: the reference's and the kernel's expert sets and scores.
#[test]
fn router_kernel_matches_reference_on_cuda() {
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let mut failed = Vec::new();
    for dt in [Dtype::Bfloat16, Dtype::Float16, Dtype::Float32] {
        for (label, tied) in [("random", false), ("tied", true)] {
            let (mut same_sets, mut tie_diff, mut value_diff, mut total) = (0, 0, 0, 0);
            let mut max_err = 0f64;
            let mut ref_nondet = 0;
            let mut boundary_ties = 0;
            for (ei, e) in [8, 128, 512].into_iter().enumerate() {
                for k in [1, 4, 8, 16] {
                    if k > e {
                        continue;
                    }
                    let t = 8;
                    let key = ok(random::key((ei * 31 + k as usize) as u64), "key");
                    let mut logits = ok(
                        random::normal(&[t, e], Dtype::Float32, 0.0, 2.0, Some(&key), s),
                        "l",
                    );
                    if tied {
                        // Logits on a coarse grid: many exactly equal gates.
                        let int = ok(ops::astype(&logits, Dtype::Int32, s), "trunc");
                        logits = ok(ops::astype(&int, Dtype::Float32, s), "back");
                    }
                    let logits = ok(ops::astype(&logits, dt, s), "astype");
                    let spec = RouterSpec::SoftmaxTopK { k, normalize: true };
                    let r1 = ok(ReferenceRouter.route(&logits, &spec, s), "ref route");
                    let r2 = ok(ReferenceRouter.route(&logits, &spec, s), "ref route");
                    let (fi, fs) = ok(
                        gpu::route(mlx::kernel::KernelBackend::Cuda, &logits, k, true, s),
                        &format!("fused route {} E{e} k{k}", name(dt)),
                    );
                    let gates = host(&ok(ops::softmax(&logits, &[-1], true, s), "softmax"));
                    let ri = ok(r1.indices.to_vec::<u32>(), "ids");
                    let ri2 = ok(r2.indices.to_vec::<u32>(), "ids");
                    let rs = host(&r1.scores);
                    let fiv = ok(fi.to_vec::<u32>(), "ids");
                    let fsv = host(&fs);
                    for tok in 0..t as usize {
                        total += 1;
                        let span = tok * k as usize..(tok + 1) * k as usize;
                        let mut a: Vec<(u32, f32)> = ri[span.clone()]
                            .iter()
                            .copied()
                            .zip(rs[span.clone()].iter().copied())
                            .collect();
                        let mut b: Vec<(u32, f32)> = fiv[span.clone()]
                            .iter()
                            .copied()
                            .zip(fsv[span.clone()].iter().copied())
                            .collect();
                        let mut a2: Vec<u32> = ri2[span.clone()].to_vec();
                        a.sort_by_key(|p| p.0);
                        b.sort_by_key(|p| p.0);
                        a2.sort();
                        // A tie at the top-k boundary: the smallest selected gate equals
                        // the largest unselected one, so the order among ties decides.
                        let g = &gates[tok * e as usize..(tok + 1) * e as usize];
                        let min_in = a
                            .iter()
                            .map(|p| g[p.0 as usize])
                            .fold(f32::INFINITY, f32::min);
                        let max_out = (0..e as u32)
                            .filter(|i| !a.iter().any(|p| p.0 == *i))
                            .map(|i| g[i as usize])
                            .fold(f32::NEG_INFINITY, f32::max);
                        if min_in == max_out {
                            boundary_ties += 1;
                        }
                        if a.iter().map(|p| p.0).collect::<Vec<_>>() != a2 {
                            ref_nondet += 1;
                        }
                        if a.iter().map(|p| p.0).eq(b.iter().map(|p| p.0)) {
                            same_sets += 1;
                            let ra: Vec<f32> = a.iter().map(|p| p.1).collect();
                            let rb: Vec<f32> = b.iter().map(|p| p.1).collect();
                            max_err = max_err.max(err_units(&rb, &ra, dt));
                        } else {
                            // Classify: do the experts only one side picked share the
                            // reference's gate value (a tie at the boundary)?
                            let g = &gates[tok * e as usize..(tok + 1) * e as usize];
                            let only_a: Vec<f32> = a
                                .iter()
                                .filter(|p| !b.iter().any(|q| q.0 == p.0))
                                .map(|p| g[p.0 as usize])
                                .collect();
                            let only_b: Vec<f32> = b
                                .iter()
                                .filter(|p| !a.iter().any(|q| q.0 == p.0))
                                .map(|p| g[p.0 as usize])
                                .collect();
                            if only_a.iter().chain(&only_b).all(|v| *v == only_a[0]) {
                                tie_diff += 1;
                            } else {
                                value_diff += 1;
                            }
                        }
                    }
                }
            }
            let tol = if dt == Dtype::Float32 { 8.0 } else { 2.0 };
            let pass = value_diff == 0 && max_err <= tol && (tied || tie_diff == 0);
            println!(
                "CLASS router {} {label}: {total} tokens ({boundary_ties} with tied gates at the top-k boundary), same expert sets {same_sets}, differing only by tied gates {tie_diff}, differing otherwise {value_diff}, reference run-to-run set changes {ref_nondet}, score max {max_err:.2} units (tol {tol}): {}",
                name(dt),
                if pass { "PASS" } else { "FAIL" }
            );
            if !pass {
                failed.push(format!("router {} {label}", name(dt)));
            }
        }
    }
    assert!(failed.is_empty(), "failed classes: {failed:?}");
}
