//! Error bounds, derived rather than tuned.
//!
//! f32 accumulation: the kernels sum K products in f32 along chains of at most
//! `K / 8 + 64` additions (8 or 16 vector lanes or 8-16 portable accumulators per
//! group, a per-group scale FMA, the group and lane reductions); the first-order
//! worst-case bound for recursive summation is then `2^-24 * chain * sum|terms|`.
//! The dequantized weight `scale * q + bias` differs from MLX's by one f32 rounding
//! per element, which fits in the same budget (one more link of the chain).
//!
//! Output rounding: a value within `delta` of the exact result, rounded once to the
//! output dtype, lies within `delta + ulp(|exact| + delta) / 2` of it.

use zmlx_kernels::cpu::Dtype;

/// f32 accumulation bound for a dot product of length `k` with term scale `abs_sum`.
pub fn accum(k: usize, abs_sum: f64) -> f64 {
    (k as f64 / 8.0 + 64.0) * 2f64.powi(-24) * abs_sum
}

/// Unit in the last place of `dtype` at magnitude `v`.
pub fn ulp(dtype: Dtype, v: f64) -> f64 {
    let (mant_bits, min_exp) = match dtype {
        Dtype::F32 => (23, -126),
        Dtype::F16 => (10, -14),
        Dtype::Bf16 => (7, -126),
    };
    let e = if v > 0.0 {
        (v.log2().floor() as i32).max(min_exp)
    } else {
        min_exp
    };
    2f64.powi(e - mant_bits)
}

/// Bound on |round_dtype(a) - exact| when |a - exact| <= delta.
pub fn rounded(dtype: Dtype, exact: f64, delta: f64) -> f64 {
    delta + ulp(dtype, exact.abs() + delta) / 2.0
}

/// Next representable value of `dtype` above `v` (`v` representable; half types only).
fn next_up(dtype: Dtype, v: f32) -> f32 {
    let step = |bits: u16| -> u16 {
        if bits & 0x8000 == 0 {
            bits + 1
        } else if bits == 0x8000 {
            1
        } else {
            bits - 1
        }
    };
    match dtype {
        Dtype::F16 => half::f16::from_bits(step(half::f16::from_f32(v).to_bits())).to_f32(),
        Dtype::Bf16 => half::bf16::from_bits(step(half::bf16::from_f32(v).to_bits())).to_f32(),
        Dtype::F32 => unreachable!("f32 results are checked with interval bounds"),
    }
}

/// Every value of a half `dtype` that an f32 result within `delta` of `exact` can round
/// to (rounding is monotonic, so these are the representables between the roundings
/// of the two ends of the interval), or `None` if there are more than `limit` (an
/// interval around a cancelled sum near zero spans thousands of tiny values).
pub fn candidates(dtype: Dtype, exact: f64, delta: f64, limit: usize) -> Option<Vec<f32>> {
    let (lo, hi) = rounded_ends(dtype, exact, delta);
    let mut out = vec![lo];
    let mut v = lo;
    while v < hi {
        v = next_up(dtype, v);
        out.push(v);
        if out.len() > limit {
            return None;
        }
    }
    Some(out)
}

/// The roundings to `dtype` of the two ends of `[exact - delta, exact + delta]`.
pub fn rounded_ends(dtype: Dtype, exact: f64, delta: f64) -> (f32, f32) {
    (
        crate::data::round(dtype, (exact - delta) as f32),
        crate::data::round(dtype, (exact + delta) as f32),
    )
}

/// Unit roundoff of `dtype` (half the relative spacing at 1).
pub fn unit_roundoff(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 2f64.powi(-24),
        Dtype::F16 => 2f64.powi(-11),
        Dtype::Bf16 => 2f64.powi(-8),
    }
}
