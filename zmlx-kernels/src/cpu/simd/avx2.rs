//! AVX2 + FMA + F16C kernels (8 f32 lanes). Callers (the safe wrappers in
//! `simd/mod.rs`) have checked CPU support and slice lengths.

use core::arch::x86_64::*;

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
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

/// bf16 weight row dot product: bf16 -> f32 is a 16-bit left shift.
///
/// # Safety
/// AVX2, FMA available; `w.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16(w: &[half::bf16], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let raw = _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(i).cast()));
        let wf = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(raw));
        a0 = _mm256_fmadd_ps(wf, _mm256_loadu_ps(xp.add(i)), a0);
        i += 8;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += w.get_unchecked(i).to_f32() * x.get_unchecked(i);
        i += 1;
    }
    hsum(a0) + tail
}

/// f16 weight row dot product (F16C conversion).
///
/// # Safety
/// AVX2, FMA, F16C available; `w.len() == x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16(w: &[half::f16], x: &[f32]) -> f32 {
    let n = w.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut a0 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let wf = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i).cast()));
        a0 = _mm256_fmadd_ps(wf, _mm256_loadu_ps(xp.add(i)), a0);
        i += 8;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += w.get_unchecked(i).to_f32() * x.get_unchecked(i);
        i += 1;
    }
    hsum(a0) + tail
}

/// Two activation rows against four weight rows.
///
/// # Safety
/// AVX2, FMA available; all six slices have the same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_2x4(x: [&[f32]; 2], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let n = x[0].len();
    let xp = [x[0].as_ptr(), x[1].as_ptr()];
    let wp = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
    let mut acc = [[_mm256_setzero_ps(); 4]; 2];
    let mut i = 0;
    while i + 8 <= n {
        let x0 = _mm256_loadu_ps(xp[0].add(i));
        let x1 = _mm256_loadu_ps(xp[1].add(i));
        for c in 0..4 {
            let wv = _mm256_loadu_ps(wp[c].add(i));
            acc[0][c] = _mm256_fmadd_ps(x0, wv, acc[0][c]);
            acc[1][c] = _mm256_fmadd_ps(x1, wv, acc[1][c]);
        }
        i += 8;
    }
    let mut out = [[0.0f32; 4]; 2];
    for r in 0..2 {
        for c in 0..4 {
            let mut tail = 0.0f32;
            for j in i..n {
                tail += x[r].get_unchecked(j) * w[c].get_unchecked(j);
            }
            out[r][c] = hsum(acc[r][c]) + tail;
        }
    }
    out
}

/// One activation row against four weight rows.
///
/// # Safety
/// AVX2, FMA available; all five slices have the same length.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_1x4(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let n = x.len();
    let xp = x.as_ptr();
    let wp = [w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr(), w[3].as_ptr()];
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 8 <= n {
        let x0 = _mm256_loadu_ps(xp.add(i));
        for c in 0..4 {
            acc[c] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(wp[c].add(i)), acc[c]);
        }
        i += 8;
    }
    let mut out = [0.0f32; 4];
    for c in 0..4 {
        let mut tail = 0.0f32;
        for j in i..n {
            tail += x.get_unchecked(j) * w[c].get_unchecked(j);
        }
        out[c] = hsum(acc[c]) + tail;
    }
    out
}
