//! Naive references: dequantize to f32 exactly as MLX defines the format, then plain
//! loops with f64 accumulation (so the reference is exact up to the f32 dequantization
//! and the kernels' f32 summation error is all that the tolerances cover).

/// Dequantizes `rows x cols` values: `w = scale * q + bias` in f32.
pub fn dequantize(
    packed: &[u32],
    scales: &[f32],
    biases: &[f32],
    rows: usize,
    cols: usize,
    bits: u32,
    gs: usize,
) -> Vec<f32> {
    let per_word = 32 / bits as usize;
    let mask = (1u32 << bits) - 1;
    let mut w = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let flat = r * cols + c;
            let word = packed[flat / per_word];
            let q = (word >> (bits as usize * (flat % per_word))) & mask;
            let g = r * (cols / gs) + c / gs;
            w[flat] = scales[g] * q as f32 + biases[g];
        }
    }
    w
}

/// A dot product in f64 plus the sum of the absolute values of its terms (the scale
/// of the f32 rounding error of any summation order).
pub fn dot(x: &[f32], w: &[f32]) -> (f64, f64) {
    x.iter().zip(w).fold((0.0, 0.0), |(s, a), (&x, &w)| {
        let t = f64::from(x) * f64::from(w);
        (s + t, a + t.abs())
    })
}
