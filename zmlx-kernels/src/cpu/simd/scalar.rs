//! Portable kernels: plain Rust, no intrinsics. Always compiled, always tested, and the
//! definition of what the vector kernels compute (up to f32 summation order).
//!
//! Loops use several independent accumulators so that the compiler can keep them in
//! vector registers of the baseline target (SSE2 on x86_64) without reassociating.

use crate::cpu::dtype::Element;

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
