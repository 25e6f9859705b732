//! The reference routers of the other MoE families against naive Rust: Mixtral's
//! top-k-then-softmax and DeepSeek-V3's sigmoid with bias and group-limited top-k.

use mlx::{Array, Device, Dtype};
use zmlx_kernels::moe_gate::{FusedRouter, ReferenceRouter, RouterSpec};
use zmlx_kernels::RouterOp;

fn rows(a: &Array, cols: usize) -> Vec<Vec<f32>> {
    let v = a.astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap();
    v.chunks(cols).map(|c| c.to_vec()).collect()
}

fn idx_rows(a: &Array, cols: usize) -> Vec<Vec<u32>> {
    a.to_vec::<u32>()
        .unwrap()
        .chunks(cols)
        .map(|c| c.to_vec())
        .collect()
}

/// Indices of the k largest (distinct values in these tests), any order.
fn top(v: &[f32], k: usize) -> Vec<usize> {
    let mut o: Vec<usize> = (0..v.len()).collect();
    o.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    o.truncate(k);
    o
}

#[test]
fn top_k_then_softmax() {
    let (t, e, k) = (3usize, 8usize, 2i32);
    let data: Vec<f32> = (0..t * e)
        .map(|i| ((i * 37 % 29) as f32) * 0.25 - 3.0)
        .collect();
    let logits = Array::from_slice(&data, &[t as i32, e as i32]).unwrap();
    let r = ReferenceRouter
        .route(
            &logits,
            &RouterSpec::TopKSoftmax { k },
            Device::cpu().into(),
        )
        .unwrap();
    let (inds, scores) = (
        idx_rows(&r.indices, k as usize),
        rows(&r.scores, k as usize),
    );
    for row in 0..t {
        let l = &data[row * e..(row + 1) * e];
        let mut want = top(l, k as usize);
        let mut got: Vec<usize> = inds[row].iter().map(|&i| i as usize).collect();
        let pairs: Vec<(usize, f32)> = got
            .iter()
            .copied()
            .zip(scores[row].iter().copied())
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        let z: f32 = want.iter().map(|&i| l[i].exp()).sum();
        for (i, w) in pairs {
            assert!(
                (w - l[i].exp() / z).abs() < 1e-6,
                "row {row} expert {i}: {w}"
            );
        }
    }
}

#[test]
fn sigmoid_with_bias_and_groups() {
    let (t, e, k) = (2usize, 16usize, 3i32);
    let data: Vec<f32> = (0..t * e)
        .map(|i| ((i * 53 % 31) as f32) * 0.2 - 3.0)
        .collect();
    let bias_v: Vec<f32> = (0..e).map(|i| if i % 5 == 0 { 0.3 } else { 0.0 }).collect();
    let logits = Array::from_slice(&data, &[t as i32, e as i32]).unwrap();
    let bias = Array::from_slice(&bias_v, &[e as i32]).unwrap();
    let spec = RouterSpec::SigmoidGroupTopK {
        k,
        n_group: 4,
        topk_group: 2,
        normalize: true,
        routed_scaling_factor: 2.5,
        correction_bias: Some(bias),
    };
    let r = ReferenceRouter
        .route(&logits, &spec, Device::cpu().into())
        .unwrap();
    assert_eq!(r.scores.dtype(), Dtype::Float32);
    let (inds, scores) = (
        idx_rows(&r.indices, k as usize),
        rows(&r.scores, k as usize),
    );
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    for row in 0..t {
        let s: Vec<f32> = data[row * e..(row + 1) * e]
            .iter()
            .map(|&x| sig(x))
            .collect();
        let sel: Vec<f32> = s.iter().zip(&bias_v).map(|(a, b)| a + b).collect();
        // Groups of 4, scored by the sum of their top two; the best two kept.
        let gs: Vec<f32> = sel
            .chunks(4)
            .map(|g| top(g, 2).iter().map(|&i| g[i]).sum())
            .collect();
        let keep = top(&gs, 2);
        let masked: Vec<f32> = sel
            .iter()
            .enumerate()
            .map(|(i, &v)| if keep.contains(&(i / 4)) { v } else { 0.0 })
            .collect();
        let mut want = top(&masked, k as usize);
        let mut got: Vec<usize> = inds[row].iter().map(|&i| i as usize).collect();
        let total: f32 = want.iter().map(|&i| s[i]).sum();
        for (j, &i) in got.iter().enumerate() {
            assert!(
                (scores[row][j] - s[i] / total * 2.5).abs() < 1e-5,
                "row {row} expert {i}"
            );
        }
        want.sort();
        got.sort();
        assert_eq!(got, want, "row {row}");
    }
    // The fused CPU router takes this family and gives the reference's bits (the
    // full comparison is in fused_vs_reference.rs).
    assert!(FusedRouter
        .supports(&spec, e as i32, Device::cpu())
        .is_yes());
    let f = FusedRouter
        .route(&logits, &spec, Device::cpu().into())
        .unwrap();
    assert_eq!(
        f.indices.to_vec::<u32>().unwrap(),
        r.indices.to_vec::<u32>().unwrap()
    );
    let bits = |a: &Array| -> Vec<u32> {
        a.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&f.scores), bits(&r.scores));
}
