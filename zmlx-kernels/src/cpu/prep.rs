//! Activation preparation, done once per activation row before any weight is read:
//! each row is widened to f32 (exact for f32, f16 and bf16), the form every kernel
//! reads (the exact chains broadcast one value per k; the float-weight dots stream
//! rows).

use rayon::prelude::*;

use super::dtype::Element;

/// Prepared activations of `rows` rows of length `k`.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    k: usize,
    xf: Vec<f32>,
}

/// One prepared row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PRow<'a> {
    pub xf: &'a [f32],
}

/// Rows per parallel task when preparing (keeps tiny inputs on the calling thread).
const PREP_ROWS_PER_TASK: usize = 16;

impl Prepared {
    /// Widens `x` (`rows * k` elements, row-major; callers have checked the length).
    pub fn new<T: Element>(x: &[T], rows: usize, k: usize) -> Self {
        let mut xf = vec![0.0f32; rows * k];
        if k > 0 && rows > 0 {
            x.par_chunks(k)
                .zip(xf.par_chunks_mut(k))
                .with_min_len(PREP_ROWS_PER_TASK)
                .for_each(|(src, dst)| {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = v.to_f32();
                    }
                });
        }
        Self { k, xf }
    }

    /// Row `i` (callers keep `i < rows`).
    #[inline]
    pub fn row(&self, i: usize) -> PRow<'_> {
        PRow {
            xf: &self.xf[i * self.k..(i + 1) * self.k],
        }
    }
}
