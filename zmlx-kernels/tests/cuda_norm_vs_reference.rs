//! The fused norm kernels of `zmlx_kernels::gpu::norm` against the MLX ops they
//! replace, both on MLX's CUDA backend, BITWISE: every output element must have the
//! reference's bits. Without CUDA every test prints "skipped: no CUDA" and returns
//! (CI has no GPU; the runs are recorded in notes/cuda-kernels.md).
//!
//! Each test also runs the kernels' other variants (the fma contractions MLX leaves
//! to nvcc) and prints, per class and variant, how many elements differ, so that a
//! device run shows which variant MLX's build matches; the assertion is on the
//! default variant, the one the model uses.

mod common;

use common::{cuda, gpu_stream, ok};
use mlx::kernel::KernelBackend;
use mlx::{fast, ops, random, Array, Dtype};
use zmlx_kernels::gpu::norm::{
    add_rms_norm_variant, head_norm_rope_into_cache, head_norm_rope_variant,
};
use zmlx_kernels::norm::{head_norm_rope_support, kv_write_support, HeadNormRopeSpec};

/// The values' f32 bit patterns (widening f16/bf16 to f32 is exact, so equal
/// patterns mean equal values of the dtype).
fn bits(a: &Array) -> Vec<u32> {
    let v = ok(
        ok(ops::astype(a, Dtype::Float32, gpu_stream()), "astype").to_vec::<f32>(),
        "to_vec",
    );
    v.iter().map(|x| x.to_bits()).collect()
}

fn differing(a: &Array, b: &Array) -> usize {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (a, b) = (bits(a), bits(b));
    a.iter().zip(&b).filter(|(x, y)| x != y).count()
}

fn normal(shape: &[i32], dt: Dtype, scale: f32, seed: u64) -> Array {
    let key = ok(random::key(seed), "key");
    ok(
        random::normal(shape, dt, 0.0, scale, Some(&key), gpu_stream()),
        "normal",
    )
}

const DTYPES: [Dtype; 3] = [Dtype::Bfloat16, Dtype::Float16, Dtype::Float32];

#[test]
fn add_rms_norm_is_bitwise_mlx_on_cuda() {
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let mut failures = Vec::new();
    // Qwen3-30B-A3B's hidden size (2048: two chunks a thread), a head (128: one
    // chunk), 768 and 1000 (rows that end inside a thread's vector or chunk), 4096,
    // and 2560 (MLX's 64-thread multi-chunk shape).
    for dt in DTYPES {
        for (axis, rows) in [
            (2048, 1),
            (2048, 5),
            (128, 3),
            (768, 2),
            (1000, 3),
            (4096, 1),
            (2560, 2),
        ] {
            let seed = axis as u64 * 31 + rows as u64;
            let x = normal(&[rows, 1, axis], dt, 1.0, seed);
            let r = normal(&[rows, 1, axis], dt, 0.5, seed + 1);
            let w = normal(&[axis], dt, 0.2, seed + 2);
            let eps = 1e-6f32;
            let h_ref = ok(ops::add(&x, &r, s), "add");
            let n_ref = ok(fast::rms_norm(&h_ref, Some(&w), eps, s), "rms_norm");
            let mut line = format!("ADDNORM {dt:?} axis {axis} rows {rows}:");
            let mut default_exact = true;
            for fmav in [0, 1] {
                // The other variant only where the default differs (each variant is
                // an NVRTC compile per shape), and once for Qwen3's class.
                if fmav == 1 && default_exact && !(dt == Dtype::Bfloat16 && axis == 2048) {
                    continue;
                }
                let (h, n) = ok(
                    add_rms_norm_variant(KernelBackend::Cuda, &x, &r, &w, eps, fmav, s),
                    "add_rms_norm",
                );
                let (dh, dn) = (differing(&h, &h_ref), differing(&n, &n_ref));
                line += &format!(" fmav{fmav} h {dh}/{} n {dn}/{}", h.size(), n.size());
                if fmav == 0 && (dh != 0 || dn != 0) {
                    default_exact = false;
                    failures.push(format!("{dt:?} axis {axis} rows {rows}: h {dh} n {dn}"));
                }
            }
            println!("{line}");
        }
    }
    assert!(failures.is_empty(), "default variant differs: {failures:?}");
}

/// mlx-lm's Qwen3 attention: heads from the projection, `q_norm`/`k_norm`, heads
/// first, `rope` at the cache offset.
fn reference_head_norm_rope(
    x: &Array,
    heads: i32,
    w: &Array,
    spec: &HeadNormRopeSpec,
    offset: i32,
) -> Array {
    let s = gpu_stream();
    let b = x.shape()[0];
    let x = ok(ops::reshape(x, &[b, 1, heads, spec.head_dim], s), "reshape");
    let n = ok(fast::rms_norm(&x, Some(w), spec.eps, s), "rms_norm");
    let n = ok(ops::transpose(&n, &[0, 2, 1, 3], s), "transpose");
    ok(
        fast::rope(
            &n,
            spec.head_dim,
            false,
            spec.rope_base,
            spec.rope_scale,
            offset,
            s,
        ),
        "rope",
    )
}

#[test]
fn head_norm_rope_is_bitwise_mlx_on_cuda() {
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let mut failures = Vec::new();
    let specs = [
        // Qwen3-30B-A3B.
        (32, 4, 128, 1e6f32, 1.0f32, 1),
        // Smaller heads, another base, two sequences.
        (16, 2, 64, 10000.0, 1.0, 2),
        // Long heads (f32: two warps of sums), a position scale.
        (8, 8, 256, 500000.0, 0.5, 1),
    ];
    for dt in DTYPES {
        for &(nq, nk, d, base, scale, b) in &specs {
            let spec = HeadNormRopeSpec {
                q_heads: nq,
                kv_heads: nk,
                head_dim: d,
                eps: 1e-6,
                rope_base: base,
                rope_scale: scale,
            };
            // q and k as slices of one merged projection output, as the patched
            // model passes them.
            let width = (nq + 2 * nk) * d;
            let seed = (nq * 1000 + d) as u64;
            let qkv = normal(&[b, 1, width], dt, 2.0, seed);
            let q = ok(
                ops::slice(&qkv, &[0, 0, 0], &[b, 1, nq * d], &[1, 1, 1], s),
                "slice",
            );
            let k = ok(
                ops::slice(&qkv, &[0, 0, nq * d], &[b, 1, (nq + nk) * d], &[1, 1, 1], s),
                "slice",
            );
            let wq = normal(&[d], dt, 0.3, seed + 1);
            let wk = normal(&[d], dt, 0.3, seed + 2);
            for offset in [0, 1, 17, 4095, 40000] {
                let q_ref = reference_head_norm_rope(&q, nq, &wq, &spec, offset);
                let k_ref = reference_head_norm_rope(&k, nk, &wk, &spec, offset);
                let mut line =
                    format!("HEADROPE {dt:?} nq {nq} nk {nk} d {d} b {b} offset {offset}:");
                let mut default_exact = true;
                let all = dt == Dtype::Bfloat16 && d == 128 && offset == 17;
                for fmav in [0, 1] {
                    for ropev in [0, 1, 2] {
                        // The other variants only where the default differs (each is
                        // an NVRTC compile per shape), and once for Qwen3's class.
                        if (fmav, ropev) != (0, 0) && default_exact && !all {
                            continue;
                        }
                        let (qo, ko) = ok(
                            head_norm_rope_variant(
                                KernelBackend::Cuda,
                                &q,
                                &k,
                                &wq,
                                &wk,
                                &spec,
                                offset,
                                (fmav, ropev),
                                s,
                            ),
                            "head_norm_rope",
                        );
                        let (dq, dk) = (differing(&qo, &q_ref), differing(&ko, &k_ref));
                        line += &format!(" v{fmav}{ropev} {dq}+{dk}");
                        if (fmav, ropev) == (0, 0) && (dq != 0 || dk != 0) {
                            default_exact = false;
                            failures.push(format!(
                                "{dt:?} {nq}/{nk}x{d} b {b} offset {offset}: q {dq} k {dk}"
                            ));
                        }
                    }
                }
                println!("{line} (of {}+{})", q_ref.size(), k_ref.size());
            }
        }
    }
    assert!(failures.is_empty(), "default variants differ: {failures:?}");
}

#[test]
fn fused_norms_refuse_what_they_do_not_reproduce() {
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let x = normal(&[1, 1, 8192], Dtype::Bfloat16, 1.0, 1);
    let w = normal(&[8192], Dtype::Bfloat16, 1.0, 2);
    // 8192 bf16 values fit MLX's one-kernel norm (1024 vectors of 8)...
    assert!(add_rms_norm_variant(KernelBackend::Cuda, &x, &x, &w, 1e-6, 0, s).is_ok());
    // ...8200 do not.
    let x = normal(&[1, 8200], Dtype::Bfloat16, 1.0, 1);
    let w = normal(&[8200], Dtype::Bfloat16, 1.0, 2);
    assert!(add_rms_norm_variant(KernelBackend::Cuda, &x, &x, &w, 1e-6, 0, s).is_err());
    // Two tokens per sequence.
    let spec = HeadNormRopeSpec {
        q_heads: 2,
        kv_heads: 1,
        head_dim: 64,
        eps: 1e-6,
        rope_base: 10000.0,
        rope_scale: 1.0,
    };
    let q = normal(&[1, 2, 128], Dtype::Bfloat16, 1.0, 3);
    let k = normal(&[1, 2, 64], Dtype::Bfloat16, 1.0, 4);
    let w = normal(&[64], Dtype::Bfloat16, 1.0, 5);
    let r = head_norm_rope_variant(KernelBackend::Cuda, &q, &k, &w, &w, &spec, 0, (0, 0), s);
    assert!(r.is_err());
    // The in-place cache write only where MLX's fused attention reads the cache.
    let dev = mlx::Device::gpu();
    assert!(
        kv_write_support(&spec, None, dev).is_yes(),
        "64-value heads"
    );
    let odd = HeadNormRopeSpec {
        head_dim: 80,
        ..spec
    };
    assert!(head_norm_rope_support(&odd, 1, None, dev).is_yes());
    assert!(
        !kv_write_support(&odd, None, dev).is_yes(),
        "80-value heads"
    );
}

/// The cache-writing variant against mlx-lm's decode step: q/k norms, RoPE, then
/// the cache's two `slice_update`s at `offset`. The queries and BOTH WHOLE caches
/// must have the reference's bits (the new position written, every other position
/// untouched).
#[test]
fn head_norm_rope_into_cache_is_bitwise_mlx_on_cuda() {
    if !cuda() {
        return;
    }
    let s = gpu_stream();
    let mut failures = Vec::new();
    for dt in DTYPES {
        for &(nq, nk, d, b, cap) in &[(32, 4, 128, 1, 256), (16, 2, 64, 2, 8)] {
            let spec = HeadNormRopeSpec {
                q_heads: nq,
                kv_heads: nk,
                head_dim: d,
                eps: 1e-6,
                rope_base: 1e6,
                rope_scale: 1.0,
            };
            let width = (nq + 2 * nk) * d;
            let seed = (nq * 100 + d + b) as u64;
            let qkv = normal(&[b, 1, width], dt, 2.0, seed);
            let part = |from: i32, to: i32| {
                ok(
                    ops::slice(&qkv, &[0, 0, from], &[b, 1, to], &[1, 1, 1], s),
                    "slice",
                )
            };
            let (q, k, v) = (
                part(0, nq * d),
                part(nq * d, (nq + nk) * d),
                part((nq + nk) * d, width),
            );
            let wq = normal(&[d], dt, 0.3, seed + 1);
            let wk = normal(&[d], dt, 0.3, seed + 2);
            for offset in [0, 5, cap - 1] {
                // The same draw twice: one cache for the kernel, one for the reference.
                let cache = |which: u64| normal(&[b, nk, cap, d], dt, 1.0, seed + 10 + which);
                let (kc, vc) = (cache(0), cache(1));
                ok(mlx::transforms::eval(&[&kc, &vc]), "eval caches");
                let q_ref = reference_head_norm_rope(&q, nq, &wq, &spec, offset);
                let k_ref = reference_head_norm_rope(&k, nk, &wk, &spec, offset);
                let v_ref = ok(ops::reshape(&v, &[b, nk, 1, d], s), "reshape v");
                let update = |c: &Array, x: &Array| {
                    ok(
                        ops::slice_update(
                            c,
                            x,
                            &[0, 0, offset, 0],
                            &[b, nk, offset + 1, d],
                            &[1; 4],
                            s,
                        ),
                        "slice_update",
                    )
                };
                let kc_ref = update(&cache(0), &k_ref);
                let vc_ref = update(&cache(1), &v_ref);
                let qo = ok(
                    head_norm_rope_into_cache(
                        KernelBackend::Cuda,
                        &q,
                        &k,
                        &v,
                        &wq,
                        &wk,
                        &spec,
                        offset,
                        (&kc, &vc),
                        s,
                    ),
                    "head_norm_rope_into_cache",
                );
                ok(qo.eval(), "eval q");
                let (dq, dk, dv) = (
                    differing(&qo, &q_ref),
                    differing(&kc, &kc_ref),
                    differing(&vc, &vc_ref),
                );
                println!(
                    "HEADROPE_KV {dt:?} nq {nq} nk {nk} d {d} b {b} cap {cap} offset {offset}: \
                     q {dq}/{} k cache {dk}/{} v cache {dv}/{}",
                    qo.size(),
                    kc.size(),
                    vc.size()
                );
                if dq + dk + dv != 0 {
                    failures.push(format!(
                        "{dt:?} {nq}/{nk}x{d} b {b} offset {offset}: q {dq} k {dk} v {dv}"
                    ));
                }
            }
            // A position past the cache, and a cache of another shape, are refused.
            let (kc, vc) = (
                normal(&[b, nk, cap, d], dt, 1.0, 1),
                normal(&[b, nk, cap, d], dt, 1.0, 2),
            );
            let call = |offset: i32, vc: &Array| {
                head_norm_rope_into_cache(
                    KernelBackend::Cuda,
                    &q,
                    &k,
                    &v,
                    &wq,
                    &wk,
                    &spec,
                    offset,
                    (&kc, vc),
                    s,
                )
            };
            assert!(call(cap, &vc).is_err(), "a position past the cache");
            let short = normal(&[b, nk, cap, d / 2], dt, 1.0, 3);
            assert!(call(0, &short).is_err(), "a mis-shaped value cache");
        }
    }
    assert!(
        failures.is_empty(),
        "cache-writing kernel differs: {failures:?}"
    );
}
