//! x86_64 kernels of MLX's sequential quantized-matmul chain (see `cpu/chain.rs`).
//!
//! The chain of one output is sequential in k, so the vector lanes run different
//! output rows side by side: lane `l` owns weight row `row0 + l` and walks k in order.
//! The words of all lanes at one k are fetched with one gather (the rows are `wpr`
//! words apart); scales and biases come pre-widened in lane-major order. Every
//! intermediate is rounded to the activation dtype `T` exactly where MLX rounds it.
//!
//! Callers (`cpu/chain.rs`) guarantee the CPU features, that every lane offset plus
//! `groups * gs / (32 / BITS)` words stays inside the packed buffer, and that every
//! activation row holds `groups * gs` values.

use core::arch::x86_64::*;

use crate::cpu::dtype::{Dtype, Element};

/// Rounds 16 f32 lanes to `T` and back (identity for f32). bf16: round to nearest
/// even on the bit pattern (`u + 0x7FFF + bit16`, low half cleared; denormals are
/// rounded like any other value, unlike `vcvtneps2bf16`, which treats them as zero);
/// f16: `vcvtps2ph` with the immediate round-to-nearest-even mode.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn round16<T: Element>(v: __m512) -> __m512 {
    match T::DTYPE {
        Dtype::F32 => v,
        Dtype::Bf16 => {
            let u = _mm512_castps_si512(v);
            let odd = _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x1_0000));
            let t = _mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF));
            let t = _mm512_mask_add_epi32(t, odd, t, _mm512_set1_epi32(1));
            _mm512_castsi512_ps(_mm512_and_si512(t, _mm512_set1_epi32(-0x1_0000)))
        }
        Dtype::F16 => _mm512_cvtph_ps(_mm512_cvtps_ph::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(v)),
    }
}

/// `R` blocks of 16 output rows x `MB` activation rows of the chain; results go to
/// `out[(m * R + blk) * 16 + lane]`. The `R * MB` accumulator chains are independent,
/// which hides the latency of each chain's add-and-round steps.
///
/// # Safety
/// AVX-512F available; `offsets.len() == 16 * R`; `base.add(offsets[l] as usize + i)`
/// readable for every lane and `i < groups * gs * BITS / 32`; `sb` holds
/// `R * 2 * groups * 16` values (per block: scales then biases, lane-major); each
/// `xs[m]` holds `groups * gs` values; `gs` a multiple of `32 / BITS`;
/// `out.len() >= MB * R * 16`.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn chain16<T: Element, const BITS: u32, const MB: usize, const R: usize>(
    base: *const u32,
    offsets: &[i32],
    sb: &[f32],
    groups: usize,
    gs: usize,
    xs: &[&[f32]],
    out: &mut [f32],
) {
    let vpw = (32 / BITS) as usize;
    let wpg = gs / vpw;
    let idx: [__m512i; R] =
        core::array::from_fn(|b| _mm512_loadu_si512(offsets.as_ptr().add(16 * b).cast()));
    let maskv = _mm512_set1_epi32(((1u32 << BITS) - 1) as i32);
    let shift = _mm_cvtsi32_si128(BITS as i32);
    let xp: [*const f32; MB] = core::array::from_fn(|m| xs[m].as_ptr());
    let mut acc = [[_mm512_setzero_ps(); R]; MB];
    let sp = sb.as_ptr();
    let blk = 2 * groups * 16;
    let mut k = 0usize;
    for g in 0..groups {
        let s: [__m512; R] = core::array::from_fn(|b| _mm512_loadu_ps(sp.add(b * blk + g * 16)));
        let bias: [__m512; R] =
            core::array::from_fn(|b| _mm512_loadu_ps(sp.add(b * blk + (groups + g) * 16)));
        for wi in 0..wpg {
            let mut word: [__m512i; R] = core::array::from_fn(|b| {
                _mm512_i32gather_epi32::<4>(idx[b], base.add(g * wpg + wi).cast())
            });
            for _ in 0..vpw {
                for b in 0..R {
                    let q = _mm512_cvtepi32_ps(_mm512_and_si512(word[b], maskv));
                    word[b] = _mm512_srl_epi32(word[b], shift);
                    // w = T(T(scale * q) + bias): MLX dequantizes in T, without an FMA.
                    let w =
                        round16::<T>(_mm512_add_ps(round16::<T>(_mm512_mul_ps(s[b], q)), bias[b]));
                    for m in 0..MB {
                        let x = _mm512_set1_ps(*xp[m].add(k));
                        let p = round16::<T>(_mm512_mul_ps(x, w));
                        acc[m][b] = round16::<T>(_mm512_add_ps(acc[m][b], p));
                    }
                }
                k += 1;
            }
        }
    }
    for (m, row) in acc.iter().enumerate() {
        for (b, a) in row.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add((m * R + b) * 16), *a);
        }
    }
}

/// [`round16`] for 8 lanes with AVX2 and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round8<T: Element>(v: __m256) -> __m256 {
    match T::DTYPE {
        Dtype::F32 => v,
        Dtype::Bf16 => {
            let u = _mm256_castps_si256(v);
            let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(u), _mm256_set1_epi32(1));
            let t = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), odd);
            _mm256_castsi256_ps(_mm256_and_si256(t, _mm256_set1_epi32(-0x1_0000)))
        }
        // F16C takes only the 3-bit rounding field (0 = nearest even).
        Dtype::F16 => _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)),
    }
}

/// [`chain16`] with 8 lanes (AVX2): results go to `out[m * 8 + lane]`.
///
/// # Safety
/// As [`chain16`], with AVX2+FMA+F16C available, 8 offsets and `sb` lane-major over 8.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn chain8<T: Element, const BITS: u32, const MB: usize>(
    base: *const u32,
    offsets: &[i32; 8],
    sb: &[f32],
    groups: usize,
    gs: usize,
    xs: &[&[f32]],
    out: &mut [f32],
) {
    let vpw = (32 / BITS) as usize;
    let wpg = gs / vpw;
    let idx = _mm256_loadu_si256(offsets.as_ptr().cast());
    let maskv = _mm256_set1_epi32(((1u32 << BITS) - 1) as i32);
    let shift = _mm_cvtsi32_si128(BITS as i32);
    let xp: [*const f32; MB] = core::array::from_fn(|m| xs[m].as_ptr());
    let mut acc = [_mm256_setzero_ps(); MB];
    let sp = sb.as_ptr();
    let bp = sp.add(groups * 8);
    let mut k = 0usize;
    for g in 0..groups {
        let s = _mm256_loadu_ps(sp.add(g * 8));
        let b = _mm256_loadu_ps(bp.add(g * 8));
        for wi in 0..wpg {
            let mut word = _mm256_i32gather_epi32::<4>(base.add(g * wpg + wi).cast(), idx);
            for _ in 0..vpw {
                let q = _mm256_cvtepi32_ps(_mm256_and_si256(word, maskv));
                word = _mm256_srl_epi32(word, shift);
                let w = round8::<T>(_mm256_add_ps(round8::<T>(_mm256_mul_ps(s, q)), b));
                for m in 0..MB {
                    let x = _mm256_set1_ps(*xp[m].add(k));
                    let p = round8::<T>(_mm256_mul_ps(x, w));
                    acc[m] = round8::<T>(_mm256_add_ps(acc[m], p));
                }
                k += 1;
            }
        }
    }
    for (m, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(m * 8), *a);
    }
}
