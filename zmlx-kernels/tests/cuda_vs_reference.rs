//! The GPU kernels of `zmlx_kernels::gpu` against the plain-MLX reference, both run
//! on MLX's CUDA backend. Without CUDA every test prints "skipped: no CUDA" and
//! returns (CI has no GPU; the runs are recorded in notes/cuda-kernels.md).
//!
//! Expert kernels (SwiGLU, down + combine): BITWISE equality with the reference, on
//! the shapes where MLX's gather_qmm takes `qmm_sm80` (the arithmetic the kernels
//! reproduce: f16/bf16, out features % 128, in features % max(64, group), at least
//! `gpu::MIN_EXACT_PAIRS` pairs). Every output element must match; the report also
//! gives the max difference in ulps (of the dtype at the tensor's magnitude) to show
//! how far off a mismatch is. Outside those shapes the kernels must refuse.
//!
//! Router: BITWISE equality with the reference too: the expert ids in the same
//! order (MLX's CUDA argpartition order, ties included) and the scores' bits, per
//! token; the report gives mismatching ids, mismatching score bits and the max
//! difference in ulps, for each of the kernel's two `VARIANT`s (which one MLX's
//! build matches is a device finding; `gpu::route` must use a matching one).

mod common;

use common::{cuda, gpu_stream, ok};
use mlx::kernel::KernelBackend;
use mlx::quantization::{quantize, quantized_matmul, QuantSpec, QuantizedWeight};
use mlx::{fast, ops, random, Array, Dtype, StreamOrDevice};
use zmlx_kernels::down_combine::{
    DownCombineInput, FusedDownCombine, NextNorm, NormCounter, ReferenceDownCombine,
};
use zmlx_kernels::expert_swiglu::{
    ExpertHidden, ReferenceExpertSwiGlu, RouterMatmul, RouterScratch,
};
use zmlx_kernels::gpu;
use zmlx_kernels::moe_gate::{ReferenceRouter, RouterSpec, Routing};
use zmlx_kernels::{DownCombineOp, ExpertSwiGluOp, RouterOp, Weight};

/// Held by every test for its whole run, so that the tests take the GPU one at a
/// time. They once needed it for correctness: the kernel variants came from
/// process-wide environment variables that the tests set, and tests side by side ran
/// each other's variants (device run 94: 5 of 12 failed in parallel). The variants
/// are now per thread (`gpu::with_cuda_variants`); the lock stays so that each test's
/// printed timings are its own and its memory use does not add to another's.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static GPU_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that panicked while holding it leaves nothing to repair.
    GPU_TESTS.lock().unwrap_or_else(|e| e.into_inner())
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

/// (tokens, k) per expert count: every case has at least MIN_EXACT_PAIRS (8) pairs
/// (decode with top-8 and top-16, a few tokens with top-4, prefill-like 8 x 16).
/// Combinations rather than the full product: each new shape costs MLX a compile.
fn cases(experts: &[i32]) -> Vec<Case> {
    let mut v = Vec::new();
    for &e in experts {
        let list: &[(i32, i32)] = match e {
            // (8, 1): one expert per token isolates the projection from the k-sum.
            8 => &[(1, 8), (2, 4), (8, 1)],
            128 => &[(1, 8), (3, 8), (1, 16)],
            _ => &[(8, 4), (1, 8)],
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

/// Elements whose bits differ (compared as f32, exact for f16/bf16 values; -0 and
/// +0 count as different) and the max difference in units.
#[derive(Default, Clone, Copy)]
struct Diff {
    elems: usize,
    mismatched: usize,
    max_units: f64,
}

impl Diff {
    fn of(fused: &Array, reference: &Array, dt: Dtype) -> Diff {
        let (a, b) = (host(fused), host(reference));
        assert_eq!(a.len(), b.len(), "output sizes differ");
        Diff {
            elems: a.len(),
            mismatched: a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count(),
            max_units: err_units(&a, &b, dt),
        }
    }

    fn add(&mut self, o: Diff) {
        self.elems += o.elems;
        self.mismatched += o.mismatched;
        self.max_units = self.max_units.max(o.max_units);
    }
}

/// Runs SwiGLU and down+combine over every case for one (dtype, bits, group) with
/// this thread's current kernel variants (`gpu::with_cuda_variants`) and returns the
/// differences.
fn run_class(
    dt: Dtype,
    bits: i32,
    gs: i32,
    hidden: i32,
    inter: i32,
    experts: &[i32],
) -> (Diff, Diff, usize) {
    let s = gpu_stream();
    let spec = QuantSpec::affine(gs, bits);
    let (mut dh, mut dy, mut n) = (Diff::default(), Diff::default(), 0usize);
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
            let what = format!("{} {bits}b g{gs} T{} k{} E{e}", name(dt), c.tokens, c.k);
            let hf = ok(
                gpu::expert_swiglu(KernelBackend::Cuda, &x, &r.indices, &gate, &up, s),
                &format!("fused swiglu {what}"),
            );
            let hf = ok(ops::reshape(&hf, &[c.tokens, c.k, inter], s), "reshape");
            let eh = Diff::of(&hf, &hr, dt);
            // Down + combine on the same activations (routing order, unsorted).
            let hid = routed_hidden(&hr, &r, s);
            let input = DownCombineInput {
                hidden: &hid,
                down: &down,
                routing: &r,
                residual: None,
            };
            let yr = ok(ReferenceDownCombine.forward(&input, s), "ref down");
            let yf = ok(
                kernel_combine(&hr, &r, &down, None, s),
                &format!("fused down {what}"),
            );
            let ey = Diff::of(&yf, &yr, dt);
            if eh.mismatched + ey.mismatched > 0 {
                println!(
                    "  {what}: h {}/{} differ (max {:.2} units), y {}/{} differ (max {:.2} units)",
                    eh.mismatched, eh.elems, eh.max_units, ey.mismatched, ey.elems, ey.max_units
                );
            }
            dh.add(eh);
            dy.add(ey);
            n += 1;
        }
    }
    (dh, dy, n)
}

/// Expert activations `h` (`[tokens, k, inter]`, routing order) as the down
/// projection takes them.
fn routed_hidden(h: &Array, r: &Routing, s: StreamOrDevice) -> ExpertHidden {
    let shape = h.shape();
    ExpertHidden {
        h: ok(ops::expand_dims(h, &[-2], s), "expand"),
        idx: r.indices.clone(),
        inv_order: None,
        indices_shape: vec![shape[0], shape[1]],
    }
}

/// The CUDA down + combine kernel on `h` (`[tokens, k, inter]`) with `r`'s routing.
fn kernel_combine(
    h: &Array,
    r: &Routing,
    down: &Weight,
    residual: Option<&Array>,
    s: StreamOrDevice,
) -> mlx::Result<Array> {
    gpu::down_combine(
        KernelBackend::Cuda,
        h,
        &r.indices,
        &r.scores,
        down,
        residual,
        s,
    )
}

/// dtype, bits, group size, hidden, intermediate, expert counts.
type Class<'a> = (Dtype, i32, i32, i32, i32, &'a [i32]);

/// Runs the classes with the kernels' defaults (asserted bitwise) and, for the
/// first `probe` classes, with the alternative formulations (reported only: they
/// show which rounding MLX's dequantization and k-sum use; see gpu.rs).
fn check_classes(classes: &[Class<'_>], probe: usize) {
    const DEFAULT: (i32, i32) = (2, 0);
    const ALTERNATIVES: [(i32, i32); 7] = [(0, 0), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)];
    let mut failed = Vec::new();
    for (i, &(dt, bits, gs, hidden, inter, experts)) in classes.iter().enumerate() {
        let label = format!(
            "{} {bits}-bit g{gs} H{hidden} I{inter} E{experts:?}",
            name(dt)
        );
        // The default arithmetic with the default ring and tiles, with the smallest
        // ring (two stages) and with 8-row tiles (the default is 16 where it fits),
        // all asserted; the alternatives reported.
        let mut variants = vec![
            (DEFAULT, None, None),
            (DEFAULT, Some(2), None),
            (DEFAULT, None, Some(8)),
        ];
        if i < probe {
            variants.extend(ALTERNATIVES.iter().map(|&v| (v, None, None)));
        }
        for ((deq, sum), pipe, rows) in variants {
            let mut v = ok(
                gpu::CudaVariants::default()
                    .with_dequant(deq)
                    .and_then(|v| v.with_k_sum(sum)),
                "variants",
            );
            if let Some(p) = pipe {
                v = ok(v.with_pipe_cap(p), "pipe");
            }
            if let Some(r) = rows {
                v = ok(v.with_tile_rows(r), "rows");
            }
            let chain = match (pipe, rows) {
                (Some(_), _) => "2 stages",
                (_, Some(_)) => "8-row tiles",
                _ => "default stages and tiles",
            };
            let t0 = std::time::Instant::now();
            let (dh, dy, n) =
                gpu::with_cuda_variants(v, || run_class(dt, bits, gs, hidden, inter, experts));
            let pass = dh.mismatched == 0 && dy.mismatched == 0;
            println!(
                "CLASS {label} DEQ={deq} SUM={sum} {chain}: {n} cases, swiglu {}/{} differ (max {:.2} units), down+combine {}/{} differ (max {:.2} units): {} ({:.1} s)",
                dh.mismatched,
                dh.elems,
                dh.max_units,
                dy.mismatched,
                dy.elems,
                dy.max_units,
                if pass { "PASS" } else { "FAIL" },
                t0.elapsed().as_secs_f64()
            );
            if (deq, sum) == DEFAULT && !pass {
                failed.push(format!("{label} {chain}"));
            }
        }
    }
    assert!(failed.is_empty(), "classes not bit-identical: {failed:?}");
}

/// Hidden 256, intermediate 384 (three groups of 128, twelve of 32), so both
/// projections meet qmm_sm80's conditions; `combos` lists (bits, group size). Each
/// class costs MLX a JIT compile of its own kernel (~40 s on the H100), hence a
/// selection rather than every combination per dtype.
fn dtype_classes(dt: Dtype, combos: &[(i32, i32)], probe: usize) {
    if !cuda() {
        return;
    }
    let classes: Vec<Class<'_>> = combos
        .iter()
        .map(|&(bits, gs)| (dt, bits, gs, 256, 384, &[8, 128, 512][..]))
        .collect();
    check_classes(&classes, probe);
}

#[test]
fn expert_kernels_bf16() {
    let _serial = serial();
    dtype_classes(Dtype::Bfloat16, &[(4, 64), (8, 32), (4, 128)], 1);
}

#[test]
fn expert_kernels_f16() {
    let _serial = serial();
    dtype_classes(Dtype::Float16, &[(4, 64)], 0);
}

/// Qwen3-30B-A3B's shapes: hidden 2048, moe_intermediate 768, 128 experts.
#[test]
fn expert_kernels_qwen3_30b_a3b() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    check_classes(&[(Dtype::Bfloat16, 4, 64, 2048, 768, &[128])], 0);
}

/// The residual add folded into the down + combine kernel (`RES = 1`): at
/// Qwen3-30B-A3B's shapes (bf16, 4-bit g64, H2048 I768 E128, top-8, 1 and 3
/// tokens) `gpu::down_combine` with a random residual, and `FusedDownCombine` with
/// it, must equal the reference `add(residual, combine)` bit for bit. Also: the
/// same call without a residual still matches, and a mis-sized residual is refused.
#[test]
fn down_combine_residual_qwen3_30b_a3b() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let dt = Dtype::Bfloat16;
    let (hidden, inter, experts) = (2048, 768, 128);
    let down = qweight(&[experts, hidden, inter], dt, QuantSpec::affine(64, 4), 91);
    let mut failed = Vec::new();
    for (ci, tokens) in [1, 3].into_iter().enumerate() {
        let k = 8;
        let c = Case { tokens, k, experts };
        let r = routing(&c, dt, 800 + ci as u64);
        let key = ok(random::key(900 + ci as u64), "key");
        let h = ok(
            random::normal(&[tokens, k, inter], dt, 0.0, 1.0, Some(&key), s),
            "h",
        );
        // A residual stream larger than the combine, so that the add rounds.
        let key = ok(random::key(950 + ci as u64), "key");
        let res = ok(
            random::normal(&[tokens, hidden], dt, 0.0, 8.0, Some(&key), s),
            "residual",
        );
        let hid = routed_hidden(&h, &r, s);
        for with in [false, true] {
            let residual = with.then_some(&res);
            let input = DownCombineInput {
                hidden: &hid,
                down: &down,
                routing: &r,
                residual,
            };
            let what = format!("T{tokens} k{k} residual={with}");
            let yr = ok(ReferenceDownCombine.forward(&input, s), "ref down");
            let yk = ok(
                kernel_combine(&h, &r, &down, residual, s),
                &format!("fused down {what}"),
            );
            let yo = ok(FusedDownCombine.forward(&input, s), "FusedDownCombine");
            for (via, y) in [("gpu::down_combine", &yk), ("FusedDownCombine", &yo)] {
                let d = Diff::of(y, &yr, dt);
                println!(
                    "RESIDUAL {what} {via}: {}/{} differ (max {:.2} units)",
                    d.mismatched, d.elems, d.max_units
                );
                if d.mismatched != 0 {
                    failed.push(format!("{what} {via}"));
                }
            }
        }
        let wrong = ok(
            random::normal(&[tokens, hidden / 2], dt, 0.0, 1.0, Some(&key), s),
            "wrong residual",
        );
        assert!(
            kernel_combine(&h, &r, &down, Some(&wrong), s).is_err(),
            "a mis-sized residual was accepted"
        );
    }
    assert!(failed.is_empty(), "residual cases differ: {failed:?}");
}

/// A small deterministic generator for hand-built weights (splitmix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// 4-bit g64 bf16 weights `[experts, rows, cols]` built so that the two single-
/// rounding formulations of the dequantization (DEQ 1: an f32 fma rounded to bf16;
/// DEQ 2: one rounding of the exact value) disagree often: scales with odd
/// significands (so `3 * scale` and other odd products are bf16 midpoints) and, in
/// half the groups, biases of +-2^-40 scale (below the f32 half-ulp of `q * scale`,
/// so the f32 sum rounds to the midpoint and then to even), the other half ordinary.
fn midpoint_weight(experts: i32, rows: i32, cols: i32, seed: u64) -> Weight {
    let mut r = Mix(seed);
    let groups = (experts * rows * cols / 64) as usize;
    let words: Vec<u32> = (0..(experts * rows * cols / 8))
        .map(|_| r.next() as u32)
        .collect();
    let mut scales = Vec::with_capacity(groups);
    let mut biases = Vec::with_capacity(groups);
    for _ in 0..groups {
        // Significand 129..=169 (odd): 3 * m has 9 significant bits, its last set.
        let m = 129 + 2 * (r.next() % 21) as u32;
        let e = -8 - (r.next() % 4) as i32;
        let scale = m as f32 * 2f32.powi(e - 7);
        let tiny = r.next() & 1 == 0;
        let sign = if r.next() & 1 == 0 { 1.0 } else { -1.0 };
        let bias = if tiny {
            sign * (128 + (r.next() % 128) as u32) as f32 * 2f32.powi(e - 40)
        } else {
            -8.0 * scale
        };
        scales.push(half::bf16::from_f32(scale));
        biases.push(half::bf16::from_f32(bias));
    }
    let gshape = [experts, rows, cols / 64];
    Weight::Quantized(QuantizedWeight {
        weight: ok(
            Array::from_slice(&words, &[experts, rows, cols / 8]),
            "words",
        ),
        scales: ok(Array::from_slice(&scales, &gshape), "scales"),
        biases: Some(ok(Array::from_slice(&biases, &gshape), "biases")),
        spec: QuantSpec::affine(64, 4),
    })
}

/// One token, top-8 over 8 experts at H256 I384 (bf16): the routing of `seed`.
fn one_token_routing(seed: u64) -> Routing {
    let c = Case {
        tokens: 1,
        k: 8,
        experts: 8,
    };
    routing(&c, Dtype::Bfloat16, seed)
}

/// The reference SwiGLU of one token, `[1, k, inter]` in routing order.
fn reference_hidden(x: &Array, gate: &Weight, up: &Weight, r: &Routing) -> Array {
    let s = gpu_stream();
    let refh = ok(
        ReferenceExpertSwiGlu.forward(x, gate, up, r, s),
        "ref swiglu",
    );
    let k = *r.indices.shape().last().expect("k");
    ok(
        ops::reshape(&refh.h, &[1, k, gate.out_features()], s),
        "reshape",
    )
}

/// Bit differences of one token's CUDA SwiGLU on `x` and down + combine on `h`
/// (`[1, k, inter]`) against the reference on `x_ref` and `h_ref` (the same values).
#[allow(clippy::too_many_arguments)]
fn one_token_diffs(
    x: &Array,
    x_ref: &Array,
    h: &Array,
    h_ref: &Array,
    gate: &Weight,
    up: &Weight,
    down: &Weight,
    r: &Routing,
) -> (Diff, Diff) {
    let s = gpu_stream();
    let dt = x.dtype();
    let hr = reference_hidden(x_ref, gate, up, r);
    let hf = ok(
        gpu::expert_swiglu(KernelBackend::Cuda, x, &r.indices, gate, up, s),
        "fused swiglu",
    );
    let hf = ok(ops::reshape(&hf, hr.shape(), s), "reshape");
    let hid = routed_hidden(h_ref, r, s);
    let input = DownCombineInput {
        hidden: &hid,
        down,
        routing: r,
        residual: None,
    };
    let yr = ok(ReferenceDownCombine.forward(&input, s), "ref down");
    let yf = ok(kernel_combine(h, r, down, None, s), "fused down");
    (Diff::of(&hf, &hr, dt), Diff::of(&yf, &yr, dt))
}

/// Which single rounding MLX's CUDA `gather_qmm` applies when dequantizing: on
/// weights where the two formulations differ (`midpoint_weight`), the kernels with
/// each DEQ against the reference; the default must match bit for bit.
#[test]
fn dequant_rounding_matches_mlx() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let (hidden, inter, e) = (256, 384, 8);
    let gate = midpoint_weight(e, inter, hidden, 1);
    let up = midpoint_weight(e, inter, hidden, 2);
    let down = midpoint_weight(e, hidden, inter, 3);
    let r = one_token_routing(81);
    let key = ok(random::key(82), "key");
    let x = ok(
        random::normal(
            &[1, hidden],
            Dtype::Bfloat16,
            0.0,
            1.0,
            Some(&key),
            gpu_stream(),
        ),
        "x",
    );
    // Down + combine takes the reference SwiGLU's output.
    let hr = reference_hidden(&x, &gate, &up, &r);
    let mut default_differs = 0;
    for deq in [2, 1, 0] {
        let v = ok(gpu::CudaVariants::default().with_dequant(deq), "variants");
        let (dh, dy) = gpu::with_cuda_variants(v, || {
            one_token_diffs(&x, &x, &hr, &hr, &gate, &up, &down, &r)
        });
        println!(
            "DEQPROBE DEQ={deq}: swiglu {}/{} differ, down+combine {}/{} differ",
            dh.mismatched, dh.elems, dy.mismatched, dy.elems
        );
        if deq == 2 {
            default_differs = dh.mismatched + dy.mismatched;
        }
    }
    assert_eq!(
        default_differs, 0,
        "the default dequantization differs from MLX"
    );
}

/// `rows` x `cols` values of `dt` as a row-contiguous view that starts one element
/// into its buffer (2 bytes past a 16-byte boundary for f16/bf16): the pipelined
/// chain must then copy without cp.async, and still give the reference's bits.
fn odd_offset_view(rows: i32, cols: i32, dt: Dtype, seed: u64) -> Array {
    let s = gpu_stream();
    let key = ok(random::key(seed), "key");
    let flat = ok(
        random::normal(&[rows * cols + 1], dt, 0.0, 1.0, Some(&key), s),
        "flat",
    );
    let tail = ok(
        ops::slice(&flat, &[1], &[rows * cols + 1], &[1], s),
        "slice",
    );
    ok(ops::reshape(&tail, &[rows, cols], s), "reshape")
}

/// `a * 1` in a's dtype: the same values in a fresh (aligned) buffer.
fn aligned_copy(a: &Array) -> Array {
    let s = gpu_stream();
    let one = ok(
        ops::astype(&ok(Array::scalar(1.0f32), "one"), a.dtype(), s),
        "one",
    );
    ok(ops::multiply(a, &one, s), "copy")
}

/// Activations that are views at an odd element offset (x for SwiGLU, h for down +
/// combine): the kernels' slow copy path, bit-identical to the reference.
#[test]
fn expert_kernels_unaligned_activations() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let dt = Dtype::Bfloat16;
    let (hidden, inter, e, k) = (256, 384, 8, 8);
    let spec = QuantSpec::affine(64, 4);
    let gate = qweight(&[e, inter, hidden], dt, spec, 71);
    let up = qweight(&[e, inter, hidden], dt, spec, 72);
    let down = qweight(&[e, hidden, inter], dt, spec, 73);
    let r = one_token_routing(74);
    let x = odd_offset_view(1, hidden, dt, 75);
    let h = ok(
        ops::reshape(
            &odd_offset_view(k, inter, dt, 76),
            &[1, k, inter],
            gpu_stream(),
        ),
        "h",
    );
    // The reference on aligned copies of the same values (x * 1 is exact).
    let (dh, dy) = one_token_diffs(
        &x,
        &aligned_copy(&x),
        &h,
        &aligned_copy(&h),
        &gate,
        &up,
        &down,
        &r,
    );
    println!(
        "UNALIGNED: swiglu {}/{} differ, down+combine {}/{} differ",
        dh.mismatched, dh.elems, dy.mismatched, dy.elems
    );
    assert_eq!(
        dh.mismatched + dy.mismatched,
        0,
        "unaligned activations differ"
    );
}

/// Outside what they reproduce exactly the CUDA kernels refuse (the fused ops then
/// keep the reference): fewer than 8 pairs, f32, an intermediate size that is not a
/// multiple of 128.
#[test]
fn expert_kernels_refuse_inexact_shapes() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let spec = QuantSpec::affine(64, 4);
    let run = |dt: Dtype, inter: i32, tokens: i32, k: i32| {
        let gate = qweight(&[8, inter, 256], dt, spec, 1);
        let up = qweight(&[8, inter, 256], dt, spec, 2);
        let c = Case {
            tokens,
            k,
            experts: 8,
        };
        let r = routing(&c, dt, 3);
        let x = ok(random::normal(&[tokens, 256], dt, 0.0, 1.0, None, s), "x");
        gpu::expert_swiglu(KernelBackend::Cuda, &x, &r.indices, &gate, &up, s)
    };
    assert!(run(Dtype::Bfloat16, 384, 1, 4).is_err(), "4 pairs");
    assert!(run(Dtype::Float32, 384, 1, 8).is_err(), "f32");
    assert!(run(Dtype::Bfloat16, 96, 1, 8).is_err(), "intermediate 96");
    assert!(
        run(Dtype::Bfloat16, 384, 1, 8).is_ok(),
        "8 pairs, bf16, 384"
    );
}

/// Per router class (dtype x logits kind x kernel variant): tokens, tokens whose ids
/// differ (order included), score elements whose bits differ, max ulps.
#[derive(Default)]
struct RouterStats {
    tokens: usize,
    id_mismatch: usize,
    score_bits: usize,
    max_ulps: f64,
}

/// |a - b| in ulps of `dt` at b's magnitude (b > 0; the smallest normal's ulp
/// below it).
fn router_ulps(a: f32, b: f32, dt: Dtype) -> f64 {
    if a.is_nan() || b.is_nan() {
        return f64::INFINITY;
    }
    let min_exp = match dt {
        Dtype::Bfloat16 | Dtype::Float32 => -126,
        _ => -14,
    };
    let e = (b.abs() as f64)
        .max(1e-45)
        .log2()
        .floor()
        .max(min_exp as f64);
    (a as f64 - b as f64).abs() / (eps(dt) * 2f64.powf(e))
}

/// One router case: `[t, e]` logits (`flat`: one token, 1-D `[e]`), normal with
/// std 2, or truncated to integers (`tied`: many exactly equal gates).
fn router_logits(dt: Dtype, e: i32, t: i32, seed: u64, tied: bool, flat: bool) -> Array {
    let s = gpu_stream();
    let key = ok(random::key(seed), "key");
    let shape: Vec<i32> = if flat { vec![e] } else { vec![t, e] };
    let mut logits = ok(
        random::normal(&shape, Dtype::Float32, 0.0, 2.0, Some(&key), s),
        "logits",
    );
    if tied {
        let int = ok(ops::astype(&logits, Dtype::Int32, s), "trunc");
        logits = ok(ops::astype(&int, Dtype::Float32, s), "back");
    }
    ok(ops::astype(&logits, dt, s), "astype")
}

/// The kernel's (ids, scores) per token against the reference's, bitwise, in order.
fn router_compare(
    stats: &mut RouterStats,
    k: usize,
    (ri, rs): (&[u32], &[f32]),
    (fi, fs): (&[u32], &[f32]),
    dt: Dtype,
) {
    assert_eq!(ri.len(), fi.len());
    for tok in 0..ri.len() / k {
        let span = tok * k..(tok + 1) * k;
        stats.tokens += 1;
        if ri[span.clone()] != fi[span.clone()] {
            stats.id_mismatch += 1;
        }
        for j in span {
            if rs[j].to_bits() != fs[j].to_bits() {
                stats.score_bits += 1;
                stats.max_ulps = stats.max_ulps.max(router_ulps(fs[j], rs[j], dt));
            }
        }
    }
}

/// The router kernel against mlx-lm's router ops (`ReferenceRouter`, softmax top-k
/// with renormalisation) on MLX's CUDA backend: ids in the same order and scores
/// with the same bits, on random logits and on integer logits (exact ties, also at
/// the top-k boundary: MLX's CUDA argpartition is a stable sort, whose order the
/// kernel reproduces). Expert counts cover one, two and four of MLX's softmax warps
/// and half-empty warps; k up to 16; `[8, E]` logits (row-reduce sum) and 1-D `[E]`
/// (all-reduce sum). Both kernel variants run (`gpu::route_variant`); the one
/// `gpu::route` uses (default 0, `ZMLX_ROUTER_VARIANT=1` for 1) must be exact.
#[test]
fn router_kernel_matches_reference_on_cuda() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let mut failed = Vec::new();
    let mut exact_variants = [(0, true), (1, true)];
    for dt in [Dtype::Bfloat16, Dtype::Float16, Dtype::Float32] {
        for (label, tied) in [("random", false), ("tied", true)] {
            // [default route, variant 0, variant 1]
            let mut stats: [RouterStats; 3] = Default::default();
            let (mut boundary_ties, mut ref_nondet) = (0, 0);
            for (ei, e) in [8, 64, 128, 160, 256, 512].into_iter().enumerate() {
                for k in [1, 4, 8, 16] {
                    if k > e {
                        continue;
                    }
                    for flat in [false, true] {
                        let seed = (ei * 131 + k as usize * 7 + flat as usize) as u64;
                        let logits = router_logits(dt, e, 8, seed, tied, flat);
                        let spec = RouterSpec::SoftmaxTopK { k, normalize: true };
                        let r1 = ok(ReferenceRouter.route(&logits, &spec, s), "ref route");
                        let r2 = ok(ReferenceRouter.route(&logits, &spec, s), "ref route");
                        let ri = ok(r1.indices.to_vec::<u32>(), "ids");
                        let rs = host(&r1.scores);
                        let ri2 = ok(r2.indices.to_vec::<u32>(), "ids");
                        let rs2 = host(&r2.scores);
                        let ku = k as usize;
                        let eu = e as usize;
                        let gates = host(&ok(ops::softmax(&logits, &[-1], true, s), "softmax"));
                        for tok in 0..ri.len() / ku {
                            let span = tok * ku..(tok + 1) * ku;
                            if ri[span.clone()] != ri2[span.clone()]
                                || rs[span.clone()]
                                    .iter()
                                    .zip(&rs2[span.clone()])
                                    .any(|(a, b)| a.to_bits() != b.to_bits())
                            {
                                ref_nondet += 1;
                            }
                            // A tie at the top-k boundary: the smallest selected gate
                            // equals the largest unselected one.
                            let g = &gates[tok * eu..(tok + 1) * eu];
                            let sel = &ri[span];
                            let min_in = sel
                                .iter()
                                .map(|&i| g[i as usize])
                                .fold(f32::INFINITY, f32::min);
                            let max_out = (0..e as u32)
                                .filter(|i| !sel.contains(i))
                                .map(|i| g[i as usize])
                                .fold(f32::NEG_INFINITY, f32::max);
                            if min_in == max_out {
                                boundary_ties += 1;
                            }
                        }
                        let what = format!("fused route {} E{e} k{k} flat {flat}", name(dt));
                        let runs = [
                            gpu::route(KernelBackend::Cuda, &logits, k, true, s),
                            gpu::route_variant(KernelBackend::Cuda, &logits, k, true, 0, s),
                            gpu::route_variant(KernelBackend::Cuda, &logits, k, true, 1, s),
                        ];
                        for (st, run) in stats.iter_mut().zip(runs) {
                            let (fi, fs) = ok(run, &what);
                            let fi = ok(fi.to_vec::<u32>(), "ids");
                            let fs = host(&fs);
                            router_compare(st, ku, (&ri, &rs), (&fi, &fs), dt);
                        }
                    }
                }
            }
            for (which, st) in ["route (default)", "variant 0", "variant 1"]
                .iter()
                .zip(&stats)
            {
                let exact = st.id_mismatch == 0 && st.score_bits == 0;
                println!(
                    "CLASS router {} {label} {which}: {} tokens ({boundary_ties} with tied \
                     gates at the top-k boundary, {ref_nondet} reference run-to-run changes), \
                     ids differing (order included) {}, score elements differing in bits {}, \
                     max {:.2} ulps: {}",
                    name(dt),
                    st.tokens,
                    st.id_mismatch,
                    st.score_bits,
                    st.max_ulps,
                    if exact { "EXACT" } else { "DIFFERS" }
                );
            }
            for (v, ok_v) in exact_variants.iter_mut() {
                let st = &stats[1 + *v as usize];
                *ok_v &= st.id_mismatch == 0 && st.score_bits == 0;
            }
            if stats[0].id_mismatch != 0 || stats[0].score_bits != 0 {
                failed.push(format!("router {} {label}", name(dt)));
            }
        }
    }
    let exact: Vec<i32> = exact_variants.iter().filter(|p| p.1).map(|p| p.0).collect();
    println!("ROUTER variants exact on every class: {exact:?}");
    assert!(failed.is_empty(), "failed classes: {failed:?}");
}

/// Which order MLX's column reduction sums the combine's k products in depends on
/// the shape (device run 2: sequential in T matched at hidden 2048, not at 256).
/// Reports every candidate order (`CudaVariants::with_k_sum` 0..=5) per hidden size, and
/// asserts the default at hidden 2048, the shape it is established on.
#[test]
fn down_combine_sum_order_by_hidden_size() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let dt = Dtype::Bfloat16;
    let spec = QuantSpec::affine(64, 4);
    let inter = 768;
    let mut default_exact_2048 = true;
    for hidden in [256, 512, 1024, 2048, 4096] {
        let down = qweight(&[128, hidden, inter], dt, spec, 77);
        let cases = [(1, 8), (3, 8), (1, 16)];
        let mut line = format!("SUMORDER hidden {hidden}:");
        for v in 0..=5 {
            let variants = ok(gpu::CudaVariants::default().with_k_sum(v), "variants");
            let d = gpu::with_cuda_variants(variants, || {
                let mut d = Diff::default();
                for (ci, &(tokens, k)) in cases.iter().enumerate() {
                    let c = Case {
                        tokens,
                        k,
                        experts: 128,
                    };
                    let r = routing(&c, dt, 500 + ci as u64);
                    let key = ok(random::key(600 + ci as u64), "key");
                    let h = ok(
                        random::normal(&[tokens, k, inter], dt, 0.0, 1.0, Some(&key), s),
                        "h",
                    );
                    let hid = routed_hidden(&h, &r, s);
                    let input = DownCombineInput {
                        hidden: &hid,
                        down: &down,
                        routing: &r,
                        residual: None,
                    };
                    let yr = ok(ReferenceDownCombine.forward(&input, s), "ref down");
                    let yf = ok(kernel_combine(&h, &r, &down, None, s), "fused down");
                    d.add(Diff::of(&yf, &yr, dt));
                }
                d
            });
            line += &format!(" SUM={v} {}/{}", d.mismatched, d.elems);
            if hidden == 2048 && v == 0 && d.mismatched != 0 {
                default_exact_2048 = false;
            }
        }
        println!("{line}");
    }
    assert!(
        default_exact_2048,
        "the default k-sum order is not exact at hidden 2048"
    );
}

/// One class of `routed_swiglu_matches_router_then_swiglu`.
struct RoutedClass {
    dt: Dtype,
    /// (bits, group size)
    quant: (i32, i32),
    hidden: i32,
    inter: i32,
    experts: i32,
    k: i32,
    normalize: bool,
    tokens: &'static [i32],
}

/// The SwiGLU kernel that routes (`gpu::routed_expert_swiglu`, and the trait's
/// `FusedExpertSwiGlu::forward_routed`) against the two ops it replaces (the router
/// kernel, then the SwiGLU kernel) and against the reference (`ReferenceRouter`,
/// then `ReferenceExpertSwiGlu`): the activations, the expert ids (in order) and the
/// scores, all bitwise, on random and on integer (tied) logits. Classes: Qwen3's
/// shapes (bf16 4-bit g64, H2048 I768 E128, top-8, 1 and 3 tokens), f16 at E8 top-8,
/// and bf16 8-bit g32 at E160 top-4 without renormalisation (two of MLX's softmax
/// warps, the last half empty).
#[test]
fn routed_swiglu_matches_router_then_swiglu() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let classes = [
        RoutedClass {
            dt: Dtype::Bfloat16,
            quant: (4, 64),
            hidden: 2048,
            inter: 768,
            experts: 128,
            k: 8,
            normalize: true,
            tokens: &[1, 3],
        },
        RoutedClass {
            dt: Dtype::Float16,
            quant: (4, 64),
            hidden: 256,
            inter: 384,
            experts: 8,
            k: 8,
            normalize: true,
            tokens: &[1, 2],
        },
        RoutedClass {
            dt: Dtype::Bfloat16,
            quant: (8, 32),
            hidden: 256,
            inter: 384,
            experts: 160,
            k: 4,
            normalize: false,
            tokens: &[2, 5],
        },
    ];
    let mut failed = Vec::new();
    for (ci, c) in classes.iter().enumerate() {
        let (dt, (bits, gs), hidden, inter, e, k, normalize) = (
            c.dt,
            c.quant,
            c.hidden,
            c.inter,
            c.experts,
            c.k,
            c.normalize,
        );
        let tokens = c.tokens;
        let spec = QuantSpec::affine(gs, bits);
        let seed = 9000 + ci as u64 * 10;
        let gate = qweight(&[e, inter, hidden], dt, spec, seed);
        let up = qweight(&[e, inter, hidden], dt, spec, seed + 1);
        let router = RouterSpec::SoftmaxTopK { k, normalize };
        for &t in tokens {
            for tied in [false, true] {
                let what = format!(
                    "{} {bits}b g{gs} H{hidden} I{inter} E{e} k{k} T{t} tied {tied}",
                    name(dt)
                );
                let key = ok(random::key(seed + 100 + t as u64), "key");
                let x = ok(
                    random::normal(&[t, hidden], dt, 0.0, 1.0, Some(&key), s),
                    "x",
                );
                let logits = router_logits(dt, e, t, seed + 200 + t as u64, tied, false);
                let (h, ids, scores) = ok(
                    gpu::routed_expert_swiglu(
                        KernelBackend::Cuda,
                        &x,
                        &logits,
                        &router,
                        &gate,
                        &up,
                        s,
                    ),
                    &format!("routed swiglu {what}"),
                );
                // The two fused ops it replaces.
                let (fi, fs) = ok(
                    gpu::route(KernelBackend::Cuda, &logits, k, normalize, s),
                    "route",
                );
                let fh = ok(
                    gpu::expert_swiglu(KernelBackend::Cuda, &x, &fi, &gate, &up, s),
                    "swiglu",
                );
                // The reference ops.
                let rr = ok(ReferenceRouter.route(&logits, &router, s), "ref route");
                let rh = ok(
                    ReferenceExpertSwiGlu.forward(&x, &gate, &up, &rr, s),
                    "ref swiglu",
                );
                let rh = ok(ops::reshape(&rh.h, &[t, k, inter], s), "reshape");
                // Through the slot's trait.
                let via_trait = ok(
                    zmlx_kernels::expert_swiglu::FusedExpertSwiGlu
                        .forward_routed(&x, &logits, &router, &gate, &up, s),
                    "forward_routed",
                );
                let Some((th, tr)) = via_trait else {
                    failed.push(format!("{what}: forward_routed declined"));
                    continue;
                };
                let h3 = ok(ops::reshape(&h, &[t, k, inter], s), "reshape");
                let ids_v = ok(ids.to_vec::<u32>(), "ids");
                let sc_v = host(&scores);
                let mut bad = Vec::new();
                for (label, other_ids, other_sc) in [
                    ("two fused ops", &fi, &fs),
                    ("reference", &rr.indices, &rr.scores),
                    ("trait", &tr.indices, &tr.scores),
                ] {
                    if ok(other_ids.to_vec::<u32>(), "ids") != ids_v {
                        bad.push(format!("ids vs {label}"));
                    }
                    let o = host(other_sc);
                    if o.iter().zip(&sc_v).any(|(a, b)| a.to_bits() != b.to_bits()) {
                        bad.push(format!("scores vs {label}"));
                    }
                }
                let fh = ok(ops::reshape(&fh, &[t, k, inter], s), "reshape");
                let th = ok(ops::reshape(&th.h, &[t, k, inter], s), "reshape");
                for (label, other) in [("two fused ops", &fh), ("reference", &rh), ("trait", &th)] {
                    let d = Diff::of(&h3, other, dt);
                    if d.mismatched > 0 {
                        bad.push(format!(
                            "h vs {label}: {}/{} differ (max {:.2} units)",
                            d.mismatched, d.elems, d.max_units
                        ));
                    }
                }
                println!(
                    "ROUTED {what}: {}",
                    if bad.is_empty() {
                        "EXACT".to_string()
                    } else {
                        bad.join(", ")
                    }
                );
                if !bad.is_empty() {
                    failed.push(what);
                }
            }
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// One class of `router_swiglu_matches_matmul_then_router_then_swiglu`: activation
/// dtype, router group size, hidden, intermediate, experts, top-k, renormalise.
struct RouterClass(Dtype, i32, i32, i32, i32, i32, bool);

/// The SwiGLU kernel that also computes the router logits
/// (`gpu::router_expert_swiglu`, and the trait's `forward_router_routed`) against
/// the reference it replaces: MLX's `quantized_matmul` with the 8-bit router weight,
/// `ReferenceRouter`, `ReferenceExpertSwiGlu`. The activations, the expert ids (in
/// order) and the scores, bitwise, for one token (aligned and at an odd element
/// offset), three seeds a class. Classes: Qwen3's shapes (bf16, router g64, H2048
/// I768 E128, top-8), router groups 32 and 128 at E64 and E256, f16 at E16 (four
/// blocks compute the logits). Both router dequantizations are run: QDEQ 2 (the
/// default) must be exact; QDEQ 0 is reported. The direct call and the trait's each
/// get a scratch of their own (they are independent graph nodes, which MLX may run at
/// the same time), and both scratches must end with their counts back at zero.
#[test]
fn router_swiglu_matches_matmul_then_router_then_swiglu() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let classes = [
        RouterClass(Dtype::Bfloat16, 64, 2048, 768, 128, 8, true),
        RouterClass(Dtype::Bfloat16, 32, 512, 384, 64, 8, false),
        RouterClass(Dtype::Bfloat16, 128, 1024, 512, 256, 8, true),
        RouterClass(Dtype::Float16, 64, 256, 256, 16, 8, true),
    ];
    let scratch = [
        ok(RouterScratch::new(), "scratch"),
        ok(RouterScratch::new(), "scratch"),
    ];
    let mut failed = Vec::new();
    for (ci, &RouterClass(dt, rg, hidden, inter, e, k, normalize)) in classes.iter().enumerate() {
        let espec = QuantSpec::affine(64, 4);
        let seed0 = 9500 + ci as u64 * 20;
        let gate = qweight(&[e, inter, hidden], dt, espec, seed0);
        let up = qweight(&[e, inter, hidden], dt, espec, seed0 + 1);
        let router = RouterSpec::SoftmaxTopK { k, normalize };
        for seed in seed0 + 2..seed0 + 5 {
            let rw = qweight(&[e, hidden], dt, QuantSpec::affine(rg, 8), seed);
            let Weight::Quantized(rq) = &rw else {
                unreachable!("qweight quantizes")
            };
            for unaligned in [false, true] {
                let x = if unaligned {
                    odd_offset_view(1, hidden, dt, seed + 50)
                } else {
                    let key = ok(random::key(seed + 50), "key");
                    ok(
                        random::normal(&[1, hidden], dt, 0.0, 1.0, Some(&key), s),
                        "x",
                    )
                };
                let what = format!(
                    "{} router g{rg} H{hidden} I{inter} E{e} k{k} seed {seed} unaligned {unaligned}",
                    name(dt)
                );
                let xr = aligned_copy(&x);
                let logits = ok(quantized_matmul(&xr, rq, true, s), "router matmul");
                let rr = ok(ReferenceRouter.route(&logits, &router, s), "ref route");
                let rh = ok(
                    ReferenceExpertSwiGlu.forward(&xr, &gate, &up, &rr, s),
                    "ref swiglu",
                );
                let rh = ok(ops::reshape(&rh.h, &[1, k, inter], s), "reshape");
                let rids = ok(rr.indices.to_vec::<u32>(), "ids");
                let rsc = host(&rr.scores);
                for qdeq in [2, 0] {
                    let variants = ok(
                        gpu::CudaVariants::default().with_router_dequant(qdeq),
                        "variant",
                    );
                    let got = gpu::with_cuda_variants(variants, || {
                        let direct = gpu::router_expert_swiglu(
                            KernelBackend::Cuda,
                            &x,
                            &RouterMatmul {
                                weight: &rw,
                                scratch: &scratch[0],
                            },
                            &router,
                            &gate,
                            &up,
                            s,
                        );
                        let via_trait = zmlx_kernels::expert_swiglu::FusedExpertSwiGlu
                            .forward_router_routed(
                                &x,
                                &RouterMatmul {
                                    weight: &rw,
                                    scratch: &scratch[1],
                                },
                                &router,
                                &gate,
                                &up,
                                s,
                            );
                        (direct, via_trait)
                    });
                    let (h, ids, scores) = ok(got.0, &format!("router swiglu {what}"));
                    let Some((th, tr)) = ok(got.1, "forward_router_routed") else {
                        failed.push(format!("{what}: forward_router_routed declined"));
                        continue;
                    };
                    let mut bad = Vec::new();
                    for (label, h, ids, scores) in [
                        ("direct", &h, &ids, &scores),
                        ("trait", &th.h, &tr.indices, &tr.scores),
                    ] {
                        if ok(ids.to_vec::<u32>(), "ids") != rids {
                            bad.push(format!("{label} ids"));
                        }
                        let sc = host(scores);
                        if sc.iter().zip(&rsc).any(|(a, b)| a.to_bits() != b.to_bits()) {
                            bad.push(format!("{label} scores"));
                        }
                        let h = ok(ops::reshape(h, &[1, k, inter], s), "reshape");
                        let d = Diff::of(&h, &rh, dt);
                        if d.mismatched > 0 {
                            bad.push(format!(
                                "{label} h: {}/{} differ (max {:.2} units)",
                                d.mismatched, d.elems, d.max_units
                            ));
                        }
                    }
                    println!(
                        "ROUTER QDEQ {qdeq} {what}: {}",
                        if bad.is_empty() {
                            "EXACT".to_string()
                        } else {
                            bad.join(", ")
                        }
                    );
                    if qdeq == 2 && !bad.is_empty() {
                        failed.push(what.clone());
                    }
                }
            }
        }
    }
    for (i, sc) in scratch.iter().enumerate() {
        let words = ok(sc.array().to_vec::<u32>(), "scratch words");
        if words[..2] != [0, 0] {
            failed.push(format!("scratch {i}: counts left at {:?}", &words[..2]));
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// Set in the child process of `router_swiglu_wait_traps_instead_of_hanging`.
const TRAP_CHILD: &str = "ZMLX_TEST_ROUTER_TRAP_CHILD";

/// The fused router's bounded wait: with a bound of 0 us the blocks that find the
/// logits not yet there trap. That must end the process's work with an error (or
/// end the process), never hang it. The trap leaves the CUDA context unusable, so the
/// call runs in a child process (this test binary again, with `TRAP_CHILD` set), which
/// prints what the call returned; the parent gives it two minutes.
#[test]
fn router_swiglu_wait_traps_instead_of_hanging() {
    if std::env::var_os(TRAP_CHILD).is_some() {
        router_trap_child();
        return;
    }
    let _serial = serial();
    if !cuda() {
        return;
    }
    let exe = std::env::current_exe().expect("this test binary");
    let mut child = std::process::Command::new(exe)
        .args([
            "--exact",
            "router_swiglu_wait_traps_instead_of_hanging",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(TRAP_CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the child still ran after 120 s: the wait hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let out = child.wait_with_output().expect("the child's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The last ~2000 bytes of stderr, from a character boundary.
    let from = (stderr.len().saturating_sub(2000)..=stderr.len())
        .find(|&i| stderr.is_char_boundary(i))
        .unwrap_or(stderr.len());
    println!(
        "child ended after {:.1} s with {status}\nstdout:\n{stdout}\nstderr (last 2000 bytes):\n{}",
        start.elapsed().as_secs_f64(),
        &stderr[from..]
    );
    assert!(
        !stdout.contains("TRAP CHILD: no error"),
        "the call returned without an error: no block trapped"
    );
    // Either the call returned MLX's error, or the process ended on it (an abort
    // inside MLX), not on a panic of the child's own setup.
    let reported = stdout.contains("TRAP CHILD: error");
    let aborted = !status.success() && !stderr.contains("panicked");
    assert!(
        reported || aborted,
        "the child neither reported an error nor ended on one"
    );
}

/// The child's part: the fused router at Qwen3's shapes with a 0 us wait.
fn router_trap_child() {
    let s = gpu_stream();
    let (dt, hidden, inter, e, k) = (Dtype::Bfloat16, 2048, 768, 128, 8);
    let espec = QuantSpec::affine(64, 4);
    let gate = qweight(&[e, inter, hidden], dt, espec, 9700);
    let up = qweight(&[e, inter, hidden], dt, espec, 9701);
    let rw = qweight(&[e, hidden], dt, QuantSpec::affine(64, 8), 9702);
    let key = ok(random::key(9703), "key");
    let x = ok(
        random::normal(&[1, hidden], dt, 0.0, 1.0, Some(&key), s),
        "x",
    );
    let scratch = ok(RouterScratch::new(), "scratch");
    let variants = ok(
        gpu::CudaVariants::default().with_router_wait_us(0),
        "variant",
    );
    let got = gpu::with_cuda_variants(variants, || {
        gpu::router_expert_swiglu(
            KernelBackend::Cuda,
            &x,
            &RouterMatmul {
                weight: &rw,
                scratch: &scratch,
            },
            &RouterSpec::SoftmaxTopK { k, normalize: true },
            &gate,
            &up,
            s,
        )
    });
    let result = got.and_then(|(h, _, _)| h.eval());
    match result {
        Ok(()) => println!("TRAP CHILD: no error"),
        Err(err) => println!("TRAP CHILD: error: {err}"),
    }
    // The CUDA context is unusable after a trap: leave without MLX's teardown.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

/// The down + combine kernel that also normalises its output (the next layer's
/// input norm) against the reference down + combine then MLX's `fast::rms_norm`,
/// bitwise, twice in a row with one counter (the kernel must leave it zeroed),
/// through `gpu::down_combine_normed` and `FusedDownCombine::forward_normed`.
#[test]
fn down_combine_normed_qwen3_30b_a3b() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let dt = Dtype::Bfloat16;
    let (hidden, inter, experts) = (2048, 768, 128);
    let down = qweight(&[experts, hidden, inter], dt, QuantSpec::affine(64, 4), 93);
    let counter = ok(NormCounter::new(), "counter");
    let key = ok(random::key(977), "key");
    let w = ok(
        random::normal(&[hidden], dt, 1.0, 0.2, Some(&key), s),
        "norm weight",
    );
    let norm = NextNorm {
        weight: &w,
        eps: 1e-6,
        counter: &counter,
    };
    let mut failed = Vec::new();
    for (ci, tokens) in [1, 3, 1].into_iter().enumerate() {
        let k = 8;
        let c = Case { tokens, k, experts };
        let r = routing(&c, dt, 810 + ci as u64);
        let key = ok(random::key(910 + ci as u64), "key");
        let h = ok(
            random::normal(&[tokens, k, inter], dt, 0.0, 1.0, Some(&key), s),
            "h",
        );
        let key = ok(random::key(960 + ci as u64), "key");
        let res = ok(
            random::normal(&[tokens, hidden], dt, 0.0, 8.0, Some(&key), s),
            "residual",
        );
        let hid = routed_hidden(&h, &r, s);
        let input = DownCombineInput {
            hidden: &hid,
            down: &down,
            routing: &r,
            residual: Some(&res),
        };
        let yr = ok(ReferenceDownCombine.forward(&input, s), "ref down");
        let nr = ok(fast::rms_norm(&yr, Some(&w), norm.eps, s), "ref norm");
        let direct = ok(
            gpu::down_combine_normed(
                KernelBackend::Cuda,
                &h,
                &r.indices,
                &r.scores,
                &down,
                Some(&res),
                &norm,
                s,
            ),
            "down_combine_normed",
        );
        let via = ok(
            FusedDownCombine.forward_normed(&input, &norm, s),
            "forward_normed",
        )
        .expect("the fused op takes a top-8 decode batch");
        for (how, (y, n)) in [
            ("gpu::down_combine_normed", direct),
            ("forward_normed", via),
        ] {
            let (dy, dn) = (Diff::of(&y, &yr, dt), Diff::of(&n, &nr, dt));
            println!(
                "DOWNNORM T{tokens} call {ci} {how}: y {}/{} differ, norm {}/{} differ (max {:.2} units)",
                dy.mismatched, dy.elems, dn.mismatched, dn.elems, dn.max_units
            );
            if dy.mismatched != 0 || dn.mismatched != 0 {
                failed.push(format!("T{tokens} call {ci} {how}"));
            }
        }
    }
    // Top-2: blocks of 64 threads cannot play MLX's 128-thread norm launch.
    let c = Case {
        tokens: 4,
        k: 2,
        experts,
    };
    let r = routing(&c, dt, 870);
    let key = ok(random::key(971), "key");
    let h = ok(
        random::normal(&[4, 2, inter], dt, 0.0, 1.0, Some(&key), s),
        "h",
    );
    let hid = routed_hidden(&h, &r, s);
    let input = DownCombineInput {
        hidden: &hid,
        down: &down,
        routing: &r,
        residual: None,
    };
    assert!(
        ok(FusedDownCombine.forward_normed(&input, &norm, s), "top-2").is_none(),
        "top-2 was taken"
    );
    let direct = gpu::down_combine_normed(
        KernelBackend::Cuda,
        &h,
        &r.indices,
        &r.scores,
        &down,
        None,
        &norm,
        s,
    );
    assert!(direct.is_err(), "top-2 was accepted by the kernel call");
    assert!(failed.is_empty(), "normed cases differ: {failed:?}");
}

/// The router kernel on logits that are not all finite: a NaN or a +inf logit makes
/// every gate of its row NaN (the softmax sum is NaN), -inf logits give zero gates.
/// The kernel must still give MLX's ids, in order, and scores that are NaN where
/// MLX's are (NaN payloads aside) and bit-identical elsewhere. Rows: a NaN, a +inf,
/// some -inf, all -inf, and finite rows around them; bf16, f16 and f32; 8, 128 and
/// 512 experts; top-1 and top-8.
#[test]
fn router_kernel_on_nonfinite_logits() {
    let _serial = serial();
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let mut failed = Vec::new();
    for dt in [Dtype::Bfloat16, Dtype::Float16, Dtype::Float32] {
        for e in [8usize, 128, 512] {
            for k in [1usize, 8] {
                let t = 6usize;
                let mut v: Vec<f32> = (0..t * e)
                    .map(|i| ((i * 7919 % 1000) as f32 / 250.0) - 2.0)
                    .collect();
                v[3] = f32::NAN; // row 0
                v[e + 5] = f32::INFINITY; // row 1
                for j in 0..e / 2 {
                    v[2 * e + 2 * j] = f32::NEG_INFINITY; // row 2: half -inf
                }
                for x in &mut v[3 * e..4 * e] {
                    *x = f32::NEG_INFINITY; // row 3: all -inf
                }
                let logits = ok(
                    ops::astype(
                        &ok(Array::from_slice(&v, &[t as i32, e as i32]), "logits"),
                        dt,
                        s,
                    ),
                    "astype",
                );
                let spec = RouterSpec::SoftmaxTopK {
                    k: k as i32,
                    normalize: true,
                };
                let r = ok(ReferenceRouter.route(&logits, &spec, s), "ref route");
                let ri = ok(r.indices.to_vec::<u32>(), "ids");
                let rs = host(&r.scores);
                let (fi, fs) = ok(
                    gpu::route(KernelBackend::Cuda, &logits, k as i32, true, s),
                    "fused route",
                );
                let fi = ok(fi.to_vec::<u32>(), "ids");
                let fs = host(&fs);
                for row in 0..t {
                    let span = row * k..(row + 1) * k;
                    let ids_ok = ri[span.clone()] == fi[span.clone()];
                    let scores_ok = rs[span.clone()]
                        .iter()
                        .zip(&fs[span.clone()])
                        .all(|(a, b)| (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits());
                    if !(ids_ok && scores_ok) {
                        println!(
                            "NONFINITE {} E{e} k{k} row {row}: reference ids {:?} scores {:?}, kernel ids {:?} scores {:?}",
                            name(dt),
                            &ri[span.clone()],
                            &rs[span.clone()],
                            &fi[span.clone()],
                            &fs[span.clone()]
                        );
                        failed.push(format!("{} E{e} k{k} row {row}", name(dt)));
                    }
                }
            }
        }
    }
    assert!(failed.is_empty(), "rows differing: {failed:?}");
}
