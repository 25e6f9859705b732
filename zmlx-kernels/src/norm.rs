//! RMS norm and the fusions around it.
//!
//! - [`ReferenceNorm`]: MLX's `fast::rms_norm`, as mlx's `nn.RMSNorm` calls it.
//! - [`fused_add_rms_norm`]: a residual add and the RMS norm of its result (a decoder
//!   layer's `h = x + attn(x)` and `post_attention_layernorm(h)`) in one op.
//! - [`fused_head_norm_rope`]: one token's per-head q/k RMS norms and rotary
//!   embedding (Qwen3's attention) in one op instead of four.
//!
//! The fused ops run on CUDA only ([`crate::gpu::norm`]), where they give MLX's bits
//! with fewer ops; [`add_norm_support`] and [`head_norm_rope_support`] say when a
//! call can take them, and callers keep MLX's ops otherwise.

use mlx::{fast, Array, Device, Dtype, Result, StreamOrDevice};

use crate::contract::{NormOp, Support};
use crate::gpu;
use mlx::kernel::KernelBackend;

/// MLX's fused RMS norm.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceNorm;

impl NormOp for ReferenceNorm {
    fn name(&self) -> &'static str {
        "mlx"
    }

    fn rms_norm(&self, x: &Array, weight: &Array, eps: f32, s: StreamOrDevice) -> Result<Array> {
        fast::rms_norm(x, Some(weight), eps, s)
    }
}

/// The shape and constants of an attention layer's per-head q/k norms and RoPE.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadNormRopeSpec {
    /// Query heads.
    pub q_heads: i32,
    /// Key (and value) heads.
    pub kv_heads: i32,
    /// Values per head; the norms run over it and RoPE turns all of it.
    pub head_dim: i32,
    /// The norms' epsilon.
    pub eps: f32,
    /// RoPE's base (`rope_theta`).
    pub rope_base: f32,
    /// RoPE's position scale.
    pub rope_scale: f32,
}

fn cuda(device: Device) -> std::result::Result<(), Support> {
    if device.kind == mlx::DeviceType::Cpu {
        return Err(Support::No(
            "CPU: MLX's own norm and rope ops (per-op cost does not limit the CPU)".into(),
        ));
    }
    match gpu::backend_for(device) {
        Some(KernelBackend::Cuda) => Ok(()),
        Some(KernelBackend::Metal) => Err(Support::No(
            "Metal: no body (the kernels reproduce MLX's CUDA arithmetic)".into(),
        )),
        None => Err(Support::No(crate::gpu::no_backend_reason())),
    }
}

fn axis_support(what: &str, axis: i32, dtype: Option<Dtype>) -> Support {
    // Without a dtype, the tightest bound (f32's) is checked.
    let max = gpu::norm::max_axis(dtype.unwrap_or(Dtype::Float32));
    match max {
        None => Support::No(format!(
            "{:?} activations (the kernels take f32, f16, bf16)",
            dtype.unwrap_or(Dtype::Float32)
        )),
        Some(m) if axis < 1 || axis > m => Support::No(format!(
            "{what} of {axis} values (MLX's one-kernel RMS norm, which the kernel \
             reproduces, takes 1 to {m})"
        )),
        Some(_) => Support::Yes,
    }
}

/// The threads a block of MLX's one-kernel CUDA RMS norm has for rows of `axis`
/// values of `dtype`; `None` where that kernel does not take the rows.
pub(crate) fn rms_threads(axis: i32, dtype: Dtype) -> Option<i32> {
    let nr = gpu::norm::values_per_vector("rms_norm", dtype).ok()?;
    (1..=1024 * nr)
        .contains(&axis)
        .then(|| gpu::norm::rms_block(axis, nr))
}

/// Whether [`fused_add_rms_norm`] takes rows of `hidden` values on `device`
/// (`dtype` `None`: any float dtype).
pub fn add_norm_support(hidden: i32, dtype: Option<Dtype>, device: Device) -> Support {
    if let Err(no) = cuda(device) {
        return no;
    }
    axis_support("rows", hidden, dtype)
}

/// `(x + r, rms_norm(x + r, weight, eps))` in one op, bit for bit what MLX's `add`
/// then `fast::rms_norm` give on CUDA.
///
/// # Errors
/// Where [`add_norm_support`] says No, on mismatched shapes or dtypes, or when MLX
/// fails.
pub fn fused_add_rms_norm(
    x: &Array,
    r: &Array,
    weight: &Array,
    eps: f32,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    let backend = backend_of("add_rms_norm", s)?;
    gpu::norm::add_rms_norm(backend, x, r, weight, eps, s)
}

/// Whether [`fused_head_norm_rope`] takes `spec` for `tokens` tokens per sequence on
/// `device` (`dtype` `None`: any float dtype).
pub fn head_norm_rope_support(
    spec: &HeadNormRopeSpec,
    tokens: i32,
    dtype: Option<Dtype>,
    device: Device,
) -> Support {
    if let Err(no) = cuda(device) {
        return no;
    }
    if tokens != 1 {
        return Support::No(format!(
            "{tokens} tokens per sequence (the kernel does one-token decode steps)"
        ));
    }
    if spec.head_dim % 2 != 0 || spec.q_heads < 1 || spec.kv_heads < 1 {
        return Support::No(format!(
            "{} query / {} key heads of {} values (rope needs an even head size)",
            spec.q_heads, spec.kv_heads, spec.head_dim
        ));
    }
    axis_support("heads", spec.head_dim, dtype)
}

/// The head sizes for which MLX's CUDA attention of one token runs a fused kernel
/// (cuDNN's or its vector kernel) that reads the KV cache in place, as one graph node
/// that also takes the queries (MLX 0.32's `supports_sdpa_vector`).
pub const FUSED_ATTENTION_HEAD_DIMS: [i32; 3] = [64, 96, 128];

/// Whether [`fused_head_norm_rope_into_cache`] may serve a decode step of `spec` on
/// `device`: where [`head_norm_rope_support`] says so and the head size is one of
/// [`FUSED_ATTENTION_HEAD_DIMS`]. For other sizes MLX attends with separate ops, one
/// of which could copy the cache before this kernel writes it (MLX orders ops by the
/// buffers they write, and this kernel writes the cache as an input), so the cache
/// keeps MLX's `slice_update`.
pub fn kv_write_support(spec: &HeadNormRopeSpec, dtype: Option<Dtype>, device: Device) -> Support {
    match head_norm_rope_support(spec, 1, dtype, device) {
        Support::Yes if !FUSED_ATTENTION_HEAD_DIMS.contains(&spec.head_dim) => {
            Support::No(format!(
                "heads of {} values (MLX's fused one-token attention, which reads the cache \
             after this kernel, takes {FUSED_ATTENTION_HEAD_DIMS:?})",
                spec.head_dim
            ))
        }
        other => other,
    }
}

/// One token's per-head q/k RMS norms and RoPE: `q` `[b, 1, q_heads * head_dim]`
/// and `k` `[b, 1, kv_heads * head_dim]` in, `[b, heads, 1, head_dim]` out, bit
/// for bit what MLX's `fast::rms_norm` then `fast::rope` (non-traditional, at
/// `offset`) give on CUDA.
///
/// # Errors
/// Where [`head_norm_rope_support`] says No, on shapes that do not match `spec`,
/// or when MLX fails.
pub fn fused_head_norm_rope(
    q: &Array,
    k: &Array,
    q_weight: &Array,
    k_weight: &Array,
    spec: &HeadNormRopeSpec,
    offset: i32,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    let backend = backend_of("head_norm_rope", s)?;
    gpu::norm::head_norm_rope(backend, q, k, q_weight, k_weight, spec, offset, s)
}

/// [`fused_head_norm_rope`] that also writes the token's keys and values into a KV
/// cache: `v` is `[b, 1, kv_heads * head_dim]`, the caches `[b, kv_heads, capacity,
/// head_dim]`; the normed, rotated keys and the values land at position `offset`
/// of them, and the queries `[b, q_heads, 1, head_dim]` are returned. The caches
/// are written in place: read the conditions in
/// [`gpu::norm::head_norm_rope_into_cache`] before calling it on arrays a KV cache
/// does not own.
///
/// # Errors
/// As [`fused_head_norm_rope`]; also on caches of another shape or dtype, or an
/// `offset` outside them.
#[allow(clippy::too_many_arguments)]
pub fn fused_head_norm_rope_into_cache(
    q: &Array,
    k: &Array,
    v: &Array,
    q_weight: &Array,
    k_weight: &Array,
    spec: &HeadNormRopeSpec,
    offset: i32,
    caches: (&Array, &Array),
    s: StreamOrDevice,
) -> Result<Array> {
    let backend = backend_of("head_norm_rope_into_cache", s)?;
    gpu::norm::head_norm_rope_into_cache(
        backend, q, k, v, q_weight, k_weight, spec, offset, caches, s,
    )
}

fn backend_of(op: &'static str, s: StreamOrDevice) -> Result<KernelBackend> {
    gpu::backend_for(s.device()?)
        .ok_or_else(|| mlx::Error::invalid(op, "the fused norm kernels run on CUDA only"))
}
