//! The variants the CUDA kernels can be built in, and which one a call builds.
//!
//! Each variant is a template argument of a kernel: an arithmetic choice (how the
//! weights are dequantized, how the combine sums, how a norm or the router rounds),
//! which must match MLX's own arithmetic for the results to be MLX's bits, or a tiling
//! choice (tile rows, ring stages, chunks a stage, tiles a block), which gives the same
//! bits and only changes speed. The defaults are the variants measured to match MLX
//! 0.32.4 and to run fastest on an H100 (notes/cuda-kernels.md).
//!
//! A process reads its variants from the environment once, at the first kernel call
//! ([`CudaVariants::from_env`]); [`with_cuda_variants`] overrides them for the kernel
//! calls made on one thread (the variant is fixed when the call builds its graph node,
//! on the calling thread). Reading once matters twice: a decode step makes hundreds of
//! kernel calls, and changing the environment of a running multi-threaded process
//! (as the device tests once did) races with every thread that reads it.

use std::cell::Cell;
use std::sync::OnceLock;

use mlx::{Error, Result};

/// The variants of the CUDA kernels; [`Default`] gives the measured defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaVariants {
    /// `DEQ` of shaders/cuda/mma.cuh (0..=2): how the expert kernels dequantize.
    pub(crate) deq: i32,
    /// `SUMV` of shaders/cuda/down_combine.cu (0..=5): the combine's k-sum.
    pub(crate) sum: i32,
    /// Rows of an expert-kernel tile (8 or 16) where 16 fits.
    pub(crate) tile_rows: i32,
    /// The most ring stages an expert kernel uses (2..=8).
    pub(crate) pipe_cap: i32,
    /// 16-byte chunks a stage of the SwiGLU kernel's rings (4 or 8) where 8 fit.
    pub(crate) stage_chunks: i32,
    /// Tiles per block of the SwiGLU kernel (1, 2 or 4).
    pub(crate) tiles_per_block: i32,
    /// `VARIANT` of shaders/cuda/moe_gate.cu (0 or 1).
    pub(crate) router: i32,
    /// `QDEQ` of shaders/cuda/router_qmv.cuh (0 or 2): how the fused router
    /// dequantizes.
    pub(crate) router_deq: i32,
    /// `RROWS` of shaders/cuda/swiglu_router.cu (1, 2 or 4): router rows a warp
    /// loads at once (the same bits).
    pub(crate) router_rows: i32,
    /// `RWAIT` of shaders/cuda/swiglu_router.cu: how many microseconds a block of
    /// the fused router waits for the logits before it traps (a failed launch that
    /// MLX reports, instead of a hung GPU).
    pub(crate) router_wait_us: i32,
    /// Whether the model's MoE block lets the SwiGLU kernel compute the router
    /// logits itself where it can (`ZMLX_CUDA_FUSED_ROUTER=0` keeps MLX's router
    /// matmul, for A/B timing).
    pub(crate) fused_router: bool,
    /// `FMAV` of shaders/cuda/norm.cuh (0 or 1).
    pub(crate) norm_fmav: i32,
    /// `ROPEV` of shaders/cuda/head_norm_rope.cu (0..=2).
    pub(crate) rope: i32,
    /// Whether kernel sources go to MLX without comments and indentation.
    pub(crate) minify: bool,
    /// Whether every zmlx kernel's outputs start as NaN (for checks; see
    /// [`CudaVariants::with_poisoned_outputs`]).
    pub(crate) poison: bool,
}

impl Default for CudaVariants {
    fn default() -> Self {
        Self {
            deq: 2,
            sum: 0,
            tile_rows: 16,
            pipe_cap: 8,
            stage_chunks: 8,
            tiles_per_block: 4,
            router: 0,
            router_deq: 2,
            router_rows: 2,
            router_wait_us: ROUTER_WAIT_DEFAULT_US,
            fused_router: true,
            norm_fmav: 0,
            rope: 0,
            minify: true,
            poison: false,
        }
    }
}

/// The allowed values of the variants that both the environment and the setters take.
const DEQ_VALUES: &[i32] = &[0, 1, 2];
const SUM_VALUES: &[i32] = &[0, 1, 2, 3, 4, 5];
const ROWS_VALUES: &[i32] = &[8, 16];

/// The fused router's default bound on its wait: one second. A call's router logits
/// take microseconds; a second leaves room for the GPU being time-sliced with other
/// processes and still ends a wait that can never end.
const ROUTER_WAIT_DEFAULT_US: i32 = 1_000_000;

/// The longest bound [`CudaVariants::with_router_wait_us`] takes: one minute.
const ROUTER_WAIT_MAX_US: i32 = 60_000_000;

/// `raw` as an integer when it is one of `allowed`, else `default`.
fn choice(raw: Option<&str>, allowed: &[i32], default: i32) -> i32 {
    raw.and_then(|v| v.parse::<i32>().ok())
        .filter(|v| allowed.contains(v))
        .unwrap_or(default)
}

/// `value` when it is one of `allowed`, else an error naming the variant.
fn checked(what: &'static str, value: i32, allowed: &[i32]) -> Result<i32> {
    if allowed.contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            "CudaVariants",
            format!("{what} {value} is not a variant (expected one of {allowed:?})"),
        ))
    }
}

impl CudaVariants {
    /// The defaults, with each of these environment variables that is set to an
    /// allowed value taking its place (other values are ignored):
    /// `ZMLX_CUDA_DEQ` (0-2), `ZMLX_CUDA_SUM` (0-5), `ZMLX_CUDA_ROWS` (8, 16),
    /// `ZMLX_CUDA_PIPE` (any integer, clamped to 2-8), `ZMLX_CUDA_CPS` (4, 8),
    /// `ZMLX_CUDA_TPB` (1, 2, 4), `ZMLX_ROUTER_VARIANT` (0, 1), `ZMLX_CUDA_QDEQ` (0,
    /// 2), `ZMLX_CUDA_RROWS` (1, 2, 4), `ZMLX_CUDA_FUSED_ROUTER` (0 turns it off),
    /// `ZMLX_CUDA_NORM_FMA`
    /// (1 = the fused square, the default; 0 = a rounded square), `ZMLX_CUDA_ROPE`
    /// (0-2), `ZMLX_GPU_MINIFY` (0 passes sources as written), `ZMLX_GPU_POISON` (1
    /// fills every output with NaN before the kernel runs). They exist for checks and
    /// A/B timings on a device.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`CudaVariants::from_env`] over any name-to-value lookup.
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let pick = |name: &str, allowed: &[i32], default: i32| {
            choice(get(name).as_deref(), allowed, default)
        };
        Self {
            deq: pick("ZMLX_CUDA_DEQ", DEQ_VALUES, d.deq),
            sum: pick("ZMLX_CUDA_SUM", SUM_VALUES, d.sum),
            tile_rows: pick("ZMLX_CUDA_ROWS", ROWS_VALUES, d.tile_rows),
            pipe_cap: get("ZMLX_CUDA_PIPE")
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(d.pipe_cap, |n| n.clamp(2, 8)),
            stage_chunks: pick("ZMLX_CUDA_CPS", &[4, 8], d.stage_chunks),
            tiles_per_block: pick("ZMLX_CUDA_TPB", &[1, 2, 4], d.tiles_per_block),
            router: pick("ZMLX_ROUTER_VARIANT", &[0, 1], d.router),
            router_deq: pick("ZMLX_CUDA_QDEQ", &[0, 2], d.router_deq),
            router_rows: pick("ZMLX_CUDA_RROWS", &[1, 2, 4], d.router_rows),
            router_wait_us: d.router_wait_us,
            fused_router: get("ZMLX_CUDA_FUSED_ROUTER").as_deref() != Some("0"),
            // ZMLX_CUDA_NORM_FMA=1 (the default) means the fma, which is FMAV 0.
            norm_fmav: 1 - pick("ZMLX_CUDA_NORM_FMA", &[0, 1], 1 - d.norm_fmav),
            rope: pick("ZMLX_CUDA_ROPE", &[0, 1, 2], d.rope),
            minify: get("ZMLX_GPU_MINIFY").as_deref() != Some("0"),
            poison: get("ZMLX_GPU_POISON").as_deref() == Some("1"),
        }
    }

    /// With every zmlx GPU kernel's outputs filled with NaN before it runs (`on`), or
    /// not (the default). For checks against a reference: MLX recycles freed buffers,
    /// so an output a kernel never writes may otherwise hold the very values the
    /// reference just computed (device run 104, notes/cuda-kernels.md). Costs a fill
    /// per output.
    pub fn with_poisoned_outputs(self, on: bool) -> Self {
        Self { poison: on, ..self }
    }

    /// Whether outputs are poisoned (see [`CudaVariants::with_poisoned_outputs`]).
    pub fn poisoned_outputs(&self) -> bool {
        self.poison
    }

    /// With dequantization variant `deq`: 2 = `q * scale + bias` rounded once to the
    /// activation dtype (the default, MLX's), 1 = an f32 fused multiply-add rounded to
    /// it, 0 = the product and the sum each rounded. An error for other values.
    pub fn with_dequant(self, deq: i32) -> Result<Self> {
        Ok(Self {
            deq: checked("dequantization", deq, DEQ_VALUES)?,
            ..self
        })
    }

    /// With the fused router's dequantization `qdeq`: 2 = `q * scale + bias` rounded
    /// once (the default), 0 = the product and the sum each rounded. An error for
    /// other values.
    pub fn with_router_dequant(self, qdeq: i32) -> Result<Self> {
        Ok(Self {
            router_deq: checked("router dequantization", qdeq, &[0, 2])?,
            ..self
        })
    }

    /// With the fused router's blocks waiting at most `us` microseconds for the
    /// router logits before they trap (default one second; 0 traps unless the logits
    /// are already there, which the device tests use to check that a trap becomes an
    /// error). An error outside 0 to 60,000,000.
    pub fn with_router_wait_us(self, us: i32) -> Result<Self> {
        if !(0..=ROUTER_WAIT_MAX_US).contains(&us) {
            return Err(Error::invalid(
                "CudaVariants",
                format!("router wait {us} us is outside 0..={ROUTER_WAIT_MAX_US}"),
            ));
        }
        Ok(Self {
            router_wait_us: us,
            ..self
        })
    }

    /// With the fused router on or off (see [`CudaVariants::fused_router_on`]).
    pub fn with_fused_router(self, on: bool) -> Self {
        Self {
            fused_router: on,
            ..self
        }
    }

    /// Whether the SwiGLU kernel computes the router logits itself where it can.
    pub fn fused_router_on(&self) -> bool {
        self.fused_router
    }

    /// With k-sum variant `sum` of the down + combine kernel (0 = sequential in the
    /// activation dtype, MLX's; 1-5 other orders and accumulators). An error for other
    /// values.
    pub fn with_k_sum(self, sum: i32) -> Result<Self> {
        Ok(Self {
            sum: checked("k-sum", sum, SUM_VALUES)?,
            ..self
        })
    }

    /// With expert-kernel tiles of `rows` rows (16, the default, where it fits, or 8
    /// everywhere; the same bits). An error for other values.
    pub fn with_tile_rows(self, rows: i32) -> Result<Self> {
        Ok(Self {
            tile_rows: checked("tile rows", rows, ROWS_VALUES)?,
            ..self
        })
    }

    /// With at most `stages` ring stages in the expert kernels (2-8, default 8; the
    /// same bits). An error for other values.
    pub fn with_pipe_cap(self, stages: i32) -> Result<Self> {
        Ok(Self {
            pipe_cap: checked("ring stages", stages, &[2, 3, 4, 5, 6, 7, 8])?,
            ..self
        })
    }
}

thread_local! {
    static OVERRIDE: Cell<Option<CudaVariants>> = const { Cell::new(None) };
}

/// The variants of this process: [`CudaVariants::from_env`], read at the first call.
pub fn process_cuda_variants() -> CudaVariants {
    static VARIANTS: OnceLock<CudaVariants> = OnceLock::new();
    *VARIANTS.get_or_init(CudaVariants::from_env)
}

/// The variants kernel calls made on this thread build now.
pub fn current_cuda_variants() -> CudaVariants {
    crate::thread_override::current(&OVERRIDE, process_cuda_variants)
}

/// Runs `f` with kernel calls made on this thread built in `variants`, then restores
/// the previous ones (also if `f` panics). The device tests use it to run each variant
/// against MLX.
pub fn with_cuda_variants<R>(variants: CudaVariants, f: impl FnOnce() -> R) -> R {
    crate::thread_override::with_override(&OVERRIDE, variants, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_takes_only_allowed_integers() {
        assert_eq!(choice(None, &[1, 2, 4], 2), 2);
        for (value, want) in [("4", 4), ("1", 1), ("3", 2), ("x", 2), ("", 2)] {
            assert_eq!(choice(Some(value), &[1, 2, 4], 2), want, "{value:?}");
        }
    }

    #[test]
    fn environment_values_replace_defaults() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(CudaVariants::from_lookup(env(&[])), CudaVariants::default());
        let v = CudaVariants::from_lookup(env(&[
            ("ZMLX_CUDA_DEQ", "0"),
            ("ZMLX_CUDA_SUM", "9"),
            ("ZMLX_CUDA_PIPE", "40"),
            ("ZMLX_CUDA_NORM_FMA", "0"),
            ("ZMLX_GPU_MINIFY", "0"),
            ("ZMLX_GPU_POISON", "1"),
            ("ZMLX_CUDA_QDEQ", "1"),
            ("ZMLX_CUDA_RROWS", "4"),
            ("ZMLX_CUDA_FUSED_ROUTER", "0"),
        ]));
        assert_eq!((v.deq, v.sum, v.pipe_cap), (0, 0, 8));
        assert_eq!((v.norm_fmav, v.minify, v.poison), (1, false, true));
        assert_eq!((v.router_deq, v.router_rows, v.fused_router), (2, 4, false));
    }

    #[test]
    fn setters_refuse_unknown_variants_and_overrides_restore() {
        assert!(CudaVariants::default().with_dequant(3).is_err());
        assert!(CudaVariants::default().with_tile_rows(12).is_err());
        assert!(CudaVariants::default().with_pipe_cap(1).is_err());
        assert!(CudaVariants::default().with_router_dequant(1).is_err());
        assert!(CudaVariants::default().with_router_wait_us(-1).is_err());
        assert!(CudaVariants::default()
            .with_router_wait_us(ROUTER_WAIT_MAX_US + 1)
            .is_err());
        assert_eq!(
            CudaVariants::default()
                .with_router_wait_us(0)
                .map(|v| v.router_wait_us)
                .ok(),
            Some(0)
        );
        assert!(CudaVariants::default().fused_router_on());
        assert!(!CudaVariants::default()
            .with_fused_router(false)
            .fused_router_on());
        assert!(!CudaVariants::default().poisoned_outputs());
        assert!(CudaVariants::default()
            .with_poisoned_outputs(true)
            .poisoned_outputs());
        let v = CudaVariants::default()
            .with_k_sum(5)
            .and_then(|v| v.with_pipe_cap(2))
            .expect("allowed values");
        let before = current_cuda_variants();
        let seen = with_cuda_variants(v, || {
            with_cuda_variants(CudaVariants::default(), current_cuda_variants);
            current_cuda_variants()
        });
        assert_eq!(seen, v);
        assert_eq!(current_cuda_variants(), before);
    }
}
