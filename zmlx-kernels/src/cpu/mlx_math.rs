//! Scalar functions as MLX's CPU backend evaluates them (MLX 0.32.4, Linux x86_64).
//!
//! MLX's CPU element-wise kernels do not call libm for `exp`: they use a Cephes-style
//! polynomial (`2^i * P(f)` with `i = floor(x * log2(e) + 0.5)`), and on x86_64 they
//! run one element at a time with each intermediate stored in the array's dtype where
//! the C++ types say so. The functions below reproduce those results bit for bit; this
//! was checked against MLX on hundreds of thousands of random inputs per dtype (see
//! `notes/cpu-kernels.md`) and is re-checked by `tests/fused_vs_reference.rs`.

use super::dtype::{Dtype, Element};

/// Rounds `v` to `T` and back, as MLX does when it stores an f32 result in `T`.
///
/// bf16 uses the integer form of round-to-nearest-even (the one the SIMD kernels use
/// too, so that every level agrees); NaN payloads are not canonicalised the way MLX's
/// `bfloat16_t` constructor does (NaN stays NaN, its bits may differ).
#[inline(always)]
pub(crate) fn round_to<T: Element>(v: f32) -> f32 {
    match T::DTYPE {
        Dtype::F32 => v,
        Dtype::Bf16 => {
            let u = v.to_bits();
            f32::from_bits(u.wrapping_add(0x7FFF + ((u >> 16) & 1)) & 0xFFFF_0000)
        }
        Dtype::F16 => T::round(v),
    }
}

/// MLX's CPU `exp` in f32 (the polynomial, not libm's `expf`).
///
/// Coefficients are the published Cephes/fastermath ones; the `+ 0.5` before `floor`
/// happens in f64 (in MLX's C++ the literal is a double), the polynomial uses fused
/// multiply-adds, and arguments above 88 give +inf, below -88 give 0.
#[inline]
pub(crate) fn exp(x: f32) -> f32 {
    let y = x * f32::from_bits(0x3fb8_aa3b); // 1.442695f, MLX's log2(e)
    let ipart = (f64::from(y) + 0.5).floor() as f32;
    let f = y - ipart;
    // The coefficients as f32 bit patterns (1.5353362e-4 ... 0.6931472, 1.0), so that
    // no decimal-literal rounding question arises.
    let mut p = f32::from_bits(0x3920_fdde);
    for c in [
        0x3aaf_9f29u32,
        0x3c1d_96a6,
        0x3d63_5774,
        0x3e75_fdee,
        0x3f31_7218,
        0x3f80_0000,
    ] {
        p = p.mul_add(f, f32::from_bits(c));
    }
    // 2^ipart built from the exponent bits; only used where |x| <= 88 (|ipart| <= 127),
    // the selects below cover the rest (and NaN, for which `as` gives 0 harmlessly).
    let two_i = f32::from_bits(((ipart as i32).wrapping_add(127) as u32).wrapping_shl(23));
    if x.is_nan() {
        x
    } else if x > 88.0 {
        f32::INFINITY
    } else if x < -88.0 {
        0.0
    } else {
        two_i * p
    }
}

/// MLX's CPU `sigmoid` for an element of dtype `T` (`x` already representable in T):
/// `e = T(exp(|x|))`, `y = 1 / (1 + e)` in f32, then `y` for negative `x` and `1 - y`
/// otherwise, stored in T.
#[inline]
pub(crate) fn sigmoid<T: Element>(x: f32) -> f32 {
    let e = round_to::<T>(exp(x.abs()));
    let y = 1.0 / (1.0 + e);
    round_to::<T>(if x < 0.0 { y } else { 1.0 - y })
}

/// mlx-lm's expert activation `silu(g) * u = (g * sigmoid(g)) * u` with every op's
/// result stored in T (`g`, `u` already representable in T).
#[inline]
pub(crate) fn swiglu<T: Element>(g: f32, u: f32) -> f32 {
    let a = round_to::<T>(g * sigmoid::<T>(g));
    round_to::<T>(a * u)
}
