//! `expert_swiglu`: quantized weights bit for bit against the scalar emulation of
//! MLX (chains for gate and up, MLX's sigmoid, each op stored in T); float weights,
//! and quantized weights with `Precision::F32`, against f64 dot products and the same
//! tail on every rounding their bound allows.

use proptest::prelude::*;
use zmlx_kernels::cpu::{
    expert_swiglu, simd, with_precision, Dtype, Precision, QuantSpec, WeightShape, Weights,
};

use crate::data::{
    distinct_indices, kernel_settings, quant_data, values, with_setting, Buf, Rng, DTYPES,
};
use crate::naive;
use crate::tol;

/// The reference tail on already-rounded `g`, `u` (MLX's CPU sigmoid and roundings).
fn act(dtype: Dtype, g: f32, u: f32) -> f32 {
    naive::mlx::swiglu(dtype, g, u)
}

/// Bit-exact check of the quantized path: `h[p, r]` = MLX's tail on MLX's chains.
#[allow(clippy::too_many_arguments)]
fn check_exact(
    dtype: Dtype,
    x: &[f32],
    idx: &[u32],
    top_k: usize,
    inter: usize,
    k: usize,
    wg: &dyn Fn(usize) -> Vec<f32>,
    wu: &dyn Fn(usize) -> Vec<f32>,
    h: &[f32],
) {
    let mut cache = std::collections::HashMap::new();
    for (p, &e) in idx.iter().enumerate() {
        let e = e as usize;
        let (gw, uw) = cache.entry(e).or_insert_with(|| (wg(e), wu(e)));
        let xr = &x[(p / top_k) * k..(p / top_k + 1) * k];
        for r in 0..inter {
            let g = naive::mlx::chain(dtype, xr, &gw[r * k..(r + 1) * k]);
            let u = naive::mlx::chain(dtype, xr, &uw[r * k..(r + 1) * k]);
            let want = act(dtype, g, u);
            let got = h[p * inter + r];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{dtype:?} h[pair {p}, row {r}]: got {got}, MLX gives {want} (g={g}, u={u})"
            );
        }
    }
}

/// Exact gate/up results with their f32 accumulation bounds, per (pair, row).
struct Expect {
    g: Vec<(f64, f64)>,
    u: Vec<(f64, f64)>,
}

#[allow(clippy::too_many_arguments)]
fn expect(
    x: &[f32],
    idx: &[u32],
    top_k: usize,
    inter: usize,
    k: usize,
    wg: &dyn Fn(usize) -> naive::Terms,
    wu: &dyn Fn(usize) -> naive::Terms,
) -> Expect {
    let mut cache = std::collections::HashMap::new();
    let mut g = Vec::new();
    let mut u = Vec::new();
    for (p, &e) in idx.iter().enumerate() {
        let e = e as usize;
        let (gw, uw) = cache.entry(e).or_insert_with(|| (wg(e), wu(e)));
        let xr = &x[(p / top_k) * k..(p / top_k + 1) * k];
        for r in 0..inter {
            let (ge, ga) = naive::dot(xr, &gw[r * k..(r + 1) * k]);
            let (ue, ua) = naive::dot(xr, &uw[r * k..(r + 1) * k]);
            g.push((ge, tol::accum(k, ga)));
            u.push((ue, tol::accum(k, ua)));
        }
    }
    Expect { g, u }
}

fn check(dtype: Dtype, ex: &Expect, h: &[f32]) {
    for (i, ((&(g, dg), &(u, du)), &got)) in ex.g.iter().zip(&ex.u).zip(h).enumerate() {
        if dtype == Dtype::F32 {
            // Smooth case: |silu'| <= 1.1, plus a few f32 roundings of the result.
            let silu = g / (1.0 + (-g).exp());
            let want = silu * u;
            let bound = 1.1 * u.abs() * dg
                + silu.abs() * du
                + dg * du
                + 8.0 * f64::from(f32::EPSILON) * want.abs()
                + 1e-30;
            assert!(
                (f64::from(got) - want).abs() <= bound,
                "f32 h[{i}]: got {got}, want {want}, bound {bound}"
            );
        } else {
            match (
                tol::candidates(dtype, g, dg, 8),
                tol::candidates(dtype, u, du, 8),
            ) {
                (Some(gs), Some(us)) => {
                    // Exact: the result must be the reference tail applied to one of
                    // the roundings of g and u that the f32 accumulation allows.
                    let ok = gs.iter().any(|&gr| {
                        us.iter()
                            .any(|&ur| act(dtype, gr, ur).to_bits() == got.to_bits())
                    });
                    assert!(
                        ok,
                        "{dtype:?} h[{i}] = {got} is not the reference for any rounding of g={g}, u={u}"
                    );
                }
                _ => {
                    // A cancelled sum near zero: the interval spans too many tiny
                    // values to enumerate; fall back to first-order propagation of the
                    // input uncertainty and of the four roundings (unit roundoff r).
                    let r = tol::unit_roundoff(dtype);
                    let dg = dg + tol::ulp(dtype, g.abs() + dg) / 2.0;
                    let du = du + tol::ulp(dtype, u.abs() + du) / 2.0;
                    let sig = 1.0 / (1.0 + (-g).exp());
                    let silu = g * sig;
                    let want = silu * u;
                    let (gm, um) = (g.abs() + dg, u.abs() + du);
                    let bound = 1.1 * um * dg
                        + (silu.abs() + 1.1 * dg) * du
                        + gm * um * r // sigmoid rounding (|s| <= 1)
                        + (silu.abs() + 1.1 * dg) * (1.0 + r) * um * r // a rounding
                        + (want.abs() + 1.1 * um * dg + silu.abs() * du) * 2.0 * r // h rounding
                        // Below the normal range a rounding errs by up to half the
                        // subnormal spacing instead (a, then h).
                        + (um + 1.0) * tol::ulp(dtype, 0.0) / 2.0
                        + 1e-30;
                    assert!(
                        (f64::from(got) - want).abs() <= bound,
                        "{dtype:?} h[{i}]: got {got}, want {want}, bound {bound}"
                    );
                }
            }
        }
    }
}

fn run(seed: u64, tokens: usize, experts: usize, top_k: usize, inter: usize, groups: usize) {
    let mut rng = Rng::new(seed);
    let idx = distinct_indices(&mut rng, tokens, top_k, experts);
    for dtype in DTYPES {
        for (bits, gs) in [
            (2u32, 64usize),
            (4, 32),
            (4, 64),
            (4, 128),
            (8, 32),
            (8, 64),
            (8, 128),
        ] {
            let k = gs * groups;
            let shape = WeightShape::stacked(experts, inter, k);
            let qg = quant_data(&mut rng, dtype, experts * inter, k, bits, gs);
            let qu = quant_data(&mut rng, dtype, experts * inter, k, bits, gs);
            let x = values(&mut rng, dtype, tokens * k, -1.0, 1.0);
            let per_expert = |q: &crate::data::QuantData, e: usize| {
                let (p, sc, bi) = q.expert(e, inter, k, bits, gs);
                naive::mlx::dequantize(dtype, p, sc, bi, inter, k, bits, gs)
            };
            let bufs = [&qg, &qu].map(|q| {
                (
                    Buf::from_f32(dtype, &q.scales),
                    Buf::from_f32(dtype, &q.biases),
                )
            });
            let spec = QuantSpec::new(bits, gs).unwrap();
            let wg = Weights::quantized(
                &qg.packed,
                bufs[0].0.floats(),
                bufs[0].1.floats(),
                shape,
                spec,
            )
            .unwrap();
            let wu = Weights::quantized(
                &qu.packed,
                bufs[1].0.floats(),
                bufs[1].1.floats(),
                shape,
                spec,
            )
            .unwrap();
            let xb = Buf::from_f32(dtype, &x);
            for level in kernel_settings() {
                let mut h = Buf::zeros(dtype, tokens * top_k * inter);
                with_setting(level, || {
                    expert_swiglu(xb.floats(), tokens, &idx, top_k, &wg, &wu, h.floats_mut())
                })
                .unwrap()
                .unwrap();
                check_exact(
                    dtype,
                    &x,
                    &idx,
                    top_k,
                    inter,
                    k,
                    &|e| per_expert(&qg, e),
                    &|e| per_expert(&qu, e),
                    &h.to_f32(),
                );
            }
            let terms = |q: &crate::data::QuantData, e: usize| {
                let (p, sc, bi) = q.expert(e, inter, k, bits, gs);
                naive::quant_terms(p, sc, bi, inter, k, bits, gs)
            };
            let ex = expect(&x, &idx, top_k, inter, k, &|e| terms(&qg, e), &|e| {
                terms(&qu, e)
            });
            for level in simd::available_levels() {
                let mut h = Buf::zeros(dtype, tokens * top_k * inter);
                with_precision(Precision::F32, || {
                    simd::with_level(level, || {
                        expert_swiglu(xb.floats(), tokens, &idx, top_k, &wg, &wu, h.floats_mut())
                    })
                })
                .unwrap()
                .unwrap();
                check(dtype, &ex, &h.to_f32());
            }
        }
        // Float expert weights.
        let k = 48 * groups;
        let shape = WeightShape::stacked(experts, inter, k);
        let g = values(&mut rng, dtype, experts * inter * k, -0.2, 0.2);
        let u = values(&mut rng, dtype, experts * inter * k, -0.2, 0.2);
        let x = values(&mut rng, dtype, tokens * k, -1.0, 1.0);
        let slice = |w: &[f32], e: usize| w[e * inter * k..(e + 1) * inter * k].to_vec();
        let ex = expect(
            &x,
            &idx,
            top_k,
            inter,
            k,
            &|e| naive::float_terms(&slice(&g, e)),
            &|e| naive::float_terms(&slice(&u, e)),
        );
        let (gb, ub, xb) = (
            Buf::from_f32(dtype, &g),
            Buf::from_f32(dtype, &u),
            Buf::from_f32(dtype, &x),
        );
        let wg = Weights::float(gb.floats(), shape).unwrap();
        let wu = Weights::float(ub.floats(), shape).unwrap();
        for level in simd::available_levels() {
            let mut h = Buf::zeros(dtype, tokens * top_k * inter);
            simd::with_level(level, || {
                expert_swiglu(xb.floats(), tokens, &idx, top_k, &wg, &wu, h.floats_mut())
            })
            .unwrap()
            .unwrap();
            check(dtype, &ex, &h.to_f32());
        }
    }
}

/// E from 8 to 512; T = 1 (decode), a few, or enough that experts get 8+ tokens
/// (tiled path); k from 1 to 16.
fn shape() -> impl Strategy<Value = (usize, usize, usize)> {
    (
        prop_oneof![Just(8usize), Just(16), Just(60), Just(128), Just(512)],
        prop_oneof![Just(1usize), 2usize..6, 24usize..48],
    )
        .prop_flat_map(|(e, t)| (Just(e), Just(t), 1usize..=e.min(16)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn swiglu_matches_reference(seed: u64, (e, t, k) in shape(), inter in 1usize..24, groups in 1usize..3) {
        run(seed, t, e, k, inter, groups);
    }
}

/// Decode with k = 16 of 512 experts and prefill where every expert is tiled.
#[test]
fn fixed_shapes() {
    run(11, 1, 512, 16, 9, 1);
    run(12, 64, 8, 2, 13, 2);
}
