//! AVX-512F kernels (16 f32 lanes). Callers (the safe wrappers in `simd/mod.rs`) have
//! checked that the CPU supports AVX-512F and that slice lengths match.

use core::arch::x86_64::*;

use super::BF16_CHUNK;
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
        super::prefetch_group(words.as_ptr().cast::<u8>().wrapping_add(g * gs / 2), gs / 2);
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

/// 4-bit dot products of `R` rows of one matrix with the same bf16 activations,
/// through `vdpbf16ps`: per row and 128 values, one 64-byte load, four shift +
/// `vpternlogd` pairs and four `vdpbf16ps`; the activation chunks are loaded once for
/// all rows, and the rows' chains run side by side, so a short row's fixed costs
/// (setup, the final reduction, the call) are shared by `R` rows. Each row's words
/// are prefetched `lead` times [`super::PREFETCH_AHEAD`] ahead.
///
/// Each 16-bit lane `l` of a chunk holds values `4l .. 4l + 4` (one nibble each); the
/// nibble `q` of position `j` becomes the bf16 number `1 + q/16` by moving it under
/// the mantissa's top four bits and setting the exponent of 1.0 (`0x3F80`). Those
/// four vectors are multiplied by `xb`, the activations in the matching order
/// (see `prep.rs`), and `vdpbf16ps` adds adjacent products, so f32 lane `i` of the
/// chunk's sum `d` holds word `i`'s eight values: `sum (1 + q/16) x`, products exact
/// (5 by 8 significant bits). Lane `i`'s group is `(128 c + 8 i) / GS`; its scale is
/// picked with one permute. With `F = sum_g s_g * sum_{k in g} (1 + q_k/16) x_k`,
/// `sum_g s_g * (q_g . x_g) = 16 * (F - sum_g s_g X_g)` where `X_g` is the group's sum
/// of `x`, so the row's result is `16 * (F - sum_g s_g X_g) + sum_g b_g X_g`. The
/// products' offset (`16 * s * x` per value) bounds the error as in `tests/cpu/tol.rs`.
///
/// `vdpbf16ps` flushes denormal inputs and results to zero: the caller passes only
/// activation rows without denormals (`prep.rs`), products of normal values by
/// `1 + q/16` are normal, and a partial sum below 2^-126 loses less than 2^-126.
///
/// # Safety
/// AVX-512F, AVX512BW, AVX512VL and AVX512_BF16 available; `GS` is 32, 64 or 128;
/// `R > 0`; every row has `words[r].len() == scales[r].len() * GS / 8`, and all rows
/// have the same lengths; `xb.len()` is `scales[0].len() * GS` rounded up to a
/// multiple of [`BF16_CHUNK`] with zeros after the row's values; `xsum` and each
/// row's `biases` as long as its `scales`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(crate) unsafe fn q4_dots_bf16<const GS: usize, const R: usize>(
    words: [&[u32]; R],
    xb: &[u16],
    xsum: &[f32],
    scales: [&[half::bf16]; R],
    biases: [&[half::bf16]; R],
    lead: usize,
) -> [f32; R] {
    let groups = scales[0].len();
    let nwords = words[0].len();
    let chunks = nwords.div_ceil(16);
    // (A & B) | C with A = the shifted lanes, B = the nibble's place, C = 1.0's bits.
    const SET: i32 = 0xEA;
    let place = _mm512_set1_epi16(0x0078);
    let one = _mm512_set1_epi16(0x3F80);
    // Lane i of a chunk's sum covers word i, values 8i..8i + 8: its group's offset
    // from the chunk's first group.
    let lane_group: [i32; 16] = core::array::from_fn(|i| (8 * i / GS) as i32);
    let lane_group = _mm512_loadu_si512(lane_group.as_ptr().cast());
    let step = _mm512_set1_epi32((BF16_CHUNK / GS) as i32);
    let widen = |v: __m256i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)));
    let zero = _mm512_setzero_ps();
    let mut acc = [zero; R];
    let (mut sx, mut bx) = ([zero; R], [zero; R]);
    let chunks_per_block = 16 * GS / BF16_CHUNK;
    let mut c = 0;
    for g0 in (0..groups).step_by(16) {
        let gm: __mmask16 = (((1u32 << (groups - g0).min(16)) - 1) & 0xFFFF) as u16;
        let xs = _mm512_maskz_loadu_ps(gm, xsum.as_ptr().add(g0));
        let mut s = [zero; R];
        for r in 0..R {
            s[r] = widen(_mm256_maskz_loadu_epi16(
                gm,
                scales[r].as_ptr().add(g0).cast(),
            ));
            let b = widen(_mm256_maskz_loadu_epi16(
                gm,
                biases[r].as_ptr().add(g0).cast(),
            ));
            sx[r] = _mm512_fmadd_ps(s[r], xs, sx[r]);
            bx[r] = _mm512_fmadd_ps(b, xs, bx[r]);
        }
        let mut idx = lane_group;
        let end = chunks.min(c + chunks_per_block);
        while c < end {
            let w0 = 16 * c;
            let xp = xb.as_ptr().add(BF16_CHUNK * c);
            let x: [__m512bh; 4] = core::array::from_fn(|j| {
                core::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(xp.add(32 * j).cast()))
            });
            for r in 0..R {
                super::prefetch_group_lead(words[r].as_ptr().add(w0).cast(), 64, lead);
                let v = if w0 + 16 <= nwords {
                    _mm512_loadu_si512(words[r].as_ptr().add(w0).cast())
                } else {
                    let wm = (((1u32 << (nwords - w0)) - 1) & 0xFFFF) as u16;
                    _mm512_maskz_loadu_epi32(wm, words[r].as_ptr().add(w0).cast())
                };
                let f = [
                    _mm512_slli_epi16::<3>(v),
                    _mm512_srli_epi16::<1>(v),
                    _mm512_srli_epi16::<5>(v),
                    _mm512_srli_epi16::<9>(v),
                ]
                .map(|a| {
                    core::mem::transmute::<__m512i, __m512bh>(_mm512_ternarylogic_epi32::<SET>(
                        a, place, one,
                    ))
                });
                let mut d = _mm512_dpbf16_ps(zero, f[0], x[0]);
                d = _mm512_dpbf16_ps(d, f[1], x[1]);
                d = _mm512_dpbf16_ps(d, f[2], x[2]);
                d = _mm512_dpbf16_ps(d, f[3], x[3]);
                acc[r] = _mm512_fmadd_ps(_mm512_permutexvar_ps(idx, s[r]), d, acc[r]);
            }
            idx = _mm512_add_epi32(idx, step);
            c += 1;
        }
    }
    core::array::from_fn(|r| {
        let f = _mm512_sub_ps(acc[r], sx[r]);
        _mm512_reduce_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(16.0), f, bx[r]))
    })
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
        super::prefetch_group(words.as_ptr().cast::<u8>().wrapping_add(g * gs), gs);
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
