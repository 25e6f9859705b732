//! Decode-shape benchmarks of the CPU kernels against the machine's memory floor.
//!
//! Run: `cargo bench -p zmlx-kernels --bench cpu_kernels` (set `ZMLX_CPU_SIMD=portable`
//! or `avx2` to compare levels, `ZMLX_CPU_PRECISION=f32` for the f32-accumulating
//! quantized kernels instead of the MLX-exact ones). Shapes are Qwen3-30B-A3B's: hidden 2048, 128 experts,
//! top-8, moe_intermediate 768, vocabulary 151936; 4-bit, group size 64, bf16.
//!
//! The floor of an op is the bytes it must read (packed weights, scales, biases,
//! activations) divided by the multi-threaded read bandwidth measured here by summing
//! a 1 GiB buffer. Expert benchmarks draw a fresh random top-8 every iteration so that
//! the experts' weights (225 MiB in all) come from memory, not from the last-level
//! cache, as in a real decode.

use std::hint::black_box;
use std::time::{Duration, Instant};

use half::{bf16, f16};
use rayon::prelude::*;
use zmlx_kernels::cpu::{
    current_precision, expert_down_combine, expert_swiglu, qmm, simd, Floats, FloatsMut, QuantSpec,
    WeightShape, Weights,
};

const HIDDEN: usize = 2048;
const VOCAB: usize = 151_936;
const EXPERTS: usize = 128;
const TOP_K: usize = 8;
const INTER: usize = 768;
const BITS: u32 = 4;
const GS: usize = 64;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn f(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// A quantized `[experts, rows, cols]` weight in bf16 scales and biases.
struct QWeight {
    packed: Vec<u32>,
    scales: Vec<bf16>,
    biases: Vec<bf16>,
    shape: WeightShape,
}

impl QWeight {
    fn random(rng: &mut Rng, experts: usize, rows: usize, cols: usize) -> Self {
        let words = experts * rows * cols * BITS as usize / 32;
        let groups = experts * rows * cols / GS;
        // Filled in parallel: the lm_head alone is 150 MiB of words.
        let packed: Vec<u32> = (0..words)
            .into_par_iter()
            .map(|i| (i as u32).wrapping_mul(2_654_435_761) ^ 0x5bd1_e995)
            .collect();
        Self {
            packed,
            scales: (0..groups)
                .map(|_| bf16::from_f32(rng.f(0.002, 0.03)))
                .collect(),
            biases: (0..groups)
                .map(|_| bf16::from_f32(rng.f(-0.1, 0.1)))
                .collect(),
            shape: WeightShape::stacked(experts, rows, cols),
        }
    }
    fn weights(&self) -> Weights<'_> {
        let spec = QuantSpec::new(BITS, GS).expect("valid spec");
        Weights::quantized(
            &self.packed,
            Floats::Bf16(&self.scales),
            Floats::Bf16(&self.biases),
            self.shape,
            spec,
        )
        .expect("valid weights")
    }
    /// Bytes of one `[rows, cols]` matrix (packed + scales + biases).
    fn matrix_bytes(&self) -> usize {
        let per = self.shape.rows * self.shape.cols;
        per * BITS as usize / 8 + 2 * 2 * per / GS
    }
}

/// Median and minimum of `iters` timed runs after one warm-up.
fn time(iters: usize, mut f: impl FnMut(usize)) -> (Duration, Duration) {
    f(usize::MAX);
    let mut t: Vec<Duration> = (0..iters)
        .map(|i| {
            let s = Instant::now();
            f(i);
            s.elapsed()
        })
        .collect();
    t.sort();
    (t[t.len() / 2], t[0])
}

/// Read bandwidth in bytes/s: best of a few sums of a 1 GiB buffer.
fn bandwidth(parallel: bool) -> f64 {
    let n = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..n).into_par_iter().map(|i| i as u64).collect();
    let (_, best) = time(5, |_| {
        let s: u64 = if parallel {
            buf.par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
                .reduce(|| 0, u64::wrapping_add)
        } else {
            buf.iter().fold(0u64, |a, &b| a.wrapping_add(b))
        };
        black_box(s);
    });
    (n * 8) as f64 / best.as_secs_f64()
}

fn report(name: &str, bytes: usize, bw: f64, (med, min): (Duration, Duration)) {
    let floor = bytes as f64 / bw;
    println!(
        "{name:<34} {:>9.3} ms median {:>9.3} ms min | reads {:>7.2} MiB, floor {:>7.3} ms, \
         median/floor {:>5.2}x",
        med.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        bytes as f64 / (1 << 20) as f64,
        floor * 1e3,
        med.as_secs_f64() / floor
    );
}

/// `count` sets of TOP_K distinct experts.
fn selections(rng: &mut Rng, count: usize) -> Vec<Vec<u32>> {
    (0..count)
        .map(|_| {
            let mut pool: Vec<u32> = (0..EXPERTS as u32).collect();
            for j in 0..TOP_K {
                let pick = j + (rng.next() as usize) % (EXPERTS - j);
                pool.swap(j, pick);
            }
            pool[..TOP_K].to_vec()
        })
        .collect()
}

fn main() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let t = std::time::Instant::now();
    let form = simd::current_bf16_decode();
    println!(
        "threads {}, SIMD level {:?}, precision {}, bf16 decode form {} (picked in {:.2} ms)",
        rayon::current_num_threads(),
        simd::current_level(),
        current_precision().name(),
        form.name(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let hot_only = std::env::var("ZMLX_BENCH_HOT_ONLY").is_ok_and(|v| v == "1");
    let bw1 = if hot_only {
        1.0
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        pool.install(|| bandwidth(false))
    };
    let bw = if hot_only { 1.0 } else { bandwidth(true) };
    println!(
        "read bandwidth: 1 thread {:.2} GB/s, all threads {:.2} GB/s (floors use the latter)",
        bw1 / 1e9,
        bw / 1e9
    );

    // Kernel throughput with the weights in cache (4096 x 2048 at 4 bits = 4 MiB):
    // what the row kernel costs when memory is not the limit.
    for threads in [1, rayon::current_num_threads()] {
        let w = QWeight::random(&mut rng, 1, 4096, HIDDEN);
        let x: Vec<bf16> = (0..HIDDEN)
            .map(|_| bf16::from_f32(rng.f(-1.0, 1.0)))
            .collect();
        let mut y = vec![bf16::ZERO; 4096];
        let wt = w.weights();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let (med, _) = pool.install(|| {
            time(200, |_| {
                qmm(Floats::Bf16(&x), 1, &wt, FloatsMut::Bf16(&mut y)).expect("qmm");
            })
        });
        println!(
            "hot-cache qmm 1x2048 @ 4096x2048, {threads} thread(s): {:.3} ms = {:.2} GB/s of weights",
            med.as_secs_f64() * 1e3,
            w.matrix_bytes() as f64 / med.as_secs_f64() / 1e9
        );
    }

    // The same hot-cache qmm with f16 and f32 activations/scales (1 thread): the other
    // exact chains, which must not get slower when the bf16 path changes.
    {
        let w = QWeight::random(&mut rng, 1, 4096, HIDDEN);
        let spec = QuantSpec::new(BITS, GS).expect("valid spec");
        let xb: Vec<f32> = (0..HIDDEN).map(|_| rng.f(-1.0, 1.0)).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let widen = |v: &[bf16]| v.iter().map(|s| s.to_f32()).collect::<Vec<f32>>();
        let (s32, b32) = (widen(&w.scales), widen(&w.biases));
        let (s16, b16): (Vec<f16>, Vec<f16>) = (
            s32.iter().map(|&v| f16::from_f32(v)).collect(),
            b32.iter().map(|&v| f16::from_f32(v)).collect(),
        );
        let x16: Vec<f16> = xb.iter().map(|&v| f16::from_f32(v)).collect();
        let (mut y32, mut y16) = (vec![0.0f32; 4096], vec![f16::ZERO; 4096]);
        let w32 = Weights::quantized(
            &w.packed,
            Floats::F32(&s32),
            Floats::F32(&b32),
            w.shape,
            spec,
        )
        .expect("valid weights");
        let w16 = Weights::quantized(
            &w.packed,
            Floats::F16(&s16),
            Floats::F16(&b16),
            w.shape,
            spec,
        )
        .expect("valid weights");
        let (m32, _) = pool.install(|| {
            time(100, |_| {
                qmm(Floats::F32(&xb), 1, &w32, FloatsMut::F32(&mut y32)).expect("qmm");
            })
        });
        let (m16, _) = pool.install(|| {
            time(100, |_| {
                qmm(Floats::F16(&x16), 1, &w16, FloatsMut::F16(&mut y16)).expect("qmm");
            })
        });
        println!(
            "hot-cache qmm 1x2048 @ 4096x2048, 1 thread: f32 {:.3} ms, f16 {:.3} ms",
            m32.as_secs_f64() * 1e3,
            m16.as_secs_f64() * 1e3
        );
    }

    // `ZMLX_BENCH_HOT_ONLY=1`: stop after the hot-cache numbers (quick A/B of kernels).
    if hot_only {
        return;
    }

    // lm_head: 1 x 2048 @ [151936 x 2048]^T.
    {
        let w = QWeight::random(&mut rng, 1, VOCAB, HIDDEN);
        let x: Vec<bf16> = (0..HIDDEN)
            .map(|_| bf16::from_f32(rng.f(-1.0, 1.0)))
            .collect();
        let mut y = vec![bf16::ZERO; VOCAB];
        let wt = w.weights();
        let t = time(15, |_| {
            qmm(Floats::Bf16(&x), 1, &wt, FloatsMut::Bf16(&mut y)).expect("qmm");
        });
        let bytes = w.matrix_bytes() + HIDDEN * 2 + VOCAB * 2;
        report("qmm lm_head 1x2048 @ 151936x2048", bytes, bw, t);
    }

    // Expert gate/up SwiGLU and down+combine, one token, top-8 of 128.
    let gate = QWeight::random(&mut rng, EXPERTS, INTER, HIDDEN);
    let up = QWeight::random(&mut rng, EXPERTS, INTER, HIDDEN);
    let down = QWeight::random(&mut rng, EXPERTS, HIDDEN, INTER);
    let sels = selections(&mut rng, 64);
    {
        let x: Vec<bf16> = (0..HIDDEN)
            .map(|_| bf16::from_f32(rng.f(-1.0, 1.0)))
            .collect();
        let mut h = vec![bf16::ZERO; TOP_K * INTER];
        let (wg, wu) = (gate.weights(), up.weights());
        let t = time(40, |i| {
            let idx = &sels[i % sels.len()];
            expert_swiglu(
                Floats::Bf16(&x),
                1,
                idx,
                TOP_K,
                &wg,
                &wu,
                FloatsMut::Bf16(&mut h),
            )
            .expect("swiglu");
        });
        let bytes = TOP_K * 2 * gate.matrix_bytes() + HIDDEN * 2 + TOP_K * INTER * 2;
        report("expert SwiGLU top-8 2048->768", bytes, bw, t);
    }
    {
        let h: Vec<bf16> = (0..TOP_K * INTER)
            .map(|_| bf16::from_f32(rng.f(-1.0, 1.0)))
            .collect();
        let scores: Vec<bf16> = (0..TOP_K).map(|_| bf16::from_f32(0.125)).collect();
        let mut y = vec![bf16::ZERO; HIDDEN];
        let wd = down.weights();
        let t = time(40, |i| {
            let idx = &sels[i % sels.len()];
            expert_down_combine(
                Floats::Bf16(&h),
                1,
                idx,
                TOP_K,
                Floats::Bf16(&scores),
                &wd,
                FloatsMut::Bf16(&mut y),
            )
            .expect("down");
        });
        let bytes = TOP_K * down.matrix_bytes() + TOP_K * INTER * 2 + HIDDEN * 2;
        report("expert down+combine top-8 768->2048", bytes, bw, t);
    }

    // Prefill shapes (compute-bound; no floor comparison intended).
    {
        let tokens = 128;
        let x: Vec<bf16> = (0..tokens * HIDDEN)
            .map(|_| bf16::from_f32(rng.f(-1.0, 1.0)))
            .collect();
        let idx: Vec<u32> = selections(&mut rng, tokens).concat();
        let mut h = vec![bf16::ZERO; tokens * TOP_K * INTER];
        let (wg, wu) = (gate.weights(), up.weights());
        let (med, _) = time(3, |_| {
            expert_swiglu(
                Floats::Bf16(&x),
                tokens,
                &idx,
                TOP_K,
                &wg,
                &wu,
                FloatsMut::Bf16(&mut h),
            )
            .expect("swiglu");
        });
        let flops = 2.0 * 2.0 * (tokens * TOP_K * INTER * HIDDEN) as f64;
        println!(
            "prefill expert SwiGLU T={tokens} top-8:    {:>9.3} ms median ({:.1} GFLOP/s)",
            med.as_secs_f64() * 1e3,
            flops / med.as_secs_f64() / 1e9
        );
    }
}
