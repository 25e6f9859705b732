//! AVX2 + FMA + F16C kernels (8 f32 lanes). Callers (the safe wrappers in
//! `simd/mod.rs`) have checked CPU support and slice lengths.

use core::arch::x86_64::*;

use crate::cpu::dtype::Element;

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Zero-extends 8 bytes (the low half of `v`) to 8 f32.
#[inline(always)]
unsafe fn bytes_lo_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// See [`super::scalar::q4_dot`]; per 32 values: one 16-byte load, two nibble masks,
/// four zero-extensions to 8 x i32, four conversions and four FMAs.
///
/// # Safety
/// AVX2, FMA available; `words.len() == scales.len() * gs / 8`,
/// `xp.len() == scales.len() * gs`, `xsum`/`biases` as long as `scales`, `GS % 32 == 0` (the group size as a constant, so the
/// per-group loop is fully unrolled).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_dot<T: Element, const GS: usize>(
    words: &[u32],
    xp: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
) -> f32 {
    let gs = GS;
    let mask = _mm_set1_epi8(0x0f);
    let wp = words.as_ptr();
    let xpp = xp.as_ptr();
    let mut total = _mm256_setzero_ps();
    let mut bias_acc = 0.0f32;
    for g in 0..scales.len() {
        super::prefetch_group(words.as_ptr().cast::<u8>().wrapping_add(g * gs / 2), gs / 2);
        let mut a = [_mm256_setzero_ps(); 4];
        for blk in 0..gs / 32 {
            let w = wp.add(g * gs / 8 + blk * 4);
            let x = xpp.add(g * gs + blk * 32);
            let v = _mm_loadu_si128(w.cast());
            let lo = _mm_and_si128(v, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
            let q = [
                bytes_lo_to_f32(lo),
                bytes_lo_to_f32(_mm_srli_si128::<8>(lo)),
                bytes_lo_to_f32(hi),
                bytes_lo_to_f32(_mm_srli_si128::<8>(hi)),
            ];
            for (c, qc) in q.into_iter().enumerate() {
                a[c] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(x.add(8 * c)), a[c]);
            }
        }
        let sum = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        let s = _mm256_set1_ps(scales.get_unchecked(g).to_f32());
        total = _mm256_fmadd_ps(sum, s, total);
        bias_acc += biases.get_unchecked(g).to_f32() * xsum.get_unchecked(g);
    }
    hsum(total) + bias_acc
}

/// See [`super::scalar::q8_dot`].
///
/// # Safety
/// AVX2, FMA available; `words.len() == scales.len() * gs / 4`,
/// `x.len() == scales.len() * gs`, `xsum`/`biases` as long as `scales`, `GS % 32 == 0` (the group size as a constant, so the
/// per-group loop is fully unrolled).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_dot<T: Element, const GS: usize>(
    words: &[u32],
    x: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
) -> f32 {
    let gs = GS;
    let bp = words.as_ptr().cast::<u8>();
    let xp = x.as_ptr();
    let mut total = _mm256_setzero_ps();
    let mut bias_acc = 0.0f32;
    for g in 0..scales.len() {
        super::prefetch_group(words.as_ptr().cast::<u8>().wrapping_add(g * gs), gs);
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut i = g * gs;
        let end = i + gs;
        while i < end {
            let q0 = bytes_lo_to_f32(_mm_loadl_epi64(bp.add(i).cast()));
            let q1 = bytes_lo_to_f32(_mm_loadl_epi64(bp.add(i + 8).cast()));
            a0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(xp.add(i)), a0);
            a1 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(xp.add(i + 8)), a1);
            i += 16;
        }
        let s = _mm256_set1_ps(scales.get_unchecked(g).to_f32());
        total = _mm256_fmadd_ps(_mm256_add_ps(a0, a1), s, total);
        bias_acc += biases.get_unchecked(g).to_f32() * xsum.get_unchecked(g);
    }
    hsum(total) + bias_acc
}

/// f32 weight row dot product.
///
/// # Safety
/// AVX2, FMA available; `w.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm256_setzero_ps();
    let mut a1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(i)), _mm256_loadu_ps(xp.add(i)), a0);
        a1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(wp.add(i + 8)),
            _mm256_loadu_ps(xp.add(i + 8)),
            a1,
        );
        i += 16;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += w.get_unchecked(i) * x.get_unchecked(i);
        i += 1;
    }
    hsum(_mm256_add_ps(a0, a1)) + tail
}

/// The dot product of a row of 16-bit weights with f32 activations: `widen` turns 8
/// weights into f32 lanes, `scalar` one weight (the tail).
///
/// # Safety
/// AVX2, FMA, F16C available; `w.len() == x.len()`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_16bit<T: Copy>(
    w: &[T],
    x: &[f32],
    widen: impl Fn(__m128i) -> __m256,
    scalar: impl Fn(T) -> f32,
) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let wf = widen(_mm_loadu_si128(wp.add(i).cast()));
        a0 = _mm256_fmadd_ps(wf, _mm256_loadu_ps(xp.add(i)), a0);
        i += 8;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += scalar(*w.get_unchecked(i)) * x.get_unchecked(i);
        i += 1;
    }
    hsum(a0) + tail
}

/// bf16 weight row dot product: bf16 -> f32 is a 16-bit left shift.
///
/// # Safety
/// AVX2, FMA available; `w.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16(w: &[half::bf16], x: &[f32]) -> f32 {
    dot_16bit(
        w,
        x,
        |h| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h))),
        half::bf16::to_f32,
    )
}

/// f16 weight row dot product (F16C conversion).
///
/// # Safety
/// AVX2, FMA, F16C available; `w.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(w: &[half::f16], x: &[f32]) -> f32 {
    dot_16bit(w, x, |h| _mm256_cvtph_ps(h), half::f16::to_f32)
}

/// `M` activation rows against four weight rows; `out[r][c]` = row `r` of `x` dot row
/// `c` of `w`.
///
/// # Safety
/// AVX2, FMA available; all slices have the same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_mx4<const M: usize>(x: [&[f32]; M], w: [&[f32]; 4]) -> [[f32; 4]; M] {
    let n = w[0].len();
    let mut acc = [[_mm256_setzero_ps(); 4]; M];
    let mut i = 0;
    while i + 8 <= n {
        let xv: [__m256; M] = core::array::from_fn(|r| _mm256_loadu_ps(x[r].as_ptr().add(i)));
        for c in 0..4 {
            let wv = _mm256_loadu_ps(w[c].as_ptr().add(i));
            for (ar, xr) in acc.iter_mut().zip(&xv) {
                ar[c] = _mm256_fmadd_ps(*xr, wv, ar[c]);
            }
        }
        i += 8;
    }
    core::array::from_fn(|r| {
        core::array::from_fn(|c| {
            let tail: f32 = (i..n)
                .map(|j| x[r].get_unchecked(j) * w[c].get_unchecked(j))
                .sum();
            hsum(acc[r][c]) + tail
        })
    })
}
