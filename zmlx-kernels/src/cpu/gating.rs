//! Router gating: logits `[T, E]` to expert indices `[T, k]` and combine weights.
//!
//! # Output
//! [`Gating::SoftmaxTopK`] writes the k experts in exactly the order mlx-lm gets them
//! on the CPU: `argpartition(gates, -k)[..., -k:]`, where MLX's CPU argpartition runs
//! `std::nth_element` (libstdc++'s introselect) over `iota(E)` with the comparator
//! "(value, index) ascending, NaN last"; [`nth_element`] reproduces that algorithm
//! step by step, so the set AND the order match. The order matters for bit-exactness:
//! the renormalising sum and the down+combine sum run over the k in this order.
//! [`Gating::TopKSoftmax`] writes them in the order of mlx-lm's Mixtral router on the
//! CPU, `argpartition(-logits, kth=k-1)[..., :k]`: the same `nth_element`, over the
//! NEGATED logits and with `nth = k - 1`, so among equal logits the LOWER index is
//! selected, and a NaN logit (still NaN when negated, so ordered after every number)
//! is selected only when fewer than k logits are numbers.
//! [`Gating::SigmoidGroupTopK`] likewise follows mlx-lm's DeepSeek-V3
//! `argpartition(-scores, kth=k-1)[..., :k]` on its selection scores.
//!
//! Weights are written in the dtype of the `weights` buffer, which must be the logits
//! dtype or f32; every rounding listed below is to that dtype (the identity for f32).
//!
//! # Rounding emulated (mlx-lm)
//! - [`Gating::SoftmaxTopK`] (Qwen3-MoE), bit-exact with MLX's CPU backend:
//!   `p = round(exp(l - max) * (1 / sum))` in f32 (MLX's `softmax(precise=True)`:
//!   MLX's polynomial `exp`, see `mlx_math.rs`, and a sequential f32 sum in expert
//!   order); top-k on the rounded `p` in argpartition order (above); with
//!   renormalisation `s = round(sum_f32(p_j))` summed sequentially in that order,
//!   `w_j = round(p_j / s)`.
//! - [`Gating::TopKSoftmax`] (Mixtral), bit-exact with MLX's CPU backend: the k
//!   logits in argpartition order (above), then MLX's `softmax(precise=True)` over
//!   them: `w_j = round(exp(l_j - max) * (1 / sum))` in f32 (MLX's `exp`, the sum
//!   sequential in that order).
//! - [`Gating::SigmoidGroupTopK`] (DeepSeek-V3), bit-exact with MLX's CPU backend
//!   for an f32 `weights` buffer (mlx-lm returns f32 weights): all in f32,
//!   `s = sigmoid(l)` (MLX's sigmoid and `exp`); selection scores `s + bias`; with
//!   `n_group > 1` each group of `E / n_group` experts is scored by the sum of its two
//!   largest selection scores, the `n_group - topk_group` lowest groups by (score,
//!   index) get selection scores 0.0 (as mlx-lm and the Hugging Face reference do,
//!   not -inf); top-k on the selection scores in argpartition order (above); weights
//!   from the unbiased `s`; if `top_k > 1` and `renormalize`, divided by their
//!   sequential f32 sum in that order; times `routed_scaling_factor`; rounded once
//!   (to a 16-bit `weights` dtype, which mlx-lm does not do).

use rayon::prelude::*;

use super::dtype::{Dtype, Element, Floats, FloatsMut};
use super::error::{check_len, checked_prod, KernelError, Result};
use super::mlx_math;

const OP: &str = "route";

/// A router's selection rule.
#[derive(Debug, Clone, Copy)]
pub enum Gating<'a> {
    /// softmax over all experts, top-k, optional renormalisation (Qwen3-MoE,
    /// `norm_topk_prob`).
    SoftmaxTopK {
        /// Experts per token.
        top_k: usize,
        /// Divide the k probabilities by their sum.
        renormalize: bool,
    },
    /// top-k on the logits, softmax over the k (Mixtral).
    TopKSoftmax {
        /// Experts per token.
        top_k: usize,
    },
    /// sigmoid, biased group-limited top-k, unbiased weights (DeepSeek-V3).
    SigmoidGroupTopK {
        /// Experts per token.
        top_k: usize,
        /// Number of expert groups (1: no group limit). Must divide E.
        n_group: usize,
        /// Groups kept per token (`1..=n_group`).
        topk_group: usize,
        /// Divide the weights by their sum (only when `top_k > 1`).
        renormalize: bool,
        /// Factor applied to the final weights.
        routed_scaling_factor: f32,
        /// `[E]` bias added to the scores for selection only (any dtype).
        correction_bias: Option<Floats<'a>>,
    },
}

impl Gating<'_> {
    /// Experts selected per token.
    pub fn top_k(&self) -> usize {
        match *self {
            Gating::SoftmaxTopK { top_k, .. }
            | Gating::TopKSoftmax { top_k }
            | Gating::SigmoidGroupTopK { top_k, .. } => top_k,
        }
    }
}

/// Selects `top_k` experts per token from `logits` (`[tokens, experts]`) and writes
/// `indices` and `weights` (both `[tokens, top_k]`). See the module docs for the exact
/// arithmetic, ordering and tie-breaking.
///
/// # Errors
/// [`KernelError::LengthMismatch`] for a buffer of the wrong length;
/// [`KernelError::DtypeMismatch`] if `weights` is neither the logits dtype nor f32;
/// [`KernelError::InvalidArgument`] if `top_k > experts`, or for an invalid group
/// configuration (`n_group` not dividing E, groups of fewer than 2 experts when
/// `n_group > 1`, `topk_group` outside `1..=n_group`, a bias of the wrong length);
/// [`KernelError::Overflow`] if a shape overflows `usize`.
pub fn route(
    logits: Floats<'_>,
    tokens: usize,
    experts: usize,
    gating: &Gating<'_>,
    indices: &mut [u32],
    weights: FloatsMut<'_>,
) -> Result<()> {
    let top_k = gating.top_k();
    check_len(
        OP,
        "logits",
        checked_prod(OP, &[tokens, experts])?,
        logits.len(),
    )?;
    let pairs = checked_prod(OP, &[tokens, top_k])?;
    check_len(OP, "indices", pairs, indices.len())?;
    check_len(OP, "weights", pairs, weights.len())?;
    if weights.dtype() != Dtype::F32 && weights.dtype() != logits.dtype() {
        return Err(KernelError::DtypeMismatch {
            op: OP,
            what: "weights",
            expected: "the logits dtype or f32",
            actual: weights.dtype(),
        });
    }
    if top_k > experts {
        return Err(invalid(format!("top_k {top_k} > {experts} experts")));
    }
    let bias = validate_groups(gating, experts)?;
    if pairs == 0 {
        return Ok(());
    }
    let round: fn(f32) -> f32 = match weights.dtype() {
        Dtype::F32 => |v| v,
        Dtype::F16 => <half::f16 as Element>::round,
        Dtype::Bf16 => <half::bf16 as Element>::round,
    };
    let mut w32 = vec![0.0f32; pairs];
    indices
        .par_chunks_mut(top_k)
        .zip(w32.par_chunks_mut(top_k))
        .enumerate()
        .with_min_len(16)
        .for_each_init(
            || {
                let scratch = || vec![0.0f32; experts];
                (scratch(), scratch(), scratch(), Vec::new())
            },
            |(row, scratch, neg, perm), (t, (idx, w))| {
                widen_row(logits, t * experts, row);
                match *gating {
                    Gating::SoftmaxTopK { renormalize, .. } => {
                        softmax_top_k(row, perm, renormalize, round, idx, w)
                    }
                    Gating::TopKSoftmax { .. } => top_k_softmax(row, neg, perm, round, idx, w),
                    Gating::SigmoidGroupTopK {
                        n_group,
                        topk_group,
                        renormalize,
                        routed_scaling_factor,
                        ..
                    } => sigmoid_group(
                        row,
                        scratch,
                        neg,
                        perm,
                        &bias,
                        (n_group, topk_group),
                        renormalize,
                        routed_scaling_factor,
                        round,
                        idx,
                        w,
                    ),
                }
            },
        );
    // Every value in `w32` is already representable in the output dtype.
    match weights {
        FloatsMut::F32(o) => o.copy_from_slice(&w32),
        FloatsMut::F16(o) => o.iter_mut().zip(&w32).for_each(|(o, &v)| {
            *o = half::f16::from_f32(v);
        }),
        FloatsMut::Bf16(o) => o.iter_mut().zip(&w32).for_each(|(o, &v)| {
            *o = half::bf16::from_f32(v);
        }),
    }
    Ok(())
}

fn invalid(detail: String) -> KernelError {
    KernelError::InvalidArgument { op: OP, detail }
}

/// Checks the group-limited configuration; returns the correction bias widened to f32
/// (empty when absent or not applicable).
fn validate_groups(gating: &Gating<'_>, experts: usize) -> Result<Vec<f32>> {
    let Gating::SigmoidGroupTopK {
        n_group,
        topk_group,
        correction_bias,
        ..
    } = *gating
    else {
        return Ok(Vec::new());
    };
    if n_group == 0 || !experts.is_multiple_of(n_group) {
        return Err(invalid(format!(
            "n_group {n_group} must divide {experts} experts"
        )));
    }
    if n_group > 1 && experts / n_group < 2 {
        return Err(invalid(
            "group-limited routing needs at least 2 experts per group".into(),
        ));
    }
    if topk_group == 0 || topk_group > n_group {
        return Err(invalid(format!(
            "topk_group {topk_group} outside 1..={n_group}"
        )));
    }
    let Some(b) = correction_bias else {
        return Ok(Vec::new());
    };
    check_len(OP, "correction_bias", experts, b.len())?;
    let mut v = vec![0.0f32; experts];
    widen_row(b, 0, &mut v);
    Ok(v)
}

fn widen_row(src: Floats<'_>, start: usize, out: &mut [f32]) {
    let n = out.len();
    match src {
        Floats::F32(s) => out.copy_from_slice(&s[start..start + n]),
        Floats::F16(s) => out
            .iter_mut()
            .zip(&s[start..start + n])
            .for_each(|(o, v)| *o = v.to_f32()),
        Floats::Bf16(s) => out
            .iter_mut()
            .zip(&s[start..start + n])
            .for_each(|(o, v)| *o = Element::to_f32(*v)),
    }
}

/// Writes the indices of the `idx.len()` largest values, highest first; ties go to
/// the higher index and NaN ranks as +inf, which is how MLX's CPU `argpartition`
/// orders values (by value, then by index) and so which experts mlx-lm selects.
pub(crate) fn top_k_indices(vals: &[f32], idx: &mut [u32]) {
    let k = idx.len();
    if k == 0 {
        return;
    }
    let key = |v: f32| if v.is_nan() { f32::INFINITY } else { v };
    let mut filled = 0usize;
    for (i, &v) in vals.iter().enumerate() {
        let v = key(v);
        if filled == k && v < key(vals[idx[k - 1] as usize]) {
            continue;
        }
        // `>` puts a newcomer (a higher index) ahead of equal earlier values.
        let pos = idx[..filled].partition_point(|&j| key(vals[j as usize]) > v);
        if filled < k {
            filled += 1;
        }
        idx.copy_within(pos..filled - 1, pos + 1);
        idx[pos] = i as u32;
    }
}

fn softmax_in_place(v: &mut [f32], round: fn(f32) -> f32) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in v.iter_mut() {
        *x = mlx_math::exp(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in v.iter_mut() {
        *x = round(*x * inv);
    }
}

fn softmax_top_k(
    row: &mut [f32],
    perm: &mut Vec<u32>,
    renormalize: bool,
    round: fn(f32) -> f32,
    idx: &mut [u32],
    w: &mut [f32],
) {
    softmax_in_place(row, round);
    argpartition_top(row, perm, idx);
    for (w, &i) in w.iter_mut().zip(idx.iter()) {
        *w = row[i as usize];
    }
    if renormalize {
        let s = round(w.iter().sum());
        for w in w.iter_mut() {
            *w = round(*w / s);
        }
    }
}

/// mlx-lm's Mixtral router: `argpartition(-logits, kth=k-1)[..., :k]`, the logits at
/// those indices, `softmax(precise=True)` over them. `neg` is scratch of the row's
/// length.
fn top_k_softmax(
    row: &[f32],
    neg: &mut [f32],
    perm: &mut Vec<u32>,
    round: fn(f32) -> f32,
    idx: &mut [u32],
    w: &mut [f32],
) {
    // MLX negates the logits in their own dtype first; negation is exact in every
    // float format, so negating the widened f32 values gives the same numbers, and the
    // comparator then sees exactly what MLX's sees (NaN stays NaN and sorts last).
    for (n, &x) in neg.iter_mut().zip(row) {
        *n = -x;
    }
    argpartition_bottom(neg, perm, idx);
    for (w, &i) in w.iter_mut().zip(idx.iter()) {
        *w = row[i as usize];
    }
    softmax_in_place(w, round);
}

/// mlx-lm's DeepSeek-V3 `group_expert_select`, op by op as MLX's CPU backend runs
/// it (all in f32): `row` becomes the unbiased sigmoid, `select` the selection
/// scores, `neg` scratch; all three of the row's length.
#[allow(clippy::too_many_arguments)]
fn sigmoid_group(
    row: &mut [f32],
    select: &mut [f32],
    neg: &mut [f32],
    perm: &mut Vec<u32>,
    bias: &[f32],
    (n_group, topk_group): (usize, usize),
    renormalize: bool,
    scaling: f32,
    round: fn(f32) -> f32,
    idx: &mut [u32],
    w: &mut [f32],
) {
    for (i, x) in row.iter_mut().enumerate() {
        // `sigmoid(gates.astype(float32))`: MLX's sigmoid in f32 (its own `exp`).
        *x = mlx_math::sigmoid::<f32>(*x);
        // Without a bias the scores are the sigmoid itself (nothing is added).
        select[i] = match bias.get(i) {
            Some(&b) => *x + b,
            None => *x,
        };
    }
    let drop = n_group - topk_group;
    if n_group > 1 && drop > 0 {
        let gsize = row.len() / n_group;
        let mut gscore = vec![0.0f32; n_group];
        let mut top2 = [0u32; 2];
        for (g, s) in gscore.iter_mut().enumerate() {
            let grp = &select[g * gsize..(g + 1) * gsize];
            // `topk(scores, 2).sum(-1)`: which two VALUES topk returns is fixed (NaN
            // ranks highest, as in MLX's order); a sum of two from 0 does not depend
            // on their order.
            top_k_indices(grp, &mut top2);
            *s = 0.0 + grp[top2[0] as usize] + grp[top2[1] as usize];
        }
        // `argpartition(group_scores, kth=drop-1, axis=-2)[..., :drop, :]`: the groups
        // zeroed are the `drop` lowest by (value, index), NaN last; only the set
        // matters, and MLX's own selection gives it.
        let mut dropped = vec![0u32; drop];
        argpartition_bottom(&gscore, perm, &mut dropped);
        for &g in &dropped {
            // `put_along_axis(..., mx.array(0.0))`: +0.0, not -inf.
            select[g as usize * gsize..(g as usize + 1) * gsize].fill(0.0);
        }
    }
    // `argpartition(-scores, kth=k-1)[..., :k]`, in MLX's order.
    for (n, &x) in neg.iter_mut().zip(select.iter()) {
        *n = -x;
    }
    argpartition_bottom(neg, perm, idx);
    for (w, &i) in w.iter_mut().zip(idx.iter()) {
        *w = row[i as usize];
    }
    if renormalize && w.len() > 1 {
        // `scores.sum(-1)`: a sequential f32 sum from 0 in the k's order.
        let mut s = 0.0f32;
        for &v in w.iter() {
            s += v;
        }
        for w in w.iter_mut() {
            *w /= s;
        }
    }
    for w in w.iter_mut() {
        *w = round(*w * scaling);
    }
}

/// MLX's CPU argpartition comparator: `(value, index)` ascending, NaN after numbers.
#[inline]
fn mlx_less(vals: &[f32], a: u32, b: u32) -> bool {
    let (x, y) = (vals[a as usize], vals[b as usize]);
    if x.is_nan() {
        return false;
    }
    if y.is_nan() {
        return true;
    }
    x < y || (x == y && a < b)
}

/// Writes `argpartition(vals, -k)[-k:]` as MLX's CPU backend computes it
/// (`k = idx.len()`), using `perm` as scratch.
pub(crate) fn argpartition_top(vals: &[f32], perm: &mut Vec<u32>, idx: &mut [u32]) {
    let n = vals.len();
    let k = idx.len();
    perm.clear();
    perm.extend(0..n as u32);
    if k == 0 {
        return;
    }
    nth_element(perm, n - k, |a, b| mlx_less(vals, a, b));
    idx.copy_from_slice(&perm[n - k..]);
}

/// Writes `argpartition(vals, kth=k-1)[:k]` as MLX's CPU backend computes it
/// (`k = idx.len()`, at least 1 and at most `vals.len()`), using `perm` as scratch.
pub(crate) fn argpartition_bottom(vals: &[f32], perm: &mut Vec<u32>, idx: &mut [u32]) {
    let k = idx.len();
    perm.clear();
    perm.extend(0..vals.len() as u32);
    if k == 0 {
        return;
    }
    nth_element(perm, k - 1, |a, b| mlx_less(vals, a, b));
    idx.copy_from_slice(&perm[..k]);
}

/// `std::nth_element` as libstdc++ implements it (introselect: median-of-three pivot
/// moved to the front, unguarded Hoare partition, insertion sort below 4 elements,
/// heap select once the depth budget `2 * floor(log2(n))` is spent). The resulting
/// permutation, not just the partition property, is what mlx-lm's routing order
/// depends on, so every step follows the library's sequence of comparisons and swaps.
pub(crate) fn nth_element(a: &mut [u32], nth: usize, less: impl Fn(u32, u32) -> bool) {
    let (mut first, mut last) = (0usize, a.len());
    if first == last || nth == last {
        return;
    }
    let mut depth = 2 * (usize::BITS - 1 - (last - first).leading_zeros()) as usize;
    while last - first > 3 {
        if depth == 0 {
            heap_select(&mut a[first..last], nth + 1 - first, &less);
            a.swap(first, nth);
            return;
        }
        depth -= 1;
        let mid = first + (last - first) / 2;
        // Median of a[first + 1], a[mid], a[last - 1] moved to a[first].
        let (x, y, z) = (first + 1, mid, last - 1);
        let pick = if less(a[x], a[y]) {
            if less(a[y], a[z]) {
                y
            } else if less(a[x], a[z]) {
                z
            } else {
                x
            }
        } else if less(a[x], a[z]) {
            x
        } else if less(a[y], a[z]) {
            z
        } else {
            y
        };
        a.swap(first, pick);
        // Unguarded partition of (first, last) around the pivot at `first`.
        let (mut lo, mut hi) = (first + 1, last);
        loop {
            while less(a[lo], a[first]) {
                lo += 1;
            }
            hi -= 1;
            while less(a[first], a[hi]) {
                hi -= 1;
            }
            if lo >= hi {
                break;
            }
            a.swap(lo, hi);
            lo += 1;
        }
        if lo <= nth {
            first = lo;
        } else {
            last = lo;
        }
    }
    // Insertion sort of [first, last).
    for i in first + 1..last {
        let v = a[i];
        if less(v, a[first]) {
            a.copy_within(first..i, first + 1);
            a[first] = v;
        } else {
            let mut j = i;
            while less(v, a[j - 1]) {
                a[j] = a[j - 1];
                j -= 1;
            }
            a[j] = v;
        }
    }
}

/// libstdc++'s `__heap_select(first, first + middle, last)`: a max-heap (by `less`) of
/// the first `middle` elements, then every later element smaller than the top
/// replaces it.
fn heap_select(a: &mut [u32], middle: usize, less: &impl Fn(u32, u32) -> bool) {
    if middle >= 2 {
        let mut parent = (middle - 2) / 2;
        loop {
            let v = a[parent];
            adjust_heap(&mut a[..middle], parent, v, less);
            if parent == 0 {
                break;
            }
            parent -= 1;
        }
    }
    for i in middle..a.len() {
        if less(a[i], a[0]) {
            // __pop_heap(first, middle, i): the top goes to i, i's value sifts in.
            let v = a[i];
            a[i] = a[0];
            adjust_heap(&mut a[..middle], 0, v, less);
        }
    }
}

/// libstdc++'s `__adjust_heap`: move the hole at `hole` down to a leaf along the
/// larger children, then push `v` up from there.
fn adjust_heap(a: &mut [u32], mut hole: usize, v: u32, less: &impl Fn(u32, u32) -> bool) {
    let len = a.len();
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if less(a[child], a[child - 1]) {
            child -= 1;
        }
        a[hole] = a[child];
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        a[hole] = a[child - 1];
        hole = child - 1;
    }
    // __push_heap
    while hole > top {
        let parent = (hole - 1) / 2;
        if !less(a[parent], v) {
            break;
        }
        a[hole] = a[parent];
        hole = parent;
    }
    a[hole] = v;
}
