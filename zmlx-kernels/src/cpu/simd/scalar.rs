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

/// Dot products of two activation rows with four weight rows (all f32, same length).
pub(crate) fn dot_2x4(x: [&[f32]; 2], w: [&[f32]; 4]) -> [[f32; 4]; 2] {
    let mut out = [[0.0f32; 4]; 2];
    for (r, xr) in x.iter().enumerate() {
        out[r] = dot_1x4(xr, w);
    }
    out
}

/// Dot products of one activation row with four weight rows (all f32, same length).
pub(crate) fn dot_1x4(x: &[f32], w: [&[f32]; 4]) -> [f32; 4] {
    let mut out = [0.0f32; 4];
    for (o, wr) in out.iter_mut().zip(w) {
        *o = dot::<f32>(wr, x);
    }
    out
}
