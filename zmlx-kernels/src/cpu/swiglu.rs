//! Expert SwiGLU: `h[t, j, :] = silu(x[t] @ Wg[e].T) * (x[t] @ Wu[e].T)` with
//! `e = indices[t, j]`, fused (gate and up in one pass, no `[T, k, I]` intermediates).
//!
//! # Arithmetic (quantized weights, `Precision::MlxExact`: bit-identical to MLX's CPU backend)
//! mlx-lm runs `gather_qmm(gate)`, `gather_qmm(up)` (outputs in the activation dtype
//! T), then `silu(g) * u` with `silu(g) = g * sigmoid(g)`, each element-wise op
//! storing its result in T. Here `g` and `u` are MLX's sequential chains (`chain.rs`);
//! with `T(v)` = rounding to T and `exp` = MLX's polynomial `exp` (`mlx_math.rs`):
//! `e = T(exp(|g|))`, `y = 1 / (1 + e)`, `s = T(g < 0 ? y : 1 - y)`, `a = T(g * s)`,
//! `h = T(a * u)`, all in f32. In f32 every `T()` is the identity.
//!
//! Float weights, and quantized weights under `Precision::F32`, take the
//! f32-accumulating path: `g` and `u` are f32 dot products rounded once to T, then
//! the same tail (not bit-exact, see `cpu/precision.rs`).

use super::chain::chain_rows;
use super::dispatch::ExpertDispatch;
use super::dtype::{Element, Floats, FloatsMut};
use super::error::{check_len, checked_prod, KernelError, Result};
use super::linear::{dot_row, dot_rows, load_tile, tile_dots, tile_rows, TILE_MIN_ROWS};
use super::mlx_math;
use super::par::{for_each_task, task_size, SharedOut};
use super::precision::{current_precision, Precision};
use super::prep::Prepared;
use super::simd::SimdLevel;
use super::simd::{current_bf16_decode, current_level, Bf16Decode, Kernel};
use super::weights::{QuantView, Typed, WeightShape, Weights};

const OP: &str = "expert_swiglu";

/// The element-wise tail of the float-weight path: `gate` and `up` are f32 dot
/// products, rounded to T first, then the reference's tail.
#[inline]
fn swiglu_act<T: Element>(gate: f32, up: f32) -> f32 {
    mlx_math::swiglu::<T>(T::round(gate), T::round(up))
}

/// Fused expert SwiGLU.
///
/// - `x`: `[tokens, K]` activations;
/// - `indices`: `[tokens, top_k]` expert ids (`< E`);
/// - `gate`, `up`: expert-stacked weights `[E, I, K]`, same shape and format;
/// - `h`: `[tokens, top_k, I]` output, dtype of `x`.
///
/// Work is grouped by expert (counting sort of the `(t, j)` pairs), so each expert's
/// rows are read once for all its tokens; experts with 8 or more tokens use f32 tiles.
///
/// # Errors
/// [`KernelError::DtypeMismatch`] unless `x`, `h` and both weights share one dtype;
/// [`KernelError::DimMismatch`] if `gate` and `up` differ in shape;
/// [`KernelError::InvalidArgument`] if they differ in quantization;
/// [`KernelError::LengthMismatch`] for a buffer of the wrong length;
/// [`KernelError::ExpertOutOfRange`] for an index `>= E`;
/// [`KernelError::Overflow`] if a shape overflows `usize` (or `tokens * top_k` overflows
/// `u32`).
pub fn expert_swiglu(
    x: Floats<'_>,
    tokens: usize,
    indices: &[u32],
    top_k: usize,
    gate: &Weights<'_>,
    up: &Weights<'_>,
    h: FloatsMut<'_>,
) -> Result<()> {
    match (x, h) {
        (Floats::F32(x), FloatsMut::F32(h)) => typed(x, tokens, indices, top_k, gate, up, h),
        (Floats::F16(x), FloatsMut::F16(h)) => typed(x, tokens, indices, top_k, gate, up, h),
        (Floats::Bf16(x), FloatsMut::Bf16(h)) => typed(x, tokens, indices, top_k, gate, up, h),
        (_, h) => Err(KernelError::DtypeMismatch {
            op: OP,
            what: "h",
            expected: "the dtype of x",
            actual: h.dtype(),
        }),
    }
}

fn typed<T: Kernel>(
    x: &[T],
    tokens: usize,
    indices: &[u32],
    top_k: usize,
    gate: &Weights<'_>,
    up: &Weights<'_>,
    h: &mut [T],
) -> Result<()> {
    let tg = gate.typed::<T>(OP)?;
    let tu = up.typed::<T>(OP)?;
    let shape = gate.shape();
    if up.shape() != shape {
        return Err(KernelError::DimMismatch {
            op: OP,
            what: "gate and up weights (rows)",
            left: shape.rows,
            right: up.shape().rows,
        });
    }
    if gate.spec() != up.spec() {
        return Err(KernelError::InvalidArgument {
            op: OP,
            detail: "gate and up weights must use the same quantization".into(),
        });
    }
    let WeightShape {
        experts,
        rows: inter,
        cols: k,
    } = shape;
    check_len(OP, "x", checked_prod(OP, &[tokens, k])?, x.len())?;
    check_len(
        OP,
        "indices",
        checked_prod(OP, &[tokens, top_k])?,
        indices.len(),
    )?;
    check_len(OP, "h", checked_prod(OP, &[tokens, top_k, inter])?, h.len())?;
    let disp = ExpertDispatch::build(OP, indices, experts)?;
    if h.is_empty() {
        return Ok(());
    }
    let level = current_level();
    let active: Vec<usize> = (0..experts).filter(|&e| disp.count(e) > 0).collect();
    if let (Typed::Quant(qg), Typed::Quant(qu), Precision::MlxExact) =
        (&tg, &tu, current_precision())
    {
        exact::<T>(
            (level, current_bf16_decode()),
            x,
            tokens,
            k,
            top_k,
            &disp,
            &active,
            (qg, qu),
            h,
        );
        return Ok(());
    }
    let prep = Prepared::new(x, tokens, k, gate.spec(), level);
    let chunk = task_size(active.len() * inter, 16, 4).min(inter);
    let jobs: Vec<(usize, usize)> = active
        .iter()
        .flat_map(|&e| (0..inter).step_by(chunk).map(move |r0| (e, r0)))
        .collect();
    let out = SharedOut::new(h);
    let work = (tokens * top_k).saturating_mul(2 * inter).saturating_mul(k);
    for_each_task(jobs.len(), work, |j| {
        let (e, r0) = jobs[j];
        let r1 = inter.min(r0 + chunk);
        let pairs = disp.pairs(e);
        // SAFETY (both writes below): pair `p` belongs to expert `e` only, and rows
        // `r0..r1` of expert `e` to this job only, so element `p * inter + r` has one
        // writer.
        if pairs.len() < TILE_MIN_ROWS {
            for r in r0..r1 {
                let (gr, ur) = (tg.row(e, r), tu.row(e, r));
                for &p in pairs {
                    let xr = prep.row(p as usize / top_k);
                    // The gate and up rows in one pass where a kernel takes them.
                    let [g, u] = dot_rows::<T, 2>([gr, ur], xr, false)
                        .unwrap_or_else(|| [dot_row(level, gr, xr), dot_row(level, ur, xr)]);
                    let v = swiglu_act::<T>(g, u);
                    unsafe { out.write(p as usize * inter + r, T::from_f32(v)) };
                }
            }
        } else {
            let xs: Vec<&[f32]> = pairs
                .iter()
                .map(|&p| prep.row(p as usize / top_k).xf)
                .collect();
            // Two tiles (gate and up) live at once: halve the rows of each.
            let tr = (tile_rows(k) / 2).max(4);
            let (mut gtile, mut utile) = (Vec::new(), Vec::new());
            let mut gvals = Vec::new();
            for n0 in (r0..r1).step_by(tr) {
                let nr = tr.min(r1 - n0);
                load_tile(&tg, e, n0, nr, &mut gtile);
                load_tile(&tu, e, n0, nr, &mut utile);
                gvals.clear();
                gvals.resize(xs.len() * nr, 0.0f32);
                tile_dots(level, &gtile, nr, k, &xs, |i, r, v| gvals[i * nr + r] = v);
                tile_dots(level, &utile, nr, k, &xs, |i, r, v| {
                    let a = swiglu_act::<T>(gvals[i * nr + r], v);
                    let idx = pairs[i] as usize * inter + n0 + r;
                    unsafe { out.write(idx, T::from_f32(a)) };
                });
            }
        }
    });
    Ok(())
}

/// Output rows of one expert computed per step: gate values for this many rows and
/// all of the expert's pairs wait in a scratch buffer for the up projection.
const SUB_ROWS: usize = 64;

/// The bit-exact path for quantized weights: jobs are (expert, block of output rows);
/// within a job, each 64-row slice of gate then up is run against all of the expert's
/// pairs (weights read once, activations reused from cache), then the tail.
#[allow(clippy::too_many_arguments)]
fn exact<T: Kernel>(
    (level, bf16): (SimdLevel, Bf16Decode),
    x: &[T],
    tokens: usize,
    k: usize,
    top_k: usize,
    disp: &ExpertDispatch,
    active: &[usize],
    (qg, qu): (&QuantView<'_, T>, &QuantView<'_, T>),
    h: &mut [T],
) {
    let inter = qg.shape.rows;
    let prep = Prepared::new(x, tokens, k, None, level);
    let chunk = task_size(active.len() * inter, 16, 16).min(inter.next_multiple_of(16));
    let jobs: Vec<(usize, usize)> = active
        .iter()
        .flat_map(|&e| (0..inter).step_by(chunk).map(move |r0| (e, r0)))
        .collect();
    let out = SharedOut::new(h);
    let work = (tokens * top_k).saturating_mul(2 * inter).saturating_mul(k);
    for_each_task(jobs.len(), work, |j| {
        let (e, r0) = jobs[j];
        let r1 = inter.min(r0 + chunk);
        let pairs = disp.pairs(e);
        let xs: Vec<&[f32]> = pairs
            .iter()
            .map(|&p| prep.row(p as usize / top_k).xf)
            .collect();
        let mut gvals = vec![0.0f32; pairs.len() * SUB_ROWS];
        for n0 in (r0..r1).step_by(SUB_ROWS) {
            let nr = SUB_ROWS.min(r1 - n0);
            chain_rows(level, bf16, qg, e, n0, nr, &xs, |i, r, v| {
                gvals[i * SUB_ROWS + r] = v
            });
            chain_rows(level, bf16, qu, e, n0, nr, &xs, |i, r, u| {
                let v = mlx_math::swiglu::<T>(gvals[i * SUB_ROWS + r], u);
                // SAFETY: pair `pairs[i]` belongs to expert `e` only, and rows
                // `r0..r1` of expert `e` to this job only: one writer per element.
                unsafe { out.write(pairs[i] as usize * inter + n0 + r, T::from_f32(v)) };
            });
        }
    });
}
