//! Token-to-expert dispatch for prefill: a stable counting sort of the `(t, j)` pairs of
//! a `[T, k]` index array by expert.
//!
//! Pairs are named by their flat position `p = t * k + j`. The result holds
//! - `order`: the pairs sorted by expert, stable (ascending `p` within an expert);
//! - `inverse`: `inverse[p]` = position of pair `p` in `order`;
//! - `offsets`: `E + 1` prefix sums; expert `e` owns `order[offsets[e]..offsets[e+1]]`.

use super::error::{check_len, KernelError, Result};

const OP: &str = "expert_dispatch";

/// Pairs grouped by expert (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertDispatch {
    order: Vec<u32>,
    inverse: Vec<u32>,
    offsets: Vec<u32>,
}

impl ExpertDispatch {
    /// Sorts the pairs of `indices` (flattened `[T, k]`) by expert, `experts` = E.
    ///
    /// # Errors
    /// [`KernelError::ExpertOutOfRange`] for an index `>= experts`;
    /// [`KernelError::Overflow`] if there are more than `u32::MAX` pairs.
    pub fn new(indices: &[u32], experts: usize) -> Result<Self> {
        Self::build(OP, indices, experts)
    }

    pub(crate) fn build(op: &'static str, indices: &[u32], experts: usize) -> Result<Self> {
        let n = indices.len();
        let mut d = Self {
            order: vec![0; n],
            inverse: vec![0; n],
            offsets: vec![0; experts + 1],
        };
        fill(
            op,
            indices,
            experts,
            &mut d.order,
            &mut d.inverse,
            &mut d.offsets,
        )?;
        Ok(d)
    }

    /// Pair ids (`t * k + j`) sorted by expert.
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// Position of each pair in [`Self::order`].
    pub fn inverse(&self) -> &[u32] {
        &self.inverse
    }

    /// `E + 1` offsets into [`Self::order`].
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// The pairs routed to expert `e` (empty if `e` is out of range).
    pub fn pairs(&self, e: usize) -> &[u32] {
        match (self.offsets.get(e), self.offsets.get(e + 1)) {
            (Some(&a), Some(&b)) => &self.order[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Number of pairs routed to expert `e`.
    pub fn count(&self, e: usize) -> usize {
        self.pairs(e).len()
    }
}

/// Writes the dispatch of `indices` into caller buffers (for an MLX primitive that
/// owns its outputs): `order` and `inverse` as long as `indices`, `offsets` of length
/// `experts + 1`.
///
/// # Errors
/// [`KernelError::LengthMismatch`] for a buffer of the wrong length;
/// [`KernelError::ExpertOutOfRange`] for an index `>= experts`;
/// [`KernelError::Overflow`] if there are more than `u32::MAX` pairs.
pub fn dispatch_into(
    indices: &[u32],
    experts: usize,
    order: &mut [u32],
    inverse: &mut [u32],
    offsets: &mut [u32],
) -> Result<()> {
    fill(OP, indices, experts, order, inverse, offsets)
}

fn fill(
    op: &'static str,
    indices: &[u32],
    experts: usize,
    order: &mut [u32],
    inverse: &mut [u32],
    offsets: &mut [u32],
) -> Result<()> {
    let n = indices.len();
    check_len(op, "order", n, order.len())?;
    check_len(op, "inverse", n, inverse.len())?;
    check_len(op, "offsets", experts.saturating_add(1), offsets.len())?;
    if u32::try_from(n).is_err() {
        return Err(KernelError::Overflow { op });
    }
    // Count pass (also validates): offsets[e + 1] = pairs of expert e.
    offsets.fill(0);
    for &e in indices {
        let slot = offsets
            .get_mut(e as usize + 1)
            .filter(|_| (e as usize) < experts)
            .ok_or(KernelError::ExpertOutOfRange {
                op,
                index: e,
                experts,
            })?;
        *slot += 1;
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    // Scatter pass: stable because pairs are visited in increasing p.
    let mut next: Vec<u32> = offsets[..experts].to_vec();
    for (p, &e) in indices.iter().enumerate() {
        let pos = &mut next[e as usize];
        order[*pos as usize] = p as u32;
        inverse[p] = *pos;
        *pos += 1;
    }
    Ok(())
}
