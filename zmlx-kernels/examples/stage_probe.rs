//! Device probe (CUDA only): where does a chain of the expert SwiGLU kernel spend its
//! time? The kernel (shaders/cuda/expert_swiglu.cu, the production body) runs with
//! mma.cuh's stage hook defined: lane 0 of every warp stamps `clock64()` before and
//! after each stage's wait for its copies, and at the end of the chain. From the
//! stamps it prints, over the warps, the wait for the first stage (the ring
//! filling), the waits of the later stages (data not there when the chain wanted
//! it), and the time between a stage's data arriving and the next stage's wait
//! (the stage's loads, dequantization and mmas), in cycles.
//!
//! Why: three redesigns that gave each chain more issue slots kept the bits but were
//! not faster (notes/cuda-kernels.md, tenth session); this says whether a chain
//! waits for memory or for its own work.
//!
//! It also stamps the body's start and end (SM cycles and the global ns timer), so
//! the time before the first stage and after the last one shows too.
//!
//! Usage: `stage_probe` on MLX's CUDA backend. Qwen3-30B-A3B's SwiGLU shapes (hidden
//! 2048, intermediate 768, 4-bit groups of 64, bf16), one token routed to 8 experts;
//! ring stages 2, 4 and 7 of 4 chunks and 3 of 8 chunks (what the model used with
//! two tiles a block, until d204f54; 7 of 4 before device run 88). With four tiles a
//! block, the default since, the model's SwiGLU runs 3 stages of 4 chunks.

use mlx::kernel::{CustomKernel, KernelBackend, KernelLaunch, KernelSource, TemplateArg};
use mlx::quantization::{quantize, QuantSpec};
use mlx::{random, Array, Device, Dtype, StreamOrDevice};

/// Stamp slots a warp: two a stage (before and after its wait) and one at the
/// chain's end (so up to 29 stages), then 60..63 for the body's start and end.
const SLOTS: usize = 64;

/// Defined before the prelude: the hook writes lane 0's stamps to `zmlx_probe_out`.
const PROBE_HEADER: &str = r#"
__device__ unsigned long long* zmlx_probe_out;
__device__ __forceinline__ unsigned long long zmlx_globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define ZMLX_PROBE_AT(slot, value)                                                     \
  do {                                                                                 \
    if ((threadIdx.x & 31) == 0) {                                                     \
      const unsigned long long w = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); \
      zmlx_probe_out[w * 64 + (slot)] = (value);                                       \
    }                                                                                  \
  } while (0)
#define ZMLX_STAGE_HOOK(st, phase) ZMLX_PROBE_AT(2 * (st) + (phase), clock64())
"#;

fn main() -> mlx::Result<()> {
    if !mlx::cuda_is_available()? {
        println!("stage_probe: needs MLX's CUDA backend (skipped)");
        return Ok(());
    }
    let s = StreamOrDevice::Device(Device::gpu());
    let (hid, inter, experts, k) = (2048i32, 768i32, 8i32, 8i32);
    let header = format!(
        "{PROBE_HEADER}{}{}",
        include_str!("../../shaders/cuda/prelude.cuh"),
        include_str!("../../shaders/cuda/mma.cuh")
    );
    // Slots 60, 61: the body's start (global ns timer, SM cycles); 62, 63: its end.
    let body = format!(
        "zmlx_probe_out = reinterpret_cast<unsigned long long*>(probe_out);\n\
         ZMLX_PROBE_AT(60, zmlx_globaltimer());\nZMLX_PROBE_AT(61, clock64());\n{{\n{}{}}}\n\
         ZMLX_PROBE_AT(63, clock64());\nZMLX_PROBE_AT(62, zmlx_globaltimer());\n",
        include_str!("../../shaders/cuda/swiglu_ids.cu"),
        include_str!("../../shaders/cuda/expert_swiglu.cu")
    );
    let kernel = CustomKernel::new(
        KernelBackend::Cuda,
        &KernelSource {
            name: "zmlx_stage_probe",
            input_names: &[
                "x_in",
                "expert_ids",
                "dims_in",
                "w_gate",
                "s_gate",
                "b_gate",
                "w_up",
                "s_up",
                "b_up",
            ],
            output_names: &["h_out", "probe_out"],
            source: &body,
            header: &header,
            ensure_row_contiguous: true,
            atomic_outputs: false,
            shared_memory: 0,
        },
    )?;
    let spec = QuantSpec::affine(64, 4);
    let weight = |seed: u64| -> mlx::Result<_> {
        let key = random::key(seed)?;
        let w = random::normal(
            &[experts, inter, hid],
            Dtype::Bfloat16,
            0.0,
            0.02,
            Some(&key),
            s,
        )?;
        quantize(&w, spec, s)
    };
    let (gate, up) = (weight(1)?, weight(2)?);
    let key = random::key(3)?;
    let x = random::normal(&[1, hid], Dtype::Bfloat16, 0.0, 1.0, Some(&key), s)?;
    let ids = Array::from_slice(&(0..k as u32).collect::<Vec<u32>>(), &[1, k])?;
    let dims = Array::from_slice(&[k as u32, k as u32, experts as u32], &[3])?;
    let missing = || mlx::Error::invalid("stage_probe", "affine weights without biases");
    let (gb, ub) = (
        gate.biases.as_ref().ok_or_else(missing)?,
        up.biases.as_ref().ok_or_else(missing)?,
    );
    let tpb = 2;
    let tiles = k * inter / 16;
    let blocks = tiles / tpb;
    let warps = (blocks * 2 * tpb) as usize;
    // (stages, chunks a stage): the model's ring is (3, 8) since device run 88,
    // (7, 4) before it (ZMLX_CUDA_CPS=4).
    for (pipe, cps) in [(2, 4), (4, 4), (7, 4), (3, 8)] {
        let targs = [
            ("T", TemplateArg::Dtype(Dtype::Bfloat16)),
            ("BITS", TemplateArg::Int(4)),
            ("GROUP", TemplateArg::Int(64)),
            ("HID", TemplateArg::Int(hid)),
            ("INTER", TemplateArg::Int(inter)),
            ("DEQ", TemplateArg::Int(2)),
            ("PIPE", TemplateArg::Int(pipe)),
            ("TPB", TemplateArg::Int(tpb)),
            ("ROWS", TemplateArg::Int(16)),
            ("CPS", TemplateArg::Int(cps)),
        ];
        let mut stamps = Vec::new();
        // The first call compiles; the last one's stamps are reported.
        for _ in 0..5 {
            let out = kernel.call(
                &KernelLaunch {
                    inputs: &[
                        &x,
                        &ids,
                        &dims,
                        &gate.weight,
                        &gate.scales,
                        gb,
                        &up.weight,
                        &up.scales,
                        ub,
                    ],
                    outputs: &[
                        (&[k, 1, inter], Dtype::Bfloat16),
                        (&[(warps * SLOTS) as i32], Dtype::Uint64),
                    ],
                    grid: [blocks * 64 * tpb, 1, 1],
                    threadgroup: [64 * tpb, 1, 1],
                    template_args: &targs,
                    // Outputs filled on the GPU first: the stamps' buffer is then
                    // resident there (MLX's memory is unified; a buffer the host read
                    // before would fault on the kernel's first store).
                    init_value: Some(0.0),
                    verbose: false,
                },
                s,
            )?;
            stamps = out[1].to_vec::<u64>()?;
        }
        report(pipe, cps, &stamps, warps, (hid / 32 / cps) as usize);
    }
    Ok(())
}

/// Per-warp phases from the stamps of `warps` warps with `nst` stages each.
fn report(pipe: i32, cps: i32, stamps: &[u64], warps: usize, nst: usize) {
    let at = |w: usize, i: usize| stamps[w * SLOTS + i] as i64;
    let (mut fill, mut waits, mut work, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut pro, mut epi, mut skew, mut span) = (vec![], vec![], vec![], vec![]);
    let t0 = (0..warps).map(|w| at(w, 60)).min().unwrap_or(0);
    let t1 = (0..warps).map(|w| at(w, 62)).max().unwrap_or(0);
    for w in 0..warps {
        pro.push(at(w, 0) - at(w, 61));
        epi.push(at(w, 63) - at(w, 2 * nst));
        skew.push(at(w, 60) - t0);
        span.push(at(w, 62) - at(w, 60));
    }
    let mut stage_wait = vec![vec![]; nst];
    let mut stage_work = vec![vec![]; nst];
    for w in 0..warps {
        let first = at(w, 0);
        fill.push(at(w, 1) - first);
        let (mut wt, mut wk) = (0, 0);
        for st in 0..nst {
            let wait = at(w, 2 * st + 1) - at(w, 2 * st);
            let next = if st + 1 < nst {
                at(w, 2 * st + 2)
            } else {
                at(w, 2 * nst)
            };
            let body = next - at(w, 2 * st + 1);
            stage_wait[st].push(wait);
            stage_work[st].push(body);
            if st > 0 {
                wt += wait;
            }
            wk += body;
        }
        waits.push(wt);
        work.push(wk);
        total.push(at(w, 2 * nst) - first);
    }
    println!(
        "stage_probe PIPE={pipe} CPS={cps}: {warps} warps x {nst} stages, cycles a warp (median / p90): total {}, first wait (fill) {}, later waits {}, stage work {}",
        spread(&mut total),
        spread(&mut fill),
        spread(&mut waits),
        spread(&mut work)
    );
    println!(
        "  kernel body span {} ns (first start to last end); a warp (median / p90): body {} ns, start after the first warp's {} ns, before the first stage {} cycles, after the last stage {} cycles",
        t1 - t0,
        spread(&mut span),
        spread(&mut skew),
        spread(&mut pro),
        spread(&mut epi)
    );
    let per_stage: Vec<String> = (0..nst)
        .map(|st| {
            format!(
                "{}:{}/{}",
                st,
                median(&mut stage_wait[st]),
                median(&mut stage_work[st])
            )
        })
        .collect();
    println!("  per stage (median wait / work): {}", per_stage.join(" "));
}

/// The median of `v` (sorted in place; `v` is not empty).
fn median(v: &mut [i64]) -> i64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// "median / 90th percentile" of `v` (sorted in place; `v` is not empty).
fn spread(v: &mut [i64]) -> String {
    v.sort_unstable();
    format!("{} / {}", v[v.len() / 2], v[v.len() * 9 / 10])
}
