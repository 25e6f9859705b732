//! Custom CPU primitives: the kernel sees row-contiguous data for strided,
//! sliced and broadcast inputs; several inputs and outputs; equality (merging under
//! compile only for equal name and params); the kernel is released with the graph;
//! and use from several threads.
//!
//! Threads (MLX 0.32.4): the default stream is per thread, and a stream belongs to
//! the thread that created it. Each thread building and evaluating its own graphs
//! on the default stream (or on a stream it created) is safe. Using a stream made
//! by another thread, or evaluating on one thread a lazy array built on another,
//! returns `Err("There is no Stream(cpu, N) in current thread.")` instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mlx::primitive::{cpu_primitive, CpuKernel, Input, KernelError, Output, OutputSpec};
use mlx::transforms::compile;
use mlx::{ops, Array, Device, Dtype};

/// out[i] = scale * in[i] + i: the index term shows the order the kernel read in.
struct AffineIndex {
    scale: f32,
    calls: Arc<AtomicUsize>,
}

impl CpuKernel for AffineIndex {
    fn name(&self) -> &str {
        "affine_index"
    }
    fn params(&self) -> Vec<u8> {
        self.scale.to_le_bytes().to_vec()
    }
    fn eval(&self, inputs: &[Input], outputs: &mut [Output]) -> Result<(), KernelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if inputs[0].shape() != outputs[0].shape() {
            return Err(format!(
                "shapes {:?} and {:?}",
                inputs[0].shape(),
                outputs[0].shape()
            )
            .into());
        }
        let x = inputs[0].as_slice::<f32>()?;
        for (i, (o, v)) in outputs[0]
            .as_mut_slice::<f32>()?
            .iter_mut()
            .zip(x)
            .enumerate()
        {
            *o = self.scale * v + i as f32;
        }
        Ok(())
    }
}

fn affine(x: &Array, scale: f32, calls: &Arc<AtomicUsize>) -> Array {
    let k = Arc::new(AffineIndex {
        scale,
        calls: calls.clone(),
    });
    cpu_primitive(
        k,
        &[x],
        &[OutputSpec::new(x.shape(), Dtype::Float32)],
        Device::cpu(),
    )
    .unwrap()
    .remove(0)
}

/// The reference: the same map on the row-major values of `x` as MLX reads them.
fn affine_ref(x: &Array, scale: f32) -> Vec<f32> {
    x.to_vec::<f32>()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, v)| scale * v + i as f32)
        .collect()
}

#[test]
fn strided_and_broadcast_inputs_arrive_row_contiguous() {
    let calls = Arc::new(AtomicUsize::new(0));
    let base =
        Array::from_slice(&(0..24).map(|v| v as f32).collect::<Vec<_>>(), &[2, 3, 4]).unwrap();
    base.eval().unwrap();
    let views = [
        ("transposed", base.transpose(&[2, 0, 1]).unwrap()),
        ("swapped", base.swapaxes(0, 2).unwrap()),
        (
            "sliced with step",
            base.slice(&[0, 0, 1], &[2, 3, 4], &[1, 2, 2]).unwrap(),
        ),
        (
            "reversed",
            base.slice(&[1, 2, 3], &[-3, -4, -5], &[-1, -1, -1])
                .unwrap(),
        ),
        (
            "broadcast",
            Array::from_slice(&[1.0f32, 2.0, 3.0], &[3, 1])
                .unwrap()
                .broadcast_to(&[2, 3, 5])
                .unwrap(),
        ),
        (
            "full (one element, zero strides)",
            ops::full(&[3, 4], &Array::scalar(7.0f32).unwrap(), Dtype::Float32, ()).unwrap(),
        ),
        ("scalar", Array::scalar(5.0f32).unwrap()),
        ("empty", ops::zeros(&[0, 3], Dtype::Float32, ()).unwrap()),
    ];
    for (what, v) in &views {
        // Evaluated views are really strided in memory, lazy ones are not yet.
        v.eval().unwrap();
        let y = affine(v, 2.0, &calls);
        assert_eq!(y.shape(), v.shape(), "{what}");
        assert_eq!(y.to_vec::<f32>().unwrap(), affine_ref(v, 2.0), "{what}");
        // Inside a larger lazy graph too.
        let lazy = v
            .multiply(&Array::scalar(1.0f32).unwrap())
            .unwrap()
            .transpose(&[])
            .unwrap();
        let y = affine(&lazy, -1.0, &calls);
        assert_eq!(
            y.to_vec::<f32>().unwrap(),
            affine_ref(&lazy, -1.0),
            "{what} (lazy)"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2 * views.len());
}

/// Two inputs (broadcast against each other by the caller), two outputs.
struct SumProd;

impl CpuKernel for SumProd {
    fn name(&self) -> &str {
        "sum_prod"
    }
    fn params(&self) -> Vec<u8> {
        Vec::new()
    }
    fn eval(&self, inputs: &[Input], outputs: &mut [Output]) -> Result<(), KernelError> {
        let (a, b) = (inputs[0].as_slice::<f32>()?, inputs[1].as_slice::<i32>()?);
        let (s, p) = outputs.split_at_mut(1);
        let s = s[0].as_mut_slice::<f32>()?;
        let p = p[0].as_mut_slice::<f64>()?;
        for i in 0..a.len() {
            s[i] = a[i] + b[i] as f32;
            p[i] = a[i] as f64 * b[i] as f64;
        }
        Ok(())
    }
}

#[test]
fn several_inputs_and_outputs_of_several_dtypes() {
    let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = Array::from_slice(&[10i32, 20, 30], &[3])
        .unwrap()
        .broadcast_to(&[2, 3])
        .unwrap();
    let out = cpu_primitive(
        Arc::new(SumProd),
        &[&a, &b],
        &[
            OutputSpec::new(&[2, 3], Dtype::Float32),
            OutputSpec::new(&[2, 3], Dtype::Float64),
        ],
        Device::cpu(),
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]
    );
    assert_eq!(
        out[1].to_vec::<f64>().unwrap(),
        vec![10.0, 40.0, 90.0, 40.0, 100.0, 180.0]
    );
    // The outputs are ordinary graph nodes.
    let total = ops::sum_all(
        &out[0].add(&out[1].astype(Dtype::Float32).unwrap()).unwrap(),
        false,
        (),
    )
    .unwrap();
    assert_eq!(total.item::<f32>().unwrap(), 141.0 + 460.0);
}

#[test]
fn equal_primitives_in_one_graph() {
    let calls = Arc::new(AtomicUsize::new(0));
    let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    // Two identical nodes (same name, params and input) and one with other params.
    let y1 = affine(&x, 2.0, &calls);
    let y2 = affine(&x, 2.0, &calls);
    let y3 = affine(&x, 3.0, &calls);
    let s = y1.add(&y2).unwrap().add(&y3).unwrap();
    assert_eq!(
        s.to_vec::<f32>().unwrap(),
        [7.0, 14.0, 21.0]
            .iter()
            .zip(0..)
            .map(|(v, i)| v + 3.0 * i as f32)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "plain eval runs every node"
    );

    // Under compile MLX merges equivalent nodes (same name and params on the same
    // inputs), and must not merge the one with other params.
    let c2 = calls.clone();
    let f = compile(
        move |xs: &[Array]| {
            let a = affine(&xs[0], 2.0, &c2);
            let b = affine(&xs[0], 2.0, &c2);
            let c = affine(&xs[0], 3.0, &c2);
            Ok(vec![a.add(&b)?.add(&c)?])
        },
        false,
    )
    .unwrap();
    calls.store(0, Ordering::SeqCst);
    let r = f.call(&[&x]).unwrap();
    let traced = calls.load(Ordering::SeqCst);
    assert_eq!(
        traced, 0,
        "tracing builds the graph without running kernels"
    );
    assert_eq!(r[0].to_vec::<f32>().unwrap(), s.to_vec::<f32>().unwrap());
    let runs = calls.load(Ordering::SeqCst);
    assert_eq!(runs, 2, "the two equal nodes were merged, the third kept");
}

#[test]
fn kernel_is_released_with_the_graph() {
    let calls = Arc::new(AtomicUsize::new(0));
    let x = Array::from_slice(&[1.0f32], &[1]).unwrap();
    {
        let y = affine(&x, 2.0, &calls);
        let z = y.add(&y).unwrap();
        assert_eq!(Arc::strong_count(&calls), 2);
        z.eval().unwrap();
        drop(y);
        // z still holds the graph until it is dropped (or detached by eval).
        drop(z);
    }
    ops::sum_all(&x, false, ()).unwrap().eval().unwrap();
    mlx::synchronize().unwrap();
    assert_eq!(Arc::strong_count(&calls), 1, "the kernel context leaked");
}

#[test]
fn threads_each_on_their_own_default_stream() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let calls = Arc::new(AtomicUsize::new(0));
                // Every other thread uses a stream of its own instead of its default.
                let own = Device::cpu().new_stream().unwrap();
                for i in 0..300 {
                    let host: Vec<f32> = (0..16).map(|k| (t * 1000 + i * 16 + k) as f32).collect();
                    let x = Array::from_slice(&host, &[4, 4]).unwrap();
                    let xt = if t % 2 == 0 {
                        x.transpose(&[]).unwrap()
                    } else {
                        ops::transpose(&x, &[], own).unwrap()
                    };
                    let k = Arc::new(AffineIndex {
                        scale: 0.5,
                        calls: calls.clone(),
                    });
                    let sod: mlx::StreamOrDevice = if t % 2 == 0 {
                        Device::cpu().into()
                    } else {
                        own.into()
                    };
                    let y =
                        cpu_primitive(k, &[&xt], &[OutputSpec::new(&[4, 4], Dtype::Float32)], sod)
                            .unwrap();
                    let z = ops::add(&y[0], &y[0], sod).unwrap();
                    let got = z.to_vec::<f32>().unwrap();
                    let want: Vec<f32> = affine_ref(&xt, 0.5).iter().map(|v| 2.0 * v).collect();
                    assert_eq!(got, want, "thread {t} iteration {i}");
                }
                assert_eq!(calls.load(Ordering::SeqCst), 300);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn streams_and_lazy_arrays_do_not_cross_threads() {
    // A stream made on this thread cannot be used from another one.
    let stream = Device::cpu().new_stream().unwrap();
    let e = std::thread::spawn(move || {
        let x = Array::from_slice(&[1.0f32], &[1]).unwrap();
        ops::exp(&x, stream)
            .and_then(|y| y.eval())
            .unwrap_err()
            .to_string()
    })
    .join()
    .unwrap();
    assert!(e.contains("in current thread"), "{e}");

    // A lazy array built here cannot be evaluated there ...
    let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    let lazy = x.add(&x).unwrap();
    let e = std::thread::spawn(move || lazy.eval().unwrap_err().to_string())
        .join()
        .unwrap();
    assert!(e.contains("in current thread"), "{e}");

    // ... but an evaluated one can be read and used there.
    let done = x.add(&x).unwrap();
    done.eval().unwrap();
    let r = std::thread::spawn(move || {
        let v = done.to_vec::<f32>().unwrap();
        let w = done.multiply(&done).unwrap().to_vec::<f32>().unwrap();
        (v, w)
    })
    .join()
    .unwrap();
    assert_eq!(r, (vec![2.0, 4.0], vec![4.0, 16.0]));
}
