//! The f32-accumulating building blocks (float weights, and quantized weights under
//! `Precision::F32`; the MLX-exact quantized path is `chain.rs`): one weight row
//! against one prepared activation row (decode), and a dequantized f32 tile of weight
//! rows against many activation rows (prefill).

use super::prep::PRow;
use super::quant::dequantize_row;
use super::simd::{self, scalar, Kernel, SimdLevel};
use super::weights::{Row, Typed};

/// Activation rows sharing a weight row at or above which a tile of weights is
/// dequantized to f32 once and multiplied by all of them; below it each dot product
/// unpacks the row again from L1 (cheaper than writing and re-reading a tile).
pub(crate) const TILE_MIN_ROWS: usize = 8;

/// Bytes of f32 scratch per tile: sized to stay in L2 while all activation rows
/// stream past it.
const TILE_BYTES: usize = 128 * 1024;

/// Weight rows per tile for input width `k` (a multiple of 4, at least 4).
pub(crate) fn tile_rows(k: usize) -> usize {
    let rows = TILE_BYTES / (4 * k.max(1));
    (rows / 4 * 4).clamp(4, 256)
}

/// `w_row . x` accumulated in f32.
#[inline]
pub(crate) fn dot_row<T: Kernel>(level: SimdLevel, row: Row<'_, T>, x: PRow<'_>) -> f32 {
    match row {
        Row::Quant {
            words,
            scales,
            biases,
            spec,
        } => match spec.bits() {
            #[cfg(target_arch = "x86_64")]
            4 if !x.xb.is_empty() => match (T::as_bf16(scales), T::as_bf16(biases)) {
                (Some(s), Some(b)) => {
                    simd::q4_dot_bf16(words, x.xb, x.xsum, s, b, spec.group_size())
                }
                _ => unreachable!("`xb` is prepared for bf16 activations only"),
            },
            4 => simd::group_dot(
                level,
                4,
                words,
                x.xp,
                x.xsum,
                scales,
                biases,
                spec.group_size(),
            ),
            8 => simd::group_dot(
                level,
                8,
                words,
                x.xf,
                x.xsum,
                scales,
                biases,
                spec.group_size(),
            ),
            _ => scalar::qgeneric_dot(words, x.xf, x.xsum, scales, biases, spec),
        },
        Row::Float(w) => T::dot_weights(level, w, x.xf),
    }
}

/// Weight rows a decode pass of the f32 paths takes together ([`dot_rows`]).
pub(crate) const ROWS_A_PASS: usize = 4;

/// `R` rows' [`dot_row`] against the same activations in one pass (`consecutive`:
/// the rows are consecutive rows of one matrix), where a kernel
/// for that exists (4-bit rows with bf16 scales and biases and activations prepared
/// for `vdpbf16ps`, on x86_64); `None` elsewhere, and the caller takes [`dot_row`]
/// row by row. Short rows (the down projection's 768 values) spend much of a single
/// row's time on fixed costs that `R` rows share here.
#[inline]
pub(crate) fn dot_rows<T: Kernel, const R: usize>(
    rows: [Row<'_, T>; R],
    x: PRow<'_>,
    consecutive: bool,
) -> Option<[f32; R]> {
    #[cfg(target_arch = "x86_64")]
    {
        if x.xb.is_empty() {
            return None;
        }
        let mut words = [&[][..]; R];
        let mut scales = [&[][..]; R];
        let mut biases = [&[][..]; R];
        let mut gs = 0;
        for (i, row) in rows.iter().enumerate() {
            let Row::Quant {
                words: w,
                scales: s,
                biases: b,
                spec,
            } = *row
            else {
                return None;
            };
            // One layout for all rows (the kernel takes one group size and length).
            if spec.bits() != 4 || (i > 0 && (spec.group_size() != gs || w.len() != words[0].len()))
            {
                return None;
            }
            (words[i], scales[i], biases[i]) = (w, T::as_bf16(s)?, T::as_bf16(b)?);
            gs = spec.group_size();
        }
        Some(simd::q4_dots_bf16(
            words,
            x.xb,
            x.xsum,
            scales,
            biases,
            gs,
            consecutive,
        ))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, x, consecutive);
        None
    }
}

/// Fills `tile` with rows `n0..n0 + nrows` of expert `e` as f32 (dequantized or
/// widened), row-major with row length K.
pub(crate) fn load_tile<T: Kernel>(
    w: &Typed<'_, T>,
    e: usize,
    n0: usize,
    nrows: usize,
    tile: &mut Vec<f32>,
) {
    let k = w.shape().cols;
    tile.clear();
    tile.resize(nrows * k, 0.0);
    for (r, out) in tile.chunks_exact_mut(k.max(1)).enumerate().take(nrows) {
        match w.row(e, n0 + r) {
            Row::Quant {
                words,
                scales,
                biases,
                spec,
            } => dequantize_row(words, scales, biases, spec, out),
            Row::Float(src) => {
                for (o, &v) in out.iter_mut().zip(src) {
                    *o = v.to_f32();
                }
            }
        }
    }
}

/// Multiplies every activation row in `xs` by every row of `tile` (`nrows` rows of
/// length `k`) and reports each result as `sink(activation index, tile row, value)`.
pub(crate) fn tile_dots(
    level: SimdLevel,
    tile: &[f32],
    nrows: usize,
    k: usize,
    xs: &[&[f32]],
    mut sink: impl FnMut(usize, usize, f32),
) {
    let row = |r: usize| &tile[r * k..(r + 1) * k];
    let quads = nrows / 4;
    let mut xi = 0;
    while xi < xs.len() {
        let pair = xi + 1 < xs.len();
        for q in 0..quads {
            let w = [row(4 * q), row(4 * q + 1), row(4 * q + 2), row(4 * q + 3)];
            if pair {
                emit(
                    simd::dot_mx4(level, [xs[xi], xs[xi + 1]], w),
                    xi,
                    4 * q,
                    &mut sink,
                );
            } else {
                emit(simd::dot_mx4(level, [xs[xi]], w), xi, 4 * q, &mut sink);
            }
        }
        let step = if pair { 2 } else { 1 };
        for r in 4 * quads..nrows {
            for (x, xr) in xs.iter().enumerate().skip(xi).take(step) {
                sink(x, r, f32::dot_weights(level, row(r), xr));
            }
        }
        xi += step;
    }
}

/// Reports `out[r][c]` of [`simd::dot_mx4`] as `sink(x0 + r, row0 + c, value)`.
fn emit<const M: usize>(
    out: [[f32; 4]; M],
    x0: usize,
    row0: usize,
    sink: &mut impl FnMut(usize, usize, f32),
) {
    for (r, vals) in out.iter().enumerate() {
        for (c, &v) in vals.iter().enumerate() {
            sink(x0 + r, row0 + c, v);
        }
    }
}
