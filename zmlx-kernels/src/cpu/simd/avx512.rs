//! AVX-512F kernels (16 f32 lanes). Callers (the safe wrappers in `simd/mod.rs`) have
//! checked that the CPU supports AVX-512F and that slice lengths match.

use core::arch::x86_64::*;

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

/// bf16 weight row dot product: bf16 -> f32 is a 16-bit left shift.
///
/// # Safety
/// AVX-512F available; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_bf16(w: &[half::bf16], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let raw = _mm512_cvtepu16_epi32(_mm256_loadu_si256(wp.add(i).cast()));
        let wf = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw));
        a0 = _mm512_fmadd_ps(wf, _mm512_loadu_ps(xp.add(i)), a0);
        i += 16;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += w.get_unchecked(i).to_f32() * x.get_unchecked(i);
        i += 1;
    }
    _mm512_reduce_add_ps(a0) + tail
}

/// f16 weight row dot product (hardware conversion).
///
/// # Safety
/// AVX-512F available; `w.len() == x.len()`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_f16(w: &[half::f16], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        let wf = _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(i).cast()));
        a0 = _mm512_fmadd_ps(wf, _mm512_loadu_ps(xp.add(i)), a0);
        i += 16;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += w.get_unchecked(i).to_f32() * x.get_unchecked(i);
        i += 1;
    }
    _mm512_reduce_add_ps(a0) + tail
}

/// Two activation rows against four weight rows: 6 loads feed 8 FMAs per 16 columns.
///
/// # Safety
/// AVX-512F available; all six slices have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_2x4(x: [&[f32]; 2], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = x[0].len();
    let xp = [x[0].as_ptr(), x[1].as_ptr()];
    let wp = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
    let mut acc = [[_mm512_setzero_ps(); 4]; 2];
    let mut i = 0;
    while i < n {
        let m: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            (1u16 << (n - i)) - 1
        };
        let x0 = _mm512_maskz_loadu_ps(m, xp[0].add(i));
        let x1 = _mm512_maskz_loadu_ps(m, xp[1].add(i));
        for c in 0..4 {
            let wv = _mm512_maskz_loadu_ps(m, wp[c].add(i));
            acc[0][c] = _mm512_fmadd_ps(x0, wv, acc[0][c]);
            acc[1][c] = _mm512_fmadd_ps(x1, wv, acc[1][c]);
        }
        i += 16;
    }
    let mut out = [[0.0f32; 4]; 2];
    for r in 0..2 {
        for c in 0..4 {
            out[r][c] = _mm512_reduce_add_ps(acc[r][c]);
        }
    }
    out
}

/// One activation row against four weight rows.
///
/// # Safety
/// AVX-512F available; all five slices have the same length.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_1x4(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let n = x.len();
    let xp = x.as_ptr();
    let wp = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i < n {
        let m: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            (1u16 << (n - i)) - 1
        };
        let x0 = _mm512_maskz_loadu_ps(m, xp.add(i));
        for c in 0..4 {
            acc[c] = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, wp[c].add(i)), acc[c]);
        }
        i += 16;
    }
    let mut out = [0.0f32; 4];
    for c in 0..4 {
        out[c] = _mm512_reduce_add_ps(acc[c]);
    }
    out
}
