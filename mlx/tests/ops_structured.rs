//! Matmul, reductions, softmax, arg-ops and sorting, indexing (take, take/put along
//! an axis), shape ops, slicing and joining, against naive Rust on random shapes.
//!
//! Tolerances: `u_out` is the unit roundoff of the output dtype (2^-24 f32, 2^-11
//! f16, 2^-8 bf16), `u32` that of f32. A sum of n terms computed in f32 is within
//! `n * u32 * sum|terms|` of the exact sum (the standard recursive-summation bound;
//! blocked or pairwise sums do better); rounding the result to the output dtype adds
//! `u_out * |want|`. MLX's CPU backend accumulates f16/bf16 matmuls, sums and
//! softmax denominators in f32, so these bounds hold for every dtype. A result in
//! the subnormal range of the output dtype rounds with an absolute error of half
//! the smallest subnormal (`underflow`) instead.

mod common;

use common::*;
use half::f16;
use mlx::{ops, Array, Dtype};
use proptest::prelude::*;

fn float_dtype() -> impl Strategy<Value = Dtype> {
    prop_oneof![
        Just(Dtype::Float32),
        Just(Dtype::Float16),
        Just(Dtype::Bfloat16)
    ]
}

fn shape() -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(1i32..=5, 1..=4)
}

/// Random values of `dtype` (rounded on the host) and the array holding them.
fn random_array(
    rng: &mut SeedRng,
    shape: &[i32],
    dtype: Dtype,
    lo: f32,
    hi: f32,
) -> (Vec<f32>, Array) {
    let host: Vec<f32> = rng
        .vec_f32(numel(shape), lo, hi)
        .iter()
        .map(|&v| round_to(dtype, v))
        .collect();
    let a = array_as(&host, shape, dtype);
    (host, a)
}

/// A random non-empty set of distinct axes of an `ndim`-d array, some written as
/// negative numbers.
fn random_axes(rng: &mut SeedRng, ndim: usize) -> Vec<i32> {
    let mut all: Vec<i32> = (0..ndim as i32).collect();
    rng.shuffle(&mut all);
    all.truncate(1 + rng.below(ndim));
    all.iter()
        .map(|&a| {
            if rng.below(2) == 0 {
                a
            } else {
                a - ndim as i32
            }
        })
        .collect()
}

fn norm_axis(a: i32, ndim: usize) -> usize {
    if a < 0 {
        (a + ndim as i32) as usize
    } else {
        a as usize
    }
}

/// The shape after reducing `axes` (kept as 1 or removed).
fn reduced_shape(shape: &[i32], axes: &[usize], keepdims: bool) -> Vec<i32> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(d, &n)| {
            if axes.contains(&d) {
                keepdims.then_some(1)
            } else {
                Some(n)
            }
        })
        .collect()
}

/// Groups the flat indices of `shape` by their position in the reduced output
/// (row-major over the kept axes), each group in row-major order.
fn reduce_groups(shape: &[i32], axes: &[usize]) -> Vec<Vec<usize>> {
    let kept: Vec<i32> = reduced_shape(shape, axes, false);
    let mut groups = vec![Vec::new(); numel(&kept)];
    for i in 0..numel(shape) {
        let idx = unravel(i, shape);
        let k: Vec<usize> = (0..shape.len())
            .filter(|d| !axes.contains(d))
            .map(|d| idx[d])
            .collect();
        groups[ravel(&k, &kept)].push(i);
    }
    groups
}

/// The flat indices of the line through `i` along `axis`, in order.
fn line(shape: &[i32], axis: usize, i: usize) -> Vec<usize> {
    let mut idx = unravel(i, shape);
    (0..shape[axis] as usize)
        .map(|k| {
            idx[axis] = k;
            ravel(&idx, shape)
        })
        .collect()
}

/// One representative flat index (position 0 along `axis`) per line along `axis`.
fn line_starts(shape: &[i32], axis: usize) -> Vec<usize> {
    (0..numel(shape))
        .filter(|&i| unravel(i, shape)[axis] == 0)
        .collect()
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn matmul_batched(batch in prop::collection::vec(1i32..=3, 0..=2), m in 1i32..=6, k in 1i32..=9, n in 1i32..=6,
                      dtype in float_dtype(), bcast_b in any::<bool>(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let sa: Vec<i32> = batch.iter().copied().chain([m, k]).collect();
        // b either has the same batch dims or none (broadcast over a's batch).
        let sb: Vec<i32> = if bcast_b { vec![k, n] } else { batch.iter().copied().chain([k, n]).collect() };
        let (ha, a) = random_array(&mut rng, &sa, dtype, -1.0, 1.0);
        let (hb, b) = random_array(&mut rng, &sb, dtype, -1.0, 1.0);
        let c = a.matmul(&b).unwrap();
        let sc: Vec<i32> = batch.iter().copied().chain([m, n]).collect();
        prop_assert_eq!(c.shape(), &sc[..]);
        prop_assert_eq!(c.dtype(), dtype);
        let nb = numel(&batch);
        let (m, k, n) = (m as usize, k as usize, n as usize);
        let mut want = Vec::new();
        let mut mag = Vec::new();
        for bi in 0..nb {
            let bo = if bcast_b { 0 } else { bi * k * n };
            for i in 0..m {
                for j in 0..n {
                    let (mut s, mut sabs) = (0f64, 0f64);
                    for p in 0..k {
                        let t = ha[bi * m * k + i * k + p] as f64 * hb[bo + p * n + j] as f64;
                        s += t;
                        sabs += t.abs();
                    }
                    want.push(s);
                    mag.push(sabs);
                }
            }
        }
        let (u, u32r) = (unit_roundoff(dtype), unit_roundoff(Dtype::Float32));
        assert_within(&host_f32(&c), &want, |i| u * want[i].abs() + k as f64 * u32r * mag[i] + underflow(dtype),
            &format!("matmul {dtype:?} {sa:?} @ {sb:?}"));
    }

    #[test]
    fn reductions(shape in shape(), dtype in float_dtype(), keepdims in any::<bool>(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let (host, x) = random_array(&mut rng, &shape, dtype, -2.0, 2.0);
        let axes = random_axes(&mut rng, shape.len());
        let naxes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, shape.len())).collect();
        let groups = reduce_groups(&shape, &naxes);
        let out_shape = reduced_shape(&shape, &naxes, keepdims);
        let (u, u32r) = (unit_roundoff(dtype), unit_roundoff(Dtype::Float32));
        let what = format!("{dtype:?} {shape:?} axes {axes:?} keepdims {keepdims}");

        let sum = ops::sum(&x, &axes, keepdims, ()).unwrap();
        prop_assert_eq!(sum.shape(), &out_shape[..]);
        prop_assert_eq!(sum.dtype(), dtype);
        let want: Vec<f64> = groups.iter().map(|g| g.iter().map(|&i| host[i] as f64).sum()).collect();
        let mag: Vec<f64> = groups.iter().map(|g| g.iter().map(|&i| host[i].abs() as f64).sum()).collect();
        let cnt = groups[0].len() as f64;
        assert_within(&host_f32(&sum), &want, |i| u * want[i].abs() + cnt * u32r * mag[i] + underflow(dtype), &format!("sum {what}"));

        // MLX's mean is sum(x) * (1/n) with the sum and the scalar 1/n both in the
        // output dtype: three roundings to it (sum, 1/n, product).
        let mean = ops::mean(&x, &axes, keepdims, ()).unwrap();
        prop_assert_eq!(mean.shape(), &out_shape[..]);
        let want_m: Vec<f64> = want.iter().map(|s| s / cnt).collect();
        assert_within(&host_f32(&mean), &want_m, |i| 3.0 * u * want_m[i].abs() + cnt * u32r * mag[i] / cnt + 3.0 * underflow(dtype), &format!("mean {what}"));

        // max and min pick an input element: exact.
        let mx = ops::max(&x, &axes, keepdims, ()).unwrap();
        let mn = ops::min(&x, &axes, keepdims, ()).unwrap();
        prop_assert_eq!(mx.shape(), &out_shape[..]);
        let want_max: Vec<f32> = groups.iter().map(|g| g.iter().map(|&i| host[i]).fold(f32::MIN, f32::max)).collect();
        let want_min: Vec<f32> = groups.iter().map(|g| g.iter().map(|&i| host[i]).fold(f32::MAX, f32::min)).collect();
        prop_assert_eq!(host_f32(&mx), want_max, "max {}", what);
        prop_assert_eq!(host_f32(&mn), want_min, "min {}", what);

        // Reducing every axis.
        let all = ops::sum_all(&x, false, ()).unwrap();
        prop_assert_eq!(all.ndim(), 0);
        let tot: f64 = host.iter().map(|&v| v as f64).sum();
        let tot_abs: f64 = host.iter().map(|&v| v.abs() as f64).sum();
        assert_within(&host_f32(&all), &[tot], |_| u * tot.abs() + host.len() as f64 * u32r * tot_abs + underflow(dtype), &format!("sum_all {what}"));
    }

    #[test]
    fn int_reductions(shape in shape(), keepdims in any::<bool>(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host: Vec<i32> = (0..numel(&shape)).map(|_| rng.i32_in(-1000, 1000)).collect();
        let x = Array::from_slice(&host, &shape).unwrap();
        let axes = random_axes(&mut rng, shape.len());
        let naxes: Vec<usize> = axes.iter().map(|&a| norm_axis(a, shape.len())).collect();
        let groups = reduce_groups(&shape, &naxes);
        let sum = ops::sum(&x, &axes, keepdims, ()).unwrap();
        prop_assert_eq!(sum.to_vec::<i32>().unwrap(), groups.iter().map(|g| g.iter().map(|&i| host[i]).sum()).collect::<Vec<i32>>());
        let mx = ops::max(&x, &axes, keepdims, ()).unwrap();
        prop_assert_eq!(mx.to_vec::<i32>().unwrap(), groups.iter().map(|g| g.iter().map(|&i| host[i]).max().unwrap()).collect::<Vec<i32>>());
    }

    #[test]
    fn softmax_matches(shape in shape(), dtype in float_dtype(), precise in any::<bool>(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let (host, x) = random_array(&mut rng, &shape, dtype, -6.0, 6.0);
        let axis = rng.below(shape.len());
        let y = ops::softmax(&x, &[axis as i32], precise, ()).unwrap();
        prop_assert_eq!(y.dtype(), dtype);
        prop_assert_eq!(y.shape(), &shape[..]);
        let mut want = vec![0f64; host.len()];
        for s in line_starts(&shape, axis) {
            let l = line(&shape, axis, s);
            let m = l.iter().map(|&i| host[i] as f64).fold(f64::MIN, f64::max);
            let z: f64 = l.iter().map(|&i| (host[i] as f64 - m).exp()).sum();
            for &i in &l {
                want[i] = (host[i] as f64 - m).exp() / z;
            }
        }
        let n = shape[axis] as f64;
        let (u, u32r) = (unit_roundoff(dtype), unit_roundoff(Dtype::Float32));
        // MLX computes in f32 when `precise` (or for f32 input) and in the input
        // dtype otherwise, with unit roundoff `uc`. Each output: the subtraction
        // x - max (uc relative, which exp turns into |x - max| uc), exp (1 uc plus
        // MLX's f32 approximation, 6 u32, see ops_elementwise), a sum of n positive
        // terms (n uc), one division (1 uc), then rounding to the output dtype
        // (u_out). Outputs are <= 1, so 1 u32 absolute covers the subnormal tail.
        let uc = if precise || dtype == Dtype::Float32 { u32r } else { u };
        let mut dist = vec![0f64; host.len()];
        for s in line_starts(&shape, axis) {
            let l = line(&shape, axis, s);
            let m = l.iter().map(|&i| host[i] as f64).fold(f64::MIN, f64::max);
            for &i in &l {
                dist[i] = m - host[i] as f64;
            }
        }
        assert_within(&host_f32(&y), &want, |i| (u + (dist[i] + n + 2.0) * uc + 6.0 * u32r) * want[i] + u32r,
            &format!("softmax {dtype:?} {shape:?} axis {axis} precise {precise}"));
    }

    #[test]
    fn argmax_first_on_ties(shape in shape(), ints in any::<bool>(), keepdims in any::<bool>(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        // Small integers make ties common; the first index must win.
        let host: Vec<f32> = (0..numel(&shape)).map(|_| if ints { rng.i32_in(0, 3) as f32 } else { rng.f32_in(-1.0, 1.0) }).collect();
        let x = if ints { array_as(&host, &shape, Dtype::Int32) } else { Array::from_slice(&host, &shape).unwrap() };
        let axis = rng.below(shape.len());
        let am = x.argmax(axis as i32, keepdims).unwrap();
        prop_assert_eq!(am.dtype(), Dtype::Uint32);
        prop_assert_eq!(am.shape(), &reduced_shape(&shape, &[axis], keepdims)[..]);
        let want: Vec<u32> = line_starts(&shape, axis).iter().map(|&s| {
            let l = line(&shape, axis, s);
            let mut best = 0;
            for (k, &i) in l.iter().enumerate() {
                if host[i] > host[l[best]] { best = k; }
            }
            best as u32
        }).collect();
        prop_assert_eq!(am.to_vec::<u32>().unwrap(), want);
    }

    #[test]
    fn sort_argsort_stable(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host: Vec<i32> = (0..numel(&shape)).map(|_| rng.i32_in(-3, 4)).collect();
        let x = Array::from_slice(&host, &shape).unwrap();
        let axis = rng.below(shape.len());
        let idx = ops::argsort(&x, axis as i32, ()).unwrap().to_vec::<u32>().unwrap();
        let sorted = ops::sort(&x, axis as i32, ()).unwrap().to_vec::<i32>().unwrap();
        for s in line_starts(&shape, axis) {
            let l = line(&shape, axis, s);
            let vals: Vec<i32> = l.iter().map(|&i| host[i]).collect();
            // A stable sort of (value, position).
            let mut order: Vec<usize> = (0..l.len()).collect();
            order.sort_by_key(|&k| vals[k]);
            let got_idx: Vec<usize> = l.iter().map(|&i| idx[i] as usize).collect();
            prop_assert_eq!(&got_idx, &order, "argsort line {:?}", vals);
            let got_sorted: Vec<i32> = l.iter().map(|&i| sorted[i]).collect();
            let mut want = vals.clone();
            want.sort();
            prop_assert_eq!(got_sorted, want);
        }
    }

    #[test]
    fn argpartition_partitions(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host: Vec<f32> = (0..numel(&shape)).map(|_| rng.i32_in(-4, 5) as f32 * 0.5).collect();
        let x = Array::from_slice(&host, &shape).unwrap();
        let axis = rng.below(shape.len());
        let n = shape[axis];
        let kth = rng.i32_in(-n, n);
        let idx = ops::argpartition(&x, kth, axis as i32, ()).unwrap().to_vec::<u32>().unwrap();
        let k = if kth < 0 { kth + n } else { kth } as usize;
        for s in line_starts(&shape, axis) {
            let l = line(&shape, axis, s);
            let vals: Vec<f32> = l.iter().map(|&i| host[i]).collect();
            let got: Vec<usize> = l.iter().map(|&i| idx[i] as usize).collect();
            // A permutation of the line ...
            let mut seen = got.clone();
            seen.sort();
            prop_assert_eq!(seen, (0..l.len()).collect::<Vec<_>>());
            // ... whose kth element is the kth smallest, with nothing larger before
            // it and nothing smaller after it.
            let mut sorted = vals.clone();
            sorted.sort_by(f32::total_cmp);
            let pivot = vals[got[k]];
            prop_assert_eq!(pivot, sorted[k]);
            prop_assert!(got[..k].iter().all(|&j| vals[j] <= pivot), "{:?} {:?} k={}", vals, got, k);
            prop_assert!(got[k + 1..].iter().all(|&j| vals[j] >= pivot), "{:?} {:?} k={}", vals, got, k);
        }
    }

    #[test]
    fn topk_multiset(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host: Vec<f32> = (0..numel(&shape)).map(|_| rng.i32_in(-4, 5) as f32).collect();
        let x = Array::from_slice(&host, &shape).unwrap();
        let axis = rng.below(shape.len());
        let k = rng.i32_in(1, shape[axis] + 1);
        let t = ops::topk(&x, k, axis as i32, ()).unwrap();
        let mut ts = shape.clone();
        ts[axis] = k;
        prop_assert_eq!(t.shape(), &ts[..]);
        let got = t.to_vec::<f32>().unwrap();
        for (s, ts_start) in line_starts(&shape, axis).into_iter().zip(line_starts(&ts, axis)) {
            let mut vals: Vec<f32> = line(&shape, axis, s).iter().map(|&i| host[i]).collect();
            vals.sort_by(|a, b| b.total_cmp(a));
            vals.truncate(k as usize);
            vals.sort_by(f32::total_cmp);
            let mut g: Vec<f32> = line(&ts, axis, ts_start).iter().map(|&i| got[i]).collect();
            g.sort_by(f32::total_cmp);
            prop_assert_eq!(g, vals);
        }
    }

    #[test]
    fn take_and_along_axis(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host: Vec<f32> = (0..numel(&shape)).map(|i| i as f32).collect();
        let x = Array::from_slice(&host, &shape).unwrap();
        let axis = rng.below(shape.len());
        let n = shape[axis];

        // take along an axis with a 1-d or 2-d index array (values may repeat).
        let ishape: Vec<i32> = if rng.below(2) == 0 { vec![rng.i32_in(1, 6)] } else { vec![2, rng.i32_in(1, 4)] };
        let hidx: Vec<i32> = (0..numel(&ishape)).map(|_| rng.i32_in(0, n)).collect();
        let t = x.take(&Array::from_slice(&hidx, &ishape).unwrap(), Some(axis as i32)).unwrap();
        let out_shape: Vec<i32> = shape[..axis].iter().chain(&ishape).chain(&shape[axis + 1..]).copied().collect();
        prop_assert_eq!(t.shape(), &out_shape[..]);
        let want: Vec<f32> = (0..numel(&out_shape)).map(|o| {
            let oi = unravel(o, &out_shape);
            let ii: Vec<usize> = oi[axis..axis + ishape.len()].to_vec();
            let mut src: Vec<usize> = oi[..axis].to_vec();
            src.push(hidx[ravel(&ii, &ishape)] as usize);
            src.extend_from_slice(&oi[axis + ishape.len()..]);
            host[ravel(&src, &shape)]
        }).collect();
        prop_assert_eq!(t.to_vec::<f32>().unwrap(), want);

        // take without an axis reads the flattened array.
        let flat_idx: Vec<u32> = (0..5).map(|_| rng.below(host.len()) as u32).collect();
        let tf = x.take(&Array::from_slice(&flat_idx, &[5]).unwrap(), None).unwrap();
        prop_assert_eq!(tf.to_vec::<f32>().unwrap(), flat_idx.iter().map(|&i| host[i as usize]).collect::<Vec<_>>());

        // take_along_axis: indices of the same rank, m per line.
        let m = rng.i32_in(1, n + 2);
        let mut tshape = shape.clone();
        tshape[axis] = m;
        let tidx: Vec<i32> = (0..numel(&tshape)).map(|_| rng.i32_in(0, n)).collect();
        let ta = x.take_along_axis(&Array::from_slice(&tidx, &tshape).unwrap(), axis as i32).unwrap();
        prop_assert_eq!(ta.shape(), &tshape[..]);
        let want: Vec<f32> = (0..numel(&tshape)).map(|o| {
            let mut idx = unravel(o, &tshape);
            idx[axis] = tidx[o] as usize;
            host[ravel(&idx, &shape)]
        }).collect();
        prop_assert_eq!(ta.to_vec::<f32>().unwrap(), want);

        // put_along_axis with distinct positions per line (duplicates would leave
        // the winner unspecified).
        let m = rng.i32_in(1, n + 1);
        let mut pshape = shape.clone();
        pshape[axis] = m;
        let mut pidx = vec![0i32; numel(&pshape)];
        for s in line_starts(&pshape, axis) {
            let mut perm: Vec<i32> = (0..n).collect();
            rng.shuffle(&mut perm);
            for (k, &i) in line(&pshape, axis, s).iter().enumerate() {
                pidx[i] = perm[k];
            }
        }
        let vals: Vec<f32> = (0..pidx.len()).map(|i| -1.0 - i as f32).collect();
        let p = ops::put_along_axis(&x, &Array::from_slice(&pidx, &pshape).unwrap(),
            &Array::from_slice(&vals, &pshape).unwrap(), axis as i32, ()).unwrap();
        let mut want = host.clone();
        for (o, &v) in vals.iter().enumerate() {
            let mut idx = unravel(o, &pshape);
            idx[axis] = pidx[o] as usize;
            want[ravel(&idx, &shape)] = v;
        }
        prop_assert_eq!(p.to_vec::<f32>().unwrap(), want);
    }

    #[test]
    fn shape_ops(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host: Vec<i32> = (0..numel(&shape) as i32).collect();
        let x = Array::from_slice(&host, &shape).unwrap();
        let nd = shape.len();

        // reshape keeps row-major order; -1 infers one dimension.
        let mut rs: Vec<i32> = shape.iter().rev().copied().collect();
        prop_assert_eq!(x.reshape(&rs).unwrap().to_vec::<i32>().unwrap(), host.clone());
        rs[0] = -1;
        prop_assert_eq!(x.reshape(&rs).unwrap().shape()[0], *shape.last().unwrap());

        // transpose by a random permutation: out[i0..] = x[i_perm^-1..].
        let mut perm: Vec<i32> = (0..nd as i32).collect();
        rng.shuffle(&mut perm);
        let t = x.transpose(&perm).unwrap();
        let ts: Vec<i32> = perm.iter().map(|&p| shape[p as usize]).collect();
        prop_assert_eq!(t.shape(), &ts[..]);
        let want: Vec<i32> = (0..host.len()).map(|o| {
            let oi = unravel(o, &ts);
            let mut src = vec![0; nd];
            for (d, &p) in perm.iter().enumerate() { src[p as usize] = oi[d]; }
            host[ravel(&src, &shape)]
        }).collect();
        prop_assert_eq!(t.to_vec::<i32>().unwrap(), want);
        // transpose(&[]) reverses the axes.
        let rev = x.transpose(&[]).unwrap();
        prop_assert_eq!(rev.shape(), &shape.iter().rev().copied().collect::<Vec<_>>()[..]);

        // swapaxes is the transposition of two axes.
        let (a1, a2) = (rng.below(nd), rng.below(nd));
        let mut sperm: Vec<i32> = (0..nd as i32).collect();
        sperm.swap(a1, a2);
        prop_assert_eq!(x.swapaxes(a1 as i32, a2 as i32 - nd as i32).unwrap().to_vec::<i32>().unwrap(),
            x.transpose(&sperm).unwrap().to_vec::<i32>().unwrap());

        // expand_dims then squeeze round trips.
        let pos = rng.below(nd + 1) as i32;
        let e = x.expand_dims(&[pos]).unwrap();
        let mut es = shape.clone();
        es.insert(pos as usize, 1);
        prop_assert_eq!(e.shape(), &es[..]);
        let sq = e.squeeze(&[pos]).unwrap();
        prop_assert_eq!(sq.shape(), &shape[..]);
        prop_assert_eq!(sq.to_vec::<i32>().unwrap(), host.clone());
        let all_sq = e.squeeze(&[]).unwrap();
        prop_assert_eq!(all_sq.shape(), &shape.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>()[..]);
        // flatten merges a range of axes.
        let f = ops::flatten(&x, 0, -1, ()).unwrap();
        prop_assert_eq!(f.shape(), &[host.len() as i32][..]);

        // broadcast_to: a shape with ones expands, reading element 0 of those axes.
        let small: Vec<i32> = shape.iter().map(|&d| if rng.below(2) == 0 { 1 } else { d }).collect();
        let hs: Vec<i32> = (0..numel(&small) as i32).collect();
        let b = Array::from_slice(&hs, &small).unwrap().broadcast_to(&shape).unwrap();
        let want: Vec<i32> = (0..host.len()).map(|o| hs[bcast_index(&unravel(o, &shape), &small)]).collect();
        prop_assert_eq!(b.to_vec::<i32>().unwrap(), want);
    }

    #[test]
    fn slice_and_update(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let host: Vec<i32> = (0..numel(&shape) as i32).collect();
        let x = Array::from_slice(&host, &shape).unwrap();
        // Per axis: numpy semantics, positive or negative steps.
        let (mut start, mut stop, mut step, mut picks) = (vec![], vec![], vec![], vec![]);
        for &n in &shape {
            let st = rng.i32_in(1, 4) * if rng.below(3) == 0 { -1 } else { 1 };
            let (b, e) = if st > 0 {
                let b = rng.i32_in(0, n);
                (b, rng.i32_in(b + 1, n + 1))
            } else {
                let b = rng.i32_in(0, n);
                // stop -n-1 means "past the front" (numpy clamps it to -1); other
                // negative stops would count from the end, so draw them from 0..=b.
                (b, if rng.below(2) == 0 { -n - 1 } else { rng.i32_in(0, b + 1) })
            };
            let mut p = vec![];
            let mut i = b;
            let end = if e < 0 { -1 } else { e };
            while (st > 0 && i < end) || (st < 0 && i > end) {
                p.push(i as usize);
                i += st;
            }
            start.push(b);
            stop.push(e);
            step.push(st);
            picks.push(p);
        }
        let out_shape: Vec<i32> = picks.iter().map(|p| p.len() as i32).collect();
        let s = x.slice(&start, &stop, &step).unwrap();
        prop_assert_eq!(s.shape(), &out_shape[..], "start {:?} stop {:?} step {:?}", start, stop, step);
        let want: Vec<i32> = (0..numel(&out_shape)).map(|o| {
            let oi = unravel(o, &out_shape);
            let src: Vec<usize> = oi.iter().enumerate().map(|(d, &k)| picks[d][k]).collect();
            host[ravel(&src, &shape)]
        }).collect();
        prop_assert_eq!(s.to_vec::<i32>().unwrap(), want);

        // slice_update writes the same positions.
        let upd: Vec<i32> = (0..numel(&out_shape) as i32).map(|v| -1 - v).collect();
        let u = ops::slice_update(&x, &Array::from_slice(&upd, &out_shape).unwrap(), &start, &stop, &step, ()).unwrap();
        let mut want = host.clone();
        for (o, &v) in upd.iter().enumerate() {
            let oi = unravel(o, &out_shape);
            let dst: Vec<usize> = oi.iter().enumerate().map(|(d, &k)| picks[d][k]).collect();
            want[ravel(&dst, &shape)] = v;
        }
        prop_assert_eq!(u.to_vec::<i32>().unwrap(), want);
        // The source is unchanged (slice_update is functional).
        prop_assert_eq!(x.to_vec::<i32>().unwrap(), host);
    }

    #[test]
    fn concatenate_stack_split(shape in shape(), seed in any::<u64>()) {
        let mut rng = SeedRng::new(seed);
        let nd = shape.len();
        let axis = rng.below(nd);
        // Three arrays differing along `axis`.
        let parts: Vec<(Vec<i32>, Vec<f32>)> = (0..3).map(|p| {
            let mut s = shape.clone();
            s[axis] = rng.i32_in(1, 4);
            let h: Vec<f32> = (0..numel(&s)).map(|i| (p * 1000 + i) as f32).collect();
            (s, h)
        }).collect();
        let arrs: Vec<Array> = parts.iter().map(|(s, h)| Array::from_slice(h, s).unwrap()).collect();
        let refs: Vec<&Array> = arrs.iter().collect();
        let c = ops::concatenate(&refs, axis as i32, ()).unwrap();
        let mut cs = shape.clone();
        cs[axis] = parts.iter().map(|(s, _)| s[axis]).sum();
        prop_assert_eq!(c.shape(), &cs[..]);
        let want: Vec<f32> = (0..numel(&cs)).map(|o| {
            let mut idx = unravel(o, &cs);
            for (s, h) in &parts {
                if idx[axis] < s[axis] as usize { return h[ravel(&idx, s)]; }
                idx[axis] -= s[axis] as usize;
            }
            unreachable!()
        }).collect();
        prop_assert_eq!(c.to_vec::<f32>().unwrap(), want);

        // split_at the part boundaries gives the parts back.
        let b1 = parts[0].0[axis];
        let b2 = b1 + parts[1].0[axis];
        let back = ops::split_at(&c, &[b1, b2], axis as i32, ()).unwrap();
        prop_assert_eq!(back.len(), 3);
        for (b, (s, h)) in back.iter().zip(&parts) {
            prop_assert_eq!(b.shape(), &s[..]);
            prop_assert_eq!(&b.to_vec::<f32>().unwrap(), h);
        }

        // stack along a new axis, then split into equal parts and squeeze.
        let same: Vec<Array> = (0..3).map(|p| Array::from_slice(&(0..numel(&shape)).map(|i| (p * 1000 + i) as f32).collect::<Vec<_>>(), &shape).unwrap()).collect();
        let sref: Vec<&Array> = same.iter().collect();
        let sax = rng.below(nd + 1);
        let st = ops::stack(&sref, sax as i32, ()).unwrap();
        let mut ss = shape.clone();
        ss.insert(sax, 3);
        prop_assert_eq!(st.shape(), &ss[..]);
        let pieces = ops::split(&st, 3, sax as i32, ()).unwrap();
        for (p, orig) in pieces.iter().zip(&same) {
            prop_assert_eq!(p.squeeze(&[sax as i32]).unwrap().to_vec::<f32>().unwrap(), orig.to_vec::<f32>().unwrap());
        }
    }
}

#[test]
fn softmax_precise_half() {
    // precise = true keeps f16 logits that differ by less than an f16 ulp after
    // the max is subtracted from drifting: compare with the f32 softmax of the same
    // (rounded) inputs, which it must match to f16 rounding.
    let host: Vec<f32> = (0..64)
        .map(|i| f16::from_f32(8.0 + i as f32 * 0.01).to_f32())
        .collect();
    let x16 = array_as(&host, &[64], Dtype::Float16);
    let want =
        host_f32(&ops::softmax(&Array::from_slice(&host, &[64]).unwrap(), &[0], true, ()).unwrap());
    let got = host_f32(&ops::softmax(&x16, &[0], true, ()).unwrap());
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    assert_close(
        &got,
        &want64,
        0.0,
        2.0 * unit_roundoff(Dtype::Float16),
        "precise f16 softmax",
    );
}
