//! `compile`: a compiled function matches the uncompiled one (fixed and shapeless,
//! across shapes and repeated calls), errors and panics inside the traced closure
//! become `Err`, and the closure is released with the compiled function.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mlx::transforms::compile;
use mlx::{fast, Array, Error};

/// An element-wise chain that MLX fuses when compiled, plus a reduction.
fn graph(xs: &[Array]) -> mlx::Result<Vec<Array>> {
    let (x, y) = (&xs[0], &xs[1]);
    let a = x.multiply(y)?.add(x)?.tanh()?.multiply(&y.sigmoid()?)?;
    let b = a.sum(&[-1], false)?;
    Ok(vec![a, b])
}

fn inputs(shape: &[i32], seed: u32) -> (Array, Array) {
    let n: i32 = shape.iter().product();
    let hx: Vec<f32> = (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    let hy: Vec<f32> = (0..n)
        .map(|i| ((i as u32).wrapping_mul(40503).wrapping_add(seed) % 997) as f32 / 200.0 - 2.5)
        .collect();
    (
        Array::from_slice(&hx, shape).unwrap(),
        Array::from_slice(&hy, shape).unwrap(),
    )
}

/// Fused code may evaluate tanh, sigmoid and the products in another order or
/// with other approximations than the op-by-op kernels: allow a few f32 ulps of
/// the magnitudes involved (|a| <= 1, |b| <= n).
fn assert_near(got: &Array, want: &Array, scale: f32) {
    let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    assert_eq!(got.shape(), want.shape());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(
            (a - b).abs() <= 16.0 * f32::EPSILON * scale,
            "element {i}: compiled {a}, plain {b}"
        );
    }
}

#[test]
fn compiled_matches_uncompiled() {
    let f = compile(graph, false).unwrap();
    for (shape, seed) in [
        (vec![4, 8], 1u32),
        (vec![4, 8], 2),
        (vec![3, 5, 7], 3),
        (vec![1], 4),
    ] {
        let (x, y) = inputs(&shape, seed);
        let got = f.call(&[&x, &y]).unwrap();
        let want = graph(&[x.clone(), y.clone()]).unwrap();
        assert_eq!(got.len(), 2);
        assert_near(&got[0], &want[0], 1.0);
        assert_near(&got[1], &want[1], *shape.last().unwrap() as f32);
    }
}

#[test]
fn shapeless_compile_does_not_retrace_per_shape() {
    let traces = Arc::new(AtomicUsize::new(0));
    let t = traces.clone();
    let f = compile(
        move |xs: &[Array]| {
            t.fetch_add(1, Ordering::SeqCst);
            Ok(vec![xs[0].multiply(&xs[1])?.add(&xs[0])?.exp()?])
        },
        true,
    )
    .unwrap();
    let mut after_second = 0;
    for (call, n) in [3, 17, 64, 5, 200].into_iter().enumerate() {
        let (x, y) = inputs(&[n], n as u32);
        let got = f.call(&[&x, &y]).unwrap();
        let want = x.multiply(&y).unwrap().add(&x).unwrap().exp().unwrap();
        let (g, w) = (
            got[0].to_vec::<f32>().unwrap(),
            want.to_vec::<f32>().unwrap(),
        );
        for (a, b) in g.iter().zip(&w) {
            assert!((a - b).abs() <= 8.0 * f32::EPSILON * b.abs(), "{a} vs {b}");
        }
        if call == 1 {
            after_second = traces.load(Ordering::SeqCst);
        }
    }
    // MLX 0.32.4 traces a shapeless function again on the second call when its
    // inputs are host-data arrays (Python mlx does the same with mx.array inputs:
    // traces after calls 1, 2, 3 = 1, 2, 2), then reuses that trace for every
    // shape: no retrace per shape.
    assert!(after_second <= 2, "{after_second} traces after two calls");
    assert_eq!(
        traces.load(Ordering::SeqCst),
        after_second,
        "a shapeless function retraced for a new shape"
    );
}

#[test]
fn compiled_fast_ops() {
    let f = compile(
        |xs: &[Array]| Ok(vec![fast::rms_norm(&xs[0], Some(&xs[1]), 1e-5, ())?]),
        false,
    )
    .unwrap();
    let (x, _) = inputs(&[3, 16], 9);
    let w = Array::from_slice(&[1.5f32; 16], &[16]).unwrap();
    let got = f.call(&[&x, &w]).unwrap();
    assert_near(
        &got[0],
        &fast::rms_norm(&x, Some(&w), 1e-5, ()).unwrap(),
        4.0,
    );
}

#[test]
fn errors_inside_the_closure_become_err() {
    let f = compile(|xs: &[Array]| Ok(vec![xs[0].reshape(&[7])?]), false).unwrap();
    let x = Array::from_slice(&[1.0f32; 6], &[6]).unwrap();
    let e = f.call(&[&x]).unwrap_err().to_string();
    assert!(
        e.contains("Cannot reshape array of size 6 into shape (7)"),
        "{e}"
    );

    let f = compile(
        |_: &[Array]| Err(Error::invalid("user_fn", "refused on purpose")),
        false,
    )
    .unwrap();
    let e = f.call(&[&x]).unwrap_err().to_string();
    assert!(e.contains("refused on purpose"), "{e}");

    let f = compile(
        |_: &[Array]| -> mlx::Result<Vec<Array>> { panic!("closure panicked on purpose") },
        false,
    )
    .unwrap();
    let e = f.call(&[&x]).unwrap_err().to_string();
    assert!(e.contains("panicked: closure panicked on purpose"), "{e}");

    // Indexing past the inputs panics inside the closure: also an Err.
    let f = compile(|xs: &[Array]| Ok(vec![xs[3].clone()]), false).unwrap();
    assert!(f.call(&[&x]).unwrap_err().to_string().contains("panicked"));

    // And MLX still works, compiled or not.
    let g = compile(|xs: &[Array]| Ok(vec![xs[0].add(&xs[0])?]), false).unwrap();
    assert_eq!(
        g.call(&[&x]).unwrap()[0].to_vec::<f32>().unwrap(),
        vec![2.0; 6]
    );
}

#[test]
fn closure_is_released_with_the_compiled_function() {
    let token = Arc::new(());
    let t = token.clone();
    let f = compile(
        move |xs: &[Array]| {
            let _keep = &t;
            Ok(vec![xs[0].add(&xs[0])?])
        },
        false,
    )
    .unwrap();
    let x = Array::from_slice(&[1.0f32], &[1]).unwrap();
    assert_eq!(f.call(&[&x]).unwrap()[0].item::<f32>().unwrap(), 2.0);
    assert_eq!(Arc::strong_count(&token), 2);
    drop(f);
    assert_eq!(Arc::strong_count(&token), 1, "the closure leaked");
}
