//! AVX-512F kernels (16 f32 lanes). Callers (the safe wrappers in `simd/mod.rs`) have
//! checked that the CPU supports AVX-512F and that slice lengths match.

use core::arch::x86_64::*;

use crate::cpu::dtype::Element;

/// See [`super::scalar::q4_dot`]; per 32 values: one 16-byte load, two nibble masks,
/// two zero-extensions to 16 x i32, two conversions and two FMAs.
///
/// # Safety
/// AVX-512F available; `words.len() == scales.len() * gs / 8`,
/// `xp.len() == scales.len() * gs`, `xsum`/`biases` as long as `scales`, `GS % 32 == 0` (the group size as a constant, so the
/// per-group loop is fully unrolled).
#[target_feature(enable = "avx512f")]
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
    let mut total = _mm512_setzero_ps();
    let mut bias_acc = 0.0f32;
    for g in 0..scales.len() {
        let mut a0 = _mm512_setzero_ps();
        let mut a1 = _mm512_setzero_ps();
        for blk in 0..gs / 32 {
            let w = wp.add(g * gs / 8 + blk * 4);
            let x = xpp.add(g * gs + blk * 32);
            let v = _mm_loadu_si128(w.cast());
            let lo = _mm_and_si128(v, mask);
            // Byte-wise shift emulated with a 16-bit shift: the mask drops the bits
            // that crossed from the neighbouring byte.
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), mask);
            let lof = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo));
            let hif = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi));
            a0 = _mm512_fmadd_ps(lof, _mm512_loadu_ps(x), a0);
            a1 = _mm512_fmadd_ps(hif, _mm512_loadu_ps(x.add(16)), a1);
        }
        let s = _mm512_set1_ps(scales.get_unchecked(g).to_f32());
        total = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), s, total);
        bias_acc += biases.get_unchecked(g).to_f32() * xsum.get_unchecked(g);
    }
    _mm512_reduce_add_ps(total) + bias_acc
}

/// See [`super::scalar::q8_dot`].
///
/// # Safety
/// AVX-512F available; `words.len() == scales.len() * gs / 4`,
/// `x.len() == scales.len() * gs`, `xsum`/`biases` as long as `scales`, `GS % 32 == 0` (the group size as a constant, so the
/// per-group loop is fully unrolled).
#[target_feature(enable = "avx512f")]
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
    let mut total = _mm512_setzero_ps();
    let mut bias_acc = 0.0f32;
    for g in 0..scales.len() {
        let mut a0 = _mm512_setzero_ps();
        let mut a1 = _mm512_setzero_ps();
        let mut i = g * gs;
        let end = i + gs;
        while i < end {
            let q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(bp.add(i).cast()));
            let q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(bp.add(i + 16).cast()));
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q0), _mm512_loadu_ps(xp.add(i)), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(q1), _mm512_loadu_ps(xp.add(i + 16)), a1);
            i += 32;
        }
        let s = _mm512_set1_ps(scales.get_unchecked(g).to_f32());
        total = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), s, total);
        bias_acc += biases.get_unchecked(g).to_f32() * xsum.get_unchecked(g);
    }
    _mm512_reduce_add_ps(total) + bias_acc
}

/// f32 weight row dot product.
///
/// # Safety
/// AVX-512F available; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm512_setzero_ps();
    let mut a1 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 32 <= n {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(i)), _mm512_loadu_ps(xp.add(i)), a0);
        a1 = _mm512_fmadd_ps(
            _mm512_loadu_ps(wp.add(i + 16)),
            _mm512_loadu_ps(xp.add(i + 16)),
            a1,
        );
        i += 32;
    }
    while i < n {
        // Masked loads handle the tail without reading past either slice.
        let m: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            (1u16 << (n - i)) - 1
        };
        a0 = _mm512_fmadd_ps(
            _mm512_maskz_loadu_ps(m, wp.add(i)),
            _mm512_maskz_loadu_ps(m, xp.add(i)),
            a0,
        );
        i += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(a0, a1))
}

/// The dot product of a row of 16-bit weights with f32 activations: `widen` turns 16
/// weights into f32 lanes, `scalar` one weight (the tail).
///
/// # Safety
/// AVX-512F available; `w.len() == x.len()`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn dot_16bit<T: Copy>(
    w: &[T],
    x: &[f32],
    widen: impl Fn(__m256i) -> __m512,
    scalar: impl Fn(T) -> f32,
) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let wf = widen(_mm256_loadu_si256(wp.add(i).cast()));
        a0 = _mm512_fmadd_ps(wf, _mm512_loadu_ps(xp.add(i)), a0);
        i += 16;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += scalar(*w.get_unchecked(i)) * x.get_unchecked(i);
        i += 1;
    }
    _mm512_reduce_add_ps(a0) + tail
}

/// bf16 weight row dot product: bf16 -> f32 is a 16-bit left shift.
///
/// # Safety
/// AVX-512F available; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_bf16(w: &[half::bf16], x: &[f32]) -> f32 {
    dot_16bit(
        w,
        x,
        |h| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h))),
        half::bf16::to_f32,
    )
}

/// f16 weight row dot product (hardware conversion).
///
/// # Safety
/// AVX-512F available; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_f16(w: &[half::f16], x: &[f32]) -> f32 {
    dot_16bit(w, x, |h| _mm512_cvtph_ps(h), half::f16::to_f32)
}

/// `M` activation rows against four weight rows: `M + 4` loads feed `4 * M` FMAs per
/// 16 columns; `out[r][c]` = row `r` of `x` dot row `c` of `w`.
///
/// # Safety
/// AVX-512F available; all slices have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_mx4<const M: usize>(x: [&[f32]; M], w: [&[f32]; 4]) -> [[f32; 4]; M] {
    let n = w[0].len();
    let mut acc = [[_mm512_setzero_ps(); 4]; M];
    let mut i = 0;
    while i < n {
        // Masked loads handle the tail without reading past any slice.
        let m: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            (1u16 << (n - i)) - 1
        };
        let xv: [__m512; M] =
            core::array::from_fn(|r| _mm512_maskz_loadu_ps(m, x[r].as_ptr().add(i)));
        for c in 0..4 {
            let wv = _mm512_maskz_loadu_ps(m, w[c].as_ptr().add(i));
            for (ar, xr) in acc.iter_mut().zip(&xv) {
                ar[c] = _mm512_fmadd_ps(*xr, wv, ar[c]);
            }
        }
        i += 16;
    }
    acc.map(|ar| ar.map(|v| _mm512_reduce_add_ps(v)))
}
