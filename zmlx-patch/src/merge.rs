//! Merged projections: linear layers that read the same input (attention's q, k
//! and v) run as ONE matmul over their concatenated weight rows, and the result is
//! split back.
//!
//! Why it is exact: every output row of MLX's `quantized_matmul` (and of zmlx's
//! fused CPU linear) is computed from its own weight row and the input alone (a
//! sequential chain per row on the CPU, a warp per row in MLX's CUDA `qmv`), so
//! stacking rows changes which rows one call computes, not how any row is computed.
//! The fidelity runs check it end to end (logits bit-identical), prompts and
//! teacher-forced passes (MLX's tiled kernels for many tokens) included. One caveat
//! from MLX's CUDA dispatch: a one-token matmul takes the per-row `qmv` kernel only up
//! to [`MAX_MERGED_OUT`] outputs, so larger stacks are not merged.
//!
//! Why it pays: on a GPU each MLX op costs about 10 us of launch and host work at
//! decode sizes (notebook.md, "2026-11-25 22:16-22:21 UTC"), more than these
//! small matmuls' own time, so two ops fewer per layer is the gain.

use mlx::quantization::QuantizedWeight;
use mlx::{ops, Error, Result, StreamOrDevice};
use zmlx_kernels::{Support, Weight};

/// The most output features a merged projection may have: MLX's CUDA
/// `quantized_matmul` runs one token through its per-row `qmv` kernel up to 16384
/// outputs (read from MLX's `QuantizedMatmul::eval_gpu`) and through a tiled kernel
/// above, so a stack that crosses this line could change kernels, and bits.
pub const MAX_MERGED_OUT: i32 = 16384;

/// Whether `weights` can be merged: two or more plain (not expert-stacked)
/// quantized weights with the same input size, quantization and scale dtype, with
/// at most [`MAX_MERGED_OUT`] output features together.
pub fn merge_support(weights: &[&Weight]) -> Support {
    let Some(first) = weights.first() else {
        return Support::No("no projections to merge".into());
    };
    if weights.len() < 2 {
        return Support::No("a single projection".into());
    }
    for w in weights {
        if w.quant().is_none() {
            // MLX multiplies float weights with BLAS, whose reduction order may depend
            // on the matrix shape, so stacking rows would not be provably exact.
            return Support::No("float weights are not merged (BLAS matmul)".into());
        }
        if w.experts() != 1 || w.arrays()[0].ndim() != 2 {
            return Support::No("expert-stacked weights are not merged".into());
        }
        if w.in_features() != first.in_features() {
            return Support::No(format!(
                "input sizes differ ({} vs {})",
                w.in_features(),
                first.in_features()
            ));
        }
        // Equal specs include the mode, hence whether biases exist.
        if w.quant() != first.quant() || w.activation_dtype() != first.activation_dtype() {
            return Support::No("the projections differ in quantization or dtype".into());
        }
    }
    let total: i32 = weights.iter().map(|w| w.out_features()).sum();
    if total > MAX_MERGED_OUT {
        return Support::No(format!(
            "{total} output features together, above the {MAX_MERGED_OUT} that MLX's CUDA \
             one-token kernel takes"
        ));
    }
    Support::Yes
}

/// The rows of `weights` stacked in order into one weight (`[sum of out, in]`),
/// lazily: evaluate it once and keep it.
///
/// # Errors
/// When [`merge_support`] says no (the message says why), or MLX fails.
pub fn merge_rows(weights: &[&Weight], s: StreamOrDevice) -> Result<Weight> {
    if let Support::No(why) = merge_support(weights) {
        return Err(Error::invalid("merge_rows", why));
    }
    let Weight::Quantized(first) = weights[0] else {
        return Err(Error::invalid("merge_rows", "float weights are not merged"));
    };
    let cat = |i: usize| -> Result<mlx::Array> {
        let parts: Vec<&mlx::Array> = weights.iter().map(|w| w.arrays()[i]).collect();
        ops::concatenate(&parts, 0, s)
    };
    Ok(Weight::Quantized(QuantizedWeight {
        weight: cat(0)?,
        scales: cat(1)?,
        biases: match first.biases {
            Some(_) => Some(cat(2)?),
            None => None,
        },
        spec: first.spec,
    }))
}

/// Splits axis `axis` of `y` (the output of a merged projection, `-1` for its
/// features) back into the projections' outputs, `sizes` being their extents along
/// that axis in merge order.
///
/// # Errors
/// When `axis` is out of range, the sizes do not add up to that axis, or MLX fails.
pub fn split_outputs(
    y: &mlx::Array,
    sizes: &[i32],
    axis: i32,
    s: StreamOrDevice,
) -> Result<Vec<mlx::Array>> {
    let nd = y.ndim() as i32;
    let ax = if axis < 0 { axis + nd } else { axis };
    if !(0..nd).contains(&ax) {
        return Err(Error::invalid(
            "split_outputs",
            format!("axis {axis} of a {nd}-axis merged output"),
        ));
    }
    let total: i32 = sizes.iter().sum();
    let extent = y.shape()[ax as usize];
    if total != extent {
        return Err(Error::invalid(
            "split_outputs",
            format!("the parts add up to {total}, the merged output has {extent} on axis {axis}"),
        ));
    }
    let mut bounds = Vec::with_capacity(sizes.len().saturating_sub(1));
    let mut acc = 0;
    for &n in &sizes[..sizes.len().saturating_sub(1)] {
        acc += n;
        bounds.push(acc);
    }
    ops::split_at(y, &bounds, ax, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx::quantization::{quantize, quantized_matmul, QuantSpec};
    use mlx::{random, Dtype};

    fn qw(out: i32, inp: i32, seed: u64, spec: QuantSpec) -> Weight {
        let s = StreamOrDevice::default();
        let key = random::key(seed).unwrap();
        let w = random::normal(&[out, inp], Dtype::Bfloat16, 0.0, 0.05, Some(&key), s).unwrap();
        Weight::Quantized(quantize(&w, spec, s).unwrap())
    }

    /// One matmul over the merged rows gives exactly the separate matmuls' bits
    /// (MLX's CPU `quantized_matmul`, the unpatched path).
    #[test]
    fn merged_matmul_equals_separate_bitwise() {
        let s = StreamOrDevice::default();
        let spec = QuantSpec::affine(64, 4);
        let ws = [
            qw(96, 256, 1, spec),
            qw(32, 256, 2, spec),
            qw(32, 256, 3, spec),
        ];
        let refs: Vec<&Weight> = ws.iter().collect();
        assert!(merge_support(&refs).is_yes());
        let merged = merge_rows(&refs, s).unwrap();
        let key = random::key(9).unwrap();
        let x = random::normal(&[1, 3, 256], Dtype::Bfloat16, 0.0, 1.0, Some(&key), s).unwrap();
        let mm = |w: &Weight, x: &mlx::Array| match w {
            Weight::Quantized(q) => quantized_matmul(x, q, true, s).unwrap(),
            Weight::Float(_) => unreachable!(),
        };
        let parts = split_outputs(&mm(&merged, &x), &[96, 32, 32], -1, s).unwrap();
        for (w, p) in ws.iter().zip(&parts) {
            let a = ops::view(&mm(w, &x), Dtype::Uint16, s).unwrap();
            let b = ops::view(p, Dtype::Uint16, s).unwrap();
            assert_eq!(a.shape(), b.shape());
            assert_eq!(a.to_vec::<u16>().unwrap(), b.to_vec::<u16>().unwrap());
        }
    }

    #[test]
    fn mismatched_projections_are_refused_with_a_reason() {
        let s = StreamOrDevice::default();
        let a = qw(32, 256, 1, QuantSpec::affine(64, 4));
        let b = qw(32, 256, 2, QuantSpec::affine(64, 8));
        let c = qw(32, 128, 3, QuantSpec::affine(64, 4));
        assert!(!merge_support(&[&a, &b]).is_yes());
        assert!(!merge_support(&[&a, &c]).is_yes());
        assert!(!merge_support(&[&a]).is_yes());
        let big = qw(MAX_MERGED_OUT, 64, 4, QuantSpec::affine(64, 4));
        let small = qw(32, 64, 5, QuantSpec::affine(64, 4));
        assert!(!merge_support(&[&big, &small]).is_yes());
        let f = Weight::Float(ops::zeros(&[32, 256], Dtype::Bfloat16, s).unwrap());
        assert!(!merge_support(&[&f, &f]).is_yes());
        let err = merge_rows(&[&a, &b], s).unwrap_err().to_string();
        assert!(err.contains("quantization"), "{err}");
        let y = ops::zeros(&[1, 10], Dtype::Float32, s).unwrap();
        assert!(split_outputs(&y, &[4, 4], -1, s).is_err());
    }
}
