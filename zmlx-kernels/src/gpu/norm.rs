//! CUDA kernels around attention's norms: the residual add + RMS norm after
//! attention, and the per-head q/k RMS norms + rotary embedding of one token.
//!
//! Both reproduce what MLX's CUDA backend computes for the op sequences they replace
//! (`shaders/cuda/norm.cuh`, `add_rms_norm.cu`, `head_norm_rope.cu` say how), so a
//! model gives the same bits with fewer ops. At decode sizes each MLX op costs the
//! host about 7-10 us on an H100 (notes/cuda-kernels.md), more than these kernels
//! take on the GPU; that is the whole point of them. CUDA only: there are no Metal
//! bodies, and MLX's CPU ops are not what limits the CPU.

use std::sync::Mutex;
use std::sync::OnceLock;

use mlx::kernel::{KernelBackend, KernelLaunch, TemplateArg};
use mlx::{Array, Dtype, Error, Result, StreamOrDevice};

use super::{block_dims, kernel_with_header, one, two, Slot};
use crate::norm::HeadNormRopeSpec;

const HEADER: &str = concat!(
    include_str!("../../../shaders/cuda/prelude.cuh"),
    include_str!("../../../shaders/cuda/norm.cuh")
);
const ADD_NORM: &str = include_str!("../../../shaders/cuda/add_rms_norm.cu");
const HEAD_NORM_ROPE: &str = include_str!("../../../shaders/cuda/head_norm_rope.cu");
const HEAD_NORM_ROPE_KV: &str = include_str!("../../../shaders/cuda/head_norm_rope_kv.cu");

/// How the kernels sum squares (`FMAV` in shaders/cuda/norm.cuh): 0 = each square
/// fused into the running sum (an fma, what nvcc makes of MLX's `normalizer += t *
/// t`), 1 = a rounded square then an addition. `ZMLX_CUDA_NORM_FMA=0` selects the
/// latter, for checking against another MLX build.
pub(super) fn norm_fma_variant() -> i32 {
    super::current_cuda_variants().norm_fmav
}

/// Which fma contraction of MLX's rotation the kernel uses (`ROPEV` in
/// shaders/cuda/head_norm_rope.cu, 0..=2); `ZMLX_CUDA_ROPE=n` selects one.
fn rope_variant() -> i32 {
    super::current_cuda_variants().rope
}

/// Values per 16-byte vector of `dtype`, or an error for a dtype the kernels do not
/// take.
pub(crate) fn values_per_vector(op: &'static str, dtype: Dtype) -> Result<i32> {
    match dtype {
        Dtype::Float32 => Ok(4),
        Dtype::Float16 | Dtype::Bfloat16 => Ok(8),
        other => Err(Error::invalid(
            op,
            format!("{other:?} activations (the norm kernels take f32, f16 and bf16)"),
        )),
    }
}

/// The longest row MLX's one-kernel CUDA RMS norm takes for `dtype` (1024 vectors
/// of 16 bytes); longer rows take MLX's other kernel, which these do not reproduce.
pub fn max_axis(dtype: Dtype) -> Option<i32> {
    values_per_vector("rms_norm", dtype)
        .ok()
        .map(|nr| 1024 * nr)
}

/// Threads per block MLX's `rms_norm_small` launches for rows of `axis` values
/// (`RmsShape::BLOCK` in shaders/cuda/norm.cuh).
pub(crate) fn rms_block(axis: i32, nr: i32) -> i32 {
    let nvec = (axis + nr - 1) / nr;
    if axis <= 64 * nr {
        64
    } else if nvec % 128 == 0 && nvec / 128 <= 8 {
        128
    } else if nvec % 64 == 0 && nvec / 64 <= 8 {
        64
    } else {
        128
    }
}

fn check_backend(op: &'static str, backend: KernelBackend) -> Result<()> {
    match backend {
        KernelBackend::Cuda => Ok(()),
        KernelBackend::Metal => Err(Error::invalid(
            op,
            "no Metal body (these kernels reproduce MLX's CUDA arithmetic); use MLX's ops",
        )),
    }
}

/// Checks a row length against [`max_axis`].
fn check_axis(op: &'static str, axis: i32, dtype: Dtype) -> Result<i32> {
    let nr = values_per_vector(op, dtype)?;
    if axis < 1 || axis > 1024 * nr {
        return Err(Error::invalid(
            op,
            format!(
                "rows of {axis} {dtype:?} values (the kernel reproduces MLX's RMS norm for \
                 1 to {} values)",
                1024 * nr
            ),
        ));
    }
    Ok(nr)
}

pub(super) fn bits(v: f32) -> TemplateArg {
    TemplateArg::Int(v.to_bits() as i32)
}

/// `h = x + r` and `rms_norm(h, weight, eps)` over the last axis, bit for bit what
/// MLX's CUDA `add` then `fast::rms_norm` give. `x` and `r` have the same shape
/// and dtype, `weight` is `[axis]` of that dtype.
///
/// # Errors
/// On Metal, another dtype than f32/f16/bf16, mismatched shapes or dtypes, rows
/// longer than [`max_axis`], or when MLX fails.
pub fn add_rms_norm(
    backend: KernelBackend,
    x: &Array,
    r: &Array,
    weight: &Array,
    eps: f32,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    add_rms_norm_variant(backend, x, r, weight, eps, norm_fma_variant(), s)
}

/// [`add_rms_norm`] with the sum-of-squares variant given (`FMAV`, 0 or 1; see
/// shaders/cuda/norm.cuh); for tests that check which one MLX's build matches.
///
/// # Errors
/// As [`add_rms_norm`]; also on a variant other than 0 or 1.
pub fn add_rms_norm_variant(
    backend: KernelBackend,
    x: &Array,
    r: &Array,
    weight: &Array,
    eps: f32,
    fmav: i32,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    static SLOT: Slot = OnceLock::new();
    const OP: &str = "add_rms_norm";
    check_backend(OP, backend)?;
    let dtype = x.dtype();
    let axis = x.shape().last().copied().unwrap_or(0);
    let nr = check_axis(OP, axis, dtype)?;
    if r.shape() != x.shape() || r.dtype() != dtype {
        return Err(Error::invalid(
            OP,
            format!(
                "x is {dtype:?} {:?}, the residual {:?} {:?}: pass two arrays of one shape \
                 and dtype",
                x.shape(),
                r.dtype(),
                r.shape()
            ),
        ));
    }
    if weight.shape() != [axis] || weight.dtype() != dtype {
        return Err(Error::invalid(
            OP,
            format!(
                "weight {:?} {:?} for rows of {axis} {dtype:?} values: pass [{axis}] of the \
                 activation dtype",
                weight.dtype(),
                weight.shape()
            ),
        ));
    }
    if !(0..=1).contains(&fmav) {
        return Err(Error::invalid(OP, format!("norm variant {fmav}")));
    }
    let rows = (x.size() / axis as usize) as i64;
    let kern = kernel_with_header(
        &SLOT,
        backend,
        "zmlx_add_rms_norm",
        &["x_in", "r_in", "w_in"],
        &["h_out", "n_out"],
        ADD_NORM,
        HEADER,
    )?;
    let (grid, tg) = block_dims(rows, rms_block(axis, nr))?;
    let shape = x.shape().to_vec();
    let out = kern.call(
        &KernelLaunch::new(
            &[x, r, weight],
            &[(&shape, dtype), (&shape, dtype)],
            grid,
            tg,
            &[
                ("T", TemplateArg::Dtype(dtype)),
                ("AXIS", TemplateArg::Int(axis)),
                ("EPS", bits(eps)),
                ("FMAV", TemplateArg::Int(fmav)),
            ],
        ),
        s,
    )?;
    two(out)
}

/// The rope position (and for the cache-writing kernel the cache capacity) as a
/// small int32 array. Every layer of a decode step asks for the same values, so the
/// last array is kept: one small upload per step, not per layer.
fn position_array(values: &[i32]) -> Result<Array> {
    static LAST: Mutex<Option<(Vec<i32>, Array)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((v, a)) = last.as_ref() {
        if v.as_slice() == values {
            return Ok(a.clone());
        }
    }
    let a = Array::from_slice(values, &[values.len() as i32])?;
    *last = Some((values.to_vec(), a.clone()));
    Ok(a)
}

/// Per-head RMS norms and rotary embedding of one token per sequence: `q` is
/// `[b, 1, q_heads * head_dim]`, `k` `[b, 1, kv_heads * head_dim]` (the
/// projections' outputs); returns `[b, q_heads, 1, head_dim]` and `[b, kv_heads, 1,
/// head_dim]`, bit for bit what MLX's CUDA `fast::rms_norm` (with `q_weight` /
/// `k_weight`) then `fast::rope` (non-traditional, all `head_dim` dims, at
/// `offset`) give, as mlx-lm's Qwen3 attention calls them.
///
/// # Errors
/// On Metal, another dtype than f32/f16/bf16, shapes that do not match `spec`, more
/// than one token per sequence, an odd or too long head, or when MLX fails.
#[allow(clippy::too_many_arguments)]
pub fn head_norm_rope(
    backend: KernelBackend,
    q: &Array,
    k: &Array,
    q_weight: &Array,
    k_weight: &Array,
    spec: &HeadNormRopeSpec,
    offset: i32,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    let variants = (norm_fma_variant(), rope_variant());
    head_norm_rope_variant(backend, q, k, q_weight, k_weight, spec, offset, variants, s)
}

/// [`head_norm_rope`] with the kernel's `(FMAV, ROPEV)` given (0..=1, 0..=2; see
/// shaders/cuda/norm.cuh and head_norm_rope.cu); for tests that check which
/// contraction MLX's build uses.
///
/// # Errors
/// As [`head_norm_rope`]; also on variants out of range.
#[allow(clippy::too_many_arguments)]
pub fn head_norm_rope_variant(
    backend: KernelBackend,
    q: &Array,
    k: &Array,
    q_weight: &Array,
    k_weight: &Array,
    spec: &HeadNormRopeSpec,
    offset: i32,
    (fmav, ropev): (i32, i32),
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    static SLOT: Slot = OnceLock::new();
    const OP: &str = "head_norm_rope";
    let dtype = check_head_norm_rope(OP, backend, q, k, q_weight, k_weight, spec, (fmav, ropev))?;
    let d = spec.head_dim;
    let nr = values_per_vector(OP, dtype)?;
    let b = q.shape()[0];
    let kern = kernel_with_header(
        &SLOT,
        backend,
        "zmlx_head_norm_rope",
        &["q_in", "k_in", "wq_in", "wk_in", "offset_in"],
        &["q_out", "k_out"],
        HEAD_NORM_ROPE,
        HEADER,
    )?;
    let blocks = i64::from(b) * i64::from(spec.q_heads + spec.kv_heads);
    let (grid, tg) = block_dims(blocks, rms_block(d, nr))?;
    let qs = [b, spec.q_heads, 1, d];
    let ks = [b, spec.kv_heads, 1, d];
    let off = position_array(&[offset])?;
    let out = kern.call(
        &KernelLaunch::new(
            &[q, k, q_weight, k_weight, &off],
            &[(&qs, dtype), (&ks, dtype)],
            grid,
            tg,
            &head_norm_rope_args(dtype, spec, (fmav, ropev)),
        ),
        s,
    )?;
    two(out)
}

/// [`head_norm_rope`] for a decode step that also appends the token's keys and
/// values to a KV cache: the normed, rotated keys and `v` (`[b, 1, kv_heads *
/// head_dim]`) are written at position `offset` of `k_cache` and `v_cache` (`[b,
/// kv_heads, capacity, head_dim]`, the activation dtype) inside the kernel; returns
/// the queries `[b, q_heads, 1, head_dim]`. What MLX's `fast::rms_norm`, `fast::rope`
/// and two `slice_update`s give, bit for bit, in one op instead of six.
///
/// The caches are written in place although MLX sees them as inputs only. The
/// caller guarantees what makes that sound (as `KvCache` in the zmlx crate does):
/// - both caches are dense buffers (the output of a `slice_update` or
///   `concatenate`, never a broadcast such as `zeros`; MLX would copy a
///   non-contiguous input and the writes would be lost), held by the cache, so
///   MLX never hands their memory to another array;
/// - no one else writes them in place, and no view that anyone reads covers
///   position `offset` (the views handed out so far end before it; a clone of the
///   cache reads only positions it wrote itself);
/// - the only op that reads position `offset` afterwards (this step's attention)
///   also takes the returned queries, so MLX orders it after this kernel.
///
/// # Errors
/// As [`head_norm_rope`]; also on caches of another shape or dtype, or an `offset`
/// outside them.
#[allow(clippy::too_many_arguments)]
pub fn head_norm_rope_into_cache(
    backend: KernelBackend,
    q: &Array,
    k: &Array,
    v: &Array,
    q_weight: &Array,
    k_weight: &Array,
    spec: &HeadNormRopeSpec,
    offset: i32,
    (k_cache, v_cache): (&Array, &Array),
    s: StreamOrDevice,
) -> Result<Array> {
    static SLOT: Slot = OnceLock::new();
    const OP: &str = "head_norm_rope_into_cache";
    let (fmav, ropev) = (norm_fma_variant(), rope_variant());
    let dtype = check_head_norm_rope(OP, backend, q, k, q_weight, k_weight, spec, (fmav, ropev))?;
    let d = spec.head_dim;
    let nr = values_per_vector(OP, dtype)?;
    let b = q.shape()[0];
    if v.shape() != k.shape() || v.dtype() != dtype {
        return Err(Error::invalid(
            OP,
            format!(
                "v {:?} {:?}, k {:?} {:?}: pass values of the keys' shape and dtype",
                v.dtype(),
                v.shape(),
                k.dtype(),
                k.shape()
            ),
        ));
    }
    let cap = k_cache.shape().get(2).copied().unwrap_or(0);
    for c in [k_cache, v_cache] {
        if c.shape() != [b, spec.kv_heads, cap, d] || c.dtype() != dtype {
            return Err(Error::invalid(
                OP,
                format!(
                    "cache {:?} {:?}: pass [{b}, {}, capacity, {d}] of the activation dtype for \
                     both keys and values",
                    c.dtype(),
                    c.shape(),
                    spec.kv_heads
                ),
            ));
        }
    }
    if !(0..cap).contains(&offset) {
        return Err(Error::invalid(
            OP,
            format!("position {offset} in a cache of {cap} positions"),
        ));
    }
    let kern = kernel_with_header(
        &SLOT,
        backend,
        "zmlx_head_norm_rope_kv",
        &[
            "q_in", "k_in", "v_in", "wq_in", "wk_in", "pos_in", "kc_in", "vc_in",
        ],
        &["q_out"],
        HEAD_NORM_ROPE_KV,
        HEADER,
    )?;
    let blocks = i64::from(b) * i64::from(spec.q_heads + spec.kv_heads);
    let (grid, tg) = block_dims(blocks, rms_block(d, nr))?;
    let qs = [b, spec.q_heads, 1, d];
    let pos = position_array(&[offset, cap])?;
    let out = kern.call(
        &KernelLaunch::new(
            &[q, k, v, q_weight, k_weight, &pos, k_cache, v_cache],
            &[(&qs, dtype)],
            grid,
            tg,
            &head_norm_rope_args(dtype, spec, (fmav, ropev)),
        ),
        s,
    )?;
    one(out)
}

/// The template arguments of both head-norm + RoPE kernels.
fn head_norm_rope_args(
    dtype: Dtype,
    spec: &HeadNormRopeSpec,
    (fmav, ropev): (i32, i32),
) -> [(&'static str, TemplateArg); 9] {
    [
        ("T", TemplateArg::Dtype(dtype)),
        ("D", TemplateArg::Int(spec.head_dim)),
        ("NQ", TemplateArg::Int(spec.q_heads)),
        ("NK", TemplateArg::Int(spec.kv_heads)),
        ("EPS", bits(spec.eps)),
        // MLX's RoPE passes std::log2 of its float base to the kernel.
        ("LB", bits(spec.rope_base.log2())),
        ("SC", bits(spec.rope_scale)),
        ("FMAV", TemplateArg::Int(fmav)),
        ("ROPEV", TemplateArg::Int(ropev)),
    ]
}

/// The checks [`head_norm_rope`] and [`head_norm_rope_into_cache`] share; returns the
/// activation dtype.
#[allow(clippy::too_many_arguments)]
fn check_head_norm_rope(
    op: &'static str,
    backend: KernelBackend,
    q: &Array,
    k: &Array,
    q_weight: &Array,
    k_weight: &Array,
    spec: &HeadNormRopeSpec,
    (fmav, ropev): (i32, i32),
) -> Result<Dtype> {
    check_backend(op, backend)?;
    let dtype = q.dtype();
    let d = spec.head_dim;
    check_axis(op, d, dtype)?;
    if d % 2 != 0 || spec.q_heads < 1 || spec.kv_heads < 1 {
        return Err(Error::invalid(
            op,
            format!(
                "{} query and {} key heads of {d} values (rope turns pairs: an even head \
                 size and at least one head of each)",
                spec.q_heads, spec.kv_heads
            ),
        ));
    }
    let one_token = |a: &Array, heads: i32| {
        let sh = a.shape();
        sh.len() == 3 && sh[1] == 1 && sh[2] == heads * d && a.dtype() == dtype
    };
    if !one_token(q, spec.q_heads) || !one_token(k, spec.kv_heads) || q.shape()[0] != k.shape()[0] {
        return Err(Error::invalid(
            op,
            format!(
                "q {:?} {:?} and k {:?} {:?}: pass one token per sequence, [b, 1, {} * {d}] \
                 and [b, 1, {} * {d}] of one dtype",
                q.dtype(),
                q.shape(),
                k.dtype(),
                k.shape(),
                spec.q_heads,
                spec.kv_heads
            ),
        ));
    }
    for w in [q_weight, k_weight] {
        if w.shape() != [d] || w.dtype() != dtype {
            return Err(Error::invalid(
                op,
                format!(
                    "norm weight {:?} {:?}: pass [{d}] of the activation dtype",
                    w.dtype(),
                    w.shape()
                ),
            ));
        }
    }
    if !(0..=1).contains(&fmav) || !(0..=2).contains(&ropev) {
        return Err(Error::invalid(
            op,
            format!("variants ({fmav}, {ropev}) out of range"),
        ));
    }
    Ok(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros(shape: &[i32], dt: Dtype) -> Array {
        mlx::ops::zeros(shape, dt, StreamOrDevice::Default).expect("zeros")
    }

    fn message<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    /// Bad calls are typed errors that say what to pass, found before any kernel is
    /// built (so this runs without a GPU).
    #[test]
    fn bad_calls_are_typed_errors() {
        let s = StreamOrDevice::Default;
        let cuda = KernelBackend::Cuda;
        let x = zeros(&[2, 64], Dtype::Bfloat16);
        let w = zeros(&[64], Dtype::Bfloat16);
        let m = message(add_rms_norm(KernelBackend::Metal, &x, &x, &w, 1e-6, s));
        assert!(m.contains("no Metal body"), "{m}");
        let r = zeros(&[2, 32], Dtype::Bfloat16);
        let m = message(add_rms_norm(cuda, &x, &r, &w, 1e-6, s));
        assert!(m.contains("one shape and dtype"), "{m}");
        let m = message(add_rms_norm(
            cuda,
            &x,
            &x,
            &zeros(&[64], Dtype::Float32),
            1e-6,
            s,
        ));
        assert!(m.contains("pass [64]"), "{m}");
        let i = zeros(&[2, 64], Dtype::Int32);
        let m = message(add_rms_norm(cuda, &i, &i, &w, 1e-6, s));
        assert!(m.contains("Int32"), "{m}");
        let long = zeros(&[1, 8200], Dtype::Bfloat16);
        let m = message(add_rms_norm(
            cuda,
            &long,
            &long,
            &zeros(&[8200], Dtype::Bfloat16),
            1e-6,
            s,
        ));
        assert!(m.contains("1 to 8192"), "{m}");

        let spec = HeadNormRopeSpec {
            q_heads: 2,
            kv_heads: 1,
            head_dim: 64,
            eps: 1e-6,
            rope_base: 10000.0,
            rope_scale: 1.0,
        };
        let q = zeros(&[1, 2, 128], Dtype::Bfloat16);
        let k = zeros(&[1, 2, 64], Dtype::Bfloat16);
        let m = message(head_norm_rope(cuda, &q, &k, &w, &w, &spec, 0, s));
        assert!(m.contains("one token per sequence"), "{m}");
        let q = zeros(&[1, 1, 128], Dtype::Bfloat16);
        let k = zeros(&[1, 1, 64], Dtype::Bfloat16);
        let m = message(head_norm_rope(
            cuda,
            &q,
            &k,
            &zeros(&[32], Dtype::Bfloat16),
            &w,
            &spec,
            0,
            s,
        ));
        assert!(m.contains("pass [64]"), "{m}");
        let odd = HeadNormRopeSpec {
            head_dim: 63,
            ..spec
        };
        let m = message(head_norm_rope(cuda, &q, &k, &w, &w, &odd, 0, s));
        assert!(m.contains("even head size"), "{m}");
    }

    #[test]
    fn launch_shape_follows_mlx_dispatch() {
        // bf16: 8 values a vector. Qwen3's heads (128) and hidden size (2048).
        assert_eq!(rms_block(128, 8), 64);
        assert_eq!(rms_block(2048, 8), 128);
        // 768 values: 96 vectors, a multiple of neither 128 nor 64 -> 128.
        assert_eq!(rms_block(768, 8), 128);
        // f32, 4 values a vector: 1536 -> 384 vectors, 384 % 128 == 0.
        assert_eq!(rms_block(1536, 4), 128);
        // 320 vectors: % 64 == 0, 320 / 64 = 5 <= 8 -> 64.
        assert_eq!(rms_block(2560, 8), 64);
    }
}
