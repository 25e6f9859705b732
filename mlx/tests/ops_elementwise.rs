//! Element-wise unary and binary ops (with broadcasting), `where`, `astype` and the
//! constructors, against naive Rust on random shapes and dtypes.
//!
//! Tolerances are stated in units of `u`, the unit roundoff of the output dtype
//! (half an ulp at 1.0: 2^-24 for f32, 2^-11 for f16, 2^-8 for bf16):
//! - a correctly rounded op (add, sub, mul, div, sqrt, abs, ...) is within `u * |want|`;
//!   for f16 and bf16 MLX computes in f32 and rounds once, which is still correctly
//!   rounded because f32 carries more than twice their precision plus two bits;
//! - transcendental functions use MLX's own SIMD approximations: a few ulps, stated
//!   per function below.

pub mod common;

use common::*;
use half::{bf16, f16};
use mlx::{ops, Array, Dtype};
use proptest::prelude::*;

fn float_dtype() -> impl Strategy<Value = Dtype> {
    prop_oneof![
        Just(Dtype::Float32),
        Just(Dtype::Float16),
        Just(Dtype::Bfloat16)
    ]
}

fn shape() -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(1i32..=5, 1..=4)
}

/// A shape that broadcasts to `out`: some leading axes dropped, some axes set to 1.
fn bcast_shape(rng: &mut SeedRng, out: &[i32]) -> Vec<i32> {
    let drop = rng.below(out.len() + 1).min(out.len() - 1);
    out[drop..]
        .iter()
        .map(|&d| if rng.below(3) == 0 { 1 } else { d })
        .collect()
}

type UnaryFn = fn(&Array, ()) -> mlx::Result<Array>;

pub struct Unary {
    pub name: &'static str,
    pub f: UnaryFn,
    pub reference: fn(f64) -> f64,
    /// Input domain.
    pub lo: f32,
    pub hi: f32,
    /// Roundings to the output dtype (each costs `u_out * |want|`): 1 for a
    /// correctly rounded op, 2 where MLX rounds an intermediate result to the
    /// output dtype too (rsqrt = 1/sqrt, sigmoid = 1/(1+exp(-x))).
    pub out_roundings: f64,
    /// The error of MLX's f32 approximation of the function, in f32 unit roundoffs
    /// (f16 and bf16 inputs are computed in f32 and rounded). Each figure is the
    /// worst seen on a dense 200,001-point grid of the domain, rounded up with
    /// some margin (worst seen in brackets).
    pub f32_ulps: f64,
    /// The magnitude the error is relative to: `None` for |want|, `Some(s)` for
    /// max(|want|, s) (functions that cross zero, like sin, lose relative accuracy
    /// near their zeros, as every libm does).
    pub floor: Option<f64>,
}

fn erf64(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse (1.5e-7); sum the Taylor series, which
    // converges fast for |x| <= 3 in f64.
    let mut term = x;
    let mut sum = x;
    let x2 = x * x;
    for n in 1..200 {
        term *= -x2 / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-18 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

pub fn sign64(x: f64) -> f64 {
    // MLX's sign(0) is 0 (f64::signum(0.0) is 1).
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[rustfmt::skip]
pub fn unaries() -> Vec<Unary> {
    let u = |name, f, reference, lo, hi, out_roundings, f32_ulps, floor| Unary {
        name, f, reference, lo, hi, out_roundings, f32_ulps, floor,
    };
    vec![
        u("abs", ops::abs as UnaryFn, f64::abs as fn(f64) -> f64, -4.0, 4.0, 0.0, 0.0, None),
        u("negative", ops::negative, |x| -x, -4.0, 4.0, 0.0, 0.0, None),
        u("floor", ops::floor, f64::floor, -4.0, 4.0, 0.0, 0.0, None),
        u("ceil", ops::ceil, f64::ceil, -4.0, 4.0, 0.0, 0.0, None),
        u("sign", ops::sign, sign64, -4.0, 4.0, 0.0, 0.0, None),
        u("square", ops::square, |x| x * x, -4.0, 4.0, 1.0, 0.0, None),
        u("sqrt", ops::sqrt, f64::sqrt, 0.0, 9.0, 1.0, 0.0, None),
        u("reciprocal", ops::reciprocal, |x| 1.0 / x, 0.25, 4.0, 1.0, 0.0, None),
        u("rsqrt", ops::rsqrt, |x| 1.0 / x.sqrt(), 0.25, 9.0, 2.0, 0.0, None), // [1.5 u in every dtype]
        u("exp", ops::exp, f64::exp, -4.0, 4.0, 1.0, 6.0, None),               // [f32 4.6]
        u("log", ops::log, f64::ln, 0.05, 8.0, 1.0, 2.0, Some(1.0)),  // [f32 1.0]
        u("log1p", ops::log1p, f64::ln_1p, -0.5, 8.0, 1.0, 2.0, None),         // [f32 1.3]
        u("sigmoid", ops::sigmoid, |x| 1.0 / (1.0 + (-x).exp()), -8.0, 8.0, 2.0, 10.0, None), // [f32 8.6 at x = -7.3]
        u("tanh", ops::tanh, f64::tanh, -4.0, 4.0, 1.0, 3.0, Some(1.0)),       // [f32 1.7]
        u("sin", ops::sin, f64::sin, -6.0, 6.0, 1.0, 2.0, Some(1.0)),          // [f32 1.1]
        u("cos", ops::cos, f64::cos, -6.0, 6.0, 1.0, 2.0, Some(1.0)),          // [f32 1.3]
        // MLX's erf is a polynomial with absolute error up to ~5e-7 near zero
        // (relative 1e-5 at x = 0.04): bound it absolutely.
        u("erf", ops::erf, erf64, -3.0, 3.0, 1.0, 10.0, Some(1.0)),            // [f32 8.2]
    ]
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn unary_ops_match_reference(shape in shape(), dtype in float_dtype(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let n = numel(&shape);
        let u = unit_roundoff(dtype);
        for op in unaries() {
            let host: Vec<f32> = rng.vec_f32(n, op.lo, op.hi).iter().map(|&v| round_to(dtype, v)).collect();
            let x = array_as(&host, &shape, dtype);
            let y = (op.f)(&x, ()).unwrap();
            prop_assert_eq!(y.dtype(), dtype);
            prop_assert_eq!(y.shape(), &shape[..]);
            let want: Vec<f64> = host.iter().map(|&v| (op.reference)(v as f64)).collect();
            let got = host_f32(&y);
            let u32r = unit_roundoff(Dtype::Float32);
            assert_within(&got, &want, |i| {
                let mag = op.floor.map_or(want[i].abs(), |f| want[i].abs().max(f));
                (op.out_roundings * u + op.f32_ulps * u32r) * mag + underflow(dtype)
            }, &format!("{} {dtype:?} shape {shape:?}", op.name));
        }
    }

    #[test]
    fn binary_ops_broadcast(out in shape(), dtype in float_dtype(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let (sa, sb) = (bcast_shape(&mut rng, &out), bcast_shape(&mut rng, &out));
        let ha: Vec<f32> = rng.vec_f32(numel(&sa), -4.0, 4.0).iter().map(|&v| round_to(dtype, v)).collect();
        // Keep divisors and power bases away from zero.
        let hb: Vec<f32> = rng.vec_f32(numel(&sb), 0.5, 3.0).iter()
            .map(|&v| round_to(dtype, if rng.below(2) == 0 { v } else { -v })).collect();
        let (a, b) = (array_as(&ha, &sa, dtype), array_as(&hb, &sb, dtype));
        let a_abs: Vec<f32> = ha.iter().map(|v| v.abs()).collect();
        let pa = array_as(&a_abs, &sa, dtype);
        type Bin = fn(&Array, &Array, ()) -> mlx::Result<Array>;
        // (name, op, reference in f32 then rounded to dtype: exact for correctly
        // rounded ops, see the module comment)
        type Case = (&'static str, Bin, fn(f32, f32) -> f32);
        let cases: [Case; 6] = [
            ("add", ops::add, |x, y| x + y),
            ("subtract", ops::subtract, |x, y| x - y),
            ("multiply", ops::multiply, |x, y| x * y),
            ("divide", ops::divide, |x, y| x / y),
            ("maximum", ops::maximum, f32::max),
            ("minimum", ops::minimum, f32::min),
        ];
        // The result has the broadcast shape of the two inputs, which may be
        // smaller than `out` when both dropped a leading axis or kept a 1.
        let rs = broadcast_shapes(&sa, &sb);
        let n = numel(&rs);
        let ia = |i: usize| bcast_index(&unravel(i, &rs), &sa);
        let ib = |i: usize| bcast_index(&unravel(i, &rs), &sb);
        for (name, f, r) in cases {
            let y = f(&a, &b, ()).unwrap();
            prop_assert_eq!(y.shape(), &rs[..], "{} shape", name);
            prop_assert_eq!(y.dtype(), dtype);
            let want: Vec<f32> = (0..n).map(|i| round_to(dtype, r(ha[ia(i)], hb[ib(i)]))).collect();
            prop_assert_eq!(host_f32(&y), want, "{} {:?} {:?} {:?}", name, dtype, sa, sb);
        }
        // power: MLX computes pow in f32 (within a few u32 of the exact value) and
        // rounds to the output dtype. The reference is the exact value rounded to
        // the dtype too (so overflow to inf matches), and two roundings of the
        // same value differ by at most one ulp (2 u) or one subnormal step.
        let y = ops::power(&pa, &b, ()).unwrap();
        let want: Vec<f64> = (0..n).map(|i| {
            round_to(dtype, (a_abs[ia(i)] as f64).powf(hb[ib(i)] as f64) as f32) as f64
        }).collect();
        let u = unit_roundoff(dtype);
        let u32r = unit_roundoff(Dtype::Float32);
        assert_within(&host_f32(&y), &want, |i| (2.0 * u + 4.0 * u32r) * want[i].abs() + 2.0 * underflow(dtype),
            &format!("power {dtype:?}"));
        // Comparisons are exact and return bool.
        type Cmp = (&'static str, Bin, fn(f32, f32) -> bool);
        let cmps: [Cmp; 6] = [
            ("equal", ops::equal, |x, y| x == y),
            ("not_equal", ops::not_equal, |x, y| x != y),
            ("less", ops::less, |x, y| x < y),
            ("less_equal", ops::less_equal, |x, y| x <= y),
            ("greater", ops::greater, |x, y| x > y),
            ("greater_equal", ops::greater_equal, |x, y| x >= y),
        ];
        // Compare a against a rounded copy of itself half the time so equality occurs.
        let bb = if seed % 2 == 0 { a.clone() } else { b.clone() };
        let hbb = if seed % 2 == 0 { &ha } else { &hb };
        let sbb = if seed % 2 == 0 { &sa } else { &sb };
        for (name, f, r) in cmps {
            let y = f(&a, &bb, ()).unwrap();
            prop_assert_eq!(y.dtype(), Dtype::Bool);
            let want: Vec<bool> = (0..numel(y.shape())).map(|i| {
                let idx = unravel(i, y.shape());
                r(ha[bcast_index(&idx, &sa)], hbb[bcast_index(&idx, sbb)])
            }).collect();
            prop_assert_eq!(y.to_vec::<bool>().unwrap(), want, "{}", name);
        }
    }

    #[test]
    fn int_binary_ops(out in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let (sa, sb) = (bcast_shape(&mut rng, &out), bcast_shape(&mut rng, &out));
        let ha: Vec<i32> = (0..numel(&sa)).map(|_| rng.i32_in(-50, 50)).collect();
        let hb: Vec<i32> = (0..numel(&sb)).map(|_| {
            let v = rng.i32_in(1, 9);
            if rng.below(2) == 0 { v } else { -v }
        }).collect();
        let a = Array::from_slice(&ha, &sa).unwrap();
        let b = Array::from_slice(&hb, &sb).unwrap();
        type Bin = fn(&Array, &Array, ()) -> mlx::Result<Array>;
        // floor_divide and remainder follow Python: floor division, remainder with
        // the sign of the divisor.
        type Case = (&'static str, Bin, fn(i32, i32) -> i32);
        let cases: [Case; 7] = [
            ("add", ops::add, |x, y| x + y),
            ("subtract", ops::subtract, |x, y| x - y),
            ("multiply", ops::multiply, |x, y| x * y),
            ("maximum", ops::maximum, |x, y| x.max(y)),
            ("minimum", ops::minimum, |x, y| x.min(y)),
            ("floor_divide", ops::floor_divide, |x, y| x.div_euclid(y) - if y < 0 && x.rem_euclid(y) != 0 { 1 } else { 0 }),
            ("remainder", ops::remainder, |x, y| { let r = x % y; if r != 0 && (r < 0) != (y < 0) { r + y } else { r } }),
        ];
        for (name, f, r) in cases {
            let y = f(&a, &b, ()).unwrap();
            prop_assert_eq!(y.dtype(), Dtype::Int32);
            let rs = broadcast_shapes(&sa, &sb);
            prop_assert_eq!(y.shape(), &rs[..]);
            let want: Vec<i32> = (0..numel(&rs)).map(|i| {
                let idx = unravel(i, &rs);
                r(ha[bcast_index(&idx, &sa)], hb[bcast_index(&idx, &sb)])
            }).collect();
            prop_assert_eq!(y.to_vec::<i32>().unwrap(), want, "{} {:?} {:?}", name, ha, hb);
        }
    }

    #[test]
    fn where_broadcasts(out in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let (sc, sx, sy) = (bcast_shape(&mut rng, &out), bcast_shape(&mut rng, &out), bcast_shape(&mut rng, &out));
        let hc: Vec<bool> = (0..numel(&sc)).map(|_| rng.below(2) == 0).collect();
        let hx = rng.vec_f32(numel(&sx), -1.0, 1.0);
        let hy = rng.vec_f32(numel(&sy), -1.0, 1.0);
        let c = Array::from_slice(&hc, &sc).unwrap();
        let y = ops::r#where(&c, &Array::from_slice(&hx, &sx).unwrap(), &Array::from_slice(&hy, &sy).unwrap(), ()).unwrap();
        // The result has the broadcast shape of all three, which may be smaller than
        // `out` when every input dropped a leading axis.
        let rs = y.shape().to_vec();
        let want: Vec<f32> = (0..numel(&rs)).map(|i| {
            let idx = unravel(i, &rs);
            if hc[bcast_index(&idx, &sc)] { hx[bcast_index(&idx, &sx)] } else { hy[bcast_index(&idx, &sy)] }
        }).collect();
        prop_assert_eq!(y.to_vec::<f32>().unwrap(), want);
    }

    #[test]
    fn astype_conversions(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host = rng.vec_f32(numel(&shape), -300.0, 300.0);
        let x = Array::from_slice(&host, &shape).unwrap();
        // f32 -> f16 / bf16: round to nearest even, bit-exact with the half crate.
        let h = x.astype(Dtype::Float16).unwrap().to_vec::<f16>().unwrap();
        prop_assert_eq!(h.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            host.iter().map(|&v| f16::from_f32(v).to_bits()).collect::<Vec<_>>());
        let b = x.astype(Dtype::Bfloat16).unwrap().to_vec::<bf16>().unwrap();
        prop_assert_eq!(b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            host.iter().map(|&v| bf16::from_f32(v).to_bits()).collect::<Vec<_>>());
        // f32 -> i32 truncates toward zero (C++ conversion).
        let i = x.astype(Dtype::Int32).unwrap().to_vec::<i32>().unwrap();
        prop_assert_eq!(i, host.iter().map(|&v| v as i32).collect::<Vec<_>>());
        // i32 -> f32 is exact for these magnitudes; f16 -> f32 is exact always.
        let back = x.astype(Dtype::Int32).unwrap().astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap();
        prop_assert_eq!(back, host.iter().map(|&v| v as i32 as f32).collect::<Vec<_>>());
        let hf = x.astype(Dtype::Float16).unwrap().astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap();
        prop_assert_eq!(hf, host.iter().map(|&v| f16::from_f32(v).to_f32()).collect::<Vec<_>>());
        // -> bool: non-zero is true.
        let bo = x.floor().unwrap().astype(Dtype::Bool).unwrap().to_vec::<bool>().unwrap();
        prop_assert_eq!(bo, host.iter().map(|&v| v.floor() != 0.0).collect::<Vec<_>>());
    }

    #[test]
    fn constructors(shape in shape(), v in -100.0f32..100.0, start in -20i32..20, len in 0i32..40, step in 1i32..4) {
        let n = numel(&shape);
        prop_assert_eq!(ops::zeros(&shape, Dtype::Float32, ()).unwrap().to_vec::<f32>().unwrap(), vec![0.0; n]);
        prop_assert_eq!(ops::ones(&shape, Dtype::Int32, ()).unwrap().to_vec::<i32>().unwrap(), vec![1; n]);
        let f = ops::full(&shape, &Array::scalar(v).unwrap(), Dtype::Float32, ()).unwrap();
        prop_assert_eq!(f.shape(), &shape[..]);
        prop_assert_eq!(f.to_vec::<f32>().unwrap(), vec![v; n]);
        let fh = ops::full(&shape, &Array::scalar(v).unwrap(), Dtype::Float16, ()).unwrap();
        prop_assert_eq!(fh.to_vec::<f16>().unwrap(), vec![f16::from_f32(v); n]);
        let stop = start + len;
        let a = ops::arange(start as f64, stop as f64, step as f64, Dtype::Int32, ()).unwrap();
        prop_assert_eq!(a.to_vec::<i32>().unwrap(), (start..stop).step_by(step as usize).collect::<Vec<_>>());
        let af = ops::arange(start as f64, stop as f64, 0.5, Dtype::Float32, ()).unwrap();
        let want: Vec<f32> = (0..(2 * len)).map(|k| start as f32 + 0.5 * k as f32).collect();
        prop_assert_eq!(af.to_vec::<f32>().unwrap(), want);
    }
}
