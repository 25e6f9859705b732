//! `qmm`: quantized weights bit for bit against a scalar emulation of MLX's CPU chain
//! (and, with `Precision::F32`, against f64 dot products with derived bounds); float
//! weights against f64 dot products with derived bounds.

use proptest::prelude::*;
use zmlx_kernels::cpu::{
    qmm, simd, with_precision, Dtype, Precision, QuantSpec, WeightShape, Weights,
};

use crate::data::{kernel_settings, quant_data, values, with_setting, Buf, QuantData, Rng, DTYPES};
use crate::naive;
use crate::tol;

/// Checks `y` (`[m, n]`, as f32) against `x @ w.T` with the derived bound.
fn check(dtype: Dtype, x: &[f32], w: &naive::Terms, m: usize, n: usize, k: usize, y: &[f32]) {
    for i in 0..m {
        for j in 0..n {
            let (exact, abs) = naive::dot(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            let bound = tol::rounded(dtype, exact, tol::accum(k, abs));
            let got = f64::from(y[i * n + j]);
            assert!(
                (got - exact).abs() <= bound,
                "{dtype:?} m={m} n={n} k={k} at [{i},{j}]: got {got}, exact {exact}, bound {bound}"
            );
        }
    }
}

/// Checks `y` (`[m, n]`) bit for bit against MLX's chain on the MLX-dequantized `w`.
fn check_exact(dtype: Dtype, x: &[f32], w: &[f32], m: usize, n: usize, k: usize, y: &[f32]) {
    for i in 0..m {
        for j in 0..n {
            let want = naive::mlx::chain(dtype, &x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            let got = y[i * n + j];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{dtype:?} m={m} n={n} k={k} at [{i},{j}]: got {got}, MLX gives {want}"
            );
        }
    }
}

/// Calls `f` with the quantized `[n, k]` matrix `q` (`bits`, group size `gs`) as
/// kernel weights in `dtype`, and the activations `x` in `dtype`.
#[allow(clippy::too_many_arguments)]
fn with_quant_matrix<R>(
    dtype: Dtype,
    q: &QuantData,
    x: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    gs: usize,
    f: impl FnOnce(&Weights<'_>, &Buf) -> R,
) -> R {
    let (sb, bb, xb) = (
        Buf::from_f32(dtype, &q.scales),
        Buf::from_f32(dtype, &q.biases),
        Buf::from_f32(dtype, x),
    );
    let spec = QuantSpec::new(bits, gs).unwrap();
    let wt = Weights::quantized(
        &q.packed,
        sb.floats(),
        bb.floats(),
        WeightShape::matrix(n, k),
        spec,
    )
    .unwrap();
    f(&wt, &xb)
}

/// Runs `qmm` with `Precision::F32` at every level on the quantized `[n, k]` matrix
/// `q` (`bits`, group size `gs`) and the `[m, k]` activations `x`, and checks each
/// result against f64 with the derived bound.
#[allow(clippy::too_many_arguments)]
fn check_f32_precision(
    dtype: Dtype,
    q: &QuantData,
    x: &[f32],
    m: usize,
    n: usize,
    k: usize,
    bits: u32,
    gs: usize,
) {
    let terms = naive::quant_terms(&q.packed, &q.scales, &q.biases, n, k, bits, gs);
    with_quant_matrix(dtype, q, x, n, k, bits, gs, |wt, xb| {
        for level in simd::available_levels() {
            let mut y = Buf::zeros(dtype, m * n);
            with_precision(Precision::F32, || {
                simd::with_level(level, || qmm(xb.floats(), m, wt, y.floats_mut()))
            })
            .unwrap()
            .unwrap();
            check(dtype, x, &terms, m, n, k, &y.to_f32());
        }
    });
}

fn run_quantized(seed: u64, m: usize, n: usize, groups: usize) {
    let mut rng = Rng::new(seed);
    for dtype in DTYPES {
        for bits in [2u32, 4, 8] {
            for gs in [32usize, 64, 128] {
                let k = gs * groups;
                let q = quant_data(&mut rng, dtype, n, k, bits, gs);
                let x = values(&mut rng, dtype, m * k, -1.0, 1.0);
                let w =
                    naive::mlx::dequantize(dtype, &q.packed, &q.scales, &q.biases, n, k, bits, gs);
                with_quant_matrix(dtype, &q, &x, n, k, bits, gs, |wt, xb| {
                    for level in kernel_settings() {
                        let mut y = Buf::zeros(dtype, m * n);
                        with_setting(level, || qmm(xb.floats(), m, wt, y.floats_mut()))
                            .unwrap()
                            .unwrap();
                        check_exact(dtype, &x, &w, m, n, k, &y.to_f32());
                    }
                });
                check_f32_precision(dtype, &q, &x, m, n, k, bits, gs);
            }
        }
    }
}

fn run_float(seed: u64, m: usize, n: usize, k: usize) {
    let mut rng = Rng::new(seed);
    for dtype in DTYPES {
        let w = values(&mut rng, dtype, n * k, -0.5, 0.5);
        let x = values(&mut rng, dtype, m * k, -1.0, 1.0);
        let (wb, xb) = (Buf::from_f32(dtype, &w), Buf::from_f32(dtype, &x));
        let wt = Weights::float(wb.floats(), WeightShape::matrix(n, k)).unwrap();
        for level in simd::available_levels() {
            let mut y = Buf::zeros(dtype, m * n);
            simd::with_level(level, || qmm(xb.floats(), m, &wt, y.floats_mut()))
                .unwrap()
                .unwrap();
            check(dtype, &x, &naive::float_terms(&w), m, n, k, &y.to_f32());
        }
    }
}

/// M = 1 (decode), 2..7 (row-wise path) and 8..20 (tiled path).
fn m_class() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), 2usize..8, 8usize..21]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn quantized_matches_reference(seed: u64, m in m_class(), n in 1usize..70, groups in 1usize..5) {
        run_quantized(seed, m, n, groups);
    }

    #[test]
    fn float_matches_reference(seed: u64, m in m_class(), n in 1usize..70, k in 1usize..300) {
        run_float(seed, m, n, k);
    }
}

/// K = 96 with group size 32 (not a multiple of 64), and an N that is not a multiple
/// of the tile height, on both paths.
#[test]
fn odd_shapes() {
    for m in [1, 3, 9] {
        run_quantized(7, m, 37, 3);
    }
}

/// Shapes that take the four-block decode kernels (one and two activation rows, N a
/// multiple of 64 and not, large enough that a task holds four blocks), every dtype, bit width and group size, at every level:
/// for bf16 with AVX512_BF16 this is the packed `vdpbf16ps` kernel
/// (`chain16_bf16_dp`).
#[test]
fn multi_block_decode_shapes() {
    for (seed, m, n, groups) in [(11, 1, 1040, 1), (12, 2, 1100, 3), (13, 1, 2000, 2)] {
        run_quantized(seed, m, n, groups);
    }
}

/// Zero-sized dimensions are valid and write nothing.
#[test]
fn empty_shapes() {
    run_float(1, 0, 5, 8);
    run_float(2, 3, 0, 8);
    run_float(3, 2, 4, 0);
}

/// Values around the bf16 hardware-rounding guard (`cpu/chain.rs`: the AVX-512 bf16
/// kernel rounds with `vcvtne2ps2bf16` only if no activation, scale or bias is nonzero
/// below 2^-50), bit for bit at every level, with N large enough for the four-block
/// decode kernel: x and the scales/biases multiplied by `2^ex` / `2^es` (tiny values
/// make denormal products and sums, which must take the integer-rounding fallback;
/// large ones stay just inside the range), some rows only, and an infinite activation
/// (inf and NaN go through either path).
#[test]
fn guard_edges() {
    let (n, k, bits, gs) = (1040usize, 128usize, 4u32, 64usize);
    let cases: [(i32, i32, Option<std::ops::Range<usize>>, bool); 10] = [
        (0, 0, None, false),
        (-45, -40, None, false),
        (-49, -42, None, false),
        (-120, 0, None, false),
        (-20, -100, None, false),
        (-20, -100, Some(300..340), false),
        (0, 0, None, true),
        // Large scales and biases (2^83 to 2^125 here), all rows or some: the
        // products stay finite, and any kernel that rescales `scale` could overflow.
        (-40, 90, None, false),
        (-40, 125, None, false),
        (-40, 125, Some(300..340), false),
    ];
    let mut rng = Rng::new(77);
    for (ex, es, rows, inf) in cases {
        let dtype = Dtype::Bf16;
        let mut q = quant_data(&mut rng, dtype, n, k, bits, gs);
        let gpr = k / gs;
        let fs = 2f32.powi(es);
        for (i, (s, b)) in q.scales.iter_mut().zip(q.biases.iter_mut()).enumerate() {
            if rows.as_ref().is_none_or(|r| r.contains(&(i / gpr))) {
                // Exact: a power of two, and the products stay in bf16's normal range.
                *s *= fs;
                *b *= fs;
            }
        }
        let mut x = values(&mut rng, dtype, 2 * k, -1.0, 1.0);
        for v in &mut x {
            *v = half::bf16::from_f32(*v * 2f32.powi(ex)).to_f32();
        }
        if inf {
            x[5] = f32::INFINITY;
        }
        let w = naive::mlx::dequantize(dtype, &q.packed, &q.scales, &q.biases, n, k, bits, gs);
        for m in [1, 2] {
            let xm = &x[..m * k];
            with_quant_matrix(dtype, &q, xm, n, k, bits, gs, |wt, xb| {
                for level in kernel_settings() {
                    let mut y = Buf::zeros(dtype, m * n);
                    with_setting(level, || qmm(xb.floats(), m, wt, y.floats_mut()))
                        .unwrap()
                        .unwrap();
                    check_exact(dtype, xm, &w, m, n, k, &y.to_f32());
                }
            });
        }
    }
}

/// `Precision::F32` with bf16 activations that are all denormal, or a row with one
/// denormal among normal values: `vdpbf16ps` (the AVX512_BF16 4-bit kernel) would
/// flush them to zero, so such rows must take the other kernel; the derived bound is
/// relative to the row's own magnitudes, so a flushed row fails it.
#[test]
fn f32_precision_denormal_activations() {
    let (n, bits, gs) = (64usize, 4u32, 64usize);
    let dtype = Dtype::Bf16;
    let mut rng = Rng::new(91);
    for (k, m) in [(128usize, 1usize), (192, 2)] {
        let q = quant_data(&mut rng, dtype, n, k, bits, gs);
        let mut x = values(&mut rng, dtype, m * k, -1.0, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            // Row 0: every value denormal; row 1: one denormal among normal values.
            if i < k {
                *v = half::bf16::from_f32(*v * 2f32.powi(-130)).to_f32();
            } else if i == k + 7 {
                *v = 2f32.powi(-133);
            }
        }
        check_f32_precision(dtype, &q, &x, m, n, k, bits, gs);
    }
}

/// `Precision::F32` at model widths: rows of 768 to 4096 values (12 to 128 groups, so
/// the AVX512_BF16 kernel walks several 16-group blocks of scales), every group size,
/// one and two activation rows, every dtype and level.
#[test]
fn f32_precision_model_widths() {
    let mut rng = Rng::new(93);
    for dtype in DTYPES {
        for (k, gs) in [
            (2048usize, 64usize),
            (768, 64),
            (4096, 128),
            (1024, 32),
            (2112, 32),
        ] {
            let (n, bits) = (24usize, 4u32);
            let q = quant_data(&mut rng, dtype, n, k, bits, gs);
            for m in [1usize, 2] {
                let x = values(&mut rng, dtype, m * k, -1.0, 1.0);
                check_f32_precision(dtype, &q, &x, m, n, k, bits, gs);
            }
        }
    }
}
