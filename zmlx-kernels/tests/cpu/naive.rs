//! References: [`mlx`] emulates MLX's CPU arithmetic one scalar at a time (what the
//! quantized kernels must match bit for bit); the f64 helpers serve the float-weight
//! path, which accumulates in f32 and is checked with derived tolerances.

/// Reference weights for the f32-accumulating paths: each element's exact value and
/// the magnitude that bounds what it contributes to a kernel's partial sums.
pub type Terms = Vec<(f64, f64)>;

/// Float weights: each value is exact, its magnitude its absolute value.
pub fn float_terms(w: &[f32]) -> Terms {
    w.iter()
        .map(|&v| (f64::from(v), f64::from(v).abs()))
        .collect()
}

/// Quantized weights `w = scale * q + bias`, exact in f64. The f32-precision kernels
/// sum `scale * (q . x)` and `bias * sum(x)` per group, and the 4-bit bf16 kernel
/// sums `(q + 16) . x` and subtracts `16 * sum(x)`, so a term is bounded by
/// `(|scale| * (q + 2^bits) + |bias|) * |x|`.
pub fn quant_terms(
    packed: &[u32],
    scales: &[f32],
    biases: &[f32],
    rows: usize,
    cols: usize,
    bits: u32,
    gs: usize,
) -> Terms {
    let per_word = 32 / bits as usize;
    let mask = (1u32 << bits) - 1;
    (0..rows * cols)
        .map(|flat| {
            let (r, c) = (flat / cols, flat % cols);
            let q =
                f64::from((packed[flat / per_word] >> (bits as usize * (flat % per_word))) & mask);
            let g = r * (cols / gs) + c / gs;
            let (s, b) = (f64::from(scales[g]), f64::from(biases[g]));
            (s * q + b, s.abs() * (q + f64::from(1u32 << bits)) + b.abs())
        })
        .collect()
}

/// A dot product in f64 plus the sum of the magnitudes of its terms (the scale of the
/// f32 rounding error of any summation order).
pub fn dot(x: &[f32], w: &[(f64, f64)]) -> (f64, f64) {
    x.iter().zip(w).fold((0.0, 0.0), |(s, a), (&x, &(w, m))| {
        let x = f64::from(x);
        (s + x * w, a + x.abs() * m)
    })
}

/// Scalar emulation of MLX's CPU arithmetic, written from the measured semantics (see
/// `notes/cpu-kernels.md`), independently of the kernels' code.
pub mod mlx {
    use crate::data::round;
    use zmlx_kernels::cpu::Dtype;

    /// Dequantizes as MLX's CPU qmm does: `w = T(T(scale * q) + bias)`.
    #[allow(clippy::too_many_arguments)]
    pub fn dequantize(
        dtype: Dtype,
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
        for (flat, o) in w.iter_mut().enumerate() {
            let q = (packed[flat / per_word] >> (bits as usize * (flat % per_word))) & mask;
            let g = flat / gs;
            *o = round(dtype, round(dtype, scales[g] * q as f32) + biases[g]);
        }
        w
    }

    /// One output of MLX's CPU qmm: a single accumulator in T, in k order.
    pub fn chain(dtype: Dtype, x: &[f32], w: &[f32]) -> f32 {
        x.iter().zip(w).fold(0.0f32, |acc, (&x, &w)| {
            round(dtype, acc + round(dtype, x * w))
        })
    }

    /// MLX's CPU `exp`: `2^i * P(f)`, `i = floor(x * 1.442695 + 0.5)` (the `+ 0.5` in
    /// f64), `P` a degree-6 polynomial evaluated with FMAs; inf above 88, 0 below -88.
    // The decimal constants as published with the algorithm (Cephes/fastermath): the
    // kernel spells them as f32 bit patterns, so the two are written independently.
    #[allow(clippy::approx_constant, clippy::excessive_precision)]
    pub fn exp(x: f32) -> f32 {
        let y = x * 1.442_695_f32;
        let i = (f64::from(y) + 0.5).floor();
        let f = y - i as f32;
        let c: [f64; 7] = [
            1.535336188319500e-4,
            1.339887440266574e-3,
            9.618437357674640e-3,
            5.550332471162809e-2,
            2.402264791363012e-1,
            6.931472028550421e-1,
            1.0,
        ];
        let mut p = c[0] as f32;
        for &ci in &c[1..] {
            p = p.mul_add(f, ci as f32);
        }
        if x.is_nan() {
            x
        } else if x > 88.0 {
            f32::INFINITY
        } else if x < -88.0 {
            0.0
        } else {
            // MLX builds 2^i from exponent bits `i + 127`: i = -127 gives 0.
            let two_i = if i < -126.0 { 0.0 } else { 2f32.powi(i as i32) };
            two_i * p
        }
    }

    /// MLX's CPU sigmoid on a T value: `e = T(exp(|x|))`, `y = 1 / (1 + e)`,
    /// `T(x < 0 ? y : 1 - y)`.
    pub fn sigmoid(dtype: Dtype, x: f32) -> f32 {
        let y = 1.0 / (1.0 + round(dtype, exp(x.abs())));
        round(dtype, if x < 0.0 { y } else { 1.0 - y })
    }

    /// mlx-lm's `silu(g) * u` on T values, each op stored in T.
    pub fn swiglu(dtype: Dtype, g: f32, u: f32) -> f32 {
        round(dtype, round(dtype, g * sigmoid(dtype, g)) * u)
    }

    /// MLX's `softmax(precise=True)` of one row, stored in `out`.
    pub fn softmax(v: &[f32], out: Dtype) -> Vec<f32> {
        let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = v.iter().map(|&x| exp(x - max)).collect();
        let mut sum = 0.0f32;
        for &x in &e {
            sum += x;
        }
        let inv = 1.0 / sum;
        e.iter().map(|&x| round(out, x * inv)).collect()
    }
}
