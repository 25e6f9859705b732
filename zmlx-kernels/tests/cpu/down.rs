//! `expert_down_combine`: quantized weights bit for bit against the scalar emulation
//! of MLX (chain per pair, product stored in T when the scores are in T, f32 sum over
//! the k in routing order, one rounding); float weights, and quantized weights with
//! `Precision::F32`, against an interval bound.

use proptest::prelude::*;
use zmlx_kernels::cpu::{
    expert_down_combine, simd, with_precision, Dtype, Precision, QuantSpec, WeightShape, Weights,
};

use crate::data::{
    distinct_indices, kernel_settings, quant_data, round, values, with_setting, Buf, Rng, DTYPES,
};
use crate::naive;
use crate::tol;

/// Interval of one combine term `round_p(round_T(d) * s)` for d within `delta` of `exact`.
fn term(dtype: Dtype, round_products: bool, exact: f64, delta: f64, s: f32) -> (f64, f64) {
    let prod = |d: f32| {
        let v = d * s;
        f64::from(if round_products { round(dtype, v) } else { v })
    };
    if dtype == Dtype::F32 {
        // d itself is only known to within delta; the f32 product adds one rounding.
        let a = (exact - delta) * f64::from(s);
        let b = (exact + delta) * f64::from(s);
        let r = f64::from(f32::EPSILON) * a.abs().max(b.abs());
        return (a.min(b) - r, a.max(b) + r);
    }
    // round_T, multiplication by a fixed s and the product rounding are all
    // monotonic in d, so the ends of the d interval give the ends of the term interval.
    let (a, b) = tol::rounded_ends(dtype, exact, delta);
    let (a, b) = (prod(a), prod(b));
    (a.min(b), a.max(b))
}

#[allow(clippy::too_many_arguments)]
fn check(
    dtype: Dtype,
    round_products: bool,
    h: &[f32],
    idx: &[u32],
    scores: &[f32],
    top_k: usize,
    hidden: usize,
    inter: usize,
    wd: &dyn Fn(usize) -> naive::Terms,
    y: &[f32],
) {
    let tokens = y.len() / hidden.max(1);
    let mut cache = std::collections::HashMap::new();
    for t in 0..tokens {
        for r in 0..hidden {
            let (mut lo, mut hi, mut mag) = (0.0f64, 0.0f64, 0.0f64);
            for j in 0..top_k {
                let p = t * top_k + j;
                let e = idx[p] as usize;
                let w = cache.entry(e).or_insert_with(|| wd(e));
                let (d, a) = naive::dot(
                    &h[p * inter..(p + 1) * inter],
                    &w[r * inter..(r + 1) * inter],
                );
                let (l, u) = term(dtype, round_products, d, tol::accum(inter, a), scores[p]);
                lo += l;
                hi += u;
                mag += l.abs().max(u.abs());
            }
            // f32 k-sum in any order, then one rounding to the output dtype.
            let sum_err = (top_k as f64 + 1.0) * f64::from(f32::EPSILON) * mag;
            let (lo, hi) = (lo - sum_err, hi + sum_err);
            let got = f64::from(y[t * hidden + r]);
            let ok = got >= lo - tol::ulp(dtype, lo.abs()) / 2.0 - 1e-38
                && got <= hi + tol::ulp(dtype, hi.abs()) / 2.0 + 1e-38;
            assert!(ok, "{dtype:?} y[{t},{r}] = {got} outside [{lo}, {hi}] (round_products {round_products})");
        }
    }
}

/// Bit-exact check of the quantized path (`wd(e)` = MLX-dequantized expert `e`).
#[allow(clippy::too_many_arguments)]
fn check_exact(
    dtype: Dtype,
    round_products: bool,
    h: &[f32],
    idx: &[u32],
    scores: &[f32],
    top_k: usize,
    hidden: usize,
    inter: usize,
    wd: &dyn Fn(usize) -> Vec<f32>,
    y: &[f32],
) {
    let tokens = y.len() / hidden.max(1);
    let mut cache = std::collections::HashMap::new();
    for t in 0..tokens {
        for r in 0..hidden {
            let mut acc = 0.0f32;
            for j in 0..top_k {
                let p = t * top_k + j;
                let e = idx[p] as usize;
                let w = cache.entry(e).or_insert_with(|| wd(e));
                let d = naive::mlx::chain(
                    dtype,
                    &h[p * inter..(p + 1) * inter],
                    &w[r * inter..(r + 1) * inter],
                );
                let v = d * scores[p];
                acc += if round_products { round(dtype, v) } else { v };
            }
            let want = round(dtype, acc);
            let got = y[t * hidden + r];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{dtype:?} y[{t},{r}]: got {got}, MLX gives {want} (round_products {round_products})"
            );
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run(seed: u64, tokens: usize, experts: usize, top_k: usize, hidden: usize, groups: usize) {
    let mut rng = Rng::new(seed);
    let idx = distinct_indices(&mut rng, tokens, top_k, experts);
    for dtype in DTYPES {
        for scores_f32 in [false, true] {
            let sdtype = if scores_f32 { Dtype::F32 } else { dtype };
            let scores = values(&mut rng, sdtype, tokens * top_k, 0.0, 1.0);
            let sb = Buf::from_f32(sdtype, &scores);
            let round_products = !scores_f32 && dtype != Dtype::F32;
            // One call of the op on these routing and scores (the callers pick the
            // precision and level around it).
            let down = |hb: &Buf, w: &Weights, y: &mut Buf| {
                expert_down_combine(
                    hb.floats(),
                    tokens,
                    &idx,
                    top_k,
                    sb.floats(),
                    w,
                    y.floats_mut(),
                )
            };
            // The f32-accumulating path (float weights, or quantized weights under
            // `Precision::F32`) at every level, against the interval bound.
            let bounded = |h: &[f32],
                           hb: &Buf,
                           w: &Weights,
                           inter: usize,
                           terms: &dyn Fn(usize) -> naive::Terms| {
                for level in simd::available_levels() {
                    let mut y = Buf::zeros(dtype, tokens * hidden);
                    with_precision(Precision::F32, || {
                        simd::with_level(level, || down(hb, w, &mut y))
                    })
                    .unwrap()
                    .unwrap();
                    check(
                        dtype,
                        round_products,
                        h,
                        &idx,
                        &scores,
                        top_k,
                        hidden,
                        inter,
                        terms,
                        &y.to_f32(),
                    );
                }
            };
            for (bits, gs) in [
                (2u32, 32usize),
                (4, 32),
                (4, 64),
                (4, 128),
                (8, 32),
                (8, 64),
                (8, 128),
            ] {
                let inter = gs * groups;
                let q = quant_data(&mut rng, dtype, experts * hidden, inter, bits, gs);
                let h = values(&mut rng, dtype, tokens * top_k * inter, -1.0, 1.0);
                let wd = |e: usize| {
                    let (p, sc, bi) = q.expert(e, hidden, inter, bits, gs);
                    naive::mlx::dequantize(dtype, p, sc, bi, hidden, inter, bits, gs)
                };
                let (qs, qb, hb) = (
                    Buf::from_f32(dtype, &q.scales),
                    Buf::from_f32(dtype, &q.biases),
                    Buf::from_f32(dtype, &h),
                );
                let spec = QuantSpec::new(bits, gs).unwrap();
                let w = Weights::quantized(
                    &q.packed,
                    qs.floats(),
                    qb.floats(),
                    WeightShape::stacked(experts, hidden, inter),
                    spec,
                )
                .unwrap();
                for level in kernel_settings() {
                    let mut y = Buf::zeros(dtype, tokens * hidden);
                    with_setting(level, || down(&hb, &w, &mut y))
                        .unwrap()
                        .unwrap();
                    check_exact(
                        dtype,
                        round_products,
                        &h,
                        &idx,
                        &scores,
                        top_k,
                        hidden,
                        inter,
                        &wd,
                        &y.to_f32(),
                    );
                }
                let terms = |e: usize| {
                    let (p, sc, bi) = q.expert(e, hidden, inter, bits, gs);
                    naive::quant_terms(p, sc, bi, hidden, inter, bits, gs)
                };
                bounded(&h, &hb, &w, inter, &terms);
            }
            // Float expert weights, odd inner size.
            let inter = 40 * groups + 3;
            let wv = values(&mut rng, dtype, experts * hidden * inter, -0.3, 0.3);
            let h = values(&mut rng, dtype, tokens * top_k * inter, -1.0, 1.0);
            let wd =
                |e: usize| naive::float_terms(&wv[e * hidden * inter..(e + 1) * hidden * inter]);
            let (wb, hb) = (Buf::from_f32(dtype, &wv), Buf::from_f32(dtype, &h));
            let w =
                Weights::float(wb.floats(), WeightShape::stacked(experts, hidden, inter)).unwrap();
            bounded(&h, &hb, &w, inter, &wd);
        }
    }
}

fn shape() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        prop_oneof![Just(8usize), Just(16), Just(60), Just(128), Just(512)],
        prop_oneof![Just(1usize), 2usize..6, 24usize..48],
    )
        .prop_flat_map(|(e, t)| (Just(e), Just(t), 1usize..=e.min(16)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    #[test]
    fn down_combine_matches_reference(seed: u64, (e, t, k) in shape(), hidden in 1usize..40, groups in 1usize..3) {
        run(seed, t, e, k, hidden, groups);
    }
}

#[test]
fn fixed_shapes() {
    run(21, 1, 512, 16, 7, 1);
    run(22, 64, 8, 2, 45, 1);
}
