//! The fused MLX primitives against the reference op sequences, through MLX itself,
//! on MLX's CPU device, compared bit for bit.
//!
//! Weights are drawn with `mlx::random::normal` and quantized with MLX's own
//! `quantize`, so the packed format, scales and biases are exactly what a converted
//! checkpoint holds. Each case runs the reference (mlx-lm's op sequence, which is what
//! the unpatched model runs) and the fused implementation on the same inputs and
//! requires identical bits; the router must give the same experts in the same order
//! (the order feeds the down+combine sum) and identical scores.

use mlx::quantization::{quantize, QuantSpec};
use mlx::{ops, random, Array, Device, Dtype, StreamOrDevice};
use proptest::prelude::*;
use zmlx_kernels::down_combine::{DownCombineInput, FusedDownCombine, ReferenceDownCombine};
use zmlx_kernels::expert_swiglu::{
    ExpertHidden, FusedExpertSwiGlu, ReferenceExpertSwiGlu, SORT_THRESHOLD,
};
use zmlx_kernels::moe_gate::{FusedRouter, ReferenceRouter, RouterSpec};
use zmlx_kernels::quant_linear::{FusedLinear, ReferenceLinear};
use zmlx_kernels::{DownCombineOp, ExpertSwiGluOp, LinearOp, RouterOp, Weight};

const DTYPES: [Dtype; 3] = [Dtype::Float32, Dtype::Float16, Dtype::Bfloat16];

fn cpu() -> StreamOrDevice {
    Device::cpu().into()
}

/// Normal samples (f32, then cast) with standard deviation `scale`.
fn normal(seed: u64, shape: &[i32], scale: f32, dtype: Dtype) -> Array {
    let key = random::key(seed).unwrap();
    let a = random::normal(shape, Dtype::Float32, 0.0, scale, Some(&key), cpu()).unwrap();
    ops::astype(&a, dtype, cpu()).unwrap()
}

/// A quantized weight `[experts?, out, inp]` with activations of `dtype`.
fn qweight(seed: u64, shape: &[i32], dtype: Dtype, bits: i32, gs: i32) -> Weight {
    let w = normal(seed, shape, 0.05, dtype);
    let q = quantize(&w, QuantSpec::affine(gs, bits), cpu()).unwrap();
    q.weight.eval().unwrap();
    Weight::Quantized(q)
}

/// The bits of every element (row-major), with the dtype.
fn bits(a: &Array) -> (Dtype, Vec<u32>) {
    let v = match a.dtype() {
        Dtype::Float32 => a
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect(),
        Dtype::Float16 => a
            .to_vec::<half::f16>()
            .unwrap()
            .iter()
            .map(|v| u32::from(v.to_bits()))
            .collect(),
        Dtype::Bfloat16 => a
            .to_vec::<half::bf16>()
            .unwrap()
            .iter()
            .map(|v| u32::from(v.to_bits()))
            .collect(),
        Dtype::Uint32 => a.to_vec::<u32>().unwrap(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (a.dtype(), v)
}

/// Asserts identical shape, dtype and bits, naming the first difference.
fn assert_same(what: &str, reference: &Array, fused: &Array) {
    assert_eq!(reference.shape(), fused.shape(), "{what}: shapes");
    let (dr, r) = bits(reference);
    let (df, f) = bits(fused);
    assert_eq!(dr, df, "{what}: dtypes");
    let diffs = r.iter().zip(&f).filter(|(a, b)| a != b).count();
    if let Some(i) = r.iter().zip(&f).position(|(a, b)| a != b) {
        panic!(
            "{what}: {diffs} of {} elements differ, first at flat index {i}: reference \
             {:#x}, fused {:#x}",
            r.len(),
            r[i],
            f[i]
        );
    }
}

/// `[rows, cols]` activations that are not row-contiguous: the transpose of a
/// `[cols, rows]` array, or a column slice of a wider one.
fn strided(seed: u64, rows: i32, cols: i32, dtype: Dtype, how: u8) -> Array {
    match how % 3 {
        0 => normal(seed, &[rows, cols], 1.0, dtype),
        1 => ops::transpose(&normal(seed, &[cols, rows], 1.0, dtype), &[1, 0], cpu()).unwrap(),
        _ => {
            let wide = normal(seed, &[rows, cols + 5], 1.0, dtype);
            ops::slice(&wide, &[0, 3], &[rows, cols + 3], &[1, 1], cpu()).unwrap()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_linear(seed: u64, dtype: Dtype, bits: i32, gs: i32, m: i32, n: i32, k: i32, how: u8) {
    let w = qweight(seed, &[n, k], dtype, bits, gs);
    let x = strided(seed + 1, m, k, dtype, how);
    let r = ReferenceLinear.forward(&x, &w, cpu()).unwrap();
    let f = FusedLinear.forward(&x, &w, cpu()).unwrap();
    assert_same(
        &format!("linear {dtype:?} bits={bits} gs={gs} m={m} n={n} k={k} layout={how}"),
        &r,
        &f,
    );
}

/// Every dtype x bits x group size, decode and small prefill, N not a multiple of the
/// 16-row block, K = 96 with group size 32.
#[test]
fn linear_grid() {
    let mut seed = 1;
    for dtype in DTYPES {
        for bits in [2, 4, 8] {
            for gs in [32, 64, 128] {
                let ks: &[i32] = if gs == 32 { &[96, 256] } else { &[gs * 2] };
                for &k in ks {
                    for (m, how) in [(1, 0u8), (3, 1), (9, 2)] {
                        seed += 3;
                        check_linear(seed, dtype, bits, gs, m, 37, k, how);
                    }
                }
            }
        }
    }
}

/// `[batch, len, K]` activations (the shape a model passes).
#[test]
fn linear_batched() {
    for dtype in DTYPES {
        let w = qweight(5, &[24, 128], dtype, 4, 64);
        let x = normal(6, &[2, 5, 128], 1.0, dtype);
        let r = ReferenceLinear.forward(&x, &w, cpu()).unwrap();
        let f = FusedLinear.forward(&x, &w, cpu()).unwrap();
        assert_same(&format!("linear batched {dtype:?}"), &r, &f);
    }
}

/// Routes `logits` with the reference and the fused router and requires the same
/// experts in the same order (so also the same sets) and the same score bits. The
/// fused router must actually take the spec (a fallback to the reference would pass
/// trivially).
fn check_route(what: &str, logits: &Array, spec: &RouterSpec) {
    let experts = *logits.shape().last().unwrap();
    assert!(
        FusedRouter.supports(spec, experts, Device::cpu()).is_yes(),
        "{what}: the fused router declines {spec:?}"
    );
    let r = ReferenceRouter.route(logits, spec, cpu()).unwrap();
    let f = FusedRouter.route(logits, spec, cpu()).unwrap();
    assert_same(&format!("{what} indices"), &r.indices, &f.indices);
    assert_same(&format!("{what} scores"), &r.scores, &f.scores);
}

/// Router logits `[tokens, experts]`; with `ties`, few distinct values (multiples of
/// 1/2), so many exact ties for the top-k to break.
fn router_logits(seed: u64, dtype: Dtype, tokens: i32, experts: i32, ties: bool) -> Array {
    let logits = normal(seed, &[tokens, experts], 2.0, dtype);
    if !ties {
        return logits;
    }
    let two = Array::scalar_as(2.0, dtype).unwrap();
    ops::divide(
        &ops::floor(&ops::multiply(&logits, &two, cpu()).unwrap(), cpu()).unwrap(),
        &two,
        cpu(),
    )
    .unwrap()
}

fn check_router(seed: u64, dtype: Dtype, tokens: i32, experts: i32, k: i32, ties: bool) {
    let logits = router_logits(seed, dtype, tokens, experts, ties);
    for normalize in [true, false] {
        let what = format!(
            "router {dtype:?} tokens={tokens} experts={experts} k={k} ties={ties} norm={normalize}"
        );
        check_route(&what, &logits, &RouterSpec::SoftmaxTopK { k, normalize });
    }
}

/// Mixtral's top-k-then-softmax router, fused vs reference.
fn check_topk_softmax(seed: u64, dtype: Dtype, tokens: i32, experts: i32, k: i32, ties: bool) {
    let logits = router_logits(seed, dtype, tokens, experts, ties);
    let what = format!(
        "top-k softmax router {dtype:?} tokens={tokens} experts={experts} k={k} ties={ties}"
    );
    check_route(&what, &logits, &RouterSpec::TopKSoftmax { k });
}

#[test]
fn router_grid() {
    let mut seed = 100;
    for dtype in DTYPES {
        for (experts, k) in [
            (8, 1),
            (8, 2),
            (16, 4),
            (64, 8),
            (128, 8),
            (128, 16),
            (512, 10),
        ] {
            for ties in [false, true] {
                for tokens in [1, 33] {
                    seed += 1;
                    check_router(seed, dtype, tokens, experts, k, ties);
                }
            }
        }
    }
}

/// DeepSeek-V3's rule (sigmoid, correction bias, group-limited top-k, scaling), fused
/// vs reference, with and without the bias and the renormalisation.
#[allow(clippy::too_many_arguments)]
fn check_sigmoid_group(
    seed: u64,
    dtype: Dtype,
    tokens: i32,
    experts: i32,
    k: i32,
    n_group: i32,
    topk_group: i32,
    ties: bool,
) {
    let logits = router_logits(seed, dtype, tokens, experts, ties);
    // A coarse bias also ties selection scores; f32 as in DeepSeek-V3 checkpoints, and
    // bf16 for the promotion in the bias add.
    let bias = ops::divide(
        &ops::floor(&normal(seed + 1, &[experts], 4.0, Dtype::Float32), cpu()).unwrap(),
        &Array::scalar_as(8.0, Dtype::Float32).unwrap(),
        cpu(),
    )
    .unwrap();
    let bias16 = ops::astype(&bias, Dtype::Bfloat16, cpu()).unwrap();
    for (b, bias) in [None, Some(bias), Some(bias16)].into_iter().enumerate() {
        for normalize in [true, false] {
            let spec = RouterSpec::SigmoidGroupTopK {
                k,
                n_group,
                topk_group,
                normalize,
                routed_scaling_factor: 2.5,
                correction_bias: bias.clone(),
            };
            let what = format!(
                "sigmoid group router {dtype:?} tokens={tokens} experts={experts} k={k} \
                 groups={n_group}/{topk_group} ties={ties} bias={b} norm={normalize}"
            );
            check_route(&what, &logits, &spec);
        }
    }
}

/// DeepSeek's rule over dtypes and shapes: V3's 256 experts in 8 groups keeping 4,
/// top-8; no group limit; expert counts that are not multiples of 16; k up to 16.
#[test]
fn router_sigmoid_group_grid() {
    let mut seed = 900;
    for dtype in DTYPES {
        for (experts, k, n_group, topk_group) in [
            (256, 8, 8, 4),
            (256, 8, 1, 1),
            (64, 6, 8, 3),
            (160, 6, 1, 1),
            (72, 16, 4, 2),
            (8, 2, 4, 4),
            (20, 1, 2, 1),
            (512, 16, 16, 5),
        ] {
            for ties in [false, true] {
                for tokens in [1, 33] {
                    seed += 1;
                    check_sigmoid_group(seed, dtype, tokens, experts, k, n_group, topk_group, ties);
                }
            }
        }
    }
}

/// Mixtral's rule over dtypes, expert counts (multiples of 16 and not), k from 1 to
/// 16 (and k = E), tied and untied logits, 1 and many tokens.
#[test]
fn router_topk_softmax_grid() {
    let mut seed = 300;
    for dtype in DTYPES {
        for (experts, k) in [
            (8, 1),
            (8, 2),
            (8, 8),
            (12, 3),
            (16, 4),
            (60, 4),
            (64, 8),
            (100, 7),
            (128, 8),
            (128, 16),
            (250, 12),
            (256, 8),
            (512, 16),
        ] {
            for ties in [false, true] {
                for tokens in [1, 33] {
                    seed += 1;
                    check_topk_softmax(seed, dtype, tokens, experts, k, ties);
                }
            }
        }
    }
}

/// Every k from 1 to 16 on Mixtral's 8 experts and Qwen3's 128, with ties.
#[test]
fn router_topk_softmax_every_k() {
    for dtype in DTYPES {
        for experts in [8, 128] {
            for k in 1..=16.min(experts) {
                check_topk_softmax(400 + k as u64, dtype, 17, experts, k, true);
                check_topk_softmax(500 + k as u64, dtype, 17, experts, k, false);
            }
        }
    }
}

/// Logits that are not row-contiguous (transposed, a column slice) and batched
/// `[batch, seq, experts]` logits, for both fused rules.
#[test]
fn router_strided_and_batched_logits() {
    for dtype in DTYPES {
        for (experts, k) in [(8, 2), (60, 4), (128, 8)] {
            for how in 1..3u8 {
                let logits = strided(700 + how as u64, 21, experts, dtype, how);
                let what = format!("strided({how}) {dtype:?} experts={experts} k={k}");
                check_route(&what, &logits, &RouterSpec::TopKSoftmax { k });
                check_route(
                    &what,
                    &logits,
                    &RouterSpec::SoftmaxTopK { k, normalize: true },
                );
            }
            let logits = router_logits(710, dtype, 3 * 5, experts, true);
            let logits = ops::reshape(&logits, &[3, 5, experts], cpu()).unwrap();
            let what = format!("batched {dtype:?} experts={experts} k={k}");
            check_route(&what, &logits, &RouterSpec::TopKSoftmax { k });
            check_route(
                &what,
                &logits,
                &RouterSpec::SoftmaxTopK {
                    k,
                    normalize: false,
                },
            );
        }
    }
}

/// Signed zeros, infinities and NaN logits: negated NaN is still NaN and MLX's
/// argpartition puts it after every number, so Mixtral's rule skips NaN experts while
/// k numbers remain. Rows where the k picked include a NaN or an infinity give NaN
/// scores, whose payload is not emulated: those rows are checked for indices only.
#[test]
fn router_topk_softmax_special_values() {
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let rows: [[f32; 8]; 6] = [
        [nan, 1.0, -1.0, nan, 0.5, 0.5, 2.0, -3.0],
        [0.0, -0.0, 0.0, -0.0, -1.0, -0.0, 0.0, -2.0],
        [-inf, 1.0, -inf, 1.0, 1.0, -2.0, 1.0, 0.25],
        [nan, nan, nan, nan, nan, 1.0, 2.0, 3.0],
        [inf, 1.0, 2.0, 3.0, -inf, 0.0, nan, 1.0],
        [0.5; 8],
    ];
    let finite_scores = [true, true, true, false, false, true];
    for dtype in DTYPES {
        for k in [1, 2, 3, 5] {
            for (r, row) in rows.iter().enumerate() {
                let logits = Array::from_slice(row, &[1, 8]).unwrap();
                let logits = ops::astype(&logits, dtype, cpu()).unwrap();
                let spec = RouterSpec::TopKSoftmax { k };
                let what = format!("special row {r} {dtype:?} k={k}");
                if finite_scores[r] || (r == 3 && k <= 3) {
                    check_route(&what, &logits, &spec);
                } else {
                    let re = ReferenceRouter.route(&logits, &spec, cpu()).unwrap();
                    let fu = FusedRouter.route(&logits, &spec, cpu()).unwrap();
                    assert_same(&format!("{what} indices"), &re.indices, &fu.indices);
                }
            }
        }
    }
}

/// DeepSeek's rule on signed zeros, infinities and NaN logits (sigmoid(NaN) is NaN:
/// it ranks highest in a group's top-2 and last in the final selection). Indices are
/// compared always, scores where the reference's are all finite (NaN payloads are not
/// emulated).
#[test]
fn router_sigmoid_group_special_values() {
    let (nan, inf) = (f32::NAN, f32::INFINITY);
    let rows: [[f32; 8]; 5] = [
        [nan, 1.0, -1.0, nan, 0.5, 0.5, 2.0, -3.0],
        [0.0, -0.0, 0.0, -0.0, -1.0, -0.0, 0.0, -2.0],
        [-inf, 1.0, -inf, 1.0, 1.0, -2.0, 1.0, 0.25],
        [nan, nan, nan, nan, nan, 1.0, 2.0, 3.0],
        [inf, 1.0, 2.0, 3.0, -inf, 0.0, nan, 1.0],
    ];
    for dtype in DTYPES {
        for (n_group, topk_group) in [(1, 1), (4, 2), (4, 1), (2, 1)] {
            for k in [1, 2, 3, 5] {
                for (r, row) in rows.iter().enumerate() {
                    let logits = Array::from_slice(row, &[1, 8]).unwrap();
                    let logits = ops::astype(&logits, dtype, cpu()).unwrap();
                    let spec = RouterSpec::SigmoidGroupTopK {
                        k,
                        n_group,
                        topk_group,
                        normalize: true,
                        routed_scaling_factor: 2.5,
                        correction_bias: None,
                    };
                    let what =
                        format!("special row {r} {dtype:?} groups {n_group}/{topk_group} k={k}");
                    let re = ReferenceRouter.route(&logits, &spec, cpu()).unwrap();
                    if re
                        .scores
                        .to_vec::<f32>()
                        .unwrap()
                        .iter()
                        .all(|v| v.is_finite())
                    {
                        check_route(&what, &logits, &spec);
                    } else {
                        let fu = FusedRouter.route(&logits, &spec, cpu()).unwrap();
                        assert_same(&format!("{what} indices"), &re.indices, &fu.indices);
                    }
                }
            }
        }
    }
}

/// The GPU router kernel does softmax top-k only; the CPU kernel every rule.
#[test]
fn router_support_by_rule_and_device() {
    let mixtral = RouterSpec::TopKSoftmax { k: 2 };
    assert!(FusedRouter.supports(&mixtral, 8, Device::cpu()).is_yes());
    assert!(FusedRouter.supports(&mixtral, 512, Device::cpu()).is_yes());
    assert!(!FusedRouter.supports(&mixtral, 513, Device::cpu()).is_yes());
    assert!(!FusedRouter.supports(&mixtral, 8, Device::gpu()).is_yes());
    let deepseek = RouterSpec::SigmoidGroupTopK {
        k: 8,
        n_group: 8,
        topk_group: 4,
        normalize: true,
        routed_scaling_factor: 2.5,
        correction_bias: None,
    };
    assert!(FusedRouter.supports(&deepseek, 256, Device::cpu()).is_yes());
    assert!(!FusedRouter.supports(&deepseek, 256, Device::gpu()).is_yes());
    // Groups of one expert (MLX's topk(2) fails) go to the reference.
    assert!(!FusedRouter.supports(&deepseek, 8, Device::cpu()).is_yes());
}

/// The reference's activations in routing order `[..., k, 1, inter]` (undoing the
/// sort of its prefill path).
fn in_routing_order(h: &ExpertHidden) -> Array {
    match &h.inv_order {
        None => h.h.clone(),
        Some(inv) => {
            let y = ops::take(&h.h, inv, Some(0), cpu()).unwrap();
            let mut shape = h.indices_shape.clone();
            shape.extend_from_slice(&y.shape()[1..]);
            ops::reshape(&y, &shape, cpu()).unwrap()
        }
    }
}

struct MoeCase {
    seed: u64,
    dtype: Dtype,
    bits: i32,
    gs: i32,
    tokens: i32,
    experts: i32,
    k: i32,
    hidden: i32,
    inter: i32,
    layout: u8,
}

impl MoeCase {
    fn name(&self) -> String {
        format!(
            "{:?} bits={} gs={} tokens={} experts={} k={} hidden={} inter={} layout={}",
            self.dtype,
            self.bits,
            self.gs,
            self.tokens,
            self.experts,
            self.k,
            self.hidden,
            self.inter,
            self.layout
        )
    }

    fn run(&self) {
        let (d, s) = (self.dtype, self.seed);
        let x = strided(s, self.tokens, self.hidden, d, self.layout);
        let gate = qweight(
            s + 1,
            &[self.experts, self.inter, self.hidden],
            d,
            self.bits,
            self.gs,
        );
        let up = qweight(
            s + 2,
            &[self.experts, self.inter, self.hidden],
            d,
            self.bits,
            self.gs,
        );
        let down = qweight(
            s + 3,
            &[self.experts, self.hidden, self.inter],
            d,
            self.bits,
            self.gs,
        );
        let logits = normal(s + 4, &[self.tokens, self.experts], 1.0, d);
        let spec = RouterSpec::SoftmaxTopK {
            k: self.k,
            normalize: true,
        };
        let routing = ReferenceRouter.route(&logits, &spec, cpu()).unwrap();
        let name = self.name();
        let sorted = (self.tokens * self.k) as usize >= SORT_THRESHOLD;

        let hr = ReferenceExpertSwiGlu
            .forward(&x, &gate, &up, &routing, cpu())
            .unwrap();
        assert_eq!(hr.inv_order.is_some(), sorted, "{name}: reference path");
        let hf = FusedExpertSwiGlu
            .forward(&x, &gate, &up, &routing, cpu())
            .unwrap();
        assert_same(&format!("swiglu {name}"), &in_routing_order(&hr), &hf.h);

        // Down+combine on the reference's activations (sorted or not), then the
        // whole fused pipeline against the whole reference one.
        let input = |h| DownCombineInput {
            hidden: h,
            down: &down,
            routing: &routing,
            residual: None,
        };
        let yr = ReferenceDownCombine.forward(&input(&hr), cpu()).unwrap();
        let yf = FusedDownCombine.forward(&input(&hr), cpu()).unwrap();
        assert_same(&format!("down+combine {name}"), &yr, &yf);
        let yff = FusedDownCombine.forward(&input(&hf), cpu()).unwrap();
        assert_same(&format!("fused pipeline {name}"), &yr, &yff);
    }
}

/// Dtypes x bits x group sizes at decode (1 token) and prefill (enough pairs for the
/// reference's sorted path), with strided activations.
#[test]
fn moe_grid() {
    let mut seed = 1000;
    for dtype in DTYPES {
        for (bits, gs) in [(4, 64), (8, 32), (4, 128), (2, 32), (8, 64)] {
            for (tokens, k) in [(1, 8), (40, 2)] {
                seed += 10;
                let (hidden, inter) = match gs {
                    32 => (96, 96),
                    64 => (128, 64),
                    _ => (128, 128),
                };
                MoeCase {
                    seed,
                    dtype,
                    bits,
                    gs,
                    tokens,
                    experts: 16,
                    k,
                    hidden,
                    inter,
                    layout: (seed / 10 % 3) as u8,
                }
                .run();
            }
        }
    }
}

/// The residual add folded into down+combine: `residual + combine` from the fused
/// kernel must equal the reference's (`ops::add(residual, combine)`, MLX's `add`)
/// bit for bit, for every dtype, decode and a few tokens and a prefill batch (the
/// reference's sorted activations), with a row-contiguous, a transposed and a
/// column-sliced residual (the primitive gets it made contiguous).
#[test]
fn down_combine_residual() {
    let (experts, hidden, inter, bits, gs) = (16, 128, 64, 4, 64);
    let mut seed = 7000;
    for dtype in DTYPES {
        let down = qweight(seed, &[experts, hidden, inter], dtype, bits, gs);
        assert!(FusedDownCombine.supports(&down, Device::cpu()).is_yes());
        let gate = qweight(seed + 1, &[experts, inter, hidden], dtype, bits, gs);
        let up = qweight(seed + 2, &[experts, inter, hidden], dtype, bits, gs);
        for (tokens, k) in [(1, 8), (3, 8), (5, 2), (40, 2)] {
            seed += 10;
            let x = normal(seed, &[tokens, hidden], 1.0, dtype);
            let logits = normal(seed + 1, &[tokens, experts], 1.0, dtype);
            let spec = RouterSpec::SoftmaxTopK { k, normalize: true };
            let routing = ReferenceRouter.route(&logits, &spec, cpu()).unwrap();
            let h = ReferenceExpertSwiGlu
                .forward(&x, &gate, &up, &routing, cpu())
                .unwrap();
            let hf = FusedExpertSwiGlu
                .forward(&x, &gate, &up, &routing, cpu())
                .unwrap();
            for how in 0..3u8 {
                // A residual stream of the magnitude of a layer's hidden state, so
                // the sum rounds (the combine alone is much smaller).
                let res = strided(seed + 2 + u64::from(how), tokens, hidden, dtype, how);
                let res =
                    ops::multiply(&res, &Array::scalar_as(8.0, dtype).unwrap(), cpu()).unwrap();
                let input = |hid| DownCombineInput {
                    hidden: hid,
                    down: &down,
                    routing: &routing,
                    residual: Some(&res),
                };
                let what = format!("residual {dtype:?} tokens={tokens} k={k} layout={how}");
                let yr = ReferenceDownCombine.forward(&input(&h), cpu()).unwrap();
                assert_eq!(yr.dtype(), dtype, "{what}: reference dtype");
                let plain = ReferenceDownCombine
                    .forward(
                        &DownCombineInput {
                            residual: None,
                            ..input(&h)
                        },
                        cpu(),
                    )
                    .unwrap();
                assert_same(
                    &format!("{what} reference = add(residual, combine)"),
                    &ops::add(&res, &plain, cpu()).unwrap(),
                    &yr,
                );
                let yf = FusedDownCombine.forward(&input(&h), cpu()).unwrap();
                assert_same(&what, &yr, &yf);
                let yff = FusedDownCombine.forward(&input(&hf), cpu()).unwrap();
                assert_same(&format!("{what} fused pipeline"), &yr, &yff);
            }
        }
    }
}

/// A residual the kernels cannot add element for element is a typed error from both
/// implementations, not a panic: a different shape (also a broadcastable one), a
/// different dtype.
#[test]
fn down_combine_residual_mismatch_is_an_error() {
    let (experts, hidden, inter, tokens, k) = (8, 64, 64, 3, 2);
    let dtype = Dtype::Bfloat16;
    let down = qweight(1, &[experts, hidden, inter], dtype, 4, 64);
    let gate = qweight(2, &[experts, inter, hidden], dtype, 4, 64);
    let up = qweight(3, &[experts, inter, hidden], dtype, 4, 64);
    let x = normal(4, &[tokens, hidden], 1.0, dtype);
    let logits = normal(5, &[tokens, experts], 1.0, dtype);
    let spec = RouterSpec::SoftmaxTopK { k, normalize: true };
    let routing = ReferenceRouter.route(&logits, &spec, cpu()).unwrap();
    let h = FusedExpertSwiGlu
        .forward(&x, &gate, &up, &routing, cpu())
        .unwrap();
    let bad = [
        ("wider", normal(6, &[tokens, hidden + 1], 1.0, dtype)),
        ("broadcast row", normal(6, &[1, hidden], 1.0, dtype)),
        ("flat", normal(6, &[tokens * hidden], 1.0, dtype)),
        ("dtype", normal(6, &[tokens, hidden], 1.0, Dtype::Float32)),
    ];
    for (what, res) in &bad {
        let input = DownCombineInput {
            hidden: &h,
            down: &down,
            routing: &routing,
            residual: Some(res),
        };
        for (op, r) in [
            ("reference", ReferenceDownCombine.forward(&input, cpu())),
            ("fused", FusedDownCombine.forward(&input, cpu())),
        ] {
            match r {
                Err(mlx::Error::InvalidArgument { op: name, message }) => {
                    assert_eq!(name, "down_combine", "{op} {what}");
                    assert!(message.contains("residual"), "{op} {what}: {message}");
                }
                Err(e) => panic!("{op} {what}: unexpected error kind {e}"),
                Ok(_) => panic!("{op} {what}: a mismatched residual was accepted"),
            }
        }
    }
}

/// Scalar (0-d) activations or routing indices are an error, not a panic, for the
/// SwiGLU op; on the CPU `forward_routed` declines (the two-op path takes over).
#[test]
fn expert_swiglu_scalar_inputs_are_errors() {
    let (experts, hidden, inter) = (8, 64, 64);
    let dtype = Dtype::Bfloat16;
    let gate = qweight(2, &[experts, inter, hidden], dtype, 4, 64);
    let up = qweight(3, &[experts, inter, hidden], dtype, 4, 64);
    let x = normal(4, &[1, hidden], 1.0, dtype);
    let scalar_ids = zmlx_kernels::moe_gate::Routing {
        indices: Array::scalar(1u32).unwrap(),
        scores: Array::scalar(1.0f32).unwrap(),
    };
    for op in [
        &FusedExpertSwiGlu as &dyn ExpertSwiGluOp,
        &ReferenceExpertSwiGlu as &dyn ExpertSwiGluOp,
    ] {
        match op.forward(&x, &gate, &up, &scalar_ids, cpu()) {
            Err(mlx::Error::InvalidArgument { op: name, .. }) => {
                assert_eq!(name, "expert_swiglu", "{}", op.name())
            }
            Err(e) => panic!("{}: unexpected error kind {e}", op.name()),
            Ok(_) => panic!("{}: scalar routing indices were accepted", op.name()),
        }
    }
    let logits = normal(5, &[1, experts], 1.0, dtype);
    let spec = RouterSpec::SoftmaxTopK {
        k: 2,
        normalize: true,
    };
    let routed = FusedExpertSwiGlu
        .forward_routed(&x, &logits, &spec, &gate, &up, cpu())
        .unwrap();
    assert!(routed.is_none(), "the CPU has no routed SwiGLU kernel");
}

/// Expert counts from 8 to 512 and k from 1 to 16.
#[test]
fn moe_expert_counts() {
    for (i, (experts, k, tokens)) in [(8, 1, 3), (8, 8, 9), (64, 4, 20), (128, 16, 5), (512, 8, 2)]
        .into_iter()
        .enumerate()
    {
        MoeCase {
            seed: 5000 + 10 * i as u64,
            dtype: Dtype::Bfloat16,
            bits: 4,
            gs: 32,
            tokens,
            experts,
            k,
            hidden: 64,
            inter: 32,
            layout: i as u8,
        }
        .run();
    }
}

fn dtype_strategy() -> impl Strategy<Value = Dtype> {
    prop_oneof![
        Just(Dtype::Float32),
        Just(Dtype::Float16),
        Just(Dtype::Bfloat16)
    ]
}

fn quant_strategy() -> impl Strategy<Value = (i32, i32)> {
    (
        prop_oneof![Just(2), Just(4), Just(8)],
        prop_oneof![Just(32), Just(64), Just(128)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn linear_random(seed in 0u64..1 << 40, dtype in dtype_strategy(), (bits, gs) in quant_strategy(),
                     m in 1i32..12, n in 1i32..50, groups in 1i32..4, layout in 0u8..3) {
        check_linear(seed, dtype, bits, gs, m, n, gs * groups, layout);
    }

    #[test]
    fn router_random(seed in 0u64..1 << 40, dtype in dtype_strategy(), experts in 8i32..200,
                     k in 1i32..17, tokens in 1i32..80, ties: bool) {
        check_router(seed, dtype, tokens, experts, k.min(experts), ties);
    }

    #[test]
    fn router_topk_softmax_random(seed in 0u64..1 << 40, dtype in dtype_strategy(),
                                  experts in 8i32..=512, k in 1i32..17, tokens in 1i32..80,
                                  ties: bool) {
        check_topk_softmax(seed, dtype, tokens, experts, k.min(experts), ties);
    }

    #[test]
    fn router_sigmoid_group_random(seed in 0u64..1 << 40, dtype in dtype_strategy(),
                                   group_size in 2i32..40, n_group in prop_oneof![Just(1i32), 2i32..=16],
                                   k in 1i32..17, tokens in 1i32..40, ties: bool, keep in 0.0f64..1.0) {
        let experts = (group_size * n_group).min(512 / n_group * n_group);
        let topk_group = 1 + ((n_group - 1) as f64 * keep) as i32;
        check_sigmoid_group(seed, dtype, tokens, experts, k.min(experts), n_group, topk_group, ties);
    }

    #[test]
    fn moe_random(seed in 0u64..1 << 40, dtype in dtype_strategy(), (bits, gs) in quant_strategy(),
                  experts in 8i32..40, k in 1i32..9, tokens in 1i32..40, groups in 1i32..3,
                  inter_groups in 1i32..3, layout in 0u8..3) {
        MoeCase {
            seed, dtype, bits, gs, tokens, experts, k: k.min(experts),
            hidden: gs * groups, inter: gs * inter_groups, layout,
        }.run();
    }
}

/// Shapes large enough that the kernels split rows into tasks of 64+ rows, where the
/// AVX-512 path runs four 16-row blocks side by side for one or two activation rows.
#[test]
fn multi_block_shapes() {
    for dtype in DTYPES {
        for (bits, gs) in [(4, 64), (8, 32)] {
            for m in [1, 2, 3] {
                check_linear(7000 + m as u64, dtype, bits, gs, m, 1000, 128, m as u8);
            }
        }
        MoeCase {
            seed: 7100,
            dtype,
            bits: 4,
            gs: 64,
            tokens: 1,
            experts: 16,
            k: 8,
            hidden: 1024,
            inter: 128,
            layout: 1,
        }
        .run();
    }
}

/// A 4-bit group-64 `[n, k]` weight of standard deviation `std` whose scales and
/// biases in rows `tiny_rows` are multiplied by 2^-100 (exact in bf16: they land near
/// 2^-107, below the guard's 2^-50; MLX's `quantize` itself never makes scales that
/// small, it clamps them to 1e-7). In f16 they underflow to 0, which is fine: only bf16
/// takes the guarded path.
fn qweight_tiny_rows(
    seed: u64,
    (n, k): (i32, i32),
    std: f32,
    tiny_rows: std::ops::Range<i32>,
    dtype: Dtype,
) -> Weight {
    let w = normal(seed, &[n, k], std, dtype);
    let mut q = quantize(&w, QuantSpec::affine(64, 4), cpu()).unwrap();
    let factor: Vec<f32> = (0..n)
        .map(|r| {
            if tiny_rows.contains(&r) {
                2f32.powi(-100)
            } else {
                1.0
            }
        })
        .collect();
    let factor = ops::astype(&Array::from_slice(&factor, &[n, 1]).unwrap(), dtype, cpu()).unwrap();
    q.scales = ops::multiply(&q.scales, &factor, cpu()).unwrap();
    q.biases = q.biases.map(|b| ops::multiply(&b, &factor, cpu()).unwrap());
    q.weight.eval().unwrap();
    q.scales.eval().unwrap();
    if let Some(b) = &q.biases {
        b.eval().unwrap();
    }
    Weight::Quantized(q)
}

/// The bf16 kernels round with `vcvtne2ps2bf16` (which reads f32 denormals as zero)
/// only when every activation, scale and bias is 0 or at least 2^-50 in magnitude, so
/// that no intermediate of the chain can be denormal (`cpu/chain.rs`). Both sides of
/// that guard against MLX, bitwise, for every dtype (f16/f32 take neither path but get
/// the same inputs), with N large enough for the four-block decode kernel:
/// - plain and small-but-admitted values (x ~ 2^-45, weights ~ 2^-40): the fast path;
/// - tiny activations (x ~ 2^-120, bf16 denormals among them: products and sums are
///   denormal), so the whole call must fall back;
/// - tiny scales and biases in every row (x ~ 2^-20: denormal products);
/// - tiny scales and biases in rows 300..340 only: those row blocks fall back, the
///   others stay on the fast path.
///
/// Without the guard the three tiny cases differ from MLX (checked by disabling it).
#[test]
fn bf16_denormal_guard() {
    let (n, k) = (1040, 256);
    let cases: [(&str, f32, f32, std::ops::Range<i32>); 5] = [
        (
            "admitted small values",
            2f32.powi(-45),
            2f32.powi(-40),
            0..0,
        ),
        ("plain values", 1.0, 0.05, 0..0),
        ("tiny activations", 2f32.powi(-120), 0.05, 0..0),
        ("tiny scales everywhere", 2f32.powi(-20), 0.05, 0..n),
        (
            "tiny scales in rows 300..340",
            2f32.powi(-20),
            0.05,
            300..340,
        ),
    ];
    for (i, (what, x_std, w_std, tiny_rows)) in cases.into_iter().enumerate() {
        for dtype in DTYPES {
            let seed = 900 + 10 * i as u64;
            let w = qweight_tiny_rows(seed, (n, k), w_std, tiny_rows.clone(), dtype);
            for m in [1, 2, 3] {
                let x = normal(seed + 5 + m as u64, &[m, k], x_std, dtype);
                let r = ReferenceLinear.forward(&x, &w, cpu()).unwrap();
                let f = FusedLinear.forward(&x, &w, cpu()).unwrap();
                assert_same(&format!("guard: {what}, {dtype:?}, m={m}"), &r, &f);
            }
        }
    }
}
