//! GPU backends of the fused MoE kernels: CUDA (run and measured on an NVIDIA H100)
//! and Metal (not yet run on Apple silicon; compile-checked against a mock header).
//!
//! Kernel bodies live in `shaders/cuda/*.cu` and `shaders/metal/*.metal`; MLX
//! (`fast::cuda_kernel`, `fast::metal_kernel`) writes the signatures and compiles each
//! body on first use per set of template arguments. The kernels serve decode-sized
//! batches: fewer than [`MAX_PAIRS`] (token, expert) pairs; larger batches go to the
//! reference, which sorts the pairs by expert and uses MLX's GEMM.
//!
//! CUDA: the expert kernels reproduce MLX's own CUDA arithmetic bit for bit
//! (`shaders/cuda/mma.cuh`: the same dequantization and the same `mma.sync` blocks in
//! the same order as MLX's `qmm_sm80`, MLX's element-wise functors for the rest).
//! That kernel is what MLX runs for f16/bf16 activations, 4/8-bit affine weights,
//! `N % 128 == 0`, `K % max(64, group) == 0` and at least [`MIN_EXACT_PAIRS`] pairs;
//! [`cuda_shape_support`] and the callers keep the reference everywhere else.
//!
//! Metal: the first-generation algorithm (fp32 dot products, MLX's per-op roundings
//! of the results), which is close to but not bit-identical with MLX's output.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use mlx::kernel::{KernelBackend, KernelLaunch, TemplateArg};
use mlx::quantization::{QuantMode, QuantizedWeight};
use mlx::{ops, Array, Device, DeviceType, Dtype, Error, Result, StreamOrDevice};

use crate::contract::Support;
use crate::down_combine::NextNorm;
use crate::expert_swiglu::{RouterMatmul, RouterScratch};
use crate::moe_gate::RouterSpec;
use crate::weight::Weight;
use family::{FamilySource, KernelFamily};

mod family;
mod header_file;
pub mod norm;
mod variants;

pub use variants::{
    current_cuda_variants, process_cuda_variants, with_cuda_variants, CudaVariants,
};

/// The GPU kernels take fewer (token, expert) pairs than this; mlx-lm sorts pairs
/// by expert from this many on, and so does the reference this falls back to.
pub const MAX_PAIRS: usize = crate::expert_swiglu::SORT_THRESHOLD;

/// On CUDA the expert kernels take at least this many (token, expert) pairs: below
/// it MLX's `gather_qmm` runs `gather_qmv`, whose accumulation the kernels do not
/// reproduce, so smaller batches keep the reference.
pub const MIN_EXACT_PAIRS: usize = 8;

/// The CUDA down + combine kernel takes up to this many experts per token (its
/// block keeps each token's products in shared memory).
pub const MAX_CUDA_COMBINE_K: i32 = 32;

/// Whether MLX's CUDA `gather_qmm` takes its `qmm_sm80` path for a weight of `n`
/// output and `k` input features (the arithmetic the CUDA expert kernels
/// reproduce): f16/bf16 activations, `n % 128 == 0`, `k % max(64, group) == 0`.
pub fn cuda_shape_support(w: &Weight) -> Support {
    let Weight::Quantized(q) = w else {
        return Support::No("float weights (the GPU kernels take affine 4/8-bit)".into());
    };
    if !matches!(q.scales.dtype(), Dtype::Float16 | Dtype::Bfloat16) {
        return Support::No(format!(
            "{:?} activations (the CUDA kernels reproduce MLX's f16/bf16 path only)",
            q.scales.dtype()
        ));
    }
    let (n, k) = (w.out_features(), w.in_features());
    let kt = q.spec.group_size.max(64);
    if n % 128 != 0 || k % kt != 0 {
        return Support::No(format!(
            "a {n} x {k} weight (MLX's CUDA qmm_sm80, which the kernels reproduce, needs \
             out features % 128 == 0 and in features % {kt} == 0)"
        ));
    }
    // The worst case of both kernels: down + combine's eight rings of two stages, in
    // the narrow tiles they fall back to.
    let worst = Rings {
        bits: q.spec.bits,
        group: q.spec.group_size,
        kin: k,
        rows: 8,
        warps: COMBINE_MAX_WARPS,
        other: combine_smem(8),
    };
    if !worst.fit(2, PIPE_CHUNKS) {
        return Support::No(format!(
            "{k} input features in groups of {} (the tile's scales and biases need more \
             shared memory than a CUDA block declares)",
            q.spec.group_size
        ));
    }
    Support::Yes
}

/// How the CUDA kernels dequantize (`DEQ` in shaders/cuda/mma.cuh): 2 = `q * scale +
/// bias` rounded once to T from its exact value (a packed fused multiply-add; the
/// default), 1 = an f32 fused multiply-add rounded to T, 0 = the product and the sum
/// each rounded to T. 1 and 2 differ only on weights whose bias is far below
/// `q * scale`: tests/cuda_vs_reference.rs builds such weights, and on them MLX
/// 0.32.4's CUDA `gather_qmm` gives exactly what 2 gives (notes/cuda-kernels.md,
/// device run 22). [`CudaVariants::with_dequant`] (or `ZMLX_CUDA_DEQ=n`) selects
/// another, for checking against MLX on a device.
fn cuda_deq_variant() -> i32 {
    current_cuda_variants().deq
}

/// The order and accumulator of the combine's k-sum (`SUMV` in
/// shaders/cuda/down_combine.cu, 0..=5). The default, 0 (sequential in the
/// activation dtype), is bit-identical to MLX 0.32.4 at Qwen3-30B-A3B's shapes on an
/// H100 (notes/cuda-kernels.md, device run 3). [`CudaVariants::with_k_sum`] (or
/// `ZMLX_CUDA_SUM=n`) selects another, for checking against MLX on a device.
fn cuda_sum_variant() -> i32 {
    current_cuda_variants().sum
}

/// Static shared memory a CUDA block may declare.
const CUDA_STATIC_SMEM: i64 = 48 * 1024;

/// Rows of a tile of the CUDA expert kernels (`ROWS` in shaders/cuda/mma.cuh): 16
/// (one mma covers 16 weight rows, the weights in its A operand) where two stages
/// of such rings fit (`fits(16)`), else 8 (the activation in A, 8 weight rows in
/// B). Both give MLX's bits (checked on the device, notes/cuda-kernels.md);
/// [`CudaVariants::with_tile_rows`] (or `ZMLX_CUDA_ROWS=8`) selects the narrow tiles
/// everywhere, for checks and A/B runs on a device.
fn cuda_tile_rows(fits: impl Fn(i32) -> bool) -> i32 {
    match current_cuda_variants().tile_rows {
        16 if fits(16) => 16,
        _ => 8,
    }
}

/// 16-byte chunks a ring stage holds (`CPS` in the expert kernels) unless a kernel
/// chooses otherwise.
const PIPE_CHUNKS: i32 = 4;

/// Chunks a stage of the SwiGLU kernel's rings: 8 where two such stages fit
/// (`fits(8)`), else [`PIPE_CHUNKS`]. Fewer, larger stages spread each stage's copy
/// bookkeeping over twice the mmas: at Qwen3-30B-A3B's shapes on an H100, 3 stages of
/// 8 chunks ran the SwiGLU kernel ~6% faster than 7 of 4 (Nsight Compute, in the
/// model) and a warp's body 16% faster (stage probe), with MLX's bits on every test
/// class (notebook.md, device run 88). `ZMLX_CUDA_CPS=4` selects the old stages, for
/// A/B runs on a device (the bits are the same either way: the mmas run in the same
/// order).
fn cuda_swiglu_stage_chunks(fits: impl Fn(i32) -> bool) -> i32 {
    match current_cuda_variants().stage_chunks {
        8 if fits(8) => 8,
        _ => PIPE_CHUNKS,
    }
}

/// The rings of one CUDA expert-kernel block (`PipeRing` in shaders/cuda/mma.cuh, one
/// a warp): the weights' bits and group size, the K they stream, rows a tile, rings a
/// block, and the block's other static shared memory in bytes.
#[derive(Clone, Copy)]
struct Rings {
    bits: i32,
    group: i32,
    kin: i32,
    rows: i32,
    warps: i32,
    other: i64,
}

impl Rings {
    /// Bytes of one ring with `stages` stages of `cps` chunks, for 16-bit activations:
    /// weights and activations of each stage, plus the tile's scales and biases.
    fn ring_bytes(&self, stages: i32, cps: i32) -> i64 {
        let vals = 128 / self.bits;
        let per_stage = cps * self.rows * 16 + cps * vals * 2;
        let scales = 2 * self.rows * (self.kin / self.group) * 2;
        let raw = i64::from(stages) * i64::from(per_stage) + i64::from(scales);
        (raw + 15) / 16 * 16
    }

    /// Whether the block's rings of `stages` stages of `cps` chunks, and its other
    /// bytes, fit a block's static shared memory.
    fn fit(&self, stages: i32, cps: i32) -> bool {
        i64::from(self.warps) * self.ring_bytes(stages, cps) + self.other <= CUDA_STATIC_SMEM
    }

    /// Stages of each ring (`PIPE` in the expert kernels) for `cps` chunks a stage:
    /// enough to keep all of K in flight, at most 8, and as many as fit (at least 2:
    /// [`cuda_shape_support`] refuses weights for which two do not fit).
    /// [`CudaVariants::with_pipe_cap`] (or `ZMLX_CUDA_PIPE=n`) caps the stages (for
    /// checks and A/B runs on a device; any count gives the same bits).
    fn stages(&self, cps: i32) -> i32 {
        let cap = current_cuda_variants().pipe_cap;
        let chunks = self.kin / (128 / self.bits);
        let all_in_flight = (chunks + cps - 1) / cps + 1;
        let mut stages = cap.min(all_in_flight).max(2);
        while stages > 2 && !self.fit(stages, cps) {
            stages -= 1;
        }
        stages
    }
}

/// The most warps a CUDA down + combine block has, each with its own ring
/// (`ring[8]` in shaders/cuda/down_combine.cu): more would exceed an SM's register
/// file.
const COMBINE_MAX_WARPS: i32 = 8;

/// Threads of a CUDA down + combine block for top-`k` routing: a warp per expert, at
/// most [`COMBINE_MAX_WARPS`] (each warp then runs several experts).
pub(crate) fn down_combine_block_threads(k: i32) -> i32 {
    32 * k.min(COMBINE_MAX_WARPS)
}

/// Shared memory of down + combine besides its rings: the products' tile (`rows`
/// outputs by up to 32 experts).
fn combine_smem(rows: i32) -> i64 {
    i64::from(rows) * 32 * 2
}

/// Tiles per block of the CUDA SwiGLU kernel (`TPB`) the variants ask for: 4 (with
/// the router matmul inside the kernel, the MoE block ran faster chained than with 2
/// in 4 of 4 alternations on an H100, notes/cuda-kernels.md, device runs 119-120;
/// 2 had been the fastest of 1, 2 and 4 on an H200 before, run 32), or
/// `ZMLX_CUDA_TPB` = 1 or 2 (for A/B runs on a device; the bits are the same either
/// way). [`swiglu_tiles`] takes fewer where the rings do not fit.
fn cuda_swiglu_tiles_per_block() -> i32 {
    current_cuda_variants().tiles_per_block
}

/// The router kernel takes up to this many experts (one warp holds 16 a lane).
pub const MAX_ROUTER_EXPERTS: i32 = 512;

/// Whether [`crate::moe_gate::FusedRouter`] uses the GPU router kernel. On CUDA,
/// MLX's argpartition (0.32.x, mlx/backend/cuda/sort.cu) is a stable ascending
/// merge sort of the whole row, so its top k and their order are fixed, ties
/// included (larger expert index ranks higher among equal gates); the kernel
/// reproduces that order, and `tests/cuda_vs_reference.rs` checks ids in order on
/// integer logits full of ties. Set this to `false` to keep the reference router on
/// GPUs.
pub const ROUTER_TIES_MATCH: bool = true;

/// The router kernel takes up to this many experts per token.
pub const MAX_ROUTER_K: i32 = 16;

struct Sources {
    /// The header of the expert kernels.
    prelude: &'static str,
    /// The header of the router kernel (it needs no matmul helpers).
    gate_header: &'static str,
    swiglu: &'static str,
    down: &'static str,
    gate: &'static str,
    /// Header and body of the SwiGLU kernel that also routes (CUDA only).
    routed_swiglu: Option<(&'static str, &'static str)>,
    /// Header and body of the SwiGLU kernel that also computes the router logits
    /// (CUDA only).
    router_swiglu: Option<(&'static str, &'static str)>,
    /// Header and body of the down + combine kernel that also normalises its
    /// output (CUDA only).
    down_norm: Option<(&'static str, &'static str)>,
}

const CUDA: Sources = Sources {
    prelude: concat!(
        include_str!("../../../shaders/cuda/prelude.cuh"),
        include_str!("../../../shaders/cuda/mma.cuh")
    ),
    gate_header: concat!(
        include_str!("../../../shaders/cuda/prelude.cuh"),
        include_str!("../../../shaders/cuda/route.cuh")
    ),
    swiglu: concat!(
        include_str!("../../../shaders/cuda/swiglu_ids.cu"),
        include_str!("../../../shaders/cuda/expert_swiglu.cu")
    ),
    down: include_str!("../../../shaders/cuda/down_combine.cu"),
    gate: include_str!("../../../shaders/cuda/moe_gate.cu"),
    routed_swiglu: Some((
        concat!(
            include_str!("../../../shaders/cuda/prelude.cuh"),
            include_str!("../../../shaders/cuda/mma.cuh"),
            include_str!("../../../shaders/cuda/route.cuh")
        ),
        concat!(
            include_str!("../../../shaders/cuda/swiglu_route.cu"),
            include_str!("../../../shaders/cuda/expert_swiglu.cu")
        ),
    )),
    router_swiglu: Some((
        concat!(
            include_str!("../../../shaders/cuda/prelude.cuh"),
            include_str!("../../../shaders/cuda/mma.cuh"),
            include_str!("../../../shaders/cuda/route.cuh"),
            include_str!("../../../shaders/cuda/router_qmv.cuh")
        ),
        concat!(
            include_str!("../../../shaders/cuda/swiglu_router.cu"),
            include_str!("../../../shaders/cuda/expert_swiglu.cu")
        ),
    )),
    down_norm: Some((
        concat!(
            include_str!("../../../shaders/cuda/prelude.cuh"),
            include_str!("../../../shaders/cuda/mma.cuh"),
            include_str!("../../../shaders/cuda/norm.cuh")
        ),
        concat!(
            include_str!("../../../shaders/cuda/down_combine.cu"),
            include_str!("../../../shaders/cuda/down_combine_norm.cu")
        ),
    )),
};

const METAL: Sources = Sources {
    prelude: include_str!("../../../shaders/metal/prelude.h"),
    gate_header: include_str!("../../../shaders/metal/prelude.h"),
    swiglu: include_str!("../../../shaders/metal/expert_swiglu.metal"),
    down: include_str!("../../../shaders/metal/down_combine.metal"),
    gate: include_str!("../../../shaders/metal/moe_gate.metal"),
    routed_swiglu: None,
    router_swiglu: None,
    down_norm: None,
};

fn sources(b: KernelBackend) -> &'static Sources {
    match b {
        KernelBackend::Cuda => &CUDA,
        KernelBackend::Metal => &METAL,
    }
}

/// The oldest CUDA compute capability the CUDA kernels run on: they reproduce MLX's
/// sm_80 code paths (`qmm_sm80`) and use sm_80 instructions (`cp.async`, bf16
/// `mma.sync`); on older GPUs MLX itself computes differently.
pub const MIN_CUDA_CAPABILITY: (u32, u32) = (8, 0);

/// The GPU kernel backend that serves `device`, if any: CUDA when MLX runs its CUDA
/// backend on a GPU of compute capability [`MIN_CUDA_CAPABILITY`] or newer (or one
/// whose capability MLX does not report), Metal when it runs Metal, none for the CPU
/// and older CUDA GPUs ([`no_backend_reason`] says why).
pub fn backend_for(device: Device) -> Option<KernelBackend> {
    if device.kind != DeviceType::Gpu {
        return None;
    }
    gpu_backend_state().0
}

/// Why [`backend_for`] serves no GPU kernels on this machine's GPU: a message for a
/// [`Support::No`].
pub fn no_backend_reason() -> String {
    gpu_backend_state()
        .1
        .clone()
        .unwrap_or_else(|| "no fused kernel for this GPU backend".into())
}

/// The GPU backend and, where there is none, why (read once a process).
fn gpu_backend_state() -> &'static (Option<KernelBackend>, Option<String>) {
    static STATE: OnceLock<(Option<KernelBackend>, Option<String>)> = OnceLock::new();
    STATE.get_or_init(|| {
        if mlx::cuda_is_available().unwrap_or(false) {
            let cap = mlx::cuda_compute_capability().ok().flatten();
            match cuda_capability_refusal(cap) {
                Some(why) => (None, Some(why)),
                None => (Some(KernelBackend::Cuda), None),
            }
        } else if mlx::metal_is_available().unwrap_or(false) {
            (Some(KernelBackend::Metal), None)
        } else {
            (None, None)
        }
    })
}

/// Why a CUDA GPU of compute capability `cap` cannot take the kernels (`None`: it
/// can; an unreported capability is taken as new enough, MLX's CUDA builds target
/// sm_80 and newer by default).
fn cuda_capability_refusal(cap: Option<(u32, u32)>) -> Option<String> {
    let (major, minor) = cap?;
    ((major, minor) < MIN_CUDA_CAPABILITY).then(|| {
        format!(
            "a CUDA GPU of compute capability {major}.{minor} (zmlx's CUDA kernels reproduce \
             MLX's sm_80 code paths and need {}.{} or newer)",
            MIN_CUDA_CAPABILITY.0, MIN_CUDA_CAPABILITY.1
        )
    })
}

/// Whether the GPU kernels take `w` (an expert stack or plain linear weight).
pub fn weight_support(w: &Weight) -> Support {
    let q = match w {
        Weight::Float(_) => {
            return Support::No("float weights (the GPU kernels take affine 4/8-bit)".into())
        }
        Weight::Quantized(q) => q,
    };
    if q.spec.mode != QuantMode::Affine {
        return Support::No(format!(
            "{} quantization (the GPU kernels take affine)",
            q.spec.mode.as_str()
        ));
    }
    if !matches!(q.spec.bits, 4 | 8) {
        return Support::No(format!(
            "{}-bit weights (the GPU kernels take 4 and 8)",
            q.spec.bits
        ));
    }
    if !matches!(q.spec.group_size, 32 | 64 | 128) {
        return Support::No(format!(
            "group size {} (the GPU kernels take 32, 64 and 128)",
            q.spec.group_size
        ));
    }
    let Some(b) = &q.biases else {
        return Support::No("affine weight without biases".into());
    };
    let dt = q.scales.dtype();
    if !matches!(dt, Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16) || b.dtype() != dt {
        return Support::No(format!(
            "scales {:?} / biases {:?} (the GPU kernels take one of f32, f16, bf16)",
            dt,
            b.dtype()
        ));
    }
    Support::Yes
}

type Slot = OnceLock<std::result::Result<KernelFamily, String>>;

/// One kernel family per op and backend (family.rs: on CUDA one MLX kernel object
/// per set of template arguments, built on first use).
fn kernel(
    slot: &'static Slot,
    backend: KernelBackend,
    name: &'static str,
    inputs: &'static [&'static str],
    outputs: &'static [&'static str],
    body: &'static str,
) -> Result<&'static KernelFamily> {
    kernel_with_header(
        slot,
        backend,
        name,
        inputs,
        outputs,
        body,
        sources(backend).prelude,
    )
}

/// [`kernel`] with its own header (on CUDA passed as an `#include` of a file where
/// one can be written, see `header_file.rs`; otherwise MLX copies the header into
/// every call's source, so kernels that need less of the prelude get less).
fn kernel_with_header(
    slot: &'static Slot,
    backend: KernelBackend,
    name: &'static str,
    inputs: &'static [&'static str],
    outputs: &'static [&'static str],
    body: &'static str,
    header: &'static str,
) -> Result<&'static KernelFamily> {
    slot.get_or_init(|| {
        let (body, header) = if minify_sources() {
            (minify(body), minify(header))
        } else {
            (body.to_string(), header.to_string())
        };
        // CUDA: the header as an included file, so that MLX does not copy and hash
        // it on every call (header_file.rs).
        let header = match backend {
            KernelBackend::Cuda => header_file::cuda_included(&header),
            KernelBackend::Metal => header,
        };
        KernelFamily::new(FamilySource {
            backend,
            name,
            inputs,
            outputs,
            body,
            header,
        })
        .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::invalid(name, e.clone()))
}

/// Whether kernel sources go to MLX without comments, blank lines and indentation
/// (the default; `ZMLX_GPU_MINIFY=0` passes them as written, for A/B timing).
fn minify_sources() -> bool {
    current_cuda_variants().minify
}

/// `src` without `//` comments, blank lines and each line's surrounding whitespace;
/// line breaks stay (preprocessor lines need them), string literals stay as they
/// are. MLX's custom-kernel call copies the source it is given into a new string and
/// hashes it on every call (`fast::cuda_kernel`, `CustomKernel::eval_gpu`), so its
/// size is host time on every decode step (on CUDA the header usually goes by
/// `#include` instead, see header_file.rs); the code itself is unchanged.
fn minify(src: &str) -> String {
    let mut out = String::with_capacity(src.len() / 2);
    for line in src.lines() {
        let code = strip_line_comment(line).trim();
        if !code.is_empty() {
            out.push_str(code);
            out.push('\n');
        }
    }
    out
}

/// `line` up to a `//` that is not inside a string or character literal.
fn strip_line_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        match (quote, b[i]) {
            (Some(_), b'\\') => i += 1,
            (Some(q), c) if c == q => quote = None,
            (None, c @ (b'"' | b'\'')) => quote = Some(c),
            (None, b'/') if b.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        i += 1;
    }
    line
}

fn slot_index(b: KernelBackend) -> usize {
    match b {
        KernelBackend::Cuda => 0,
        KernelBackend::Metal => 1,
    }
}

/// Lanes that share one weight row: enough to give each lane about three 128-bit
/// words of the row, a power of two up to a whole warp (SIMD group).
fn lanes_per_row(words: i32) -> i32 {
    let want = (words + 2) / 3;
    let mut l = 1;
    while l < want && l < 32 {
        l *= 2;
    }
    l
}

/// The last template argument of the expert kernels: `DEQ` on CUDA, the lanes per
/// row on Metal.
fn layout_arg(backend: KernelBackend, lpr: i32) -> (&'static str, TemplateArg) {
    match backend {
        KernelBackend::Cuda => ("DEQ", TemplateArg::Int(cuda_deq_variant())),
        KernelBackend::Metal => ("LPR", TemplateArg::Int(lpr)),
    }
}

/// Refuses, on CUDA, calls outside what the kernels reproduce exactly (see the
/// module docs); the fused ops check the same before calling.
fn check_cuda_shape(op: &'static str, w: &Weight, pairs: i32) -> Result<()> {
    if let Support::No(why) = cuda_shape_support(w) {
        return Err(Error::invalid(op, why));
    }
    if (pairs as usize) < MIN_EXACT_PAIRS {
        return Err(Error::invalid(
            op,
            format!(
                "{pairs} (token, expert) pairs (the CUDA kernels take {MIN_EXACT_PAIRS} or more)"
            ),
        ));
    }
    Ok(())
}

/// `blocks` blocks of `threads` threads, as MLX's launch arguments (the grid counts
/// threads).
fn block_dims(blocks: i64, threads: i32) -> Result<([i32; 3], [i32; 3])> {
    let total = i32::try_from(blocks.max(1) * i64::from(threads))
        .map_err(|_| Error::invalid("gpu", "launch larger than 2^31 threads"))?;
    Ok(([total, 1, 1], [threads, 1, 1]))
}

/// Threads for `warps` warps, and a threadgroup of up to 256 threads.
fn launch_dims(warps: i64) -> Result<([i32; 3], [i32; 3])> {
    let threads = i32::try_from(warps.max(1) * 32)
        .map_err(|_| Error::invalid("gpu", "launch larger than 2^31 threads"))?;
    Ok(([threads, 1, 1], [threads.min(256), 1, 1]))
}

/// The sizes that change between calls, as a small uint32 input (compile-time
/// constants would compile one variant per batch size). Each distinct tuple is
/// made and evaluated once and kept: a fresh host array per call costs an upload
/// (and on unified memory a page migration) every decode step.
fn dims_array(v: &[i32]) -> Result<Array> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<u32>, Array>>> = OnceLock::new();
    let v: Vec<u32> = v.iter().map(|&d| d as u32).collect();
    let mut cache = CACHE
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(a) = cache.get(&v) {
        return Ok(a.clone());
    }
    let a = Array::from_slice(&v, &[v.len() as i32])?;
    a.eval()?;
    cache.insert(v, a.clone());
    Ok(a)
}

fn quantized<'a>(op: &'static str, w: &'a Weight) -> Result<&'a QuantizedWeight> {
    match (w, weight_support(w)) {
        (Weight::Quantized(q), Support::Yes) => Ok(q),
        (_, Support::No(why)) => Err(Error::invalid(op, why)),
        (Weight::Float(_), Support::Yes) => Err(Error::invalid(op, "float weight")),
    }
}

fn biases<'a>(op: &'static str, q: &'a QuantizedWeight) -> Result<&'a Array> {
    q.biases
        .as_ref()
        .ok_or_else(|| Error::invalid(op, "affine weight without biases"))
}

/// `h = silu(x @ gate[e].T) * (x @ up[e].T)` for every (token, expert) pair:
/// `x` is `[..., hidden]`, `indices` `[..., k]` uint32; returns `[..., k, 1, inter]`
/// (the layout the reference hands to the down projection).
///
/// # Errors
/// On weights the kernels do not take ([`weight_support`]; on CUDA also
/// [`cuda_shape_support`] and fewer than [`MIN_EXACT_PAIRS`] pairs), a dtype
/// mismatch, or when MLX fails to build or queue the kernel.
pub fn expert_swiglu(
    backend: KernelBackend,
    x: &Array,
    indices: &Array,
    gate: &Weight,
    up: &Weight,
    s: StreamOrDevice,
) -> Result<Array> {
    let out = swiglu_call(backend, x, PairExperts::Ids(indices), gate, up, s)?;
    one(out)
}

/// [`route`] and [`expert_swiglu`] in one kernel (CUDA): each warp routes its
/// pair's token with the router kernel's code, so the router costs no launch of its
/// own. `logits` is `[..., experts]` (the activation dtype), `spec` a
/// [`RouterSpec::SoftmaxTopK`]; returns `h` as [`expert_swiglu`] does and the
/// routing as [`route`] does (indices uint32 and scores, `[..., k]`), bit for bit
/// the same arrays.
///
/// # Errors
/// As [`expert_swiglu`] and [`route`]; also on Metal (no such kernel there), on
/// another routing rule, and on logits whose dtype is not the activations'.
pub fn routed_expert_swiglu(
    backend: KernelBackend,
    x: &Array,
    logits: &Array,
    spec: &RouterSpec,
    gate: &Weight,
    up: &Weight,
    s: StreamOrDevice,
) -> Result<(Array, Array, Array)> {
    let (k, normalize) = softmax_top_k(spec, "routed")?;
    let out = swiglu_call(
        backend,
        x,
        PairExperts::Route {
            logits,
            k,
            normalize,
        },
        gate,
        up,
        s,
    )?;
    three(out)
}

/// `k` and `normalize` of a softmax top-k `spec`, the only routing the `which`
/// SwiGLU kernel does; an error for any other.
fn softmax_top_k(spec: &RouterSpec, which: &str) -> Result<(i32, bool)> {
    match *spec {
        RouterSpec::SoftmaxTopK { k, normalize } => Ok((k, normalize)),
        _ => Err(Error::invalid(
            "expert_swiglu",
            format!("the {which} SwiGLU kernel does softmax top-k routing only"),
        )),
    }
}

/// The three outputs of a routing SwiGLU kernel: `h`, ids, scores.
fn three(out: Vec<Array>) -> Result<(Array, Array, Array)> {
    let mut it = out.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(h), Some(ids), Some(scores)) => Ok((h, ids, scores)),
        _ => Err(Error::invalid(
            "expert_swiglu",
            "the kernel returned fewer than three outputs",
        )),
    }
}

/// [`routed_expert_swiglu`] that also computes the router logits: `router.weight`
/// is the router's 8-bit weight (`[experts, hidden]`), `x` one token. The kernel's
/// first blocks compute the logits as MLX's `quantized_matmul` does (its `qmv`
/// kernel, bit for bit) into `router.scratch` and signal the others through it;
/// every block then routes as [`route`] does. Returns `h` and the routing as
/// [`routed_expert_swiglu`] does. Calls that share a scratch must run one after
/// another (see [`RouterScratch`]).
///
/// # Errors
/// As [`routed_expert_swiglu`]; also where [`router_weight_support`] says no.
pub fn router_expert_swiglu(
    backend: KernelBackend,
    x: &Array,
    router: &RouterMatmul<'_>,
    spec: &RouterSpec,
    gate: &Weight,
    up: &Weight,
    s: StreamOrDevice,
) -> Result<(Array, Array, Array)> {
    let (k, normalize) = softmax_top_k(spec, "router-computing")?;
    let scratch = router.scratch;
    let Weight::Quantized(router) = router.weight else {
        return Err(Error::invalid(
            "expert_swiglu",
            "a float router weight (the fused router takes 8-bit affine)",
        ));
    };
    let out = swiglu_call(
        backend,
        x,
        PairExperts::Router {
            router,
            scratch,
            k,
            normalize,
        },
        gate,
        up,
        s,
    )?;
    three(out)
}

/// The SwiGLU kernels' inputs: the activations, where each pair's expert comes from
/// (`second`), the sizes, then the gate and up weights, scales and biases.
const fn swiglu_inputs(second: &'static str) -> [&'static str; 9] {
    [
        "x_in", second, "dims_in", "w_gate", "s_gate", "b_gate", "w_up", "s_up", "b_up",
    ]
}

/// Inputs of the SwiGLU kernel that takes the router's indices.
static SWIGLU_INPUTS: [&str; 9] = swiglu_inputs("expert_ids");

/// Inputs of the SwiGLU kernel that routes from the logits itself.
static ROUTED_SWIGLU_INPUTS: [&str; 9] = swiglu_inputs("logits_in");

/// Outputs of the SwiGLU kernels that route: `h`, the expert ids, the scores.
static ROUTING_SWIGLU_OUTPUTS: [&str; 3] = ["h_out", "ids_out", "scores_out"];

/// `a`'s shape with its last axis (checked to exist) set to `n`: the routing's shape
/// `[..., k]` from logits or activations of one token set.
fn with_last(a: &Array, n: i32) -> Vec<i32> {
    let mut shape = a.shape().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = n;
    }
    shape
}

/// Inputs of the SwiGLU kernel that computes the router logits too: the router's
/// codes take the second slot, its scales and biases and the scratch come last.
static ROUTER_SWIGLU_INPUTS: [&str; 12] = [
    "x_in", "w_router", "dims_in", "w_gate", "s_gate", "b_gate", "w_up", "s_up", "b_up",
    "s_router", "b_router", "rscr_in",
];

/// Where the SwiGLU kernel takes each pair's expert from.
enum PairExperts<'a> {
    /// The router's indices, `[..., k]` uint32.
    Ids(&'a Array),
    /// Router logits `[..., experts]`: the kernel routes (softmax top-k).
    Route {
        logits: &'a Array,
        k: i32,
        normalize: bool,
    },
    /// The router's 8-bit weight: the kernel computes one token's logits (MLX's
    /// `qmv` bits) and routes (softmax top-k).
    Router {
        router: &'a QuantizedWeight,
        scratch: &'a RouterScratch,
        k: i32,
        normalize: bool,
    },
}

/// The shared memory of a SwiGLU block with `tpb` tiles of `rows` rows: two rings
/// (gate, up) and the up tile per tile, plus `extra` bytes.
fn swiglu_rings(g: &QuantizedWeight, hidden: i32, rows: i32, tpb: i32, extra: i64) -> Rings {
    Rings {
        bits: g.spec.bits,
        group: g.spec.group_size,
        kin: hidden,
        rows,
        warps: 2 * tpb,
        other: 2 * i64::from(rows) * i64::from(tpb) + extra,
    }
}

/// The SwiGLU kernel's tile rows and tiles a block for these weights: the tiles a
/// block the variants ask for, or fewer where two ring stages of narrow tiles do not
/// fit that many warps (large K in small groups; one tile, two warps, always fits
/// where [`weight_support`] says yes).
fn swiglu_tiles(g: &QuantizedWeight, hidden: i32, extra: i64) -> (i32, i32) {
    let want = cuda_swiglu_tiles_per_block();
    let tpb = [4, 2, 1]
        .into_iter()
        .filter(|&t| t <= want)
        .find(|&t| swiglu_rings(g, hidden, 8, t, extra).fit(2, PIPE_CHUNKS))
        .unwrap_or(1);
    let rows = cuda_tile_rows(|r| swiglu_rings(g, hidden, r, tpb, extra).fit(2, PIPE_CHUNKS));
    (rows, tpb)
}

/// The SwiGLU launch shared by [`expert_swiglu`] and [`routed_expert_swiglu`]:
/// returns `[h]` or `[h, ids, scores]`.
fn swiglu_call(
    backend: KernelBackend,
    x: &Array,
    experts_of: PairExperts<'_>,
    gate: &Weight,
    up: &Weight,
    s: StreamOrDevice,
) -> Result<Vec<Array>> {
    static SLOTS: [Slot; 2] = [OnceLock::new(), OnceLock::new()];
    static ROUTED: Slot = OnceLock::new();
    static ROUTER: Slot = OnceLock::new();
    const OP: &str = "expert_swiglu";
    let (g, u) = (quantized(OP, gate)?, quantized(OP, up)?);
    if g.spec != u.spec || g.scales.dtype() != u.scales.dtype() {
        return Err(Error::invalid(
            OP,
            "gate and up projections differ in layout",
        ));
    }
    let dtype = x.dtype();
    if g.scales.dtype() != dtype {
        return Err(Error::invalid(OP, "activations and scales differ in dtype"));
    }
    let hidden = gate.in_features();
    let inter = gate.out_features();
    let experts = gate.experts();
    // The routing's shape, [..., k], and the kernel's per-variant arguments.
    let (route_shape, kern, first, extra_dims, route_targs) = match experts_of {
        PairExperts::Ids(indices) => {
            let kern = kernel(
                &SLOTS[slot_index(backend)],
                backend,
                "zmlx_expert_swiglu",
                &SWIGLU_INPUTS,
                &["h_out"],
                sources(backend).swiglu,
            )?;
            (indices.shape().to_vec(), kern, indices, vec![], vec![])
        }
        PairExperts::Route {
            logits,
            k,
            normalize,
        } => {
            let Some((header, body)) = sources(backend).routed_swiglu else {
                return Err(Error::invalid(
                    OP,
                    "no routed SwiGLU kernel on this backend",
                ));
            };
            if logits.ndim() == 0 || x.ndim() == 0 {
                return Err(Error::invalid(
                    OP,
                    "router logits and activations need a feature axis",
                ));
            }
            let router_experts = logits.shape().last().copied().unwrap_or(0);
            if router_experts != experts {
                return Err(Error::invalid(
                    OP,
                    format!("{router_experts} router logits a token for {experts} experts"),
                ));
            }
            if logits.dtype() != dtype
                || logits.shape()[..logits.ndim() - 1] != x.shape()[..x.ndim() - 1]
            {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "router logits {:?} {:?} do not match the activations {:?} {:?}",
                        logits.dtype(),
                        logits.shape(),
                        dtype,
                        x.shape()
                    ),
                ));
            }
            check_router_k(OP, experts, k)?;
            let kern = kernel_with_header(
                &ROUTED,
                backend,
                "zmlx_routed_swiglu",
                &ROUTED_SWIGLU_INPUTS,
                &ROUTING_SWIGLU_OUTPUTS,
                body,
                header,
            )?;
            let shape = with_last(logits, k);
            // The router's VARIANT and score chunk, as `route` passes them.
            let chunk = router_score_chunk(logits.ndim(), logits.dtype());
            let targs = route_targs(k, experts, normalize);
            (shape, kern, logits, vec![router_variant(), chunk], targs)
        }
        PairExperts::Router {
            router,
            scratch,
            k,
            normalize,
        } => {
            let Some((header, body)) = sources(backend).router_swiglu else {
                return Err(Error::invalid(
                    OP,
                    "no router-computing SwiGLU kernel on this backend",
                ));
            };
            check_router_weight(OP, router, x, hidden, experts)?;
            check_router_k(OP, experts, k)?;
            if scratch.array().size() < 2 + experts as usize {
                return Err(Error::invalid(
                    OP,
                    format!("a router scratch too small for {experts} experts"),
                ));
            }
            let kern = kernel_with_header(
                &ROUTER,
                backend,
                "zmlx_router_swiglu",
                &ROUTER_SWIGLU_INPUTS,
                &ROUTING_SWIGLU_OUTPUTS,
                body,
                header,
            )?;
            let shape = with_last(x, k);
            // The score chunk `route` would pass for logits shaped like `x`.
            let chunk = router_score_chunk(x.ndim(), dtype);
            let variants = current_cuda_variants();
            let mut targs = route_targs(k, experts, normalize);
            targs.extend([
                ("RGROUP", TemplateArg::Int(router.spec.group_size)),
                ("QDEQ", TemplateArg::Int(variants.router_deq)),
                ("RROWS", TemplateArg::Int(variants.router_rows)),
                ("RWAIT", TemplateArg::Int(variants.router_wait_us)),
            ]);
            (
                shape,
                kern,
                &router.weight,
                vec![router_variant(), chunk],
                targs,
            )
        }
    };
    let k = *route_shape.last().unwrap_or(&1);
    let pairs = route_shape.iter().product::<i32>();
    let bits = g.spec.bits;
    // CUDA: two warps per (pair, `rows` rows), `tpb` such tiles a block; Metal: `lpr`
    // lanes per row.
    let lpr = lanes_per_row(hidden * bits / 128);
    // The router-computing kernel keeps the token's logits in shared memory too.
    let logits_smem = match experts_of {
        PairExperts::Router { .. } => i64::from(experts) * dtype.size() as i64,
        _ => 0,
    };
    let (rows, tpb) = swiglu_tiles(g, hidden, logits_smem);
    let rings = |rows: i32| swiglu_rings(g, hidden, rows, tpb, logits_smem);
    let (grid, tg) = match backend {
        KernelBackend::Cuda => {
            check_cuda_shape(OP, gate, pairs)?;
            // Two warps (gate, up) per (pair, `rows` rows), `tpb` such tiles a block.
            let tiles = i64::from(pairs) * i64::from(inter / rows);
            block_dims((tiles + i64::from(tpb) - 1) / i64::from(tpb), 64 * tpb)?
        }
        KernelBackend::Metal => {
            let rows = i64::from(pairs) * i64::from(inter);
            launch_dims((rows + i64::from(32 / lpr) - 1) / i64::from(32 / lpr))?
        }
    };
    let mut targs = vec![
        ("T", TemplateArg::Dtype(dtype)),
        ("BITS", TemplateArg::Int(bits)),
        ("GROUP", TemplateArg::Int(g.spec.group_size)),
        ("HID", TemplateArg::Int(hidden)),
        ("INTER", TemplateArg::Int(inter)),
        layout_arg(backend, lpr),
    ];
    if backend == KernelBackend::Cuda {
        let cps = cuda_swiglu_stage_chunks(|c| rings(rows).fit(2, c));
        let pipe = rings(rows).stages(cps);
        targs.push(("PIPE", TemplateArg::Int(pipe)));
        targs.push(("TPB", TemplateArg::Int(tpb)));
        targs.push(("ROWS", TemplateArg::Int(rows)));
        targs.push(("CPS", TemplateArg::Int(cps)));
    }
    targs.extend(route_targs);
    // The kernel indexes flat buffers, so no reshapes (each is a graph node).
    let mut shape = route_shape.clone();
    shape.extend_from_slice(&[1, inter]);
    let (gb, ub) = (biases(OP, g)?, biases(OP, u)?);
    let mut dims = vec![pairs, k, experts];
    dims.extend(extra_dims);
    let dims = dims_array(&dims)?;
    let mut inputs = vec![
        x, first, &dims, &g.weight, &g.scales, gb, &u.weight, &u.scales, ub,
    ];
    if let PairExperts::Router {
        router, scratch, ..
    } = &experts_of
    {
        inputs.push(&router.scales);
        inputs.push(biases(OP, router)?);
        inputs.push(scratch.array());
    }
    let outputs: Vec<(&[i32], Dtype)> = if matches!(experts_of, PairExperts::Ids(_)) {
        vec![(&shape, dtype)]
    } else {
        vec![
            (&shape, dtype),
            (&route_shape, Dtype::Uint32),
            (&route_shape, dtype),
        ]
    };
    kern.call(&KernelLaunch::new(&inputs, &outputs, grid, tg, &targs), s)
}

/// The down + combine kernel's inputs.
static DOWN_INPUTS: [&str; 8] = [
    "h_in",
    "expert_ids",
    "dims_in",
    "gate_scores",
    "w_down",
    "s_down",
    "b_down",
    "res_in",
];

/// The normalising variant's inputs: the same, then the norm's weight and counter.
static DOWN_NORM_INPUTS: [&str; 10] = {
    let mut names = ["wn_in"; 10];
    let mut i = 0;
    while i < DOWN_INPUTS.len() {
        names[i] = DOWN_INPUTS[i];
        i += 1;
    }
    names[9] = "cnt_in";
    names
};

/// `y[t] = sum_j scores[t, j] * (h[t, j] @ down[e(t, j)].T)`: `h` is
/// `[..., k, (1,) inter]` in routing order, `indices` and `scores` `[..., k]`; returns
/// `[..., hidden]` in the activation dtype. With `residual` (`[..., hidden]`, the
/// activation dtype) returns `residual + y`, added in the kernel's final write (CUDA:
/// MLX's `Add` functor on T, what MLX's own `add` computes; Metal: f32 sum rounded
/// once to T).
///
/// The kernel takes the residual as its input `res_in` and a template argument `RES`
/// (1 with a residual, 0 without; a separate compiled variant each). Without a
/// residual `h` is passed as `res_in` (an input of dtype T already in the graph, so
/// the signature and its types stay the same), and the kernel never reads it.
///
/// # Errors
/// As [`expert_swiglu`]; also on a residual whose size or dtype differs from the
/// output's.
pub fn down_combine(
    backend: KernelBackend,
    h: &Array,
    indices: &Array,
    scores: &Array,
    down: &Weight,
    residual: Option<&Array>,
    s: StreamOrDevice,
) -> Result<Array> {
    one(down_combine_call(
        backend, h, indices, scores, down, residual, None, s,
    )?)
}

/// [`down_combine`] that also returns the RMS norm of its output, `rms_norm(y,
/// norm.weight, norm.eps)` (CUDA only; bit for bit MLX's CUDA `fast::rms_norm` of
/// `y`): the last of the blocks that write a token's row normalises it (shaders/
/// cuda/down_combine_norm.cu), counting finished blocks in `norm.counter`.
///
/// # Errors
/// As [`down_combine`]; also on Metal, a norm weight that is not `[hidden]` of the
/// activation dtype, rows longer than MLX's one-kernel RMS norm takes, too few warps
/// a block for MLX's norm launch (fewer than 4 experts a token at hidden sizes over
/// 512 bf16 values), or more tokens than the counter has slots.
#[allow(clippy::too_many_arguments)]
pub fn down_combine_normed(
    backend: KernelBackend,
    h: &Array,
    indices: &Array,
    scores: &Array,
    down: &Weight,
    residual: Option<&Array>,
    norm: &NextNorm<'_>,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    two(down_combine_call(
        backend,
        h,
        indices,
        scores,
        down,
        residual,
        Some(norm),
        s,
    )?)
}

#[allow(clippy::too_many_arguments)]
fn down_combine_call(
    backend: KernelBackend,
    h: &Array,
    indices: &Array,
    scores: &Array,
    down: &Weight,
    residual: Option<&Array>,
    norm: Option<&NextNorm<'_>>,
    s: StreamOrDevice,
) -> Result<Vec<Array>> {
    static SLOTS: [Slot; 2] = [OnceLock::new(), OnceLock::new()];
    static NORM_SLOT: Slot = OnceLock::new();
    const OP: &str = "down_combine";
    let d = quantized(OP, down)?;
    let dtype = h.dtype();
    if d.scales.dtype() != dtype || scores.dtype() != dtype {
        return Err(Error::invalid(
            OP,
            "activations, scores and scales differ in dtype",
        ));
    }
    let hidden = down.out_features();
    let inter = down.in_features();
    let experts = down.experts();
    let k = *indices.shape().last().unwrap_or(&1);
    let pairs = indices.size() as i32;
    let ntok = pairs / k.max(1);
    let bits = d.spec.bits;
    let kern = match norm {
        None => kernel(
            &SLOTS[slot_index(backend)],
            backend,
            "zmlx_down_combine",
            &DOWN_INPUTS,
            &["y_out"],
            sources(backend).down,
        )?,
        Some(_) => {
            let (header, body) = sources(backend).down_norm.ok_or_else(|| {
                Error::invalid(
                    OP,
                    "no Metal body for the normalising variant; use MLX's norm",
                )
            })?;
            kernel_with_header(
                &NORM_SLOT,
                backend,
                "zmlx_down_combine_norm",
                &DOWN_NORM_INPUTS,
                &["y_out", "n_out"],
                body,
                header,
            )?
        }
    };
    // CUDA: a block of up to 8 warps per (token, `rows` outputs); Metal: a warp per
    // (token, output).
    let lpr = lanes_per_row(inter * bits / 128);
    let group = d.spec.group_size;
    // A ring for each warp a block may have, and the products' tile.
    let rings = |rows: i32| Rings {
        bits,
        group,
        kin: inter,
        rows,
        warps: COMBINE_MAX_WARPS,
        other: combine_smem(rows),
    };
    let rows = cuda_tile_rows(|r| rings(r).fit(2, PIPE_CHUNKS));
    let (grid, tg) = match backend {
        KernelBackend::Cuda => {
            check_cuda_shape(OP, down, pairs)?;
            if !(1..=MAX_CUDA_COMBINE_K).contains(&k) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "top-{k} (the CUDA kernel takes 1 to {MAX_CUDA_COMBINE_K} experts per token)"
                    ),
                ));
            }
            // A block per (token, `rows` outputs).
            block_dims(
                i64::from(ntok) * i64::from(hidden / rows),
                down_combine_block_threads(k),
            )?
        }
        KernelBackend::Metal => launch_dims(i64::from(ntok) * i64::from(hidden))?,
    };
    let mut targs = vec![
        ("T", TemplateArg::Dtype(dtype)),
        ("BITS", TemplateArg::Int(bits)),
        ("GROUP", TemplateArg::Int(d.spec.group_size)),
        ("HID", TemplateArg::Int(hidden)),
        ("INTER", TemplateArg::Int(inter)),
        layout_arg(backend, lpr),
        ("RES", TemplateArg::Int(i32::from(residual.is_some()))),
    ];
    if backend == KernelBackend::Cuda {
        targs.push(("SUMV", TemplateArg::Int(cuda_sum_variant())));
        let pipe = rings(rows).stages(PIPE_CHUNKS);
        targs.push(("PIPE", TemplateArg::Int(pipe)));
        targs.push(("ROWS", TemplateArg::Int(rows)));
        targs.push(("CPS", TemplateArg::Int(PIPE_CHUNKS)));
    }
    if indices.ndim() == 0 {
        return Err(Error::invalid(OP, "routing indices need an expert axis"));
    }
    let mut shape = indices.shape()[..indices.ndim() - 1].to_vec();
    shape.push(hidden);
    if let Some(r) = residual {
        let want: i64 = shape.iter().map(|&d| i64::from(d)).product();
        if r.dtype() != dtype || r.size() as i64 != want {
            return Err(Error::invalid(
                OP,
                format!(
                    "residual {:?} {:?}, the output is {dtype:?} {shape:?}: pass a residual \
                     of the output's size and the activation dtype",
                    r.dtype(),
                    r.shape()
                ),
            ));
        }
    }
    let dims = dims_array(&[ntok, k, experts])?;
    let mut inputs = vec![
        h,
        indices,
        &dims,
        scores,
        &d.weight,
        &d.scales,
        biases(OP, d)?,
        residual.unwrap_or(h),
    ];
    let mut outputs = vec![(shape.as_slice(), dtype)];
    if let Some(n) = norm {
        check_next_norm(n, dtype, hidden, ntok, tg[0])?;
        inputs.extend([n.weight, n.counter.array()]);
        outputs.push((shape.as_slice(), dtype));
        targs.push(("EPS", norm::bits(n.eps)));
        targs.push(("FMAV", TemplateArg::Int(norm::norm_fma_variant())));
    }
    kern.call(&KernelLaunch::new(&inputs, &outputs, grid, tg, &targs), s)
}

/// The normalising down kernel's limits (see [`down_combine_normed`]).
fn check_next_norm(
    n: &NextNorm<'_>,
    dtype: Dtype,
    hidden: i32,
    ntok: i32,
    block_threads: i32,
) -> Result<()> {
    const OP: &str = "down_combine_normed";
    if n.weight.shape() != [hidden] || n.weight.dtype() != dtype {
        return Err(Error::invalid(
            OP,
            format!(
                "norm weight {:?} {:?}: pass [{hidden}] of the activation dtype",
                n.weight.dtype(),
                n.weight.shape()
            ),
        ));
    }
    let nr = norm::values_per_vector(OP, dtype)?;
    if hidden > 1024 * nr {
        return Err(Error::invalid(
            OP,
            format!(
                "rows of {hidden} values (MLX's one-kernel RMS norm takes up to {})",
                1024 * nr
            ),
        ));
    }
    let need = norm::rms_block(hidden, nr);
    if block_threads < need {
        return Err(Error::invalid(
            OP,
            format!(
                "blocks of {block_threads} threads, MLX's norm of {hidden} values launches \
                 {need}: route more experts a token or norm separately"
            ),
        ));
    }
    if ntok as usize > n.counter.slots() {
        return Err(Error::invalid(
            OP,
            format!("{ntok} tokens, the counter has {} slots", n.counter.slots()),
        ));
    }
    Ok(())
}

/// Whether [`router_expert_swiglu`] takes this router weight for the activations
/// `x` (`[..., hidden]`) and `experts` experts, apart from the expert weights: one
/// token, an affine 8-bit `[experts, hidden]` router with biases, groups of 32, 64
/// or 128, `hidden` a multiple of 256, scales in the activation dtype (f16 or bf16).
pub fn router_weight_support(router: &Weight, x: &Array, experts: i32) -> Support {
    let Weight::Quantized(q) = router else {
        return Support::No("a float router weight (the fused router takes 8-bit affine)".into());
    };
    let hidden = x.shape().last().copied().unwrap_or(0);
    match check_router_weight("router_swiglu", q, x, hidden, experts) {
        Ok(()) => Support::Yes,
        Err(e) => Support::No(e.to_string()),
    }
}

/// The router weights and activations [`router_expert_swiglu`] takes (see
/// [`router_weight_support`]).
fn check_router_weight(
    op: &'static str,
    router: &QuantizedWeight,
    x: &Array,
    hidden: i32,
    experts: i32,
) -> Result<()> {
    let why = if router.spec.mode != QuantMode::Affine || router.biases.is_none() {
        Some("a router that is not affine-quantized with biases".to_string())
    } else if router.spec.bits != 8 {
        Some(format!(
            "a {}-bit router (the fused router takes 8)",
            router.spec.bits
        ))
    } else if !matches!(router.spec.group_size, 32 | 64 | 128) {
        Some(format!("router groups of {}", router.spec.group_size))
    } else if !matches!(x.dtype(), Dtype::Bfloat16 | Dtype::Float16)
        || router.scales.dtype() != x.dtype()
    {
        Some(format!(
            "router scales {:?} for activations {:?} (both f16 or both bf16)",
            router.scales.dtype(),
            x.dtype()
        ))
    } else if x.ndim() == 0 || x.shape().last() != Some(&hidden) || x.size() != hidden as usize {
        Some(format!(
            "activations {:?} (the fused router takes one token of {hidden} features)",
            x.shape()
        ))
    } else if hidden % 256 != 0 {
        Some(format!(
            "{hidden} features (the fused router takes multiples of 256)"
        ))
    } else if router.weight.shape() != [experts, hidden / 4]
        || router.scales.shape() != [experts, hidden / router.spec.group_size]
    {
        Some(format!(
            "a router weight {:?} for {experts} experts of {hidden} features",
            router.weight.shape()
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::invalid(op, why)),
        None => Ok(()),
    }
}

/// The router kernel's limits: up to [`MAX_ROUTER_EXPERTS`] experts, top-`k` for
/// `k` from 1 to [`MAX_ROUTER_K`] (and at most the expert count).
fn check_router_k(op: &'static str, experts: i32, k: i32) -> Result<()> {
    if experts > MAX_ROUTER_EXPERTS || !(1..=MAX_ROUTER_K.min(experts)).contains(&k) {
        return Err(Error::invalid(
            op,
            format!("{experts} experts, top-{k} (the router kernel takes up to 512 and 16)"),
        ));
    }
    Ok(())
}

/// The chunk of scores one thread of MLX's sum folds when it renormalises the
/// router's scores, for logits of `ndim` axes in `dtype`: 16 bytes a thread in its
/// row reduce (`[..., k]` scores), 8 values in its all-reduce (1-D scores of one
/// token).
fn router_score_chunk(ndim: usize, dtype: Dtype) -> i32 {
    if ndim == 1 {
        8
    } else {
        16 / dtype.size() as i32
    }
}

/// The routing kernels' template arguments: top-`k` of `experts`, renormalised or
/// not.
fn route_targs(k: i32, experts: i32, normalize: bool) -> Vec<(&'static str, TemplateArg)> {
    vec![
        ("RK", TemplateArg::Int(k)),
        ("REXP", TemplateArg::Int(experts)),
        ("NORM", TemplateArg::Bool(normalize)),
    ]
}

/// How the CUDA router reproduces one step of MLX's softmax that MLX leaves to the
/// compiler (`VARIANT` in shaders/cuda/moe_gate.cu): 0 = rounded product then
/// addition (the default: bit-identical to MLX 0.32.4 on an H100 for f32, bf16 and
/// f16, notes/cuda-kernels.md device run 2), 1 = the per-warp product contracted
/// into the first butterfly addition (an fma: 15-17 f32 score elements differed).
/// It changes results only above 16 * (16 / itemsize) experts (more than 128 for
/// bf16/f16, 64 for f32). `ZMLX_ROUTER_VARIANT=1` selects the latter;
/// tests/cuda_vs_reference.rs tries both.
fn router_variant() -> i32 {
    current_cuda_variants().router
}

/// Softmax (precise) over the experts, top-`k`, optional renormalisation: `logits`
/// is `[..., experts]`; returns indices (uint32) and scores, `[..., k]`. On CUDA
/// both are bit for bit what MLX's CUDA backend gives for mlx-lm's
/// `softmax(precise) -> argpartition(-k)[..., -k:] -> take_along_axis -> / sum`,
/// in its order: ascending gate, ties in ascending expert index (MLX's
/// argpartition is a stable sort there). On Metal (not yet run) experts come in
/// descending gate order.
///
/// # Errors
/// On more than [`MAX_ROUTER_EXPERTS`] experts or [`MAX_ROUTER_K`] per token, a
/// non-float dtype, or when MLX fails.
pub fn route(
    backend: KernelBackend,
    logits: &Array,
    k: i32,
    normalize: bool,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    route_variant(backend, logits, k, normalize, router_variant(), s)
}

/// [`route`] with the CUDA kernel's `VARIANT` given (0 or 1, see `router_variant`
/// in this module's source and shaders/cuda/moe_gate.cu); for tests that find which
/// one MLX's build matches. Metal ignores it.
///
/// # Errors
/// As [`route`]; also on a variant other than 0 or 1.
pub fn route_variant(
    backend: KernelBackend,
    logits: &Array,
    k: i32,
    normalize: bool,
    variant: i32,
    s: StreamOrDevice,
) -> Result<(Array, Array)> {
    static SLOTS: [Slot; 2] = [OnceLock::new(), OnceLock::new()];
    const OP: &str = "moe_gate";
    let experts = logits.shape().last().copied().unwrap_or(0);
    let dtype = logits.dtype();
    check_router_k(OP, experts, k)?;
    if !matches!(dtype, Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16) {
        return Err(Error::invalid(OP, format!("logits of dtype {dtype:?}")));
    }
    if !(0..=1).contains(&variant) {
        return Err(Error::invalid(OP, format!("router variant {variant}")));
    }
    let ntok = (logits.size() / experts as usize) as i32;
    let chunk = router_score_chunk(logits.ndim(), dtype);
    let kern = kernel_with_header(
        &SLOTS[slot_index(backend)],
        backend,
        "zmlx_moe_gate",
        &["logits_in", "dims_in"],
        &["ids_out", "scores_out"],
        sources(backend).gate,
        sources(backend).gate_header,
    )?;
    let (grid, tg) = launch_dims(i64::from(ntok))?;
    let shape = with_last(logits, k);
    let dims = dims_array(&[ntok, variant, chunk])?;
    let out = kern.call(
        &KernelLaunch::new(
            &[logits, &dims],
            &[(&shape, Dtype::Uint32), (&shape, dtype)],
            grid,
            tg,
            &[
                ("T", TemplateArg::Dtype(dtype)),
                ("EXPERTS", TemplateArg::Int(experts)),
                ("TOPK", TemplateArg::Int(k)),
                ("EPL", TemplateArg::Int((experts + 31) / 32)),
                ("NORM", TemplateArg::Bool(normalize)),
            ],
        ),
        s,
    )?;
    let (ids, scores) = two(out)?;
    Ok((
        ops::reshape(&ids, &shape, s)?,
        ops::reshape(&scores, &shape, s)?,
    ))
}

/// The output of a one-output kernel call.
fn one(out: Vec<Array>) -> Result<Array> {
    out.into_iter()
        .next()
        .ok_or_else(|| Error::invalid("gpu", "a one-output kernel returned none"))
}

/// The two outputs of a two-output kernel call.
pub(super) fn two(out: Vec<Array>) -> Result<(Array, Array)> {
    let mut it = out.into_iter();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(Error::invalid("gpu", "a two-output kernel returned fewer")),
    }
}

#[cfg(test)]
mod tests {
    use super::{
        combine_smem, cuda_shape_support, cuda_tile_rows, lanes_per_row, minify,
        router_weight_support, swiglu_tiles, with_cuda_variants, CudaVariants, Rings, DOWN_INPUTS,
        DOWN_NORM_INPUTS, PIPE_CHUNKS,
    };
    use crate::contract::Support;
    use crate::weight::Weight;
    use mlx::quantization::QuantizedWeight;
    use mlx::{Dtype, StreamOrDevice};

    /// The normalising down kernel's signature is the plain one's plus the norm's
    /// two inputs, in that order (its body is the plain body with a tail appended).
    #[test]
    fn normalising_down_inputs_extend_the_plain_ones() {
        assert_eq!(DOWN_NORM_INPUTS[..8], DOWN_INPUTS);
        assert_eq!(DOWN_NORM_INPUTS[8..], ["wn_in", "cnt_in"]);
    }

    #[test]
    fn minify_drops_comments_and_keeps_code() {
        let src = "// a comment\n  #include \"a/b.h\"\n\n  int x = 1; // trailing\n  asm(\"x // y\\n\");\n#pragma unroll\n  char c = '/'; int z = 2 / 1;\n";
        assert_eq!(
            minify(src),
            "#include \"a/b.h\"\nint x = 1;\nasm(\"x // y\\n\");\n#pragma unroll\nchar c = '/'; int z = 2 / 1;\n"
        );
    }

    #[test]
    fn minified_kernels_shrink() {
        for (name, src) in [
            ("prelude+mma", super::CUDA.prelude),
            ("swiglu", super::CUDA.swiglu),
            ("down", super::CUDA.down),
            ("gate", super::CUDA.gate),
        ] {
            let m = minify(src);
            assert!(
                m.len() * 10 < src.len() * 8,
                "{name}: {} -> {}",
                src.len(),
                m.len()
            );
            assert!(!m.contains("//"), "{name}");
        }
    }

    #[test]
    fn pipe_stages_fit_static_shared_memory() {
        // The default variants, whatever the environment of the test process says.
        with_cuda_variants(CudaVariants::default(), stages_at_default_variants);
    }

    fn stages_at_default_variants() {
        let rings = |kin, rows, warps, other| Rings {
            bits: 4,
            group: 64,
            kin,
            rows,
            warps,
            other,
        };
        // Qwen3-30B-A3B, 8-row tiles: SwiGLU (K 2048, 64 chunks) takes the cap; down
        // (K 768, 24 chunks = 6 stages) keeps all of K in flight with 7.
        assert_eq!(rings(2048, 8, 2, 16).stages(PIPE_CHUNKS), 8);
        assert_eq!(rings(768, 8, 8, combine_smem(8)).stages(PIPE_CHUNKS), 7);
        // 16-row tiles: SwiGLU's four rings (two tiles a block) hold seven stages;
        // down's eight rings hold four of its six.
        assert_eq!(rings(2048, 16, 4, 64).stages(PIPE_CHUNKS), 7);
        assert_eq!(rings(768, 16, 8, combine_smem(16)).stages(PIPE_CHUNKS), 4);
        // SwiGLU with 8-chunk stages (its default): three of them in 48 KB, all
        // of K (eight stages) would need more.
        assert_eq!(rings(2048, 16, 4, 64).stages(8), 3);
        assert!(rings(2048, 16, 4, 64).fit(2, 8));
        // Four tiles a block (the default since d204f54; 8 rings, plus the router
        // kernel's 128 bf16 logits): two 8-chunk stages do not fit, so the stages
        // take 4 chunks, three of them.
        assert!(!rings(2048, 16, 8, 128 + 256).fit(2, 8));
        assert_eq!(rings(2048, 16, 8, 128 + 256).stages(PIPE_CHUNKS), 3);
        assert_eq!(
            cuda_tile_rows(|r| rings(768, r, 8, combine_smem(r)).fit(2, PIPE_CHUNKS)),
            16
        );
        for rows in [8, 16] {
            let other = combine_smem(rows);
            for &(bits, group, kin, warps) in &[
                (4, 32, 2048, 8),
                (8, 32, 4096, 8),
                (4, 128, 7168, 8),
                (8, 64, 768, 2),
                (4, 64, 64, 8),
            ] {
                let at = |rows, warps, other| Rings {
                    bits,
                    group,
                    kin,
                    rows,
                    warps,
                    other,
                };
                if rows == 8 {
                    // What cuda_shape_support promises.
                    assert!(at(rows, 8, other).fit(2, PIPE_CHUNKS));
                } else if !at(rows, warps, other).fit(2, PIPE_CHUNKS) {
                    // The kernels take 8-row tiles there.
                    let fits = |r| at(r, warps, combine_smem(r)).fit(2, PIPE_CHUNKS);
                    assert_eq!(cuda_tile_rows(fits), 8);
                    continue;
                }
                let st = at(rows, warps, other).stages(PIPE_CHUNKS);
                assert!((2..=8).contains(&st), "{st}");
                assert!(at(rows, warps, other).fit(st, PIPE_CHUNKS));
            }
            // Scales alone too large for eight rings.
            let wide = Rings {
                bits: 4,
                group: 32,
                kin: 32768,
                rows,
                warps: 8,
                other,
            };
            assert!(!wide.fit(2, PIPE_CHUNKS));
        }
    }

    #[test]
    fn cuda_kernels_need_compute_capability_8() {
        use super::cuda_capability_refusal;
        let old = cuda_capability_refusal(Some((7, 5))).expect("7.5 is refused");
        assert!(old.contains("7.5") && old.contains("8.0"), "{old}");
        assert!(cuda_capability_refusal(Some((7, 0))).is_some());
        for ok in [
            Some((8, 0)),
            Some((8, 6)),
            Some((9, 0)),
            Some((10, 0)),
            None,
        ] {
            assert_eq!(cuda_capability_refusal(ok), None, "{ok:?}");
        }
    }

    /// The CUDA router's fast top-k (shaders/cuda/route.cuh) orders 16-bit gates by
    /// one key, `bits << 16 | (index + 1)` (bits 0xFFFF for NaN; key 0 for padding
    /// and taken experts), and takes the largest key each round. That must be the
    /// order of its comparison loop, MLX's order: larger gate first, NaN above every
    /// number, the larger index among equal gates (and among NaNs). Checked here on
    /// the arithmetic (the kernel itself is checked against MLX on a device): random
    /// non-negative bf16 and f16 gates with many ties and zeros, rows of NaN and rows
    /// with some NaN, 8 to 512 experts.
    #[test]
    fn router_keys_order_like_gate_then_index() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..400 {
            let experts = [8usize, 64, 128, 160, 512][case % 5];
            let k = 1 + (next() % 16) as usize % experts;
            let bf16 = case % 2 == 0;
            // Few distinct values (ties), zeros included; every gate NaN in one case
            // in 7, some NaN in one in 5; as f32 and as 16-bit bits (NaN: 0xFFFF, as
            // the kernel keys it).
            let nan_row = case % 7 == 3;
            let some_nan = case % 5 == 1;
            let gates: Vec<(f32, u32)> = (0..experts)
                .map(|_| {
                    if nan_row || (some_nan && next() % 4 == 0) {
                        return (f32::NAN, 0xffff);
                    }
                    let v = (next() % 12) as f32 / 11.0 * if next() % 3 == 0 { 1e-3 } else { 1.0 };
                    if bf16 {
                        let b = half::bf16::from_f32(v);
                        (b.to_f32(), u32::from(b.to_bits()))
                    } else {
                        let h = half::f16::from_f32(v);
                        (h.to_f32(), u32::from(h.to_bits()))
                    }
                })
                .collect();
            // The comparison loop's picks: expert a ranks above b when its gate is
            // NaN and b's is not, or both are numbers and a's is larger, or they are
            // equal (or both NaN) and a's index is larger.
            let ranks_above = |a: usize, b: usize| {
                let (ga, gb) = (gates[a].0, gates[b].0);
                if ga.is_nan() {
                    return !gb.is_nan() || a > b;
                }
                !gb.is_nan() && (ga > gb || (ga == gb && a > b))
            };
            let mut taken = vec![false; experts];
            let mut want = Vec::new();
            for _ in 0..k {
                let mut best: Option<usize> = None;
                for i in (0..experts).filter(|&i| !taken[i]) {
                    best = match best {
                        Some(b) if ranks_above(b, i) => Some(b),
                        _ => Some(i),
                    };
                }
                let b = best.expect("k <= experts");
                taken[b] = true;
                want.push(b);
            }
            // The keys' picks.
            let mut keys: Vec<u32> = gates
                .iter()
                .enumerate()
                .map(|(i, &(_, bits))| (bits << 16) | (i as u32 + 1))
                .collect();
            let mut got = Vec::new();
            for _ in 0..k {
                let m = *keys.iter().max().expect("experts > 0");
                assert!(m > 0, "a round picked padding");
                for key in keys.iter_mut().filter(|key| **key == m) {
                    *key = 0;
                }
                got.push((m & 0xffff) as usize - 1);
            }
            assert_eq!(
                got, want,
                "case {case}: {experts} experts, top-{k}, bf16 {bf16}"
            );
        }
    }

    /// A quantized weight `[experts, n, k]` (lazy zeros: only shapes and dtypes are
    /// looked at).
    fn lazy_weight(n: i32, k: i32, group: i32, bits: i32) -> Weight {
        let s = StreamOrDevice::Device(mlx::Device::cpu());
        let zeros = |shape: &[i32], dt| mlx::ops::zeros(shape, dt, s).expect("zeros");
        Weight::Quantized(QuantizedWeight {
            weight: zeros(&[8, n, k * bits / 32], Dtype::Uint32),
            scales: zeros(&[8, n, k / group], Dtype::Bfloat16),
            biases: Some(zeros(&[8, n, k / group], Dtype::Bfloat16)),
            spec: mlx::quantization::QuantSpec::affine(group, bits),
        })
    }

    /// Four tiles a block where their rings fit; fewer where the tile scales of a
    /// long K in small groups, and the router kernel's 512 logits, leave no room for
    /// eight rings (there two tiles' four rings still fit).
    #[test]
    fn swiglu_tiles_fall_back_where_four_do_not_fit() {
        let tiles = |w: &Weight, extra: i64| {
            let Weight::Quantized(q) = w else {
                unreachable!("lazy_weight quantizes")
            };
            with_cuda_variants(CudaVariants::default(), || {
                swiglu_tiles(q, w.in_features(), extra)
            })
        };
        let qwen = lazy_weight(768, 2048, 64, 4);
        assert!(cuda_shape_support(&qwen).is_yes());
        assert_eq!(tiles(&qwen, 256), (16, 4));
        // K / group = 142, the most `weight_support` takes at 4 bits.
        let long = lazy_weight(768, 9088, 64, 4);
        assert!(cuda_shape_support(&long).is_yes());
        assert_eq!(tiles(&long, 0).1, 4);
        assert_eq!(tiles(&long, 512 * 2).1, 2);
    }

    #[test]
    fn router_weight_support_takes_one_token_of_an_8bit_router() {
        let s = StreamOrDevice::Device(mlx::Device::cpu());
        let zeros = |shape: &[i32], dt| mlx::ops::zeros(shape, dt, s).expect("zeros");
        let router = |experts: i32, hidden: i32, group: i32, bits: i32, dt: Dtype| {
            Weight::Quantized(QuantizedWeight {
                weight: zeros(&[experts, hidden * bits / 32], Dtype::Uint32),
                scales: zeros(&[experts, hidden / group], dt),
                biases: Some(zeros(&[experts, hidden / group], dt)),
                spec: mlx::quantization::QuantSpec::affine(group, bits),
            })
        };
        let x = |tokens: i32, hidden: i32, dt: Dtype| zeros(&[tokens, hidden], dt);
        let bf = Dtype::Bfloat16;
        assert!(
            router_weight_support(&router(128, 2048, 64, 8, bf), &x(1, 2048, bf), 128).is_yes()
        );
        let refused = [
            (router(128, 2048, 64, 4, bf), x(1, 2048, bf), 128, "4-bit"),
            (
                router(128, 2048, 64, 8, bf),
                x(2, 2048, bf),
                128,
                "one token",
            ),
            (
                router(128, 2048, 64, 8, bf),
                x(1, 2048, Dtype::Float16),
                128,
                "both f16",
            ),
            (
                router(128, 640, 64, 8, bf),
                x(1, 640, bf),
                128,
                "multiples of 256",
            ),
            (
                router(64, 2048, 64, 8, bf),
                x(1, 2048, bf),
                128,
                "for 128 experts",
            ),
            (
                router(128, 2048, 16, 8, bf),
                x(1, 2048, bf),
                128,
                "groups of 16",
            ),
        ];
        for (w, x, experts, want) in refused {
            match router_weight_support(&w, &x, experts) {
                Support::No(why) => assert!(why.contains(want), "{why} (wanted {want:?})"),
                Support::Yes => panic!("accepted a router the kernel cannot take ({want})"),
            }
        }
    }

    #[test]
    fn cuda_support_refuses_tiles_whose_rings_do_not_fit() {
        assert!(cuda_shape_support(&lazy_weight(768, 2048, 64, 4)).is_yes());
        assert!(cuda_shape_support(&lazy_weight(2048, 768, 64, 4)).is_yes());
        match cuda_shape_support(&lazy_weight(128, 32768, 32, 4)) {
            Support::No(why) => {
                assert!(why.contains("32768 input features"), "{why}");
                assert!(
                    why.contains("shared memory") && !why.contains("  "),
                    "{why}"
                );
            }
            Support::Yes => panic!("a tile whose scales overflow shared memory was accepted"),
        }
    }

    #[test]
    fn lanes_cover_rows_with_a_few_words_each() {
        // Qwen3-30B-A3B: gate/up rows of 2048 4-bit values = 64 words, down rows of
        // 768 = 24 words.
        assert_eq!(lanes_per_row(64), 32);
        assert_eq!(lanes_per_row(24), 8);
        assert_eq!(lanes_per_row(48), 16);
        assert_eq!(lanes_per_row(3), 1);
        assert_eq!(lanes_per_row(1000), 32);
    }
}
