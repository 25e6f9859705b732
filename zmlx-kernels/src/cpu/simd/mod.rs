//! Runtime selection of the vector kernels.
//!
//! The best level the CPU supports is detected once (AVX-512F, then AVX2+FMA+F16C on
//! x86_64; NEON on aarch64; the portable Rust kernels otherwise). The environment
//! variable `ZMLX_CPU_SIMD` (`portable`, `avx2`, `avx512`, `neon`) can lower it for a
//! whole process, and [`with_level`] overrides it for the calls made on the current
//! thread (tests use it to run the portable path next to the vector paths).
//!
//! Every public kernel reads the level once on the calling thread and passes it down
//! to its worker threads, so an override applies to the whole call.
//!
//! The wrappers below are the only place where the `unsafe` kernels are called: they
//! check the CPU feature (through the level, which can only be constructed for an
//! available feature set) and the slice lengths the kernels rely on.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod chain_neon;
#[cfg(target_arch = "x86_64")]
pub(crate) mod chain_x86;
#[cfg(target_arch = "aarch64")]
mod neon;
pub(crate) mod scalar;

use std::cell::Cell;
use std::sync::OnceLock;

use super::dtype::Element;
use super::error::{KernelError, Result};
use super::weights::Pick;
use half::{bf16, f16};

/// An instruction-set level for the CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Plain Rust, any CPU.
    Portable,
    /// x86_64 with AVX2, FMA and F16C (8 f32 lanes).
    Avx2,
    /// x86_64 with AVX-512F (16 f32 lanes).
    Avx512,
    /// aarch64 NEON (4 f32 lanes).
    Neon,
}

impl SimdLevel {
    /// Whether this CPU can run kernels of this level.
    pub fn is_available(self) -> bool {
        match self {
            SimdLevel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The name accepted by `ZMLX_CPU_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Neon => "neon",
        }
    }
}

/// Every level this CPU supports, best first (always ends with `Portable`).
pub fn available_levels() -> Vec<SimdLevel> {
    [
        SimdLevel::Avx512,
        SimdLevel::Avx2,
        SimdLevel::Neon,
        SimdLevel::Portable,
    ]
    .into_iter()
    .filter(|l| l.is_available())
    .collect()
}

/// The process-wide level: the best available, or `ZMLX_CPU_SIMD` if it names an
/// available level (an unknown or unavailable name is ignored).
pub fn detected_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let avail = available_levels();
        let forced = std::env::var("ZMLX_CPU_SIMD").ok().and_then(|name| {
            avail
                .iter()
                .copied()
                .find(|l| l.name().eq_ignore_ascii_case(name.trim()))
        });
        forced.unwrap_or(avail[0])
    })
}

thread_local! {
    static OVERRIDE: Cell<Option<SimdLevel>> = const { Cell::new(None) };
}

/// The level kernels called from this thread use now.
pub fn current_level() -> SimdLevel {
    crate::thread_override::current(&OVERRIDE, detected_level)
}

/// Runs `f` with kernels called from this thread using `level`, then restores the
/// previous level (also if `f` panics).
///
/// # Errors
/// [`KernelError::InvalidArgument`] if this CPU does not support `level`.
pub fn with_level<R>(level: SimdLevel, f: impl FnOnce() -> R) -> Result<R> {
    if !level.is_available() {
        return Err(KernelError::InvalidArgument {
            op: "with_level",
            detail: format!("SIMD level {} is not available on this CPU", level.name()),
        });
    }
    Ok(crate::thread_override::with_override(&OVERRIDE, level, f))
}

/// How the AVX-512 bf16 kernels of quantized matmuls round and add. Every form gives
/// MLX's bits; which one is fastest depends on the core (AMD Zen 4 runs `vdpbf16ps` at
/// one a cycle, the Intel Xeon of 2026-11-26 at one per ~2.3 cycles, where `Split` beat
/// both others), so the process measures them once ([`detected_bf16_decode`]).
/// `Packed` differs from `Widened` only in decode-shaped calls (one or two activation
/// rows, four 16-row blocks side by side); `Split` applies to every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Decode {
    /// Rounded values stay packed as bf16 and `vdpbf16ps` consumes them (needs
    /// AVX512_BF16).
    Packed,
    /// Values are rounded by `vcvtne2ps2bf16`, widened back to f32 and added and
    /// multiplied as f32 (needs AVX512_BF16).
    Widened,
    /// Values are rounded by Veltkamp splitting in f32 arithmetic (three operations, no
    /// shuffle; AVX-512F only). Without AVX512_BF16 every form runs as this one.
    Split,
}

impl Bf16Decode {
    /// The name in reports and in `ZMLX_CPU_BF16_FORM` (`packed`, `widened`, `split`).
    pub fn name(self) -> &'static str {
        match self {
            Bf16Decode::Packed => "packed",
            Bf16Decode::Widened => "widened",
            Bf16Decode::Split => "split",
        }
    }
}

/// Calls a kernel instantiated for the group size; `group_dot` asserts that it is 32,
/// 64 or 128 (the only sizes `QuantSpec` admits) before expanding this.
#[allow(unused_macros)]
macro_rules! by_gs {
    ($m:ident :: $f:ident, $gs:expr, $($arg:expr),*) => {
        match $gs {
            32 => $m::$f::<_, 32>($($arg),*),
            64 => $m::$f::<_, 64>($($arg),*),
            _ => $m::$f::<_, 128>($($arg),*),
        }
    };
}

/// How far ahead of the word being read the f32-precision quantized dots prefetch
/// (bytes of the packed row, which continues into the next rows of the matrix). The
/// hardware prefetchers alone left the lm_head at 1.7x its memory floor on the
/// Xeon of 2026-11-27; 1, 1.5, 2, 3 and 4 KiB measured 1.32-1.44x, 1.21x, 1.14x,
/// 1.12x and 1.12x, the expert calls were best at 1-4 KiB (notebook.md).
#[cfg(target_arch = "x86_64")]
pub(crate) const PREFETCH_AHEAD: usize = 2048;

/// Prefetches the cache lines [`PREFETCH_AHEAD`] bytes past a group of `bytes` packed
/// bytes at `group`, one per 64 bytes. The addresses may lie past the matrix: they are
/// computed with wrapping arithmetic and never dereferenced, and a prefetch cannot
/// fault.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_group(group: *const u8, bytes: usize) {
    prefetch_group_lead(group, bytes, 1);
}

/// [`prefetch_group`] from `lead` times as far ahead: a kernel that walks `lead`
/// consecutive rows of one matrix side by side moves through it `lead` times as
/// fast, so the same lead in time is `lead` times the distance.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_group_lead(group: *const u8, bytes: usize, lead: usize) {
    use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for off in (0..bytes).step_by(64) {
        // SAFETY: `prefetch` is a hint (SSE, baseline on x86_64) with no memory access.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(group.wrapping_add(off + lead * PREFETCH_AHEAD).cast())
        };
    }
}

/// Values of one 64-byte chunk of packed 4-bit words (16 words): the unit of
/// [`q4_dot_bf16`] and of the activation order it reads.
pub(crate) const BF16_CHUNK: usize = 128;

/// Whether [`q4_dot_bf16`] can run at `level`: AVX-512 with AVX512BW, AVX512VL and
/// AVX512_BF16.
pub(crate) fn bf16_dot_available(level: SimdLevel) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        level == SimdLevel::Avx512
            && *AVAILABLE.get_or_init(|| {
                is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512bf16")
            })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        false
    }
}

/// 4-bit row dot product for bf16 activations prepared in the `vdpbf16ps` order
/// (`xb`, see `prep.rs`), f32 accumulation; callers check [`bf16_dot_available`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn q4_dot_bf16(
    words: &[u32],
    xb: &[u16],
    xsum: &[f32],
    scales: &[bf16],
    biases: &[bf16],
    gs: usize,
) -> f32 {
    let groups = scales.len();
    assert!(
        bf16_dot_available(SimdLevel::Avx512)
            && matches!(gs, 32 | 64 | 128)
            && words.len() == groups * gs / 8
            && xb.len() == (groups * gs).next_multiple_of(BF16_CHUNK)
            && xsum.len() == groups
            && biases.len() == groups,
        "q4_dot_bf16: internal invariant violated"
    );
    // SAFETY: features checked above (and cached), lengths checked.
    unsafe {
        match gs {
            32 => avx512::q4_dots_bf16::<32, 1>([words], xb, xsum, [scales], [biases], 1)[0],
            64 => avx512::q4_dots_bf16::<64, 1>([words], xb, xsum, [scales], [biases], 1)[0],
            _ => avx512::q4_dots_bf16::<128, 1>([words], xb, xsum, [scales], [biases], 1)[0],
        }
    }
}

/// [`q4_dot_bf16`] for `R` rows against the same activations, in one pass
/// (`avx512::q4_dots_bf16`, which both run); `consecutive`: the rows are consecutive
/// rows of one matrix (prefetches then reach `R` times as far). Callers check
/// [`bf16_dot_available`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn q4_dots_bf16<const R: usize>(
    words: [&[u32]; R],
    xb: &[u16],
    xsum: &[f32],
    scales: [&[bf16]; R],
    biases: [&[bf16]; R],
    gs: usize,
    consecutive: bool,
) -> [f32; R] {
    let lead = if consecutive { R } else { 1 };
    let groups = scales[0].len();
    assert!(
        R > 0
            && bf16_dot_available(SimdLevel::Avx512)
            && matches!(gs, 32 | 64 | 128)
            && xb.len() == (groups * gs).next_multiple_of(BF16_CHUNK)
            && xsum.len() == groups
            && (0..R).all(|r| {
                words[r].len() == groups * gs / 8
                    && scales[r].len() == groups
                    && biases[r].len() == groups
            }),
        "q4_dots_bf16: internal invariant violated"
    );
    // SAFETY: features checked above (and cached), lengths checked for every row.
    unsafe {
        match gs {
            32 => avx512::q4_dots_bf16::<32, R>(words, xb, xsum, scales, biases, lead),
            64 => avx512::q4_dots_bf16::<64, R>(words, xb, xsum, scales, biases, lead),
            _ => avx512::q4_dots_bf16::<128, R>(words, xb, xsum, scales, biases, lead),
        }
    }
}

/// 4- or 8-bit row dot product with f32 accumulation: `x` in the nibble-split order
/// of `prep.rs` (`PRow::xp`) for 4 bits, in natural order (`PRow::xf`) for 8.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_dot<T: Element>(
    level: SimdLevel,
    bits: u32,
    words: &[u32],
    x: &[f32],
    xsum: &[f32],
    scales: &[T],
    biases: &[T],
    gs: usize,
) -> f32 {
    let groups = scales.len();
    assert!(
        matches!(bits, 4 | 8)
            && matches!(gs, 32 | 64 | 128)
            && words.len() == groups * gs * bits as usize / 32
            && x.len() == groups * gs
            && xsum.len() == groups
            && biases.len() == groups,
        "group_dot: internal length invariant violated"
    );
    // The level's 4-bit or 8-bit kernel, instantiated for the group size.
    macro_rules! by_bits {
        ($m:ident) => {
            if bits == 4 {
                by_gs!($m::q4_dot, gs, words, x, xsum, scales, biases)
            } else {
                by_gs!($m::q8_dot, gs, words, x, xsum, scales, biases)
            }
        };
    }
    match level {
        // SAFETY: the level is only selected when the CPU supports it; lengths checked.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { by_bits!(avx512) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { by_bits!(avx2) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => unsafe { by_bits!(neon) },
        _ if bits == 4 => scalar::q4_dot(words, x, xsum, scales, biases, gs),
        _ => scalar::q8_dot(words, x, xsum, scales, biases, gs),
    }
}

/// The process-wide [`Bf16Decode`]: `ZMLX_CPU_BF16_FORM=packed`, `widened` or `split`
/// forces one; otherwise the first call times the forms this CPU has on a small
/// hot-cache problem (about a millisecond) and keeps the fastest. An unknown value of
/// the variable is reported once on stderr and ignored.
pub fn detected_bf16_decode() -> Bf16Decode {
    static FORM: OnceLock<Bf16Decode> = OnceLock::new();
    *FORM.get_or_init(|| {
        let forced = std::env::var("ZMLX_CPU_BF16_FORM").ok();
        let named = [Bf16Decode::Packed, Bf16Decode::Widened, Bf16Decode::Split]
            .into_iter()
            .find(|f| forced.as_deref() == Some(f.name()));
        match (named, forced) {
            (Some(form), _) => form,
            (None, Some(other)) => {
                eprintln!(
                    "zmlx: ignoring ZMLX_CPU_BF16_FORM={other:?} (expected packed, widened \
                     or split)"
                );
                super::chain::fastest_bf16_decode()
            }
            (None, None) => super::chain::fastest_bf16_decode(),
        }
    })
}

thread_local! {
    static BF16_OVERRIDE: Cell<Option<Bf16Decode>> = const { Cell::new(None) };
}

/// The [`Bf16Decode`] form kernels called from this thread use now.
pub fn current_bf16_decode() -> Bf16Decode {
    crate::thread_override::current(&BF16_OVERRIDE, detected_bf16_decode)
}

/// Runs `f` with kernels called from this thread using `form`, then restores the
/// previous form (also if `f` panics). Results are the same either way; tests use it
/// to run both kernels, benchmarks to compare them.
pub fn with_bf16_decode<R>(form: Bf16Decode, f: impl FnOnce() -> R) -> R {
    crate::thread_override::with_override(&BF16_OVERRIDE, form, f)
}

/// `M` activation rows against four f32 weight rows (all the same length): `out[r][c]`
/// = row `r` of `x` dot row `c` of `w`.
#[inline]
pub(crate) fn dot_mx4<const M: usize>(
    level: SimdLevel,
    x: [&[f32]; M],
    w: [&[f32]; 4],
) -> [[f32; 4]; M] {
    let n = w[0].len();
    assert!(
        x.iter().chain(&w).all(|r| r.len() == n),
        "dot_mx4: internal length invariant violated"
    );
    match level {
        // SAFETY: the level is only selected when the CPU supports it; lengths checked.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { avx512::dot_mx4(x, w) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { avx2::dot_mx4(x, w) },
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => unsafe { neon::dot_mx4(x, w) },
        _ => scalar::dot_mx4(x, w),
    }
}

/// Element types the kernels are instantiated for: adds the per-dtype float-weight dot
/// product to [`Element`].
pub(crate) trait Kernel: Element + Pick {
    /// Dot product of a weight row of this dtype with f32 activations.
    fn dot_weights(level: SimdLevel, w: &[Self], x: &[f32]) -> f32;
}

/// `impl Kernel` for one weight dtype: the float-weight dot product of each level, the
/// portable loop where a level has none (`neon` names NEON's, when it exists).
macro_rules! impl_kernel {
    ($t:ty, $dot:ident $(, neon: $neon:ident)?) => {
        impl Kernel for $t {
            #[inline]
            fn dot_weights(level: SimdLevel, w: &[Self], x: &[f32]) -> f32 {
                assert!(
                    w.len() == x.len(),
                    "dot: internal length invariant violated"
                );
                match level {
                    // SAFETY: level available (see `SimdLevel`), lengths checked.
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx512 => unsafe { avx512::$dot(w, x) },
                    #[cfg(target_arch = "x86_64")]
                    SimdLevel::Avx2 => unsafe { avx2::$dot(w, x) },
                    $(
                        #[cfg(target_arch = "aarch64")]
                        SimdLevel::Neon => unsafe { neon::$neon(w, x) },
                    )?
                    _ => scalar::dot(w, x),
                }
            }
        }
    };
}

impl_kernel!(f32, dot_f32, neon: dot_f32);
impl_kernel!(bf16, dot_bf16, neon: dot_bf16);
// NEON has no stable f16 vector type in Rust yet: the portable loop (which converts
// with `half`) serves aarch64.
impl_kernel!(f16, dot_f16);
