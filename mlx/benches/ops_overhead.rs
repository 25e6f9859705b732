//! Per-op overhead of building and evaluating a long element-wise graph.
//!
//! Builds a chain of 1,000 element-wise ops (alternating add and multiply with two
//! constant [16] f32 arrays, values kept bounded) on a small [16] f32 array, then
//! evaluates it; repeats, and reports the median microseconds per op for building,
//! for evaluating, and for both. `benches/python/ops_overhead.py` does the same
//! with Python mlx; `benches/ops_overhead.sh` runs both.
//!
//! `cargo bench -p mlx --bench ops_overhead [-- --ops N --reps R]`

use std::time::Instant;

use mlx::{Array, Device, StreamOrDevice};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> mlx::Result<()> {
    let ops = arg("--ops", 1000);
    let reps = arg("--reps", 200);
    let warmup = 20;
    let s: StreamOrDevice = Device::cpu().into();
    let x0 = Array::from_slice(&[0.5f32; 16], &[16])?;
    // y = (y + a) * b with a = 0.25, b = 0.5 stays bounded (fixed point 0.25).
    let a = Array::from_slice(&[0.25f32; 16], &[16])?;
    let b = Array::from_slice(&[0.5f32; 16], &[16])?;
    mlx::eval(&[&x0, &a, &b])?;

    let (mut build, mut eval, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..warmup + reps {
        let t0 = Instant::now();
        let mut y = x0.clone();
        for i in 0..ops {
            y = if i % 2 == 0 {
                mlx::ops::add(&y, &a, s)?
            } else {
                mlx::ops::multiply(&y, &b, s)?
            };
        }
        let t1 = Instant::now();
        y.eval()?;
        let t2 = Instant::now();
        if r == 0 {
            let v = y.to_vec::<f32>()?;
            assert!(v.iter().all(|v| v.is_finite()), "diverged: {v:?}");
        }
        if r >= warmup {
            let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / ops as f64;
            build.push(per(t1 - t0));
            eval.push(per(t2 - t1));
            total.push(per(t2 - t0));
        }
    }
    println!(
        "rust   mlx {}  ops={ops} reps={reps}  us/op: build {:.3}  eval {:.3}  total {:.3}",
        mlx::version(),
        median(&mut build),
        median(&mut eval),
        median(&mut total)
    );
    Ok(())
}
