//! Launch shapes of the cooperative CUDA expert kernels (`shaders/cuda/coop.cuh`,
//! `expert_swiglu_coop.cu`, `down_combine_coop.cu`): a block of `warps` warps
//! runs a few 16-row mma chains, every warp dequantizing for all of them, with a
//! ring of `stages` stages of `cps` 16-byte chunks a weight row. The arithmetic
//! and its order are those of the classic kernels (one warp a chain), so both give
//! MLX's bits; the cooperative ones keep more warps busy when a decode step has few
//! chains.

use super::{env_choice, env_i32, CUDA_STATIC_SMEM};

/// How a cooperative kernel is launched (template arguments `PIPE`, `CPS`, `NW`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CoopShape {
    /// Stages of the ring (`PIPE`, at least 3).
    pub stages: i32,
    /// 16-byte chunks of each weight row a stage (`CPS`).
    pub cps: i32,
    /// Warps a block (`NW`): one a chain, the rest dequantize.
    pub warps: i32,
}

/// Bytes of `CoopSmem` plus `CoopChains` (coop.cuh) for `chains` chains over `k`
/// input features.
pub(super) fn coop_smem(bits: i32, group: i32, k: i32, chains: i32, cps: i32, stages: i32) -> i64 {
    let (chains, cps, stages) = (i64::from(chains), i64::from(cps), i64::from(stages));
    let vals = i64::from(128 / bits);
    let blocks = cps * vals / 16;
    let xwords = cps * vals * 2 / 16;
    let weights = stages * chains * cps * 16 * 16;
    let acts = stages * chains * xwords * 16;
    let frags = 2 * chains * blocks * 32 * 16;
    let scales = 2 * chains * 16 * i64::from(k / group) * 2;
    let descriptors = chains * (4 * 8 + 4);
    weights + acts + frags + scales + descriptors
}

/// The most warps a cooperative block has: 768 threads, so that the kernels' 32-52
/// registers a thread (ptxas, sm_90) fit a multiprocessor's 64K.
pub(super) const MAX_COOP_WARPS: i32 = 24;

/// Whether the cooperative kernels are used (`ZMLX_CUDA_COOP=0` keeps the classic
/// ones, for A/B runs on a device; both give the same bits). They take 16-row tiles
/// only, so `ZMLX_CUDA_ROWS=8` also selects the classic kernels.
pub(super) fn coop_enabled() -> bool {
    env_choice("ZMLX_CUDA_COOP", &[0, 1], 1) == 1
        && env_choice("ZMLX_CUDA_ROWS", &[8, 16], 16) == 16
}

/// The launch shape for `chains` chains over `k` input features, with `other`
/// bytes of the kernel's own static shared memory, or `None` (use the classic
/// kernel) when the cooperative kernels are off or no ring of three stages fits.
///
/// Defaults: 64 values of K a stage (4 mma blocks), as many stages as fit up to 8
/// (or `ZMLX_CUDA_PIPE`), and one dequantizing warp per (chain, mma block) of a
/// stage besides the chain warps, at most [`MAX_COOP_WARPS`] a block
/// (`ZMLX_CUDA_COOP_UPW` = 2 or 4 gives each dequantizing warp that many units, for
/// fewer warps). `ZMLX_CUDA_CPS` (1, 2, 4, 8) sets the chunks a stage.
pub(super) fn coop_shape(
    bits: i32,
    group: i32,
    k: i32,
    chains: i32,
    other: i64,
) -> Option<CoopShape> {
    if !coop_enabled() || !(1..=8).contains(&chains) {
        return None;
    }
    let vals = 128 / bits;
    let chunks = k / vals;
    let default_cps = (64 / vals).max(1);
    let first_cps = env_choice("ZMLX_CUDA_CPS", &[1, 2, 4, 8], default_cps);
    let cap = env_i32("ZMLX_CUDA_PIPE").map_or(8, |n| n.clamp(3, 8));
    let first_upw = env_choice("ZMLX_CUDA_COOP_UPW", &[1, 2, 4], 1);
    let mut cps = first_cps;
    while cps >= 1 {
        // More stages than the chain has, plus the one being produced, only cost
        // shared memory.
        let needed = (chunks + cps - 1) / cps + 1;
        let mut stages = cap.min(needed).max(3);
        while stages >= 3 {
            if coop_smem(bits, group, k, chains, cps, stages) + other <= CUDA_STATIC_SMEM {
                // Units a dequantizing warp takes: as asked, more if the warps would
                // exceed the cap.
                let units = chains * cps * vals / 16;
                let mut upw = first_upw;
                while chains + (units + upw - 1) / upw > MAX_COOP_WARPS {
                    upw *= 2;
                }
                let warps = chains + (units + upw - 1) / upw;
                return Some(CoopShape { stages, cps, warps });
            }
            stages -= 1;
        }
        cps /= 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coop_smem_counts_every_buffer() {
        // 4-bit, K 2048 in groups of 64, 4 chains, 2 chunks a stage, 6 stages:
        // weights 6*4*2*16*16, activations 6*4*8*16, fragments 2*4*4*32*16,
        // scales and biases 2*4*16*32*2, descriptors 4*36.
        let want = 12288 + 3072 + 16384 + 8192 + 144;
        assert_eq!(coop_smem(4, 64, 2048, 4, 2, 6), want);
    }

    #[test]
    fn coop_shapes_fit_static_shared_memory() {
        // Qwen3-30B-A3B's SwiGLU (4 chains, K 2048) and down (8 chains, K 768), 4- and
        // 8-bit, every group: the shape found fits, with at least three stages.
        for bits in [4, 8] {
            for group in [32, 64, 128] {
                for (chains, k, other) in [(4, 2048, 64), (8, 768, 1280)] {
                    let Some(s) = coop_shape(bits, group, k, chains, other) else {
                        // Only when the environment switched the kernels off.
                        assert!(!coop_enabled());
                        continue;
                    };
                    assert!(
                        s.stages >= 3 && s.warps > chains && s.warps <= MAX_COOP_WARPS,
                        "{s:?}"
                    );
                    let bytes = coop_smem(bits, group, k, chains, s.cps, s.stages) + other;
                    assert!(bytes <= CUDA_STATIC_SMEM, "{bits}/{group}/{k}: {bytes}");
                }
            }
        }
    }

    #[test]
    fn coop_shape_refuses_what_cannot_fit() {
        // K 65536 in groups of 32: the scales alone exceed a block's shared memory.
        assert_eq!(coop_shape(4, 32, 65536, 8, 0), None);
        assert_eq!(coop_shape(4, 64, 2048, 9, 0), None);
    }
}
