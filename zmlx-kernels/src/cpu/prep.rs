//! Activation preparation, done once per activation row before any weight is read.
//!
//! A row `x[0..K]` (any dtype) becomes:
//! - `xf`: the row widened to f32 (natural order), used by 8-bit, float and tiled kernels;
//! - `xsum`: the f32 sum of each quantization group, so that the bias term of a group is
//!   one multiply (`bias_g * xsum_g`) instead of one per element, as in MLX's kernels;
//! - `xp` (4-bit only): the row reordered to match the bytes of the packed words. Byte
//!   `i` (0..16) of a 32-value block holds values `8*(i/4) + 2*(i%4)` (low nibble) and
//!   that plus one (high nibble); `xp` stores the 16 low-nibble partners then the 16
//!   high-nibble partners, so the 4-bit kernels split nibbles with one AND and one shift
//!   per 16 bytes instead of a variable shift per value;
//! - `xb` (bf16 activations, 4-bit weights, AVX512_BF16 only): the row's bf16 bits in
//!   the order of `simd::avx512::q4_dot_bf16` (per 128-value chunk `c`, position `j`
//!   of 4 and lane `l` of 32: `x[128 c + 4 l + j]`), zero-padded to whole chunks. A row
//!   with a denormal value gets none (`vdpbf16ps` would flush it to zero) and takes
//!   the `xp` kernel.

use rayon::prelude::*;

use super::dtype::{Dtype, Element};
use super::quant::QuantSpec;
use super::simd::{self, SimdLevel};

/// Prepared activations of `rows` rows of length `k`.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    k: usize,
    groups: usize,
    xf: Vec<f32>,
    xp: Vec<f32>,
    xsum: Vec<f32>,
    /// Row stride of `xb` (K rounded up to whole chunks).
    kb: usize,
    xb: Vec<u16>,
    /// Per row: whether its `xb` may be used (no denormal values).
    xb_ok: Vec<bool>,
}

/// One prepared row; `xp`, `xsum` and `xb` are empty when the weights, the dtype,
/// the level or the row's values do not allow them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PRow<'a> {
    pub xf: &'a [f32],
    pub xp: &'a [f32],
    pub xsum: &'a [f32],
    /// Only x86_64 has the kernel that reads it; elsewhere it is always empty.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub xb: &'a [u16],
}

/// Rows per parallel task when preparing (keeps tiny inputs on the calling thread).
const PREP_ROWS_PER_TASK: usize = 16;

impl Prepared {
    /// Prepares `x` (`rows * k` elements, row-major) for weights quantized with `spec`
    /// (`None`: float weights or the exact chains) and kernels of `level`. Callers have
    /// checked `x.len() == rows * k` and that `k` is a multiple of the group size.
    pub fn new<T: Element>(
        x: &[T],
        rows: usize,
        k: usize,
        spec: Option<QuantSpec>,
        level: SimdLevel,
    ) -> Self {
        let gs = spec.map_or(0, |s| s.group_size());
        let groups = k.checked_div(gs).unwrap_or(0);
        let need_xp = spec.is_some_and(|s| s.bits() == 4);
        let need_xb = need_xp && T::DTYPE == Dtype::Bf16 && simd::bf16_dot_available(level);
        let kb = if need_xb {
            k.next_multiple_of(simd::BF16_CHUNK)
        } else {
            0
        };
        let mut xb = vec![0u16; rows * kb];
        let mut xb_ok = vec![false; rows];
        let mut xf = vec![0.0f32; rows * k];
        let mut xp = vec![0.0f32; if need_xp { rows * k } else { 0 }];
        let mut xsum = vec![0.0f32; rows * groups];
        if k > 0 && rows > 0 {
            // Independent row-parallel passes; each is a plain zip of row chunks.
            x.par_chunks(k)
                .zip(xf.par_chunks_mut(k))
                .with_min_len(PREP_ROWS_PER_TASK)
                .for_each(|(src, dst)| {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = v.to_f32();
                    }
                });
            if groups > 0 {
                xsum.par_chunks_mut(groups)
                    .zip(xf.par_chunks(k))
                    .with_min_len(PREP_ROWS_PER_TASK)
                    .for_each(|(sums, f)| {
                        for (sum, g) in sums.iter_mut().zip(f.chunks_exact(gs)) {
                            *sum = g.iter().sum();
                        }
                    });
            }
            if need_xp {
                xp.par_chunks_mut(k)
                    .zip(xf.par_chunks(k))
                    .with_min_len(PREP_ROWS_PER_TASK)
                    .for_each(|(p, f)| {
                        for (pb, fb) in p.chunks_exact_mut(32).zip(f.chunks_exact(32)) {
                            for i in 0..16 {
                                let src = 8 * (i / 4) + 2 * (i % 4);
                                pb[i] = fb[src];
                                pb[16 + i] = fb[src + 1];
                            }
                        }
                    });
            }
            if need_xb {
                xb.par_chunks_mut(kb)
                    .zip(xb_ok.par_iter_mut())
                    .zip(xf.par_chunks(k))
                    .with_min_len(PREP_ROWS_PER_TASK)
                    .for_each(|((b, ok), f)| *ok = order_for_bf16_dot(f, b));
            }
        }
        Self {
            k,
            groups,
            xf,
            xp,
            xsum,
            kb,
            xb,
            xb_ok,
        }
    }

    /// Row `i` (callers keep `i < rows`).
    #[inline]
    pub fn row(&self, i: usize) -> PRow<'_> {
        let k = self.k;
        PRow {
            xf: &self.xf[i * k..(i + 1) * k],
            xp: if self.xp.is_empty() {
                &[]
            } else {
                &self.xp[i * k..(i + 1) * k]
            },
            xsum: &self.xsum[i * self.groups..(i + 1) * self.groups],
            xb: if self.xb_ok.get(i) == Some(&true) {
                &self.xb[i * self.kb..(i + 1) * self.kb]
            } else {
                &[]
            },
        }
    }
}

/// Writes the bf16 bits of `f` (values of a bf16 row, widened) into `b` in the order
/// of `q4_dot_bf16`; `false` if the row has a denormal value.
fn order_for_bf16_dot(f: &[f32], b: &mut [u16]) -> bool {
    let mut denormal = false;
    for (c, chunk) in b.chunks_exact_mut(simd::BF16_CHUNK).enumerate() {
        for (p, out) in chunk.iter_mut().enumerate() {
            let (j, l) = (p / 32, p % 32);
            let i = simd::BF16_CHUNK * c + 4 * l + j;
            // Exact: the values came from bf16.
            let bits = f.get(i).map_or(0, |v| (v.to_bits() >> 16) as u16);
            denormal |= bits & 0x7F80 == 0 && bits & 0x007F != 0;
            *out = bits;
        }
    }
    !denormal
}
