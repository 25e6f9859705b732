//! Helpers shared by the integration tests: a tiny deterministic RNG, row-major
//! index arithmetic, host conversions between dtypes, and closeness checks.
#![allow(dead_code)]

use half::{bf16, f16};
use mlx::{Array, Dtype};

/// SplitMix64: proptest draws only a seed and the shapes, so a failing case prints
/// a short, replayable input instead of thousands of floats.
pub struct SeedRng(u64);

impl SeedRng {
    pub fn new(seed: u64) -> SeedRng {
        SeedRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn i32_in(&mut self, lo: i32, hi: i32) -> i32 {
        lo + self.below((hi - lo) as usize) as i32
    }
    pub fn vec_f32(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32_in(lo, hi)).collect()
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

pub fn numel(shape: &[i32]) -> usize {
    shape.iter().map(|&d| d as usize).product()
}

pub fn unravel(mut i: usize, shape: &[i32]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        let n = shape[d] as usize;
        idx[d] = i % n;
        i /= n;
    }
    idx
}

pub fn ravel(idx: &[usize], shape: &[i32]) -> usize {
    idx.iter()
        .zip(shape)
        .fold(0, |acc, (&i, &n)| acc * n as usize + i)
}

/// The flat index into an input of `in_shape` that numpy broadcasting reads for
/// the output position `out_idx` (shapes aligned on the right; size-1 axes repeat).
pub fn bcast_index(out_idx: &[usize], in_shape: &[i32]) -> usize {
    let off = out_idx.len() - in_shape.len();
    let idx: Vec<usize> = in_shape
        .iter()
        .enumerate()
        .map(|(d, &n)| if n == 1 { 0 } else { out_idx[off + d] })
        .collect();
    ravel(&idx, in_shape)
}

/// `v` rounded to the nearest value of `dtype` (f32 unchanged).
pub fn round_to(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::Float16 => f16::from_f32(v).to_f32(),
        Dtype::Bfloat16 => bf16::from_f32(v).to_f32(),
        Dtype::Float32 => v,
        Dtype::Int32 => v as i32 as f32,
        d => panic!("round_to: unsupported {d:?}"),
    }
}

/// An array of `dtype` holding `data` converted on the host (round to nearest).
pub fn array_as(data: &[f32], shape: &[i32], dtype: Dtype) -> Array {
    match dtype {
        Dtype::Float32 => Array::from_slice(data, shape),
        Dtype::Float16 => Array::from_slice(
            &data.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
            shape,
        ),
        Dtype::Bfloat16 => Array::from_slice(
            &data.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(),
            shape,
        ),
        Dtype::Int32 => {
            Array::from_slice(&data.iter().map(|&v| v as i32).collect::<Vec<_>>(), shape)
        }
        d => panic!("array_as: unsupported {d:?}"),
    }
    .unwrap()
}

/// The elements of a float or int32 array as f32, read in its own dtype (no
/// conversion inside MLX, so the test checks exactly what MLX computed).
pub fn host_f32(a: &Array) -> Vec<f32> {
    match a.dtype() {
        Dtype::Float32 => a.to_vec::<f32>().unwrap(),
        Dtype::Float16 => a
            .to_vec::<f16>()
            .unwrap()
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        Dtype::Bfloat16 => a
            .to_vec::<bf16>()
            .unwrap()
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        Dtype::Int32 => a
            .to_vec::<i32>()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Dtype::Uint32 => a
            .to_vec::<u32>()
            .unwrap()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Dtype::Bool => a
            .to_vec::<bool>()
            .unwrap()
            .iter()
            .map(|&v| v as u8 as f32)
            .collect(),
        d => panic!("host_f32: unsupported {d:?}"),
    }
}

/// Unit roundoff (half an ulp at 1.0) of a float dtype.
pub fn unit_roundoff(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Float32 => f32::EPSILON as f64 / 2.0,
        Dtype::Float16 => 2f64.powi(-11),
        Dtype::Bfloat16 => 2f64.powi(-8),
        Dtype::Int32 => 0.0,
        d => panic!("unit_roundoff: unsupported {d:?}"),
    }
}

/// Asserts |got - want| <= tol[i] element by element, naming the first offender.
pub fn assert_within(got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let (g, w) = (got[i] as f64, want[i]);
        let t = tol(i);
        let ok = (g - w).abs() <= t || (g.is_nan() && w.is_nan()) || g == w;
        assert!(ok, "{what}: element {i}: got {g}, want {w}, tolerance {t}");
    }
}

/// Asserts |got - want| <= atol + rtol * |want| element by element.
pub fn assert_close(got: &[f32], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_within(got, want, |i| atol + rtol * want[i].abs(), what);
}

/// A proptest config with `cases` cases (or `PROPTEST_CASES` when set, for long
/// soak runs) that writes no regression files into the source tree (a failure
/// prints its seed and shapes, which replay it).
pub fn config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// numpy's broadcast of two shapes (both already known to be compatible).
pub fn broadcast_shapes(a: &[i32], b: &[i32]) -> Vec<i32> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            da.max(db)
        })
        .collect()
}

/// Half the smallest subnormal of `dtype`: the error of rounding a result that
/// underflows (e.g. the square of a tiny f16).
pub fn underflow(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::Float16 => 2f64.powi(-25),
        Dtype::Bfloat16 => 2f64.powi(-134),
        _ => 2f64.powi(-150),
    }
}
