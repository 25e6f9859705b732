//! Linear layer: `y[M, N] = x[M, K] @ W.T` for quantized or float `W`.

use super::chain::chain_rows;
use super::dtype::{Floats, FloatsMut};
use super::error::{check_len, checked_prod, KernelError, Result};
use super::linear::{
    dot_row, dot_rows, load_tile, tile_dots, tile_rows, ROWS_A_PASS, TILE_MIN_ROWS,
};
use super::par::{for_each_task, task_size, SharedOut};
use super::precision::{current_precision, Precision};
use super::prep::Prepared;
use super::simd::{current_bf16_decode, current_level, Kernel};
use super::weights::{Typed, WeightShape, Weights};

const OP: &str = "qmm";

/// Computes `y = x @ W.T` where `x` is `[m, K]`, `W` is `[N, K]` (quantized or float,
/// `experts == 1`) and `y` is `[m, N]`, all row-contiguous.
///
/// Quantized `W` with [`Precision::MlxExact`] (the default, see [`Precision`]):
/// bit-identical to MLX's CPU `quantized_matmul` (the sequential chain in the
/// activation dtype documented in `chain.rs`); work is split over N in blocks of
/// rows, each block read once and run against all `m` activation rows.
///
/// Float `W` (not bit-exact with MLX's BLAS matmul), and quantized `W` with
/// [`Precision::F32`]: f32 accumulation rounded once;
/// `m < 8` dots each weight row with every activation row while it is in L1, larger
/// `m` multiplies f32 tiles of weight rows.
///
/// # Errors
/// [`KernelError::DtypeMismatch`] unless `x`, `y` and the weights (scales/biases or
/// values) share one dtype; [`KernelError::InvalidArgument`] for expert-stacked
/// weights; [`KernelError::LengthMismatch`] if `x` is not `m * K` or `y` not `m * N`
/// elements; [`KernelError::Overflow`] if a shape overflows `usize`.
pub fn qmm(x: Floats<'_>, m: usize, w: &Weights<'_>, y: FloatsMut<'_>) -> Result<()> {
    match (x, y) {
        (Floats::F32(x), FloatsMut::F32(y)) => qmm_typed(x, m, w, y),
        (Floats::F16(x), FloatsMut::F16(y)) => qmm_typed(x, m, w, y),
        (Floats::Bf16(x), FloatsMut::Bf16(y)) => qmm_typed(x, m, w, y),
        (_, y) => Err(KernelError::DtypeMismatch {
            op: OP,
            what: "y",
            expected: "the dtype of x",
            actual: y.dtype(),
        }),
    }
}

fn qmm_typed<T: Kernel>(x: &[T], m: usize, w: &Weights<'_>, y: &mut [T]) -> Result<()> {
    let tw = w.typed::<T>(OP)?;
    let WeightShape {
        experts,
        rows: n,
        cols: k,
    } = w.shape();
    if experts != 1 {
        return Err(KernelError::InvalidArgument {
            op: OP,
            detail: format!("weights must be a single matrix, got {experts} experts"),
        });
    }
    check_len(OP, "x", checked_prod(OP, &[m, k])?, x.len())?;
    check_len(OP, "y", checked_prod(OP, &[m, n])?, y.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let level = current_level();
    let out = SharedOut::new(y);
    let work = m.saturating_mul(n).saturating_mul(k);
    if let (Typed::Quant(qv), Precision::MlxExact) = (&tw, current_precision()) {
        // Read here: the first read times the exact chain's bf16 forms.
        let bf16 = current_bf16_decode();
        let prep = Prepared::new(x, m, k, None, level);
        let xs: Vec<&[f32]> = (0..m).map(|i| prep.row(i).xf).collect();
        let chunk = task_size(n, 16, 16);
        for_each_task(n.div_ceil(chunk), work, |c| {
            let n0 = c * chunk;
            chain_rows(level, bf16, qv, 0, n0, chunk.min(n - n0), &xs, |i, r, v| {
                // SAFETY: task `c` alone owns columns `n0..n0 + chunk`.
                unsafe { out.write(i * n + n0 + r, T::from_f32(v)) };
            });
        });
        return Ok(());
    }
    if m < TILE_MIN_ROWS {
        let prep = Prepared::new(x, m, k, tw.spec(), level);
        let chunk = task_size(n, 16, 1);
        for_each_task(n.div_ceil(chunk), work, |c| {
            let end = n.min((c + 1) * chunk);
            let mut row = c * chunk;
            // One activation row (decode): four weight rows a pass where a kernel
            // takes them.
            if m == 1 {
                while row + ROWS_A_PASS <= end {
                    let rows = core::array::from_fn(|j| tw.row(0, row + j));
                    let Some(v) = dot_rows::<T, ROWS_A_PASS>(rows, prep.row(0), true) else {
                        break;
                    };
                    for (j, v) in v.into_iter().enumerate() {
                        // SAFETY: task `c` alone owns columns `c*chunk..(c+1)*chunk`.
                        unsafe { out.write(row + j, T::from_f32(v)) };
                    }
                    row += ROWS_A_PASS;
                }
            }
            for row in row..end {
                let wr = tw.row(0, row);
                for i in 0..m {
                    let v = dot_row(level, wr, prep.row(i));
                    // SAFETY: task `c` alone owns columns `c*chunk..(c+1)*chunk`.
                    unsafe { out.write(i * n + row, T::from_f32(v)) };
                }
            }
        });
    } else {
        let prep = Prepared::new(x, m, k, None, level);
        let xs: Vec<&[f32]> = (0..m).map(|i| prep.row(i).xf).collect();
        let tr = tile_rows(k);
        let chunk = task_size(n, tr, tr);
        for_each_task(n.div_ceil(chunk), work, |c| {
            let mut tile = Vec::new();
            let end = n.min((c + 1) * chunk);
            for n0 in (c * chunk..end).step_by(tr) {
                let nr = tr.min(end - n0);
                load_tile(&tw, 0, n0, nr, &mut tile);
                tile_dots(level, &tile, nr, k, &xs, |i, r, v| {
                    // SAFETY: task `c` alone owns columns `c*chunk..(c+1)*chunk`.
                    unsafe { out.write(i * n + n0 + r, T::from_f32(v)) };
                });
            }
        });
    }
    Ok(())
}
