//! Portable kernels: plain Rust, no intrinsics. Always compiled, always tested, and the
//! definition of what the vector kernels compute (up to f32 summation order).
//!
//! Loops use several independent accumulators so that the compiler can keep them in
//! vector registers of the baseline target (SSE2 on x86_64) without reassociating.

use crate::cpu::dtype::Element;
use crate::cpu::quant::QuantSpec;

/// 4-bit row dot product against activations in the nibble-split order of
/// [`crate::cpu::prep`] (per 32 values: the 16 low nibbles of the 16 bytes, then the 16
/// high nibbles). Returns `sum_g scale_g * (q_g . x_g) + bias_g * xsum_g`.
pub(crate) fn q4_dot<T: Element>(
    words: &[u32],
    xp: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
    gs: usize,
) -> f32 {
    let mut total = 0.0f32;
    let mut bias_acc = 0.0f32;
    for (((gw, gx), (s, b)), xs) in words
        .chunks_exact(gs / 8)
        .zip(xp.chunks_exact(gs))
        .zip(scales.iter().zip(biases))
        .zip(xsum)
    {
        let mut acc = [0.0f32; 16];
        for (bw, bx) in gw.chunks_exact(4).zip(gx.chunks_exact(32)) {
            for (wi, &w) in bw.iter().enumerate() {
                for (bi, byte) in w.to_le_bytes().into_iter().enumerate() {
                    let i = wi * 4 + bi;
                    acc[i] += f32::from(byte & 0x0f) * bx[i];
                    acc[i] += f32::from(byte >> 4) * bx[16 + i];
                }
            }
        }
        total += s.to_f32() * acc.iter().sum::<f32>();
        bias_acc += b.to_f32() * xs;
    }
    total + bias_acc
}

/// 8-bit row dot product (activations in natural order).
pub(crate) fn q8_dot<T: Element>(
    words: &[u32],
    x: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
    gs: usize,
) -> f32 {
    let mut total = 0.0f32;
    let mut bias_acc = 0.0f32;
    for (((gw, gx), (s, b)), xs) in words
        .chunks_exact(gs / 4)
        .zip(x.chunks_exact(gs))
        .zip(scales.iter().zip(biases))
        .zip(xsum)
    {
        let mut acc = [0.0f32; 4];
        for (&w, wx) in gw.iter().zip(gx.chunks_exact(4)) {
            for (j, byte) in w.to_le_bytes().into_iter().enumerate() {
                acc[j] += f32::from(byte) * wx[j];
            }
        }
        total += s.to_f32() * acc.iter().sum::<f32>();
        bias_acc += b.to_f32() * xs;
    }
    total + bias_acc
}

/// Any supported bit width (used for 2 bits, which has no vector kernel): unpacks value
/// by value, same group decomposition as the specialised kernels.
pub(crate) fn qgeneric_dot<T: Element>(
    words: &[u32],
    x: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
    spec: QuantSpec,
) -> f32 {
    let gs = spec.group_size();
    let per_word = spec.values_per_word();
    let bits = spec.bits() as usize;
    let mask = spec.mask();
    let mut total = 0.0f32;
    let mut bias_acc = 0.0f32;
    for (((gw, gx), (s, b)), xs) in words
        .chunks_exact(gs / per_word)
        .zip(x.chunks_exact(gs))
        .zip(scales.iter().zip(biases))
        .zip(xsum)
    {
        let mut acc = 0.0f32;
        for (&w, wx) in gw.iter().zip(gx.chunks_exact(per_word)) {
            for (j, xv) in wx.iter().enumerate() {
                acc += ((w >> (bits * j)) & mask) as f32 * xv;
            }
        }
        total += s.to_f32() * acc;
        bias_acc += b.to_f32() * xs;
    }
    total + bias_acc
}

/// Dot product of a float weight row with f32 activations.
pub(crate) fn dot<T: Element>(w: &[T], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut wc = w.chunks_exact(8);
    let mut xc = x.chunks_exact(8);
    for (a, b) in (&mut wc).zip(&mut xc) {
        for i in 0..8 {
            acc[i] += a[i].to_f32() * b[i];
        }
    }
    let tail: f32 = wc
        .remainder()
        .iter()
        .zip(xc.remainder())
        .map(|(a, b)| a.to_f32() * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Dot products of `M` activation rows with four weight rows (all f32, same length):
/// `out[r][c]` = row `r` of `x` dot row `c` of `w`.
pub(crate) fn dot_mx4<const M: usize>(x: [&[f32]; M], w: [&[f32]; 4]) -> [[f32; 4]; M] {
    x.map(|xr| w.map(|wr| dot::<f32>(wr, xr)))
}
