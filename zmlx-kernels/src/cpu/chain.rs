//! Quantized matmul with MLX's CPU arithmetic, bit for bit.
//!
//! MLX's CPU `quantized_matmul` / `gather_qmm` (affine, `transpose = true`) compute
//! each output `y[m, n]` with ONE accumulator in the activation dtype `T`, in k order:
//!
//! ```text
//! acc = 0
//! for k in 0..K:                      g = k / group_size
//!     w   = T(T(scale[n, g] * q[n, k]) + bias[n, g])
//!     p   = T(x[m, k] * w)
//!     acc = T(acc + p)
//! y[m, n] = acc
//! ```
//!
//! where `T(v)` rounds the f32 result `v` to `T` (round to nearest even; the identity
//! for f32, where the arithmetic is plain f32 without fused multiply-adds). This was
//! established by experiment against the MLX 0.32.4 CPU wheel and is checked by
//! `tests/fused_vs_reference.rs` through MLX itself.
//!
//! Because each chain is sequential, the vector kernels parallelise across output rows
//! (16 lanes with AVX-512F, 8 with AVX2), see `simd/chain_x86.rs`; the portable path
//! walks one row at a time. Each weight row is read from memory once per call: blocks
//! of rows stay in L1/L2 while every activation row is run against them.

#[cfg(target_arch = "x86_64")]
use super::dtype::Dtype;
use super::dtype::Element;
use super::mlx_math::round_to;
#[cfg(target_arch = "aarch64")]
use super::simd::chain_neon;
#[cfg(target_arch = "x86_64")]
use super::simd::{chain_x86, SimdLevel::*};
use super::simd::{Bf16Decode, SimdLevel};
use super::weights::QuantView;

/// Runs MLX's chain for weight rows `n0..n0 + nrows` of expert `e` against every
/// activation row in `xs` (each `K` values, widened exactly from `T`), and reports
/// `sink(activation index, row offset, value)`; `value` is representable in `T`.
/// `bf16` picks the AVX-512 bf16 decode kernel (same bits either way).
///
/// Callers keep `e < E`, `n0 + nrows <= N` and every `xs[i].len() == K` (asserted).
#[allow(clippy::too_many_arguments)]
pub(crate) fn chain_rows<T: Element>(
    level: SimdLevel,
    bf16: Bf16Decode,
    w: &QuantView<'_, T>,
    e: usize,
    n0: usize,
    nrows: usize,
    xs: &[&[f32]],
    sink: impl FnMut(usize, usize, f32),
) {
    let k = w.shape.cols;
    assert!(
        e < w.shape.experts && n0 + nrows <= w.shape.rows && xs.iter().all(|x| x.len() == k),
        "chain_rows: internal shape invariant violated"
    );
    if nrows == 0 || xs.is_empty() {
        return;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        Avx512 => blocks::<T, 16>(level, bf16, w, e * w.shape.rows + n0, nrows, xs, sink),
        #[cfg(target_arch = "x86_64")]
        Avx2 => blocks::<T, 8>(level, bf16, w, e * w.shape.rows + n0, nrows, xs, sink),
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => neon_rows(w, e * w.shape.rows + n0, nrows, xs, sink),
        _ => {
            // The bf16 form selects between AVX-512 kernels only.
            let _ = bf16;
            scalar_rows(w, e * w.shape.rows + n0, nrows, xs, sink)
        }
    }
}

/// The portable chain: one row at a time, its dequantized weights (already rounded
/// as MLX rounds them) kept in a scratch row and reused for every activation row.
fn scalar_rows<T: Element>(
    w: &QuantView<'_, T>,
    row0: usize,
    nrows: usize,
    xs: &[&[f32]],
    mut sink: impl FnMut(usize, usize, f32),
) {
    let (k, gs, bits) = (w.shape.cols, w.spec.group_size(), w.spec.bits());
    let vpw = w.spec.values_per_word();
    let mask = w.spec.mask();
    let mut wrow = vec![0.0f32; k];
    for r in 0..nrows {
        let a = row0 + r;
        let words = &w.packed[a * w.wpr..(a + 1) * w.wpr];
        for (g, out) in wrow.chunks_exact_mut(gs).enumerate() {
            let s = w.scales[a * w.gpr + g].to_f32();
            let b = w.biases[a * w.gpr + g].to_f32();
            for (c, o) in out.iter_mut().enumerate() {
                let col = g * gs + c;
                let q = (words[col / vpw] >> (bits as usize * (col % vpw))) & mask;
                *o = round_to::<T>(round_to::<T>(s * q as f32) + b);
            }
        }
        for (i, x) in xs.iter().enumerate() {
            let mut acc = 0.0f32;
            for (&xv, &wv) in x.iter().zip(&wrow) {
                acc = round_to::<T>(acc + round_to::<T>(xv * wv));
            }
            sink(i, r, acc);
        }
    }
}

/// Blocks of 4 rows run side by side by the NEON kernel (16 rows, 4 independent
/// accumulator chains) while enough rows remain.
#[cfg(target_arch = "aarch64")]
const NEON_BLOCKS: usize = 4;

/// The NEON chain: bf16 activations under the denormal guard (see [`tiny`]) run
/// `chain_neon::chain4_bf16_split` on blocks of 4 rows, [`NEON_BLOCKS`] blocks at a
/// time while enough rows remain (a partial last block repeats its last row in the
/// spare lanes, results discarded). Other dtypes, a block or call that fails the guard,
/// and an activation row whose outputs come back NaN (an infinity or overflow, which
/// the split rounding turns into NaN) take the portable chain, which is exact
/// everywhere.
#[cfg(target_arch = "aarch64")]
fn neon_rows<T: Element>(
    w: &QuantView<'_, T>,
    row0: usize,
    nrows: usize,
    xs: &[&[f32]],
    mut sink: impl FnMut(usize, usize, f32),
) {
    let guarded = T::DTYPE == super::dtype::Dtype::Bf16 && !any_tiny(xs);
    if !guarded {
        return scalar_rows(w, row0, nrows, xs, sink);
    }
    let (gpr, gs) = (w.gpr, w.spec.group_size());
    let mut sb = vec![0.0f32; NEON_BLOCKS * 8 * gpr];
    let mut out = [0.0f32; 4 * NEON_BLOCKS];
    let mut b0 = 0;
    while b0 < nrows {
        let rblocks = if nrows - b0 >= 4 * NEON_BLOCKS {
            NEON_BLOCKS
        } else {
            1
        };
        let span = 4 * rblocks;
        let nb = span.min(nrows - b0);
        let first = row0 + b0;
        let row_of = |l: usize| first + l.min(nb - 1);
        assert!(
            (first + nb) * w.wpr <= w.packed.len(),
            "chain: block outside the weights"
        );
        let starts: [usize; 4 * NEON_BLOCKS] = core::array::from_fn(|l| row_of(l) * w.wpr);
        if widen_scales::<T, 4>(SimdLevel::Neon, w, rblocks, &row_of, &mut sb) {
            scalar_rows(w, first, nb, xs, |i, r, v| sink(i, b0 + r, v));
            b0 += nb;
            continue;
        }
        for (i, x) in xs.iter().enumerate() {
            macro_rules! run {
                ($b:literal) => {
                    if rblocks == 1 {
                        chain_neon::chain4_bf16_split::<$b, 1>(
                            w.packed,
                            &starts[..4],
                            &sb,
                            gpr,
                            gs,
                            x,
                            &mut out,
                        )
                    } else {
                        chain_neon::chain4_bf16_split::<$b, NEON_BLOCKS>(
                            w.packed, &starts, &sb, gpr, gs, x, &mut out,
                        )
                    }
                };
            }
            // SAFETY: NEON is in the aarch64 baseline; `starts` holds 4 * rblocks row
            // starts whose rows end inside `packed` (asserted above); `sb` holds
            // 8 * gpr values per block; `x` holds gpr * gs values (asserted in
            // `chain_rows`); `out` holds 4 * NEON_BLOCKS; T is bf16, so the scales,
            // biases and activations are bf16 values; bits is 2, 4 or 8 (QuantSpec).
            unsafe {
                match w.spec.bits() {
                    2 => run!(2),
                    4 => run!(4),
                    _ => run!(8),
                }
            }
            if out[..span].iter().any(|v| v.is_nan()) {
                scalar_rows(w, first, nb, &xs[i..i + 1], |_, r, v| sink(i, b0 + r, v));
            } else {
                for (l, &v) in out.iter().enumerate().take(nb) {
                    sink(i, b0 + l, v);
                }
            }
        }
        b0 += nb;
    }
}

/// Whether the AVX-512 bf16 kernels may round with `vcvtne2ps2bf16`
/// (`chain_x86::chain16_bf16`): the CPU has AVX512BW and AVX512_BF16, and the
/// environment variable `ZMLX_CPU_BF16_HW` is not `0` (for A/B measurements; the
/// results are the same either way).
#[cfg(target_arch = "x86_64")]
fn bf16_hw_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
            && std::env::var("ZMLX_CPU_BF16_HW").map_or(true, |v| v != "0")
    })
}

/// Which [`Bf16Decode`] form runs the decode-shaped bf16 chain fastest on this core:
/// times `chain16_bf16_split` and, where the CPU has the bf16 instructions,
/// `chain16_bf16_dp` (packed) and `chain16_bf16` (widened), on the same 64 rows x 1024
/// 4-bit values (hot in cache, one activation row), five rounds each after a warm-up,
/// and keeps the form with the smallest best time. All give the same bits, so a wrong
/// pick on a noisy machine costs speed only. Takes about a millisecond.
#[cfg(target_arch = "x86_64")]
pub(crate) fn fastest_bf16_decode() -> Bf16Decode {
    if !is_x86_feature_detected!("avx512f") {
        // No AVX-512 kernels run: the form is never used.
        return Bf16Decode::Split;
    }
    const K: usize = 1024;
    const GS: usize = 64;
    let (groups, wpr, rows) = (K / GS, K / 8, 16 * MULTI);
    let packed: Vec<u32> = (0..rows * wpr)
        .map(|i| (i as u32).wrapping_mul(0x9E37_79B9) ^ 0x5BD1_E995)
        .collect();
    let offsets: [i32; 16 * MULTI] = core::array::from_fn(|l| (l * wpr) as i32);
    // Per block, lane-major: the scales of every group, then the biases. Powers of two
    // and small multiples: bf16 values far from the denormal guard.
    let mut sb = vec![0.0f32; MULTI * 2 * groups * 16];
    for (i, v) in sb.iter_mut().enumerate() {
        let (bias, lane) = ((i / (groups * 16)) % 2 == 1, i % 16);
        *v = if bias {
            -0.0625 * (lane % 5) as f32
        } else {
            0.0078125 * (1 + lane % 3) as f32
        };
    }
    let x: Vec<f32> = (0..K).map(|i| ((i % 13) as f32 - 6.0) * 0.125).collect();
    let xs = [&x[..]];
    let mut out = [0.0f32; 16 * MULTI];
    type Kernel = unsafe fn(*const u32, &[i32], &[f32], usize, usize, &[&[f32]], &mut [f32]);
    let mut run = |kernel: Kernel| {
        let t = std::time::Instant::now();
        for _ in 0..4 {
            // SAFETY: the CPU has AVX512F, and AVX512BW/BF16 for the kernels that need
            // them (checked below); 16 * MULTI offsets, each row `wpr` words inside
            // `packed`; `sb` holds MULTI * 2 * groups * 16 values; `x` holds
            // groups * GS values; `out` 16 * MULTI.
            unsafe { kernel(packed.as_ptr(), &offsets, &sb, groups, GS, &xs, &mut out) };
        }
        t.elapsed()
    };
    let mut candidates: Vec<(Bf16Decode, Kernel)> = vec![(
        Bf16Decode::Split,
        chain_x86::chain16_bf16_split::<4, 1, MULTI>,
    )];
    if bf16_hw_available() {
        candidates.push((
            Bf16Decode::Packed,
            chain_x86::chain16_bf16_dp::<4, 1, MULTI>,
        ));
        candidates.push((Bf16Decode::Widened, chain_x86::chain16_bf16::<4, 1, MULTI>));
    }
    let mut best: Vec<_> = candidates.iter().map(|&(_, k)| run(k)).collect();
    for _ in 0..5 {
        for (b, &(_, k)) in best.iter_mut().zip(&candidates) {
            *b = (*b).min(run(k));
        }
    }
    let fastest = (0..candidates.len())
        .min_by_key(|&i| best[i])
        .expect("at least one candidate");
    candidates[fastest].0
}

/// No AVX-512 bf16 kernels off x86_64: the form is never used.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn fastest_bf16_decode() -> Bf16Decode {
    Bf16Decode::Split
}

/// bf16 bit pattern of 2^-50, the smallest nonzero magnitude the bf16 kernels' guard
/// admits (see [`tiny`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const GUARD_MIN_BITS: u32 = (127 - 50) << 23;

/// Whether `v` (a widened bf16) is nonzero but below 2^-50 in magnitude: such a value
/// sends the chain to the integer-rounding kernel (no bf16 form then).
///
/// Why 2^-50 suffices. `vcvtne2ps2bf16` rounds like the integer RNE except that it reads
/// f32 denormals (0 < |v| < 2^-126) as zero, so it is exact on a chain in which no
/// intermediate is denormal. Let every x, scale and bias be 0 or at least 2^-50 in
/// magnitude (inf and NaN allowed: they are not denormal and both roundings treat
/// them alike). A bf16 of magnitude >= 2^-50 has 8 significant bits, so it is an integer
/// multiple of 2^-57; q is an integer, so `scale * q` and `T(scale * q) + bias` are
/// multiples of Q = 2^-57, and `x * w` (two multiples of 2^-57) and every `acc + p`
/// are multiples of Q = 2^-114. Rounding (to f32 or to bf16) keeps a multiple of a
/// power of two Q >= 2^-126 a multiple of Q: if the grid spacing at the value is at
/// least Q the result lies on that grid, and if it is finer the value already lies on
/// it and rounds to itself. Hence every intermediate is 0 or a nonzero multiple of
/// 2^-114, i.e. at least 2^-114 > 2^-126 in magnitude: never denormal, on any input of
/// any of the roundings. The split rounding (`chain16_bf16_split`, `chain8` with
/// `SPLIT`) needs the same: it is exact on zero and normal values, and its own
/// intermediates (`65537 * v`, `v - c`) are multiples of the same Q. The check is two
/// integer compares per value: it runs over x
/// once per call and over the scales and biases while they are widened per block.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline]
fn tiny(v: f32) -> bool {
    let a = v.to_bits() & 0x7FFF_FFFF;
    a != 0 && a < GUARD_MIN_BITS
}

/// Whether any activation value is [`tiny`]: the guard's check of `x`, once per call.
/// A fold without early exit, so that it vectorises (SwiGLU makes a call per 64-row
/// slice).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn any_tiny(xs: &[&[f32]]) -> bool {
    xs.iter().any(|x| x.iter().fold(false, |t, &v| t | tiny(v)))
}

/// Activation rows per vector call for each level (accumulators held in registers).
#[cfg(target_arch = "x86_64")]
const fn max_mb(lanes: usize) -> usize {
    if lanes == 16 {
        8
    } else {
        4
    }
}

/// Row blocks run side by side when few activation rows share them (decode): more
/// independent accumulator chains in flight.
#[cfg(target_arch = "x86_64")]
const MULTI: usize = 4;

/// Widens the scales and biases of `rblocks` blocks of `L` rows (lane `l` = row
/// `row_of(l)`) into `sb`, lane-major per block: `sb[b * 2 * gpr * L + g * L + lane]`
/// the scale of group `g`, then the biases. Returns whether any value is `tiny` (the
/// denormal guard). AVX-512 with bf16 scales takes the vector transpose
/// (`chain_x86::widen_bf16_block`), everything else (AVX2, NEON, other dtypes) one
/// value at a time; both write the same values.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn widen_scales<T: Element, const L: usize>(
    level: SimdLevel,
    w: &QuantView<'_, T>,
    rblocks: usize,
    row_of: &dyn Fn(usize) -> usize,
    sb: &mut [f32],
) -> bool {
    // Only the AVX-512 transpose below depends on the level.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level;
    let gpr = w.gpr;
    let per_block = 2 * gpr * L;
    let mut tiny_found = false;
    for blk in 0..rblocks {
        let sbb = &mut sb[blk * per_block..(blk + 1) * per_block];
        #[cfg(target_arch = "x86_64")]
        if L == 16 && level == Avx512 && T::DTYPE == Dtype::Bf16 {
            let rows: [usize; 16] = core::array::from_fn(|l| row_of(blk * L + l));
            // SAFETY: T is bf16, two bytes like u16 (checked by the dtype tag), so the
            // slices reinterpret exactly; AVX-512F is available (the level says so);
            // every row is inside the weight (callers' invariant), so `row * gpr + gpr`
            // is within the scales and biases; `sbb` holds `2 * gpr * 16` values.
            tiny_found |= unsafe {
                let as_u16 =
                    |v: &[T]| std::slice::from_raw_parts(v.as_ptr().cast::<u16>(), v.len());
                chain_x86::widen_bf16_block(
                    as_u16(w.scales),
                    as_u16(w.biases),
                    &rows,
                    gpr,
                    GUARD_MIN_BITS,
                    sbb,
                )
            };
            continue;
        }
        for lane in 0..L {
            let a = row_of(blk * L + lane);
            for g in 0..gpr {
                let (sv, bv) = (
                    w.scales[a * gpr + g].to_f32(),
                    w.biases[a * gpr + g].to_f32(),
                );
                tiny_found |= tiny(sv) | tiny(bv);
                sbb[g * L + lane] = sv;
                sbb[(gpr + g) * L + lane] = bv;
            }
        }
    }
    tiny_found
}

/// The vector chain over blocks of `L` rows (`L` = lanes of the level), `MULTI`
/// blocks at a time while rows remain and activation rows are few. A partial last
/// block repeats its last row in the spare lanes (results discarded), so every lane
/// reads inside the buffer.
#[cfg(target_arch = "x86_64")]
fn blocks<T: Element, const L: usize>(
    level: SimdLevel,
    bf16: Bf16Decode,
    w: &QuantView<'_, T>,
    row0: usize,
    nrows: usize,
    xs: &[&[f32]],
    mut sink: impl FnMut(usize, usize, f32),
) {
    let (gpr, gs) = (w.gpr, w.spec.group_size());
    let per_block = 2 * gpr * L;
    let mut sb = vec![0.0f32; MULTI * per_block];
    let mut offsets = [0i32; 16 * MULTI];
    let mut out = [0.0f32; 8 * 16 * MULTI];
    let multi_ok = L == 16 && xs.len() <= 2;
    // The bf16 kernels' denormal guard (see `tiny`): x once here, scales and biases per
    // block. Without the bf16 instructions every form runs as `Split`.
    let form = match bf16 {
        Bf16Decode::Packed | Bf16Decode::Widened if !bf16_hw_available() => Bf16Decode::Split,
        form => form,
    };
    let guarded = T::DTYPE == Dtype::Bf16 && !any_tiny(xs);
    let mut b0 = 0;
    while b0 < nrows {
        let rblocks = if multi_ok && nrows - b0 >= MULTI * L {
            MULTI
        } else {
            1
        };
        let span = L * rblocks;
        let nb = span.min(nrows - b0);
        let first = row0 + b0;
        // Lanes past the last row repeat it.
        let row_of = |l: usize| first + l.min(nb - 1);
        for (l, o) in offsets.iter_mut().enumerate().take(span) {
            // A call spans at most 64 rows of at most K/2 words: fits i32 for any K
            // below 2^24, far beyond real layers.
            *o = i32::try_from((row_of(l) - first) * w.wpr).expect("row offset fits i32");
        }
        let block_tiny = widen_scales::<T, L>(level, w, rblocks, &row_of, &mut sb);
        let fast = (guarded && !block_tiny).then_some(form);
        // The last lane's row ends inside the buffer: every word read is in bounds.
        let last = (first + nb) * w.wpr;
        assert!(last <= w.packed.len(), "chain: block outside the weights");
        let base = w.packed[first * w.wpr..].as_ptr();
        let mut m0 = 0;
        while m0 < xs.len() {
            let rem = xs.len() - m0;
            let mb = [8, 4, 2, 1]
                .into_iter()
                .find(|&c| c <= rem && c <= max_mb(L))
                .unwrap_or(1);
            let chunk = &xs[m0..m0 + mb];
            // SAFETY: level available (callers only pass detected levels); offsets and
            // the weight row length keep every load and gather in bounds (asserted above);
            // `sb` has `rblocks * 2 * gpr * L` values; every x row has gpr * gs values
            // (asserted in `chain_rows`); `out` holds 8 * 16 * MULTI values.
            unsafe {
                call::<T, L>(
                    level,
                    (w.spec.bits(), mb, rblocks, fast),
                    base,
                    &offsets[..span],
                    &sb,
                    (gpr, gs),
                    chunk,
                    &mut out,
                )
            };
            for m in 0..mb {
                for l in 0..nb {
                    sink(m0 + m, b0 + l, out[m * span + l]);
                }
            }
            m0 += mb;
        }
        b0 += nb;
    }
}

/// Dispatches to the kernel instantiated for (level, bits, activation rows, blocks).
///
/// `fast`: the bf16 kernel form to run, which the caller passes only when the denormal
/// guard passed and, for `Packed` and `Widened`, the CPU has the bf16 instructions;
/// `None` runs the general kernel of the level. With AVX2 any form runs the split
/// rounding (`chain8` with `SPLIT`). `Packed` runs
/// `chain16_bf16_dp` for one or two activation rows over several blocks and
/// `chain16_bf16` elsewhere. A kernel that turns infinities or overflow into NaN
/// (`Packed`, `Split`) is followed, when its output holds a NaN, by an exact one.
///
/// # Safety
/// As `chain_x86::chain16` / `chain8`; `offsets` has `L * rblocks` entries; `fast` as
/// above.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn call<T: Element, const L: usize>(
    level: SimdLevel,
    (bits, mb, rblocks, fast): (u32, usize, usize, Option<Bf16Decode>),
    base: *const u32,
    offsets: &[i32],
    sb: &[f32],
    (groups, gs): (usize, usize),
    xs: &[&[f32]],
    out: &mut [f32],
) {
    // One kernel at the instantiation for this call's activation rows and blocks.
    macro_rules! by_shape {
        ($kernel:ident, $b:literal $(, $t:ty)?) => {
            match (mb, rblocks) {
                (1, 1) => chain_x86::$kernel::<$($t,)? $b, 1, 1>(base, offsets, sb, groups, gs, xs, out),
                (1, _) => chain_x86::$kernel::<$($t,)? $b, 1, MULTI>(base, offsets, sb, groups, gs, xs, out),
                (2, 1) => chain_x86::$kernel::<$($t,)? $b, 2, 1>(base, offsets, sb, groups, gs, xs, out),
                (2, _) => chain_x86::$kernel::<$($t,)? $b, 2, MULTI>(base, offsets, sb, groups, gs, xs, out),
                (4, _) => chain_x86::$kernel::<$($t,)? $b, 4, 1>(base, offsets, sb, groups, gs, xs, out),
                _ => chain_x86::$kernel::<$($t,)? $b, 8, 1>(base, offsets, sb, groups, gs, xs, out),
            }
        };
    }
    let used = mb * rblocks * 16;
    macro_rules! per_bits {
        ($b:literal) => {
            match fast {
                Some(Bf16Decode::Split) => {
                    by_shape!(chain16_bf16_split, $b);
                    if out[..used].iter().any(|v| v.is_nan()) {
                        by_shape!(chain16, $b, T);
                    }
                }
                Some(Bf16Decode::Packed) if mb <= 2 && rblocks > 1 => {
                    if mb == 1 {
                        chain_x86::chain16_bf16_dp::<$b, 1, MULTI>(
                            base, offsets, sb, groups, gs, xs, out,
                        );
                    } else {
                        chain_x86::chain16_bf16_dp::<$b, 2, MULTI>(
                            base, offsets, sb, groups, gs, xs, out,
                        );
                    }
                    // An infinity can leak a NaN into a neighbouring row there.
                    if out[..used].iter().any(|v| v.is_nan()) {
                        by_shape!(chain16_bf16, $b);
                    }
                }
                Some(_) => by_shape!(chain16_bf16, $b),
                None => by_shape!(chain16, $b, T),
            }
        };
    }
    // AVX2: 8 lanes, the split rounding wherever the bf16 guard passed (any form).
    macro_rules! avx2_by_rows {
        ($b:literal, $split:literal) => {{
            let off: &[i32; 8] = offsets.try_into().expect("8 lanes");
            match mb {
                1 => chain_x86::chain8::<T, $b, 1, $split>(base, off, sb, groups, gs, xs, out),
                2 => chain_x86::chain8::<T, $b, 2, $split>(base, off, sb, groups, gs, xs, out),
                _ => chain_x86::chain8::<T, $b, 4, $split>(base, off, sb, groups, gs, xs, out),
            }
        }};
    }
    macro_rules! avx2_per_bits {
        ($b:literal) => {
            if fast.is_some() {
                avx2_by_rows!($b, true);
                if out[..mb * 8].iter().any(|v| v.is_nan()) {
                    avx2_by_rows!($b, false);
                }
            } else {
                avx2_by_rows!($b, false);
            }
        };
    }
    if level != Avx512 {
        match bits {
            2 => avx2_per_bits!(2),
            4 => avx2_per_bits!(4),
            _ => avx2_per_bits!(8),
        }
        return;
    }
    match bits {
        2 => per_bits!(2),
        4 => per_bits!(4),
        _ => per_bits!(8),
    }
}
