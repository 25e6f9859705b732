//! Down projection with weighted combine:
//! `y[t, :] = sum_j w[t, j] * (h[t, j] @ Wd[e_tj].T)`, with no `[T, k, H]` intermediate.
//!
//! # Arithmetic (quantized weights, `Precision::MlxExact`: bit-identical to MLX's CPU backend)
//! mlx-lm computes `d = gather_qmm(h, Wd)` in the activation dtype T, then
//! `(d * scores[..., None]).sum(-2).astype(T)`. Here `d` is MLX's sequential chain
//! (`chain.rs`); the product `d * w` is computed in f32 and rounded to T when the
//! scores are in T (Qwen3-MoE, Mixtral), not rounded when the scores are f32 (the
//! product is then f32 in MLX too); MLX's CPU sum over the size-k axis accumulates in
//! f32 in `j` order starting from 0 (for f16 and bf16 as well, measured), and the
//! result is rounded once to T. So each token's k products are kept and summed in
//! routing order `j`, whatever order the experts were processed in.
//!
//! Float weights, and quantized weights under `Precision::F32`, take the
//! f32-accumulating path (`d` an f32 dot product rounded once to T, the k products
//! summed in f32 in expert order; not bit-exact, see `cpu/precision.rs`).

use rayon::prelude::*;

use super::chain::chain_rows;
use super::dispatch::ExpertDispatch;
use super::dtype::{Dtype, Element, Floats, FloatsMut};
use super::error::{check_len, checked_prod, KernelError, Result};
use super::linear::{
    dot_row, dot_rows, load_tile, tile_dots, tile_rows, ROWS_A_PASS, TILE_MIN_ROWS,
};
use super::par::{for_each_task, task_size, SharedOut};
use super::precision::{current_precision, Precision};
use super::prep::Prepared;
use super::simd::SimdLevel;
use super::simd::{current_bf16_decode, current_level, Bf16Decode, Kernel};
use super::weights::{QuantView, Typed, WeightShape, Weights};

const OP: &str = "expert_down_combine";

/// Fused down projection and weighted sum over the selected experts.
///
/// - `h`: `[tokens, top_k, I]` (the SwiGLU output);
/// - `indices`: `[tokens, top_k]` expert ids (`< E`);
/// - `scores`: `[tokens, top_k]` combine weights, in the dtype of `h` or f32;
/// - `down`: expert-stacked weights `[E, H, I]`;
/// - `y`: `[tokens, H]` output in the dtype of `h`.
///
/// Work is split over output rows; within a task, each expert's rows are read once
/// for all of its tokens (f32 tiles for experts with 8 or more tokens).
///
/// # Errors
/// [`KernelError::DtypeMismatch`] unless `h`, `y` and the weights share one dtype and
/// `scores` is that dtype or f32; [`KernelError::LengthMismatch`] for a buffer of the
/// wrong length; [`KernelError::ExpertOutOfRange`] for an index `>= E`;
/// [`KernelError::Overflow`] if a shape overflows `usize` (or `tokens * top_k`
/// overflows `u32`).
pub fn expert_down_combine(
    h: Floats<'_>,
    tokens: usize,
    indices: &[u32],
    top_k: usize,
    scores: Floats<'_>,
    down: &Weights<'_>,
    y: FloatsMut<'_>,
) -> Result<()> {
    let call = Call {
        tokens,
        indices,
        top_k,
        scores,
        down,
    };
    match (h, y) {
        (Floats::F32(h), FloatsMut::F32(y)) => typed(h, &call, y),
        (Floats::F16(h), FloatsMut::F16(y)) => typed(h, &call, y),
        (Floats::Bf16(h), FloatsMut::Bf16(y)) => typed(h, &call, y),
        (_, y) => Err(KernelError::DtypeMismatch {
            op: OP,
            what: "y",
            expected: "the dtype of h",
            actual: y.dtype(),
        }),
    }
}

/// `y[i] = T(f32(residual[i]) + f32(y[i]))` for every element: MLX's CPU `add` for
/// two arrays of dtype T (f32, f16 or bf16), which widens both to f32, adds and
/// rounds once to T (round to nearest even; plain f32 addition for f32). Rounding the
/// f32 sum is also the correctly rounded sum for f16 and bf16 (f32 has more than
/// twice their precision plus two bits), so the result does not depend on how MLX
/// was built. This is how the decoder layer's `h + moe(x)` is folded into
/// [`expert_down_combine`]'s output.
///
/// # Errors
/// [`KernelError::DtypeMismatch`] unless `residual` and `y` share one dtype;
/// [`KernelError::LengthMismatch`] unless they have the same length.
pub fn add_residual(residual: Floats<'_>, y: FloatsMut<'_>) -> Result<()> {
    const OP: &str = "add_residual";
    check_len(OP, "residual", y.len(), residual.len())?;
    match (residual, y) {
        (Floats::F32(r), FloatsMut::F32(y)) => add_typed(r, y),
        (Floats::F16(r), FloatsMut::F16(y)) => add_typed(r, y),
        (Floats::Bf16(r), FloatsMut::Bf16(y)) => add_typed(r, y),
        (r, _) => {
            return Err(KernelError::DtypeMismatch {
                op: OP,
                what: "residual",
                expected: "the dtype of y",
                actual: r.dtype(),
            })
        }
    }
    Ok(())
}

fn add_typed<T: Element>(r: &[T], y: &mut [T]) {
    // Decode is a few thousand elements (one pass); prefill splits into chunks.
    const CHUNK: usize = 16 * 1024;
    y.par_chunks_mut(CHUNK)
        .zip(r.par_chunks(CHUNK))
        .for_each(|(y, r)| {
            for (y, r) in y.iter_mut().zip(r) {
                *y = T::from_f32(r.to_f32() + y.to_f32());
            }
        });
}

struct Call<'a> {
    tokens: usize,
    indices: &'a [u32],
    top_k: usize,
    scores: Floats<'a>,
    down: &'a Weights<'a>,
}

fn widen_scores<T: Element>(scores: Floats<'_>) -> Result<(Vec<f32>, bool)> {
    let round_products = match scores.dtype() {
        Dtype::F32 => false,
        d if d == T::DTYPE => true,
        d => {
            return Err(KernelError::DtypeMismatch {
                op: OP,
                what: "scores",
                expected: "the dtype of h, or f32",
                actual: d,
            })
        }
    };
    let v = match scores {
        Floats::F32(s) => s.to_vec(),
        Floats::F16(s) => s.iter().map(|v| v.to_f32()).collect(),
        Floats::Bf16(s) => s.iter().map(|v| Element::to_f32(*v)).collect(),
    };
    Ok((v, round_products))
}

fn typed<T: Kernel>(h: &[T], c: &Call<'_>, y: &mut [T]) -> Result<()> {
    let (tokens, top_k) = (c.tokens, c.top_k);
    let td = c.down.typed::<T>(OP)?;
    let WeightShape {
        experts,
        rows: hidden,
        cols: inter,
    } = c.down.shape();
    let pairs_n = checked_prod(OP, &[tokens, top_k])?;
    check_len(OP, "h", checked_prod(OP, &[pairs_n, inter])?, h.len())?;
    check_len(OP, "indices", pairs_n, c.indices.len())?;
    check_len(OP, "scores", pairs_n, c.scores.len())?;
    check_len(OP, "y", checked_prod(OP, &[tokens, hidden])?, y.len())?;
    let (scores, round_products) = widen_scores::<T>(c.scores)?;
    let disp = ExpertDispatch::build(OP, c.indices, experts)?;
    if y.is_empty() {
        return Ok(());
    }
    let level = current_level();
    if let (Typed::Quant(qd), Precision::MlxExact) = (&td, current_precision()) {
        exact(
            (level, current_bf16_decode()),
            h,
            c,
            qd,
            &scores,
            round_products,
            &disp,
            y,
        );
        return Ok(());
    }
    let prep = Prepared::new(h, pairs_n, inter, c.down.spec(), level);
    let active: Vec<usize> = (0..experts).filter(|&e| disp.count(e) > 0).collect();
    let chunk = task_size(hidden, tile_rows(inter), 4);
    // Tiles bound the f32 scratch of experts with many pairs. When no expert has enough
    // pairs to tile (decode), a task runs each expert over all of its rows at once, so
    // the weight reads (and their prefetches) run on through one expert's rows instead
    // of restarting every tile.
    let tr = if active.iter().all(|&e| disp.count(e) < TILE_MIN_ROWS) {
        chunk
    } else {
        tile_rows(inter)
    };
    let combine = |d: f32, p: usize| {
        let prod = T::round(d) * scores[p];
        if round_products {
            T::round(prod)
        } else {
            prod
        }
    };
    let out = SharedOut::new(y);
    let work = pairs_n.saturating_mul(hidden).saturating_mul(inter);
    for_each_task(hidden.div_ceil(chunk), work, |ci| {
        let end = hidden.min((ci + 1) * chunk);
        let mut acc = Vec::new();
        let mut tile = Vec::new();
        let mut xs: Vec<&[f32]> = Vec::new();
        for n0 in (ci * chunk..end).step_by(tr) {
            let nr = tr.min(end - n0);
            acc.clear();
            acc.resize(tokens * nr, 0.0f32);
            for &e in &active {
                let pairs = disp.pairs(e);
                if pairs.len() < TILE_MIN_ROWS {
                    // One pair (decode): four rows a pass where a kernel takes them.
                    let mut r0 = 0;
                    if let [p] = *pairs {
                        let p = p as usize;
                        while r0 + ROWS_A_PASS <= nr {
                            let rows = core::array::from_fn(|i| td.row(e, n0 + r0 + i));
                            let Some(d) = dot_rows::<T, ROWS_A_PASS>(rows, prep.row(p), true)
                            else {
                                break;
                            };
                            for (i, d) in d.into_iter().enumerate() {
                                acc[(p / top_k) * nr + r0 + i] += combine(d, p);
                            }
                            r0 += ROWS_A_PASS;
                        }
                    }
                    for r in r0..nr {
                        let wr = td.row(e, n0 + r);
                        for &p in pairs {
                            let p = p as usize;
                            let d = dot_row(level, wr, prep.row(p));
                            acc[(p / top_k) * nr + r] += combine(d, p);
                        }
                    }
                } else {
                    load_tile(&td, e, n0, nr, &mut tile);
                    xs.clear();
                    xs.extend(pairs.iter().map(|&p| prep.row(p as usize).xf));
                    tile_dots(level, &tile, nr, inter, &xs, |i, r, d| {
                        let p = pairs[i] as usize;
                        acc[(p / top_k) * nr + r] += combine(d, p);
                    });
                }
            }
            for t in 0..tokens {
                for r in 0..nr {
                    // SAFETY: rows `ci*chunk..end` of every token belong to task `ci`.
                    unsafe { out.write(t * hidden + n0 + r, T::from_f32(acc[t * nr + r])) };
                }
            }
        }
    });
    Ok(())
}

/// Floats of per-pair product scratch per task (rows per tile = this / pairs).
const SCRATCH_FLOATS: usize = 64 * 1024;

/// The bit-exact path for quantized weights. Tasks own blocks of output rows; a task
/// walks its rows in tiles, runs every active expert's chain against that expert's
/// pairs (each weight row read once), keeps the rounded products per pair, then sums
/// each token's k products in `j` order.
#[allow(clippy::too_many_arguments)]
fn exact<T: Kernel>(
    (level, bf16): (SimdLevel, Bf16Decode),
    h: &[T],
    c: &Call<'_>,
    qd: &QuantView<'_, T>,
    scores: &[f32],
    round_products: bool,
    disp: &ExpertDispatch,
    y: &mut [T],
) {
    let (tokens, top_k) = (c.tokens, c.top_k);
    let (experts, hidden, inter) = (qd.shape.experts, qd.shape.rows, qd.shape.cols);
    let pairs_n = tokens * top_k;
    let prep = Prepared::new(h, pairs_n, inter, None, level);
    let active: Vec<usize> = (0..experts).filter(|&e| disp.count(e) > 0).collect();
    let tr = (SCRATCH_FLOATS / pairs_n.max(1) / 16 * 16).clamp(16, 256);
    let chunk = task_size(hidden, 16, 16);
    let out = SharedOut::new(y);
    let work = pairs_n.saturating_mul(hidden).saturating_mul(inter);
    for_each_task(hidden.div_ceil(chunk), work, |ci| {
        let end = hidden.min((ci + 1) * chunk);
        let mut prod = vec![0.0f32; pairs_n * tr];
        let mut xs: Vec<&[f32]> = Vec::new();
        for n0 in (ci * chunk..end).step_by(tr) {
            let nr = tr.min(end - n0);
            for &e in &active {
                let pairs = disp.pairs(e);
                xs.clear();
                xs.extend(pairs.iter().map(|&p| prep.row(p as usize).xf));
                chain_rows(level, bf16, qd, e, n0, nr, &xs, |i, r, d| {
                    let p = pairs[i] as usize;
                    let v = d * scores[p];
                    prod[p * tr + r] = if round_products { T::round(v) } else { v };
                });
            }
            for t in 0..tokens {
                for r in 0..nr {
                    let mut acc = 0.0f32;
                    for j in 0..top_k {
                        acc += prod[(t * top_k + j) * tr + r];
                    }
                    // SAFETY: rows `ci*chunk..end` of every token belong to task `ci`.
                    unsafe { out.write(t * hidden + n0 + r, T::from_f32(acc)) };
                }
            }
        }
    });
}
