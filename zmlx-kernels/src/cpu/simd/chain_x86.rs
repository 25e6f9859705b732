//! x86_64 kernels of MLX's sequential quantized-matmul chain (see `cpu/chain.rs`).
//!
//! The chain of one output is sequential in k, so the vector lanes run different
//! output rows side by side: lane `l` owns weight row `row0 + l` and walks k in order.
//! AVX-512: the words of 16 rows come 16 per row at a time (one 64-byte load per row)
//! and are transposed in registers so that one vector holds word `w` of every row; AVX2
//! fetches the words of all lanes at one k with one gather (the rows are `wpr` words
//! apart). Scales and biases come pre-widened in lane-major order. Every intermediate
//! is rounded to the activation dtype `T` exactly where MLX rounds it; for bf16 with
//! AVX512_BF16 the rounding is the hardware's (`chain16_bf16`) when the caller's
//! denormal guard allows it, the integer form otherwise.
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

/// The 16 values a 4-bit (or 2-bit, repeated) code can take, as f32: `vpermps` indexes
/// it with the low 4 bits of each lane, so `q = table[word & 15]` is one instruction
/// where `and` + `vcvtdq2ps` were two. Unused (zero) for 8 bits.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn q_table<const BITS: u32>() -> __m512 {
    let mask = if BITS < 8 { (1u32 << BITS) - 1 } else { 0 };
    let t: [f32; 16] = core::array::from_fn(|i| (i as u32 & mask) as f32);
    _mm512_loadu_ps(t.as_ptr())
}

/// The low `BITS` bits of each lane as f32 (`table` from [`q_table`]).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn unpack16<const BITS: u32>(word: __m512i, table: __m512, maskv: __m512i) -> __m512 {
    if BITS <= 4 {
        _mm512_permutexvar_ps(word, table)
    } else {
        _mm512_cvtepi32_ps(_mm512_and_si512(word, maskv))
    }
}

/// Loads words `w0..w0 + nw` (`nw <= 16`) of the 16 rows at `base + offsets[l]` and
/// transposes them: `out[j]` holds word `w0 + j` of every row, lane `l` = row `l`.
///
/// One 64-byte load per row (masked when `nw < 16`, so nothing past the row is read)
/// and a 16x16 transpose of 64 shuffles replace 16 `vpgatherdd`: on Zen 4 a gather of
/// 16 words from 16 rows costs far more than the 4 shuffles per word here (measured:
/// the gathers were a quarter of the chain's time).
///
/// # Safety
/// AVX-512F; `base + offsets[l] + w0 + nw` in bounds for every lane.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_transposed(
    base: *const u32,
    offsets: &[i32],
    w0: usize,
    nw: usize,
    out: &mut [__m512i; 16],
) {
    let mask: __mmask16 = if nw >= 16 { 0xFFFF } else { (1u16 << nw) - 1 };
    let r: [__m512i; 16] = core::array::from_fn(|l| {
        _mm512_maskz_loadu_epi32(mask, base.add(offsets[l] as usize + w0).cast())
    });
    transpose16(&r, out);
}

/// The 16x16 dword transpose of `r` into `out`: `out[j]` lane `l` = `r[l]` lane `j`
/// (64 shuffles).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: &[__m512i; 16], out: &mut [__m512i; 16]) {
    // Within each 128-bit lane: 2x2 blocks of dwords, then of qwords.
    let t: [__m512i; 16] = core::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i & 1 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    // u[4i + c], 128-bit lane L: word 4L + c of rows 4i..4i + 4.
    let u: [__m512i; 16] = core::array::from_fn(|j| {
        let (i, c) = (j / 4, j % 4);
        let (a, b) = (t[4 * i + (c >> 1)], t[4 * i + 2 + (c >> 1)]);
        if c & 1 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    // 4x4 transpose of 128-bit lanes across u[c], u[4 + c], u[8 + c], u[12 + c].
    for c in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_i32x4::<0xEE>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_i32x4::<0xEE>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        out[4 + c] = _mm512_shuffle_i32x4::<0xDD>(v0, v2);
        out[8 + c] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        out[12 + c] = _mm512_shuffle_i32x4::<0xDD>(v1, v3);
    }
}

/// Rounds every vector of `v` to `T` and back with [`round16`] (`_widen` unused: the
/// signature of [`round_bf16_hw`]).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn round_each<T: Element>(v: &mut [__m512], _widen: [__m512i; 2]) {
    for x in v {
        *x = round16::<T>(*x);
    }
}

/// The scales and biases of one 16-row block, bf16 widened to f32 (exact), in the
/// lane-major layout the chain reads: `sb[g * 16 + l]` = scale of group `g` of row
/// `rows[l]`, `sb[(gpr + g) * 16 + l]` its bias. Returns whether any value is `tiny`
/// (nonzero with `|v|` bits below `guard`, the denormal guard of `cpu/chain.rs`). The
/// same values as widening one by one: per 16 groups of 16 rows, 16 loads, 16
/// zero-extensions and shifts, one transpose and 16 stores instead of 512 scalar steps.
///
/// # Safety
/// AVX-512F; `sb` holds `2 * gpr * 16` values; every `rows[l] * gpr + gpr` is within
/// `scales` and `biases`.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn widen_bf16_block(
    scales: &[u16],
    biases: &[u16],
    rows: &[usize; 16],
    gpr: usize,
    guard: u32,
    sb: &mut [f32],
) -> bool {
    debug_assert!(sb.len() >= 2 * gpr * 16);
    let abs = _mm512_set1_epi32(0x7FFF_FFFF);
    let guard = _mm512_set1_epi32(guard as i32);
    let mut tiny: __mmask16 = 0;
    let mut t = [_mm512_setzero_si512(); 16];
    for (src, first) in [(scales, 0), (biases, gpr)] {
        let mut g0 = 0;
        while g0 < gpr {
            let nw = (gpr - g0).min(16);
            let r: [__m512i; 16] = core::array::from_fn(|l| {
                let at = rows[l] * gpr + g0;
                // A partial chunk goes through a zeroed copy (no read past the row).
                let h = if nw == 16 {
                    _mm256_loadu_si256(src.as_ptr().add(at).cast())
                } else {
                    let mut tmp = [0u16; 16];
                    tmp[..nw].copy_from_slice(&src[at..at + nw]);
                    _mm256_loadu_si256(tmp.as_ptr().cast())
                };
                _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h))
            });
            for v in &r {
                let a = _mm512_and_si512(*v, abs);
                tiny |= _mm512_mask_cmplt_epu32_mask(_mm512_test_epi32_mask(a, a), a, guard);
            }
            transpose16(&r, &mut t);
            for (j, v) in t.iter().enumerate().take(nw) {
                _mm512_storeu_si512(sb.as_mut_ptr().add((first + g0 + j) * 16).cast(), *v);
            }
            g0 += 16;
        }
    }
    tiny != 0
}

/// Words `w0..w0 + nw` of every block's 16 rows, transposed (`words[b][j]` = word
/// `w0 + j` of block `b`'s rows, see [`load_transposed`]). The next chunk's
/// prefetches are the caller's, spread over the chunk ([`prefetch_part`]).
///
/// # Safety
/// As [`load_transposed`] for each block; `offsets` has `16 * words.len()` entries.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_blocks(
    base: *const u32,
    offsets: &[i32],
    w0: usize,
    nw: usize,
    words: &mut [[__m512i; 16]],
) {
    for (b, wb) in words.iter_mut().enumerate() {
        load_transposed(base, &offsets[16 * b..16 * b + 16], w0, nw, wb);
    }
}

/// Part `j` of 16 of the next chunk's prefetches, issued at word `j` of the current
/// chunk: for a sixteenth of the rows, both cache lines that the 64 bytes from word
/// `w` may span (rows need not start on a line: a large malloc'd buffer starts 16
/// bytes into a page). A chunk takes thousands of cycles, enough to hide a DRAM miss,
/// and the rows are too many streams for the hardware prefetcher. All 128 lines of
/// four blocks at once, before the chunk's loads, stalled those loads (profile);
/// spread this way the lm_head and expert benches ran ~10% faster (notebook.md,
/// 2026-11-26 17:55). Prefetches past the buffer are harmless.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn prefetch_part(base: *const u32, offsets: &[i32], w: usize, j: usize) {
    let part = offsets.len().div_ceil(16);
    let lo = (j * part).min(offsets.len());
    let hi = ((j + 1) * part).min(offsets.len());
    for &o in &offsets[lo..hi] {
        let next = base.wrapping_add(o as usize + w);
        _mm_prefetch::<_MM_HINT_T0>(next.cast());
        _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(15).cast());
    }
}

/// The walk over the packed words that every AVX-512 chain form shares: chunks of 16
/// words of every block loaded and transposed ([`load_blocks`]), the next chunk's
/// prefetches spread over the chunk ([`prefetch_part`]), `$on_group` at the first word
/// of each quantization group (with `$g` the group), and `$on_step` once per k in
/// order, with `$q` the codes of that k as f32 (`[__m512; R]`, lane = row) and `$k`
/// its index.
macro_rules! chain16_steps {
    ($BITS:ident, $R:ident, ($base:ident, $offsets:ident, $groups:ident, $gs:ident),
     |$g:ident| $on_group:block,
     |$q:ident, $k:ident| $on_step:block) => {{
        let vpw = (32 / $BITS) as usize;
        let wpg = $gs / vpw;
        let wpr = $groups * wpg;
        let maskv = _mm512_set1_epi32(((1u32 << $BITS) - 1) as i32);
        let table = q_table::<$BITS>();
        let shift = _mm_cvtsi32_si128($BITS as i32);
        let mut words = [[_mm512_setzero_si512(); 16]; $R];
        let mut $k = 0usize;
        let mut w0 = 0usize;
        while w0 < wpr {
            let nw = (wpr - w0).min(16);
            load_blocks($base, $offsets, w0, nw, &mut words);
            for j in 0..nw {
                prefetch_part($base, $offsets, w0 + 16, j);
                let wi = w0 + j;
                if wi.is_multiple_of(wpg) {
                    let $g = wi / wpg;
                    $on_group
                }
                let mut word: [__m512i; $R] = core::array::from_fn(|b| words[b][j]);
                for _ in 0..vpw {
                    let $q: [__m512; $R] =
                        core::array::from_fn(|b| unpack16::<$BITS>(word[b], table, maskv));
                    for wd in &mut word {
                        *wd = _mm512_srl_epi32(*wd, shift);
                    }
                    $on_step
                    $k += 1;
                }
            }
            w0 += nw;
        }
    }};
}

/// The widened scales (`.0`) or biases (`.1`) of group `g` of each of `R` blocks, from
/// the lane-major `sb` of [`widen_bf16_block`] (`blk` values a block).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn group_values<const R: usize>(
    sb: *const f32,
    blk: usize,
    groups: usize,
    g: usize,
) -> ([__m512; R], [__m512; R]) {
    (
        core::array::from_fn(|b| _mm512_loadu_ps(sb.add(b * blk + g * 16))),
        core::array::from_fn(|b| _mm512_loadu_ps(sb.add(b * blk + (groups + g) * 16))),
    )
}

/// Stores the accumulators of `MB` activation rows x `R` blocks: `out[(m * R + b) *
/// 16 + lane]`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_acc<const MB: usize, const R: usize>(acc: &[[__m512; R]; MB], out: &mut [f32]) {
    debug_assert!(out.len() >= MB * R * 16);
    for (m, row) in acc.iter().enumerate() {
        for (b, a) in row.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add((m * R + b) * 16), *a);
        }
    }
}

/// The body of [`chain16`] and [`chain16_bf16`], which differ only in how they round
/// (`$round(&mut [__m512], widen)`) and in the instructions they may use.
macro_rules! chain16_body {
    ($BITS:ident, $MB:ident, $R:ident, $round:expr,
     ($base:ident, $offsets:ident, $sb:ident, $groups:ident, $gs:ident, $xs:ident, $out:ident),
     $widen:expr) => {{
        let widen: [__m512i; 2] = $widen;
        let xp: [*const f32; $MB] = core::array::from_fn(|m| $xs[m].as_ptr());
        let mut acc = [[_mm512_setzero_ps(); $R]; $MB];
        let blk = 2 * $groups * 16;
        let mut s = [_mm512_setzero_ps(); $R];
        let mut bias = [_mm512_setzero_ps(); $R];
        chain16_steps!(
            $BITS,
            $R,
            ($base, $offsets, $groups, $gs),
            |g| {
                (s, bias) = group_values::<$R>($sb.as_ptr(), blk, $groups, g);
            },
            |q, k| {
                // w = T(T(scale * q) + bias): MLX dequantizes in T, without an FMA.
                let mut w: [__m512; $R] = core::array::from_fn(|b| _mm512_mul_ps(s[b], q[b]));
                $round(&mut w, widen);
                for (wv, bv) in w.iter_mut().zip(&bias) {
                    *wv = _mm512_add_ps(*wv, *bv);
                }
                $round(&mut w, widen);
                // p = T(x * w); acc = T(acc + p).
                let mut p = [[_mm512_setzero_ps(); $R]; $MB];
                for (m, pm) in p.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*xp[m].add(k));
                    for (pv, wv) in pm.iter_mut().zip(&w) {
                        *pv = _mm512_mul_ps(x, *wv);
                    }
                }
                $round(p.as_flattened_mut(), widen);
                for (am, pm) in acc.iter_mut().zip(&p) {
                    for (av, pv) in am.iter_mut().zip(pm) {
                        *av = _mm512_add_ps(*av, *pv);
                    }
                }
                $round(acc.as_flattened_mut(), widen);
            }
        );
        store_acc(&acc, $out);
    }};
}

/// `R` blocks of 16 output rows x `MB` activation rows of the chain; results go to
/// `out[(m * R + blk) * 16 + lane]`. The `R * MB` accumulator chains are independent,
/// which hides the latency of each chain's add-and-round steps. Words come 16 per row
/// at a time through [`load_transposed`].
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
    chain16_body!(
        BITS,
        MB,
        R,
        round_each::<T>,
        (base, offsets, sb, groups, gs, xs, out),
        [_mm512_setzero_si512(); 2]
    )
}

/// `vpermw` indices that widen packed bf16 words back to f32 lanes: lane `i` takes
/// word `i` (first table) or `16 + i` (second) into its high half; its low half is
/// zeroed by [`widen_words`]'s mask (the index there, 32, is never used).
const WIDEN: [[u16; 32]; 2] = {
    let mut t = [[32u16; 32]; 2];
    let mut i = 0;
    while i < 16 {
        t[0][2 * i + 1] = i as u16;
        t[1][2 * i + 1] = 16 + i as u16;
        i += 1;
    }
    t
};

/// Rounds every vector of `v` to bf16 and back with the hardware conversion, two
/// vectors per `vcvtne2ps2bf16` and one masked `vpermw` per vector to widen (an odd count ends
/// with a one-vector `vcvtneps2bf16`).
///
/// `vcvtne2ps2bf16` rounds to nearest even like the integer form in [`round16`] for
/// every input except f32 denormals, which it reads as zero (measured: 0x00018000 ->
/// 0x0000 where MLX gives 0x0002). Callers only use it where no denormal can occur (the
/// guard in `cpu/chain.rs`). Infinities and overflow to infinity round alike. NaN: the
/// hardware keeps the sign and top 16 bits (quieted); the integer form gives the same
/// bits whenever the low 16 bits are zero, which holds for every NaN the chain can make
/// from bf16, f32-widened inputs (input NaNs propagate with their zero low half, new
/// ones are the default 0xFFC00000). Both differ from MLX's canonical 0x7FC0 the same
/// way (`notes/cpu-kernels.md`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn round_bf16_hw(v: &mut [__m512], widen: [__m512i; 2]) {
    let mut i = 0;
    while i + 1 < v.len() {
        // Words 0..16 hold v[i], words 16..32 hold v[i + 1].
        let packed: __m512i = core::mem::transmute(_mm512_cvtne2ps_pbh(v[i + 1], v[i]));
        v[i] = widen_words(packed, widen[0]);
        v[i + 1] = widen_words(packed, widen[1]);
        i += 2;
    }
    if i < v.len() {
        let half: __m256i = core::mem::transmute(_mm512_cvtneps_pbh(v[i]));
        let packed = _mm512_castsi256_si512(half);
        v[i] = widen_words(packed, widen[0]);
    }
}

/// The words of `packed` that `idx` ([`WIDEN`]) names, each in the high half of a
/// dword with a zero low half: the f32 values of those bf16 words. One `vpermw` with
/// a zeroing mask on the low halves, written out because LLVM compiles the
/// zero-masked intrinsic into `vpermw` plus `vpandq`; `vpermt2w` with a zero operand
/// (the form before) reads three registers and cost ~15% of a chain step in
/// `benches/exact_chain_floor.rs`'s measurements.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn widen_words(packed: __m512i, idx: __m512i) -> __m512 {
    let out: __m512i;
    // SAFETY: AVX512BW is enabled for this function (callers check it); register
    // operands only, no memory or stack access.
    core::arch::asm!(
        "vpermw {out}{{{k}}}{{z}}, {idx}, {src}",
        out = lateout(zmm_reg) out,
        k = in(kreg) 0xAAAA_AAAAu32,
        idx = in(zmm_reg) idx,
        src = in(zmm_reg) packed,
        options(pure, nomem, nostack),
    );
    _mm512_castsi512_ps(out)
}

/// [`chain16`] for bf16 activations with the hardware rounding of [`round_bf16_hw`]:
/// about 12 vector operations per 16 weight elements instead of about 23.
///
/// Exact (bit-identical to [`chain16`]) only when no f32 denormal occurs anywhere in
/// the chain; `cpu/chain.rs` checks a sufficient condition before calling it.
///
/// # Safety
/// As [`chain16`], with AVX512BW and AVX512_BF16 available too.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn chain16_bf16<const BITS: u32, const MB: usize, const R: usize>(
    base: *const u32,
    offsets: &[i32],
    sb: &[f32],
    groups: usize,
    gs: usize,
    xs: &[&[f32]],
    out: &mut [f32],
) {
    chain16_body!(
        BITS,
        MB,
        R,
        round_bf16_hw,
        (base, offsets, sb, groups, gs, xs, out),
        [
            _mm512_loadu_si512(WIDEN[0].as_ptr().cast()),
            _mm512_loadu_si512(WIDEN[1].as_ptr().cast()),
        ]
    )
}

/// `65537 = 2^16 + 1`: multiplying by it is the first step of splitting an f32 into its
/// leading 8 significant bits ([`chain16_bf16_split`]).
const SPLIT_FACTOR: f32 = 65537.0;

/// Defines the two roundings of the split forms for one vector type (the AVX-512 and
/// the AVX2 chains use the same arithmetic on 16 or 8 lanes):
///
/// - `$round(v)`, `T(v)` for bf16 in three floating-point operations: `c = fl(v *
///   65537)`, `d = c - v`, `c - d`. This is Veltkamp's splitting of an f32 at 16 bits,
///   whose high part is `v` rounded to 8 significant bits, to nearest even. Checked on
///   every f32 (the unit test below): exact for zero and for every normal `v` below
///   2^111 in magnitude; NaN from 2^112 up and for infinities and NaN (`c`
///   overflows); one or the other in between. Denormal `v` round wrongly (the guard
///   in `cpu/chain.rs` keeps them out). `c` is a plain multiply: `v * 65537` and the
///   fused `v * 65536 + v` round the same exact value once, and the multiply needs no
///   copy of `v` (an FMA overwrites an operand).
/// - `$product(a, a65537, b)`, `T(a * b)` for bf16-valued `a`, `b`, with `a65537 = a *
///   65537`: the product is exact in f32 (8 x 8 significant bits), so `$round`'s `c` is
///   one multiply, and `e = a * b - c` (one fused multiply-subtract) is its `-d`: `c +
///   e`. `a65537` is exact too (8 significant bits times `2^16 + 1` need 24), and
///   computed once per `a`.
macro_rules! split_roundings {
    ($features:literal, $v:ty, $set1:ident, $mul:ident, $add:ident, $sub:ident,
     $fmsub:ident, $round:ident, $product:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $round(v: $v) -> $v {
            let c = $mul(v, $set1(SPLIT_FACTOR));
            $sub(c, $sub(c, v))
        }

        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $product(a: $v, a65537: $v, b: $v) -> $v {
            let c = $mul(a65537, b);
            $add(c, $fmsub(a, b, c))
        }
    };
}

split_roundings!(
    "avx512f",
    __m512,
    _mm512_set1_ps,
    _mm512_mul_ps,
    _mm512_add_ps,
    _mm512_sub_ps,
    _mm512_fmsub_ps,
    round_split,
    round_product_split
);
split_roundings!(
    "avx2,fma",
    __m256,
    _mm256_set1_ps,
    _mm256_mul_ps,
    _mm256_add_ps,
    _mm256_sub_ps,
    _mm256_fmsub_ps,
    round_split8,
    round_product_split8
);

/// [`chain16`] for bf16 activations with every rounding done by Veltkamp splitting in
/// f32 arithmetic ([`round_split`], [`round_product_split`]): 16 vector operations per
/// 16 weight elements, none of them a shuffle, against [`chain16_bf16`]'s 10 plus two
/// `vcvtne2ps2bf16`, which cost about 2.2 cycles each on the Intel Xeon measured here.
/// Needs only AVX-512F.
///
/// Exact (bit-identical to [`chain16`]) when no f32 denormal occurs in the chain (the
/// caller's guard, as for [`chain16_bf16`]) and no intermediate reaches 2^111 in
/// magnitude. Otherwise a rounding may give NaN instead (never a wrong finite value),
/// as do infinities and NaN; NaN is sticky in the accumulator, so the caller recomputes
/// every block whose output holds a NaN with [`chain16`].
///
/// # Safety
/// As [`chain16`]; the scales, biases and activations are bf16 values widened to f32.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn chain16_bf16_split<const BITS: u32, const MB: usize, const R: usize>(
    base: *const u32,
    offsets: &[i32],
    sb: &[f32],
    groups: usize,
    gs: usize,
    xs: &[&[f32]],
    out: &mut [f32],
) {
    let split = _mm512_set1_ps(SPLIT_FACTOR);
    let xp: [*const f32; MB] = core::array::from_fn(|m| xs[m].as_ptr());
    let mut acc = [[_mm512_setzero_ps(); R]; MB];
    let blk = 2 * groups * 16;
    let mut s = [_mm512_setzero_ps(); R];
    let mut s65537 = [_mm512_setzero_ps(); R];
    let mut bias = [_mm512_setzero_ps(); R];
    chain16_steps!(
        BITS,
        R,
        (base, offsets, groups, gs),
        |g| {
            (s, bias) = group_values::<R>(sb.as_ptr(), blk, groups, g);
            s65537 = core::array::from_fn(|b| _mm512_mul_ps(s[b], split));
        },
        |q, k| {
            // w = T(T(scale * q) + bias).
            let w: [__m512; R] = core::array::from_fn(|b| {
                let sq = round_product_split(s[b], s65537[b], q[b]);
                round_split(_mm512_add_ps(sq, bias[b]))
            });
            // p = T(x * w); acc = T(acc + p).
            for (m, am) in acc.iter_mut().enumerate() {
                let xv = *xp[m].add(k);
                let (x, x65537) = (_mm512_set1_ps(xv), _mm512_set1_ps(xv * SPLIT_FACTOR));
                for (av, wv) in am.iter_mut().zip(&w) {
                    let p = round_product_split(x, x65537, *wv);
                    *av = round_split(_mm512_add_ps(*av, p));
                }
            }
        }
    );
    store_acc(&acc, out);
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

/// [`chain16`] with 8 lanes (AVX2): results go to `out[m * 8 + lane]`. With `SPLIT`
/// (bf16 only) every rounding is [`chain16_bf16_split`]'s, under the same conditions
/// (the caller's denormal guard, and a rerun without `SPLIT` when an output is NaN);
/// without it, [`round8`]'s.
///
/// # Safety
/// As [`chain16`], with AVX2+FMA+F16C available, 8 offsets and `sb` lane-major over 8;
/// with `SPLIT`, `T` is bf16.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn chain8<T: Element, const BITS: u32, const MB: usize, const SPLIT: bool>(
    base: *const u32,
    offsets: &[i32; 8],
    sb: &[f32],
    groups: usize,
    gs: usize,
    xs: &[&[f32]],
    out: &mut [f32],
) {
    debug_assert!(!SPLIT || T::DTYPE == Dtype::Bf16);
    let vpw = (32 / BITS) as usize;
    let wpg = gs / vpw;
    let idx = _mm256_loadu_si256(offsets.as_ptr().cast());
    let maskv = _mm256_set1_epi32(((1u32 << BITS) - 1) as i32);
    let shift = _mm_cvtsi32_si128(BITS as i32);
    let split = _mm256_set1_ps(SPLIT_FACTOR);
    let xp: [*const f32; MB] = core::array::from_fn(|m| xs[m].as_ptr());
    let mut acc = [_mm256_setzero_ps(); MB];
    let sp = sb.as_ptr();
    let bp = sp.add(groups * 8);
    let mut k = 0usize;
    for g in 0..groups {
        let s = _mm256_loadu_ps(sp.add(g * 8));
        let s65537 = _mm256_mul_ps(s, split);
        let b = _mm256_loadu_ps(bp.add(g * 8));
        for wi in 0..wpg {
            let mut word = _mm256_i32gather_epi32::<4>(base.add(g * wpg + wi).cast(), idx);
            for _ in 0..vpw {
                let q = _mm256_cvtepi32_ps(_mm256_and_si256(word, maskv));
                word = _mm256_srl_epi32(word, shift);
                let w = if SPLIT {
                    round_split8(_mm256_add_ps(round_product_split8(s, s65537, q), b))
                } else {
                    round8::<T>(_mm256_add_ps(round8::<T>(_mm256_mul_ps(s, q)), b))
                };
                for (m, am) in acc.iter_mut().enumerate() {
                    let xv = *xp[m].add(k);
                    let x = _mm256_set1_ps(xv);
                    *am = if SPLIT {
                        let p = round_product_split8(x, _mm256_set1_ps(xv * SPLIT_FACTOR), w);
                        round_split8(_mm256_add_ps(*am, p))
                    } else {
                        round8::<T>(_mm256_add_ps(*am, round8::<T>(_mm256_mul_ps(x, w))))
                    };
                }
                k += 1;
            }
        }
    }
    for (m, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(m * 8), *a);
    }
}

/// Where each lane of [`chain16_bf16_dp`]'s accumulators ends up: `DP_LAYOUT[v][l]`
/// is `16 * j + r` for accumulator vector `v` (0 = even, 1 = odd) of a block pair,
/// lane `l`, holding row `r` of the pair's block `j`.
///
/// Each stage of the kernel packs two vectors `lo`, `hi` into bf16 words
/// `[lo, hi]` (`vcvtne2ps2bf16`) and `vdpbf16ps` with a one-word selector takes the
/// even (or odd) word of each lane pair: lane `l` gets `lo[2l]` (`l < 8`) or
/// `hi[2(l - 8)]`. Three stages (bias, activation, accumulator) compose this split.
const DP_LAYOUT: [[u8; 16]; 2] = {
    let mut v = [[0u8; 16]; 2];
    let mut lo = [0u8; 16];
    let mut hi = [0u8; 16];
    let mut r = 0;
    while r < 16 {
        lo[r] = r as u8;
        hi[r] = 16 + r as u8;
        r += 1;
    }
    let mut stage = 0;
    while stage < 3 {
        let mut e = [0u8; 16];
        let mut o = [0u8; 16];
        let mut l = 0;
        while l < 16 {
            if l < 8 {
                e[l] = lo[2 * l];
                o[l] = lo[2 * l + 1];
            } else {
                e[l] = hi[2 * (l - 8)];
                o[l] = hi[2 * (l - 8) + 1];
            }
            l += 1;
        }
        lo = e;
        hi = o;
        stage += 1;
    }
    v[0] = lo;
    v[1] = hi;
    v
};

/// Lane indices of `vpermt2ps` that split a block pair (`a`, `b`) into its even and
/// odd stage-one halves (see [`DP_LAYOUT`]).
const DP_SPLIT: [[i32; 16]; 2] = {
    let mut t = [[0i32; 16]; 2];
    let mut l = 0;
    while l < 16 {
        let base = if l < 8 { 2 * l } else { 16 + 2 * (l - 8) };
        t[0][l] = base as i32;
        t[1][l] = base as i32 + 1;
        l += 1;
    }
    t
};

/// [`chain16_bf16`] with fewer widenings: each rounded value stays packed as bf16 and
/// `vdpbf16ps` consumes it directly (one bf16 product, exact in f32, plus the
/// accumulator, rounded once; the selector's zero word adds an exact zero). This
/// covers `T(scale * q) + bias`, `x * w` and `acc + T(p)`; lanes move between rows at
/// each stage by a fixed permutation ([`DP_LAYOUT`]), undone at the store. About 9
/// vector operations per 16 weight elements instead of 12.
///
/// Exact under the conditions of [`chain16_bf16`] and when no infinity or NaN occurs:
/// `vdpbf16ps` multiplies the unselected word by zero, and `inf * 0` would put a NaN
/// into the neighbouring row. Such a NaN sticks in the accumulator, so the caller
/// recomputes any block whose output holds a NaN with [`chain16_bf16`].
///
/// # Safety
/// As [`chain16`], with AVX512BW and AVX512_BF16 available; `R` even.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
// `p` and `m` index the pair and row arrays of several values at once.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub(crate) unsafe fn chain16_bf16_dp<const BITS: u32, const MB: usize, const R: usize>(
    base: *const u32,
    offsets: &[i32],
    sb: &[f32],
    groups: usize,
    gs: usize,
    xs: &[&[f32]],
    out: &mut [f32],
) {
    debug_assert!(R.is_multiple_of(2));
    let widen: [__m512i; 2] = [
        _mm512_loadu_si512(WIDEN[0].as_ptr().cast()),
        _mm512_loadu_si512(WIDEN[1].as_ptr().cast()),
    ];
    let split: [__m512i; 2] = [
        _mm512_loadu_si512(DP_SPLIT[0].as_ptr().cast()),
        _mm512_loadu_si512(DP_SPLIT[1].as_ptr().cast()),
    ];
    // bf16 1.0 in the even (low) or the odd (high) word of every dword.
    let one: [__m512bh; 2] = [
        core::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x0000_3F80)),
        core::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(0x3F80_0000u32 as i32)),
    ];
    let xp: [*const f32; MB] = core::array::from_fn(|m| xs[m].as_ptr());
    // Per activation row and block pair: the even and odd accumulator vectors.
    let mut acc = [[[_mm512_setzero_ps(); 2]; 4]; MB];
    let blk = 2 * groups * 16;
    let mut s = [_mm512_setzero_ps(); R];
    let mut bias = [[_mm512_setzero_ps(); 2]; 4];
    let pairs = R / 2;
    chain16_steps!(
        BITS,
        R,
        (base, offsets, groups, gs),
        |g| {
            let b: [__m512; R];
            (s, b) = group_values::<R>(sb.as_ptr(), blk, groups, g);
            for (p, bp) in bias.iter_mut().enumerate().take(pairs) {
                bp[0] = _mm512_permutex2var_ps(b[2 * p], split[0], b[2 * p + 1]);
                bp[1] = _mm512_permutex2var_ps(b[2 * p], split[1], b[2 * p + 1]);
            }
        },
        |q, k| {
            let sq: [__m512; R] = core::array::from_fn(|b| _mm512_mul_ps(s[b], q[b]));
            let xw: [[__m512bh; 2]; MB] = core::array::from_fn(|m| {
                let bits = (*xp[m].add(k)).to_bits() >> 16;
                [
                    core::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(bits as i32)),
                    core::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        (bits << 16) as i32,
                    )),
                ]
            });
            for p in 0..pairs {
                // t = T(scale * q) + bias, w = T(t): packed, never widened.
                let sqp = _mm512_cvtne2ps_pbh(sq[2 * p + 1], sq[2 * p]);
                let te = _mm512_dpbf16_ps(bias[p][0], sqp, one[0]);
                let to = _mm512_dpbf16_ps(bias[p][1], sqp, one[1]);
                let wp = _mm512_cvtne2ps_pbh(to, te);
                for m in 0..MB {
                    // p = x * w, then acc + T(p).
                    let pe = _mm512_dpbf16_ps(_mm512_setzero_ps(), wp, xw[m][0]);
                    let po = _mm512_dpbf16_ps(_mm512_setzero_ps(), wp, xw[m][1]);
                    let pp = _mm512_cvtne2ps_pbh(po, pe);
                    acc[m][p][0] = _mm512_dpbf16_ps(acc[m][p][0], pp, one[0]);
                    acc[m][p][1] = _mm512_dpbf16_ps(acc[m][p][1], pp, one[1]);
                }
            }
            for am in acc.iter_mut() {
                round_bf16_hw(am[..pairs].as_flattened_mut(), widen);
            }
        }
    );
    let mut lanes = [0f32; 16];
    for (m, am) in acc.iter().enumerate() {
        for (p, ap) in am.iter().enumerate().take(pairs) {
            for (v, av) in ap.iter().enumerate() {
                _mm512_storeu_ps(lanes.as_mut_ptr(), *av);
                for (l, &label) in DP_LAYOUT[v].iter().enumerate() {
                    let (jb, r) = (label as usize / 16, label as usize % 16);
                    out[(m * R + 2 * p + jb) * 16 + r] = lanes[l];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer round-to-nearest-even of [`round16`] on one bit pattern.
    fn rne_bits(u: u32) -> u32 {
        (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF_0000
    }

    /// Splits the 16 patterns `first..first + 16` of one sign with [`round_split`].
    fn split16(first: u32) -> [u32; 16] {
        let v: [u32; 16] = core::array::from_fn(|l| first + l as u32);
        let mut out = [0u32; 16];
        // SAFETY: callers checked AVX-512F; both arrays hold 16 lanes.
        unsafe {
            let r = round_split(_mm512_loadu_ps(v.as_ptr().cast()));
            _mm512_storeu_ps(out.as_mut_ptr().cast(), r);
        }
        out
    }

    /// [`round_split`] on every zero, normal and infinite f32 and on NaN, both signs
    /// (about 4.3 billion values): the integer rounding below 2^111 in magnitude, NaN
    /// from 2^112 up, one or the other in between (where `c` may overflow). That is the
    /// contract the split kernel's callers rely on: a result is exact or NaN
    /// (denormals are kept out by the guard and not checked).
    #[test]
    fn round_split_is_rne_or_nan() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512F");
            return;
        }
        const NORMAL_MIN: u32 = 0x0080_0000;
        const EXACT_BELOW: u32 = (127 + 111) << 23;
        const NAN_FROM: u32 = (127 + 112) << 23;
        for sign in [0u32, 0x8000_0000] {
            assert_eq!(split16(sign)[0], sign, "zero of sign {sign:#x}");
            let mut first = NORMAL_MIN;
            while first < 0x8000_0000 {
                for (l, &g) in split16(sign | first).iter().enumerate() {
                    let a = first + l as u32;
                    let u = sign | a;
                    let nan = f32::from_bits(g).is_nan();
                    match a {
                        _ if a < EXACT_BELOW => assert_eq!(g, rne_bits(u), "{u:#010x}"),
                        _ if a >= NAN_FROM => assert!(nan, "{u:#010x} gave {g:#010x}"),
                        _ => assert!(nan || g == rne_bits(u), "{u:#010x} gave {g:#010x}"),
                    }
                }
                first += 16;
            }
        }
    }
}
