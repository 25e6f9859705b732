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
//!   per 16 bytes instead of a variable shift per value.

use rayon::prelude::*;

use super::dtype::Element;
use super::quant::QuantSpec;

/// Prepared activations of `rows` rows of length `k`.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    k: usize,
    groups: usize,
    xf: Vec<f32>,
    xp: Vec<f32>,
    xsum: Vec<f32>,
}

/// One prepared row; `xp` and `xsum` are empty when the weights do not need them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PRow<'a> {
    pub xf: &'a [f32],
    pub xp: &'a [f32],
    pub xsum: &'a [f32],
}

/// Rows per parallel task when preparing (keeps tiny inputs on the calling thread).
const PREP_ROWS_PER_TASK: usize = 16;

impl Prepared {
    /// Prepares `x` (`rows * k` elements, row-major) for weights quantized with `spec`
    /// (`None`: float weights). Callers have checked `x.len() == rows * k` and that `k`
    /// is a multiple of the group size.
    pub fn new<T: Element>(x: &[T], rows: usize, k: usize, spec: Option<QuantSpec>) -> Self {
        let gs = spec.map_or(0, |s| s.group_size());
        let groups = k.checked_div(gs).unwrap_or(0);
        let need_xp = spec.is_some_and(|s| s.bits() == 4);
        let mut xf = vec![0.0f32; rows * k];
        let mut xp = vec![0.0f32; if need_xp { rows * k } else { 0 }];
        let mut xsum = vec![0.0f32; rows * groups];
        if k > 0 && rows > 0 {
            // Three independent row-parallel passes; each is a plain zip of row chunks.
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
        }
        Self {
            k,
            groups,
            xf,
            xp,
            xsum,
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
        }
    }
}
