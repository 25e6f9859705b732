//! Deterministic test data and dtype-tagged buffers.

use half::{bf16, f16};
use zmlx_kernels::cpu::{simd, Dtype, Floats, FloatsMut};

/// Small xorshift generator: test data derives from a proptest-chosen seed, so that
/// proptest shrinks shapes and seeds rather than megabytes of vectors.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub const DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

/// Rounds to `dtype` and back.
pub fn round(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F32 => v,
        Dtype::F16 => f16::from_f32(v).to_f32(),
        Dtype::Bf16 => bf16::from_f32(v).to_f32(),
    }
}

/// A typed owned buffer.
pub enum Buf {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Buf {
    pub fn from_f32(dtype: Dtype, v: &[f32]) -> Self {
        match dtype {
            Dtype::F32 => Buf::F32(v.to_vec()),
            Dtype::F16 => Buf::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            Dtype::Bf16 => Buf::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        }
    }
    pub fn zeros(dtype: Dtype, n: usize) -> Self {
        Self::from_f32(dtype, &vec![0.0; n])
    }
    pub fn floats(&self) -> Floats<'_> {
        match self {
            Buf::F32(v) => Floats::F32(v),
            Buf::F16(v) => Floats::F16(v),
            Buf::Bf16(v) => Floats::Bf16(v),
        }
    }
    pub fn floats_mut(&mut self) -> FloatsMut<'_> {
        match self {
            Buf::F32(v) => FloatsMut::F32(v),
            Buf::F16(v) => FloatsMut::F16(v),
            Buf::Bf16(v) => FloatsMut::Bf16(v),
        }
    }
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Buf::F32(v) => v.clone(),
            Buf::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Buf::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// `n` values uniform in [lo, hi), already rounded to `dtype` (so the f32 copy is the
/// exact value the kernel sees).
pub fn values(rng: &mut Rng, dtype: Dtype, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| round(dtype, rng.uniform(lo, hi))).collect()
}

/// A quantized weight stack with its exact scales and biases as f32.
pub struct QuantData {
    pub packed: Vec<u32>,
    pub scales: Vec<f32>,
    pub biases: Vec<f32>,
}

impl QuantData {
    /// Expert `e`'s packed words, scales and biases, when the data holds experts of
    /// `rows x cols` values at `bits` bits, group size `gs`.
    pub fn expert(
        &self,
        e: usize,
        rows: usize,
        cols: usize,
        bits: u32,
        gs: usize,
    ) -> (&[u32], &[f32], &[f32]) {
        let (wpe, gpe) = (rows * cols * bits as usize / 32, rows * cols / gs);
        (
            &self.packed[e * wpe..(e + 1) * wpe],
            &self.scales[e * gpe..(e + 1) * gpe],
            &self.biases[e * gpe..(e + 1) * gpe],
        )
    }
}

/// Random packed words (every bit pattern is a valid quantized matrix) and scales and
/// biases in `dtype`, for `rows` rows of `cols` values at `bits` bits per value.
pub fn quant_data(
    rng: &mut Rng,
    dtype: Dtype,
    rows: usize,
    cols: usize,
    bits: u32,
    gs: usize,
) -> QuantData {
    let words = rows * cols * bits as usize / 32;
    let groups = rows * cols / gs;
    QuantData {
        packed: (0..words).map(|_| rng.u32()).collect(),
        scales: values(rng, dtype, groups, 0.002, 0.03),
        biases: values(rng, dtype, groups, -0.1, 0.1),
    }
}

/// `tokens` rows of `top_k` distinct experts out of `experts`.
pub fn distinct_indices(rng: &mut Rng, tokens: usize, top_k: usize, experts: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(tokens * top_k);
    let mut pool: Vec<u32> = (0..experts as u32).collect();
    for _ in 0..tokens {
        for j in 0..top_k {
            let pick = j + rng.below(experts - j);
            pool.swap(j, pick);
            out.push(pool[j]);
        }
    }
    out
}

/// Every way this CPU can run the kernels: each available SIMD level, and with AVX-512
/// every bf16 kernel form (`simd::Bf16Decode`: they must give the same bits, and the
/// process picks one by timing, so a test must run each itself; on a CPU without
/// AVX512_BF16 `Packed` and `Widened` run as `Split`).
pub fn kernel_settings() -> Vec<(simd::SimdLevel, simd::Bf16Decode)> {
    let mut out = Vec::new();
    for level in simd::available_levels() {
        out.push((level, simd::Bf16Decode::Widened));
        if level == simd::SimdLevel::Avx512 {
            out.push((level, simd::Bf16Decode::Packed));
            out.push((level, simd::Bf16Decode::Split));
        }
    }
    out
}

/// Runs `f` under a setting of [`kernel_settings`] (as `simd::with_level`).
pub fn with_setting<R>(
    (level, form): (simd::SimdLevel, simd::Bf16Decode),
    f: impl FnOnce() -> R,
) -> zmlx_kernels::cpu::Result<R> {
    simd::with_bf16_decode(form, || simd::with_level(level, f))
}
