//! `fast` ops (rms_norm, layer_norm, rope, scaled_dot_product_attention), affine
//! quantization (round trip, packing, quantized_matmul, gather_qmm), gather_mm and
//! the random samplers, against naive Rust.
//!
//! `u_out` is the unit roundoff of the output dtype (2^-24 f32, 2^-11 f16, 2^-8
//! bf16) and `u32` that of f32; the bounds per op are derived next to each check.

mod common;

use common::*;
use mlx::fast::{self, AttentionMask};
use mlx::quantization::{self as q, QuantSpec};
use mlx::{ops, random, Array, Dtype};
use proptest::prelude::*;

fn float_dtype() -> impl Strategy<Value = Dtype> {
    prop_oneof![
        Just(Dtype::Float32),
        Just(Dtype::Float16),
        Just(Dtype::Bfloat16)
    ]
}

fn rand(rng: &mut SeedRng, shape: &[i32], dtype: Dtype, lo: f32, hi: f32) -> (Vec<f32>, Array) {
    let h: Vec<f32> = rng
        .vec_f32(numel(shape), lo, hi)
        .iter()
        .map(|&v| round_to(dtype, v))
        .collect();
    let a = array_as(&h, shape, dtype);
    (h, a)
}

const U32: f64 = f32::EPSILON as f64 / 2.0;

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn rms_and_layer_norm(rows in 1i32..6, d in 1i32..40, dtype in float_dtype(), eps in prop_oneof![Just(1e-5f32), Just(1e-6f32)], seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let (hx, x) = rand(&mut rng, &[rows, d], dtype, -3.0, 3.0);
        let (hw, w) = rand(&mut rng, &[d], dtype, 0.5, 1.5);
        let (hb, b) = rand(&mut rng, &[d], dtype, -1.0, 1.0);
        let u = unit_roundoff(dtype);
        let du = d as usize;
        let y = fast::rms_norm(&x, Some(&w), eps, ()).unwrap();
        prop_assert_eq!(y.dtype(), dtype);
        let (mut want, mut mag) = (vec![], vec![]);
        for r in 0..rows as usize {
            let row = &hx[r * du..(r + 1) * du];
            let ms: f64 = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            for j in 0..du {
                want.push(row[j] as f64 * inv * hw[j] as f64);
                mag.push((row[j] as f64 * inv * hw[j] as f64).abs());
            }
        }
        // MLX (CPU) computes x * rsqrt(mean(x^2) + eps) in f32 (a d-term sum: d
        // u32, plus a few roundings and rsqrt), rounds to the output dtype, then
        // multiplies by the weight in the output dtype: two roundings of u_out.
        assert_within(&host_f32(&y), &want, |i| (2.0 * u + (d as f64 + 6.0) * U32) * mag[i] + underflow(dtype),
            &format!("rms_norm {dtype:?} [{rows}, {d}]"));

        let y = fast::layer_norm(&x, Some(&w), Some(&b), eps, ()).unwrap();
        let (mut want, mut tol) = (vec![], vec![]);
        for r in 0..rows as usize {
            let row = &hx[r * du..(r + 1) * du];
            let mean: f64 = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var: f64 = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (var + eps as f64).sqrt();
            let amax = row.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
            for j in 0..du {
                let nw = (row[j] as f64 - mean) * inv * hw[j] as f64;
                let out = nw + hb[j] as f64;
                want.push(out);
                // Normalisation in f32: the mean and variance sums carry d u32 of
                // the row's magnitude, amplified by inv; then up to three roundings
                // to the output dtype (normalised value, times weight, plus bias).
                tol.push((2.0 * u + (d as f64 + 8.0) * U32) * nw.abs() + u * out.abs()
                    + 2.0 * (d as f64 + 4.0) * U32 * amax * inv * hw[j] as f64 + underflow(dtype));
            }
        }
        assert_within(&host_f32(&y), &want, |i| tol[i], &format!("layer_norm {dtype:?} [{rows}, {d}]"));
    }

    #[test]
    fn rope_rotate_half(b in 1i32..3, h in 1i32..3, t in 1i32..6, half_d in 1i32..9, extra in 0i32..3, offset in 0i32..40,
                        dtype in float_dtype(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let dims = 2 * half_d;
        let dd = dims + 2 * extra; // features past `dims` pass through
        let (hx, x) = rand(&mut rng, &[b, h, t, dd], dtype, -2.0, 2.0);
        let (base, scale) = (10000.0f64, 1.0f64);
        let y = fast::rope(&x, dims, false, base as f32, scale as f32, offset, ()).unwrap();
        prop_assert_eq!(y.shape(), x.shape());
        let (hd, dd_u) = (half_d as usize, dd as usize);
        let (mut want, mut tol) = (vec![0f64; hx.len()], vec![0f64; hx.len()]);
        let u = unit_roundoff(dtype);
        for row in 0..(b * h * t) as usize {
            let pos = (offset as usize + row % t as usize) as f64;
            let x = &hx[row * dd_u..(row + 1) * dd_u];
            for i in 0..hd {
                let theta = pos * scale * base.powf(-(i as f64) / hd as f64);
                let (s, c) = theta.sin_cos();
                let (x1, x2) = (x[i] as f64, x[i + hd] as f64);
                let o1 = x1 * c - x2 * s;
                let o2 = x1 * s + x2 * c;
                want[row * dd_u + i] = o1;
                want[row * dd_u + i + hd] = o2;
                // The angle is computed in f32 (frequency via exp/log or pow, then
                // times the position): relative error ~8 u32, i.e. absolute
                // 8 u32 * theta; sin/cos add 2 u32; then each product and the sum
                // round in the compute dtype (MLX rotates in the input dtype on CPU:
                // 2 roundings of each term, 1 of the sum).
                let terms = x1.abs() + x2.abs();
                let e = terms * ((8.0 * theta + 4.0) * U32 + 2.0 * u);
                tol[row * dd_u + i] = e + u * o1.abs() + underflow(dtype);
                tol[row * dd_u + i + hd] = e + u * o2.abs() + underflow(dtype);
            }
            for j in dims as usize..dd_u {
                want[row * dd_u + j] = x[j] as f64;
            }
        }
        assert_within(&host_f32(&y), &want, |i| tol[i], &format!("rope {dtype:?} dims {dims} of {dd} offset {offset}"));
    }

    #[test]
    fn sdpa_vs_naive(b in 1i32..3, hkv in 1i32..3, groups in 1i32..4, tq in 1i32..6, extra_k in 0i32..4, d in prop_oneof![Just(8i32), Just(16), Just(32)],
                     causal in any::<bool>(), dtype in float_dtype(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let hq = hkv * groups;
        let tk = tq + extra_k;
        let (hqv, q) = rand(&mut rng, &[b, hq, tq, d], dtype, -1.0, 1.0);
        let (hk, k) = rand(&mut rng, &[b, hkv, tk, d], dtype, -1.0, 1.0);
        let (hv, v) = rand(&mut rng, &[b, hkv, tk, d], dtype, -1.0, 1.0);
        let scale = 1.0 / (d as f32).sqrt();
        let mask = if causal { AttentionMask::Causal } else { AttentionMask::None };
        let y = fast::scaled_dot_product_attention(&q, &k, &v, scale, mask, ()).unwrap();
        prop_assert_eq!(y.shape(), q.shape());
        let (tq_u, tk_u, d_u) = (tq as usize, tk as usize, d as usize);
        let u = unit_roundoff(dtype);
        let (mut want, mut tol) = (vec![], vec![]);
        for bi in 0..b as usize {
            for h in 0..hq as usize {
                let kh = h / groups as usize;
                let qb = ((bi * hq as usize + h) * tq_u) * d_u;
                let kb = ((bi * hkv as usize + kh) * tk_u) * d_u;
                for i in 0..tq_u {
                    // Causal masks align the queries with the last keys.
                    let visible = if causal { i + (tk_u - tq_u) + 1 } else { tk_u };
                    let mut s = vec![0f64; visible];
                    let mut ds = 0f64;
                    for j in 0..visible {
                        let (mut dot, mut dabs) = (0f64, 0f64);
                        for p in 0..d_u {
                            let t = hqv[qb + i * d_u + p] as f64 * hk[kb + j * d_u + p] as f64;
                            dot += t;
                            dabs += t.abs();
                        }
                        s[j] = dot * scale as f64;
                        // q * scale and the score round in the compute dtype; the
                        // dot product accumulates in f32 (d u32).
                        ds = ds.max(dabs * scale as f64 * (3.0 * u + d as f64 * U32));
                    }
                    let m = s.iter().copied().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                    for c in 0..d_u {
                        let (mut o, mut oabs) = (0f64, 0f64);
                        for j in 0..visible {
                            o += p[j] * hv[kb + j * d_u + c] as f64;
                            oabs += p[j] * (hv[kb + j * d_u + c] as f64).abs();
                        }
                        want.push(o);
                        // Softmax: a score error ds moves each weight by <= 2 ds
                        // relative; the precise f32 softmax adds (tk + 10) u32 and
                        // the rounding of the weights u_out; the weighted sum
                        // accumulates in f32 and rounds to the output dtype.
                        tol.push(oabs * (2.0 * ds + (2.0 * tk as f64 + 10.0) * U32 + 2.0 * u) + u * o.abs() + U32);
                    }
                }
            }
        }
        assert_within(&host_f32(&y), &want, |i| tol[i],
            &format!("sdpa {dtype:?} b{b} hq{hq} hkv{hkv} tq{tq} tk{tk} d{d} causal {causal}"));
    }

    #[test]
    fn quantize_round_trip(rows in 1i32..5, groups in 1i32..4, gs in prop_oneof![Just(32i32), Just(64), Just(128)],
                           bits in prop_oneof![Just(2i32), Just(3), Just(4), Just(5), Just(6), Just(8)], seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let cols = groups * gs;
        let (hw, w) = rand(&mut rng, &[rows, cols], Dtype::Float32, -1.0, 1.0);
        let qw = q::quantize(&w, QuantSpec::affine(gs, bits), ()).unwrap();
        prop_assert_eq!(qw.weight.dtype(), Dtype::Uint32);
        prop_assert_eq!(qw.weight.shape(), &[rows, cols * bits / 32][..]);
        prop_assert_eq!(qw.scales.shape(), &[rows, groups][..]);
        let scales = qw.scales.to_vec::<f32>().unwrap();
        let biases = qw.biases.as_ref().unwrap().to_vec::<f32>().unwrap();
        let deq = q::dequantize(&qw, None, ()).unwrap();
        prop_assert_eq!(deq.dtype(), Dtype::Float32);
        let got = deq.to_vec::<f32>().unwrap();
        // Every element becomes the level bias + scale * q (q in 0..2^bits) nearest
        // to it: within half a step of the element clamped to the levels' range
        // (plus the f32 rounding of scale * q + bias). MLX makes zero exactly
        // representable (scale = edge / round(edge / scale)), which shrinks the range
        // slightly, so the group's far end may be clipped: for 2 bits by up to one
        // step, which is why the clamp is needed.
        let levels = ((1u32 << bits) - 1) as f64;
        for (i, (&g, &x)) in got.iter().zip(&hw).enumerate() {
            let gi = i / gs as usize;
            let (s, bb) = (scales[gi] as f64, biases[gi] as f64);
            let (lo, hi) = (bb.min(bb + levels * s), bb.max(bb + levels * s));
            let xc = (x as f64).clamp(lo, hi);
            let err = (g as f64 - xc).abs();
            let bound = 0.5 * s.abs() + 4.0 * U32 * (bb.abs() + s.abs() * levels);
            prop_assert!(err <= bound, "element {} bits {} gs {}: w {} deq {} scale {} bias {}", i, bits, gs, x, g, s, bb);
            // The level index implied by the output is an integer in range.
            let level = (g as f64 - bb) / s;
            prop_assert!((level - level.round()).abs() < 1e-3 && level.round() >= 0.0 && level.round() <= levels, "level {}", level);
        }
        // Packing: for bit widths that divide 32, each uint32 holds 32/bits values,
        // lowest bits first, and dequantize is exactly scale * q + bias.
        if 32 % bits == 0 {
            let words = qw.weight.to_vec::<u32>().unwrap();
            let per = (32 / bits) as usize;
            for (i, &g) in got.iter().enumerate() {
                let qv = (words[i / per] >> ((i % per) as i32 * bits)) & ((1u32 << bits) - 1);
                let gi = i / gs as usize;
                let want = scales[gi] * qv as f32 + biases[gi];
                let fused = scales[gi].mul_add(qv as f32, biases[gi]);
                prop_assert!(g == want || g == fused, "element {}: deq {} vs scale*q+bias {}", i, g, want);
            }
        }
    }

    #[test]
    fn quantized_matmul_matches_dequantized(m in 1i32..5, n in 1i32..9, groups in 1i32..3, gs in prop_oneof![Just(32i32), Just(64)],
                                            bits in prop_oneof![Just(4i32), Just(8)], transpose in any::<bool>(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let kdim = groups * gs;
        let (_, x) = rand(&mut rng, &[m, if transpose { kdim } else { n * gs }], Dtype::Float32, -1.0, 1.0);
        // transpose: w is [n, k] and x @ w.T; otherwise w is [k, n*gs] and x @ w
        // (quantized along its last axis either way).
        let wshape = if transpose { [n, kdim] } else { [n * gs, kdim] };
        let x = if transpose { x } else { rand(&mut rng, &[m, n * gs], Dtype::Float32, -1.0, 1.0).1 };
        let (_, w) = rand(&mut rng, &wshape, Dtype::Float32, -1.0, 1.0);
        let qw = q::quantize(&w, QuantSpec::affine(gs, bits), ()).unwrap();
        let deq = q::dequantize(&qw, None, ()).unwrap();
        let got = q::quantized_matmul(&x, &qw, transpose, ()).unwrap();
        let reference = if transpose { x.matmul(&deq.transpose(&[]).unwrap()).unwrap() } else { x.matmul(&deq).unwrap() };
        prop_assert_eq!(got.shape(), reference.shape());
        // Same products in a different order: both within (k u32) sum|x||w| of the
        // exact value; |x|, |w| <= 1, so k * 2 u32 * k bounds the difference.
        let kk = x.shape()[1] as f64;
        let want: Vec<f64> = reference.to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
        assert_close(&got.to_vec::<f32>().unwrap(), &want, 2.0 * kk * kk * U32, 0.0, "quantized_matmul");
    }

    #[test]
    fn gather_mm_and_qmm(experts in 1i32..5, nidx in 1i32..7, m in 1i32..3, n in 1i32..6, with_lhs in any::<bool>(),
                         sorted in any::<bool>(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let (k, gs) = (64i32, 32i32);
        let batch = 3;
        let (_, a) = rand(&mut rng, &[batch, m, k], Dtype::Float32, -1.0, 1.0);
        let (_, w) = rand(&mut rng, &[experts, n, k], Dtype::Float32, -1.0, 1.0);
        let mut rhs: Vec<u32> = (0..nidx).map(|_| rng.below(experts as usize) as u32).collect();
        if sorted {
            rhs.sort();
        }
        let lhs: Vec<u32> = (0..nidx).map(|_| rng.below(batch as usize) as u32).collect();
        let rhs_a = Array::from_slice(&rhs, &[nidx]).unwrap();
        let lhs_a = Array::from_slice(&lhs, &[nidx]).unwrap();
        // Without lhs indices, a's batch broadcasts against the rhs indices: give a
        // single batch entry then.
        let a_used = if with_lhs { a.clone() } else { a.slice(&[0, 0, 0], &[1, m, k], &[1, 1, 1]).unwrap() };
        let lhs_opt = with_lhs.then_some(&lhs_a);
        let wt = w.swapaxes(-1, -2).unwrap();
        let gm = q::gather_mm(&a_used, &wt, lhs_opt, Some(&rhs_a), sorted, ()).unwrap();
        let qw = q::quantize(&w, QuantSpec::affine(gs, 4), ()).unwrap();
        let deq = q::dequantize(&qw, None, ()).unwrap();
        let gq = q::gather_qmm(&a_used, &qw, lhs_opt, Some(&rhs_a), true, sorted, ()).unwrap();
        prop_assert_eq!(gm.shape(), &[nidx, m, n][..]);
        prop_assert_eq!(gq.shape(), &[nidx, m, n][..]);
        let (gmv, gqv) = (gm.to_vec::<f32>().unwrap(), gq.to_vec::<f32>().unwrap());
        let per = (m * n) as usize;
        for i in 0..nidx as usize {
            let ai = if with_lhs { lhs[i] as i32 } else { 0 };
            let e = rhs[i] as i32;
            let xa = a.slice(&[ai, 0, 0], &[ai + 1, m, k], &[1, 1, 1]).unwrap().reshape(&[m, k]).unwrap();
            let we = w.slice(&[e, 0, 0], &[e + 1, n, k], &[1, 1, 1]).unwrap().reshape(&[n, k]).unwrap();
            let de = deq.slice(&[e, 0, 0], &[e + 1, n, k], &[1, 1, 1]).unwrap().reshape(&[n, k]).unwrap();
            let want_f: Vec<f64> = xa.matmul(&we.transpose(&[]).unwrap()).unwrap().to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
            let want_q: Vec<f64> = xa.matmul(&de.transpose(&[]).unwrap()).unwrap().to_vec::<f32>().unwrap().iter().map(|&v| v as f64).collect();
            // As for quantized_matmul: the same products summed in another order.
            let tol = 2.0 * (k * k) as f64 * U32;
            assert_close(&gmv[i * per..(i + 1) * per], &want_f, tol, 0.0, &format!("gather_mm index {i} sorted {sorted}"));
            assert_close(&gqv[i * per..(i + 1) * per], &want_q, tol, 0.0, &format!("gather_qmm index {i} sorted {sorted}"));
        }
    }
}

#[test]
fn random_same_key_same_numbers() {
    let k = random::key(42).unwrap();
    let a = random::normal(&[1000], Dtype::Float32, 0.0, 1.0, Some(&k), ()).unwrap();
    let b = random::normal(&[1000], Dtype::Float32, 0.0, 1.0, Some(&k), ()).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    let k2 = random::key(43).unwrap();
    let c = random::normal(&[1000], Dtype::Float32, 0.0, 1.0, Some(&k2), ()).unwrap();
    assert_ne!(a.to_vec::<f32>().unwrap(), c.to_vec::<f32>().unwrap());
    // Split keys are distinct from each other and reproducible.
    let s1 = random::split(&k, 2, ()).unwrap();
    let s2 = random::split(&k, 2, ()).unwrap();
    assert_eq!(s1.to_vec::<u32>().unwrap(), s2.to_vec::<u32>().unwrap());
    let halves = ops::split(&s1, 2, 0, ()).unwrap();
    assert_ne!(
        halves[0].to_vec::<u32>().unwrap(),
        halves[1].to_vec::<u32>().unwrap()
    );
    // The global generator is reproducible after seeding.
    random::seed(7).unwrap();
    let g1 = random::uniform(0.0, 1.0, &[16], Dtype::Float32, None, ())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    random::seed(7).unwrap();
    let g2 = random::uniform(0.0, 1.0, &[16], Dtype::Float32, None, ())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(g1, g2);
}

#[test]
fn random_normal_moments() {
    let n = 200_000;
    let k = random::key(1).unwrap();
    let x = random::normal(&[n], Dtype::Float32, 2.0, 3.0, Some(&k), ())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Standard errors: mean 3/sqrt(n) = 0.0067, std about 3/sqrt(2n) = 0.0047.
    // Five of them: a false alarm has probability below 1e-6.
    assert!(
        (mean - 2.0).abs() < 5.0 * 3.0 / (n as f64).sqrt(),
        "mean {mean}"
    );
    assert!(
        (var.sqrt() - 3.0).abs() < 5.0 * 3.0 / (2.0 * n as f64).sqrt(),
        "std {}",
        var.sqrt()
    );
    // Uniform: in range, mean 0.5 +- 5 * sqrt(1/12)/sqrt(n).
    let u = random::uniform(-1.0, 2.0, &[n], Dtype::Float32, Some(&k), ())
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert!(u.iter().all(|&v| (-1.0..2.0).contains(&v)));
    let um = u.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!(
        (um - 0.5).abs() < 5.0 * 3.0 * (1.0f64 / 12.0).sqrt() / (n as f64).sqrt(),
        "uniform mean {um}"
    );
}

#[test]
fn randint_and_categorical_ranges() {
    let k = random::key(3).unwrap();
    let r = random::randint(-3, 5, &[10_000], Dtype::Int32, Some(&k), ())
        .unwrap()
        .to_vec::<i32>()
        .unwrap();
    assert!(r.iter().all(|&v| (-3..5).contains(&v)));
    // Every value of the range shows up in 10,000 draws (each misses with
    // probability (7/8)^10000).
    for v in -3..5 {
        assert!(r.contains(&v), "{v} never drawn");
    }
    // Categorical over the last axis: indices in range; a class with logit -inf
    // is never drawn, and one with a huge margin always is.
    let logits = Array::from_slice(
        &[0.0f32, 1.0, f32::NEG_INFINITY, 0.5, 100.0, 0.0, 0.0, 0.0],
        &[2, 4],
    )
    .unwrap();
    let logits = logits.broadcast_to(&[500, 2, 4]).unwrap();
    let c = random::categorical(&logits, -1, Some(&k), ()).unwrap();
    assert_eq!(c.shape(), &[500, 2]);
    let c = host_f32(&c);
    for (i, &v) in c.iter().enumerate() {
        assert!((0.0..4.0).contains(&v));
        if i % 2 == 0 {
            assert_ne!(v, 2.0, "a -inf logit was drawn");
        } else {
            assert_eq!(v, 0.0, "the dominant class was not drawn");
        }
    }
}
