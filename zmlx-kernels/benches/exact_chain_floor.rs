//! Lower bound on the CPU time of MLX's bit-exact bf16 quantized-matmul chain on this
//! machine, set against the memory floor of Qwen3-30B-A3B's decode matmuls.
//!
//! Run: `cargo bench -p zmlx-kernels --bench exact_chain_floor` (about 55 s; x86_64 with
//! AVX512F, AVX512BW and AVX512_BF16 only, elsewhere it prints that it is skipped).
//!
//! What MLX computes for one output row (`T()` = round the f32 result to bf16, nearest
//! even; see `notes/cpu-kernels.md`, "Exactness contract"): `w = T(T(scale*q) + bias)`,
//! `p = T(x*w)`, `acc = T(acc + p)`, sequentially over k from `acc = 0`. The k chain
//! cannot be split or reassociated, so a vector kernel puts output ROWS in its lanes
//! (16 per zmm) and walks k one step at a time.
//!
//! What it measures: the throughput of the per-element steps alone, `p = T(x*w)` and
//! `acc = T(acc + p)`, and in a second set (`dq+`) the same with the dequantisation
//! `w = T(T(scale*q) + bias)` done as `chain16_bf16_dp` does it, with every operand
//! already in registers: no weight loads, no transposes, no scale/bias widening, no
//! activation broadcasts, no stores. Each step is inline assembly, so the instructions
//! timed are exactly the ones listed below (the compiler only allocates registers).
//! Independent chains (4, 8, 12, 16 pairs of vectors = 128-512 rows) hide the latency
//! of each chain's dependent `vdpbf16ps -> vcvtne2ps2bf16 -> ...` steps, so the figure
//! is a throughput; `dq+current` also runs 2 pairs, the kernel's own decode setting
//! (four 16-row blocks). From 12 pairs on (4 with `dq+`, which keeps a w per pair) the
//! state and the constants outgrow the 32 zmm registers and the compiler spills some
//! of them to the stack (a few L1 accesses per step at 4 `dq+` pairs, about 2 per pair
//! at 16 pairs). Everything runs on 1 and on 2 threads (the same work per thread).
//!
//! Forms of one k step for 32 rows (a "pair"; `dp` = `vdpbf16ps`, `cvt` =
//! `vcvtne2ps2bf16`; `dp` with a selector holding bf16 1.0 or x in one word of each
//! dword and 0 in the other adds or multiplies one packed bf16 word with a single f32
//! rounding, the product being exact in f32; `cvt` rounds 32 f32 values to packed
//! bf16; each `dp` into a fresh register also takes a `vpxord` zeroing idiom):
//! - `current` (`chain16_bf16_dp` today): 2 `dp` from zero (x*w), `cvt`, 2 `dp` into the
//!   f32 accumulators, `cvt`, `vmovdqa64` + 2 `vpermt2w` to widen the rounded
//!   accumulators back to f32. Rows stay in their lanes.
//! - `fused`: the accumulator stays packed, in one register per 16 rows together with
//!   the NEXT step's rounded products (`[T(p) x16 | acc x16]`); `vpermw` pairs word d
//!   with word 16 + d, `dp` with 1.0 in both words adds them, and one `cvt` rounds the
//!   16 sums together with the 16 next products. Per 32 rows: 2 `vpermw`, 4 `dp`, 2
//!   `cvt`. Rows stay in their lanes, so a real kernel could use it as is.
//! - `pair`: as `fused`, but the accumulators and the products are packed in separate
//!   registers and paired by the in-lane `vpunpck{l,h}wd` (cheaper than the
//!   cross-lane `vpermw` here). Per 32 rows: 2 `vpunpck`, 4 `dp`, 2 `cvt`. The unpack
//!   moves rows between lanes (a permutation of period 3 in k), so the weights would
//!   have to arrive in a layout that rotates with k: this bound takes that as free.
//!
//! `dq+` also dequantises the 32 rows' w like `chain16_bf16_dp`: 2 `vpermps` (codes to
//! f32 through the table 0..15), 2 `vpsrld` (next code), 2 `vmulps` (scale), `cvt`,
//! 2 `vmovaps` + 2 `dp` (+ bias, one f32 rounding), `cvt`; one step ahead of its use
//! (about 10% faster than right before it, the kernel's order).
//!
//! Why it is a lower bound: per 32 weight elements any bit-exact kernel must make 32
//! f32 products and 32 f32 sums (no instruction yields more than 16 f32 lanes: 4
//! instructions) and 64 roundings to bf16 (`cvt` does 32 per instruction: 2; the
//! integer form needs 4 operations per 16 values, see the notes), and the rounded
//! accumulator must be moved to where the next sum can read it (2 shuffles in every
//! form found: `dp` reads f32 only as its accumulator, bf16 only in dword pairs). The
//! forms above do exactly that and nothing else, in registers; a real kernel also
//! loads, transposes and dequantises (the `dq+` set shows the latter as done today),
//! widens scales and biases, broadcasts activations, stores and waits for memory, so
//! it can only be slower. Not covered: sequences nobody has found yet, other
//! instruction sets (no AVX512-FP16 here, and it rounds to f16 anyway), the
//! denormal/NaN fallback kernels, and the cost of the rotating layout of `pair`.
//!
//! One such sequence was found later: rounding by Veltkamp splitting in f32 arithmetic
//! (`chain16_bf16_split`, notes/cpu-kernels.md), three operations per 16 values (two
//! where the value is an exact product) and no shuffle, since the rounded accumulator
//! stays an f32 in its lane. It falls outside the argument above, so this bench bounds
//! only the forms built on the bf16 instructions; it does not time the split form.
//!
//! Before timing, each form (with and without `dq+`) runs on random normal-range
//! inputs (300 trials of 16 k steps for 32 rows) and every row's accumulator is
//! compared bit for bit with a scalar emulation of MLX's chain after every step; any
//! difference aborts the run. The memory floor of an op is its bytes (4-bit codes and a
//! bf16 scale and bias per group of 64) over the 2-thread read bandwidth (sum of a
//! 1 GiB buffer), the target is twice that, and a form's bound is the op's weight
//! elements over the form's best 2-thread element rate.

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        if imp::supported() {
            imp::run();
            return;
        }
    }
    println!("exact_chain_floor: skipped (needs x86_64 with AVX512F, AVX512BW and AVX512_BF16)");
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::asm;
    use core::arch::x86_64::*;
    use std::hint::black_box;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    /// Rows per pair of vectors (two zmm of 16 f32 lanes, or one of 32 bf16 words).
    const ROWS: usize = 32;
    /// Chain forms (see the module documentation).
    const CURRENT: u8 = 0;
    const FUSED: u8 = 1;
    const PAIR: u8 = 2;
    /// bf16 1.0.
    const ONE: u32 = 0x3F80;
    /// Seconds per timed repetition, and repetitions per measurement.
    const REP_SECS: f64 = 0.2;
    const REPS: usize = 5;

    pub fn supported() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
    }

    /// Loop-invariant registers of every form.
    #[derive(Clone, Copy)]
    struct Regs {
        /// bf16 1.0 in the even (low) word of each dword, 0 in the odd one.
        one_e: __m512i,
        /// bf16 1.0 in the odd (high) word.
        one_o: __m512i,
        /// bf16 1.0 in both words.
        ones: __m512i,
        /// `vpermt2w` tables of `chain16_bf16_dp`: lane i gets word i (or 16 + i) in its
        /// high half and word 0 of the zero operand (index 32) in its low half.
        widen: [__m512i; 2],
        /// `vpermw` indices of `fused`: dword d = (word d, word 16 + d).
        pair_idx: __m512i,
        /// f32 0..15 (`vpermps` looks the low 4 bits of each code lane up in it).
        table: __m512,
        zero: __m512i,
    }

    impl Regs {
        /// # Safety
        /// AVX512F available.
        #[target_feature(enable = "avx512f")]
        unsafe fn new() -> Self {
            let mut widen = [[32u16; 32]; 2];
            let mut pair_idx = [0u16; 32];
            for i in 0..16 {
                widen[0][2 * i + 1] = i as u16;
                widen[1][2 * i + 1] = 16 + i as u16;
                pair_idx[2 * i] = i as u16;
                pair_idx[2 * i + 1] = 16 + i as u16;
            }
            let table: [f32; 16] = core::array::from_fn(|i| i as f32);
            Regs {
                one_e: _mm512_set1_epi32(ONE as i32),
                one_o: _mm512_set1_epi32((ONE << 16) as i32),
                ones: _mm512_set1_epi32((ONE | ONE << 16) as i32),
                widen: [
                    _mm512_loadu_si512(widen[0].as_ptr().cast()),
                    _mm512_loadu_si512(widen[1].as_ptr().cast()),
                ],
                pair_idx: _mm512_loadu_si512(pair_idx.as_ptr().cast()),
                table: _mm512_loadu_ps(table.as_ptr()),
                zero: _mm512_setzero_si512(),
            }
        }
    }

    /// The activation of one k step as `dp` selectors: x in the even word (`e`, picks
    /// the even words of the packed w) or in the odd word (`o`).
    #[derive(Clone, Copy)]
    struct Xsel {
        e: __m512i,
        o: __m512i,
    }

    impl Xsel {
        /// # Safety
        /// AVX512F available.
        #[target_feature(enable = "avx512f")]
        unsafe fn new(x: u16) -> Self {
            Xsel {
                e: _mm512_set1_epi32(x as i32),
                o: _mm512_set1_epi32(((x as u32) << 16) as i32),
            }
        }
    }

    /// One k step of `current` for 32 rows: `acc` = the two f32 accumulator vectors
    /// (rows in lanes, bf16 values widened), `wp` = the 32 rows' w packed.
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 available.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn step_current(acc: &mut [__m512i; 2], wp: __m512i, x: &Xsel, r: &Regs) {
        asm!(
            // p = x * w, exact in f32 (the other word times 0 adds an exact zero).
            "vpxord {pe:x}, {pe:x}, {pe:x}",
            "vpxord {po:x}, {po:x}, {po:x}",
            "vdpbf16ps {pe}, {w}, {xe}",
            "vdpbf16ps {po}, {w}, {xo}",
            // T(p), packed.
            "vcvtne2ps2bf16 {pe}, {po}, {pe}",
            // acc + T(p), one f32 rounding.
            "vdpbf16ps {ae}, {pe}, {one_e}",
            "vdpbf16ps {ao}, {pe}, {one_o}",
            // T(acc), packed, then widened back to f32 lanes.
            "vcvtne2ps2bf16 {ao}, {ao}, {ae}",
            "vmovdqa64 {ae}, {ao}",
            "vpermt2w {ae}, {wid0}, {zero}",
            "vpermt2w {ao}, {wid1}, {zero}",
            ae = inout(zmm_reg) acc[0],
            ao = inout(zmm_reg) acc[1],
            pe = out(zmm_reg) _,
            po = out(zmm_reg) _,
            w = in(zmm_reg) wp,
            xe = in(zmm_reg) x.e,
            xo = in(zmm_reg) x.o,
            one_e = in(zmm_reg) r.one_e,
            one_o = in(zmm_reg) r.one_o,
            wid0 = in(zmm_reg) r.widen[0],
            wid1 = in(zmm_reg) r.widen[1],
            zero = in(zmm_reg) r.zero,
            options(nomem, nostack, preserves_flags),
        );
    }

    /// One step of `fused` for 32 rows: `q[g]` holds, for the 16 rows of group g, the
    /// rounded products of this step in words 0..16 and the accumulators in words
    /// 16..32 (row d at words d and 16 + d); `wp` holds the NEXT step's w (group 0 in the
    /// even words, group 1 in the odd ones), whose rounded products replace words 0..16.
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 available.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn step_fused(q: &mut [__m512i; 2], wp: __m512i, x: &Xsel, r: &Regs) {
        asm!(
            // (T(p), acc) of each row in one dword; acc + T(p) with one rounding.
            "vpermw {t0}, {idx}, {qa}",
            "vpermw {t1}, {idx}, {qb}",
            "vpxord {s0:x}, {s0:x}, {s0:x}",
            "vpxord {s1:x}, {s1:x}, {s1:x}",
            "vdpbf16ps {s0}, {t0}, {ones}",
            "vdpbf16ps {s1}, {t1}, {ones}",
            // The next step's x * w.
            "vpxord {t0:x}, {t0:x}, {t0:x}",
            "vpxord {t1:x}, {t1:x}, {t1:x}",
            "vdpbf16ps {t0}, {w}, {xe}",
            "vdpbf16ps {t1}, {w}, {xo}",
            // One rounding instruction for 16 sums and 16 products.
            "vcvtne2ps2bf16 {qa}, {s0}, {t0}",
            "vcvtne2ps2bf16 {qb}, {s1}, {t1}",
            qa = inout(zmm_reg) q[0],
            qb = inout(zmm_reg) q[1],
            t0 = out(zmm_reg) _,
            t1 = out(zmm_reg) _,
            s0 = out(zmm_reg) _,
            s1 = out(zmm_reg) _,
            w = in(zmm_reg) wp,
            xe = in(zmm_reg) x.e,
            xo = in(zmm_reg) x.o,
            ones = in(zmm_reg) r.ones,
            idx = in(zmm_reg) r.pair_idx,
            options(nomem, nostack, preserves_flags),
        );
    }

    /// One step of `pair` for 32 rows: `s[0]` = the 32 accumulators packed, `s[1]` = this
    /// step's rounded products packed in the same word layout; `wp` = the next step's w.
    /// The new accumulators and products come back in a permuted layout (see
    /// [`Layout::pair`]).
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 available.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn step_pair(s: &mut [__m512i; 2], wp: __m512i, x: &Xsel, r: &Regs) {
        asm!(
            "vpunpcklwd {lo}, {a}, {p}",
            "vpunpckhwd {hi}, {a}, {p}",
            "vpxord {s0:x}, {s0:x}, {s0:x}",
            "vpxord {s1:x}, {s1:x}, {s1:x}",
            "vdpbf16ps {s0}, {lo}, {ones}",
            "vdpbf16ps {s1}, {hi}, {ones}",
            "vpxord {lo:x}, {lo:x}, {lo:x}",
            "vpxord {hi:x}, {hi:x}, {hi:x}",
            "vdpbf16ps {lo}, {w}, {xe}",
            "vdpbf16ps {hi}, {w}, {xo}",
            "vcvtne2ps2bf16 {a}, {s1}, {s0}",
            "vcvtne2ps2bf16 {p}, {hi}, {lo}",
            a = inout(zmm_reg) s[0],
            p = inout(zmm_reg) s[1],
            lo = out(zmm_reg) _,
            hi = out(zmm_reg) _,
            s0 = out(zmm_reg) _,
            s1 = out(zmm_reg) _,
            w = in(zmm_reg) wp,
            xe = in(zmm_reg) x.e,
            xo = in(zmm_reg) x.o,
            ones = in(zmm_reg) r.ones,
            options(nomem, nostack, preserves_flags),
        );
    }

    /// Dequantises one k step of 32 rows as `chain16_bf16_dp` does; returns w packed
    /// and the codes shifted down to the next step. `words[v]` = the 4-bit codes of
    /// vector v's 16 rows (low nibble = this step), `scale[v]` their scales (f32),
    /// `bias` the biases in the layout of the bias stage's even and odd halves. The
    /// shift writes a new register (the kernel shifts in place) so that the timing loop
    /// can drop it without a copy per pair.
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 available.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn dequant(
        words: &[__m512i; 2],
        scale: &[__m512; 2],
        bias: &[__m512; 2],
        r: &Regs,
    ) -> (__m512i, [__m512i; 2]) {
        let (wp, n0, n1): (__m512i, __m512i, __m512i);
        asm!(
            // q as f32, then scale * q (exact: an 8-bit significand times q <= 15).
            "vpermps {q0}, {wd0}, {table}",
            "vpermps {q1}, {wd1}, {table}",
            "vpsrld {n0}, {wd0}, 4",
            "vpsrld {n1}, {wd1}, 4",
            "vmulps {q0}, {q0}, {s0}",
            "vmulps {q1}, {q1}, {s1}",
            // T(scale * q) + bias with one f32 rounding, then T().
            "vcvtne2ps2bf16 {q0}, {q1}, {q0}",
            "vmovaps {te}, {be}",
            "vmovaps {to}, {bo}",
            "vdpbf16ps {te}, {q0}, {one_e}",
            "vdpbf16ps {to}, {q0}, {one_o}",
            "vcvtne2ps2bf16 {wp}, {to}, {te}",
            wd0 = in(zmm_reg) words[0],
            wd1 = in(zmm_reg) words[1],
            n0 = out(zmm_reg) n0,
            n1 = out(zmm_reg) n1,
            q0 = out(zmm_reg) _,
            q1 = out(zmm_reg) _,
            te = out(zmm_reg) _,
            to = out(zmm_reg) _,
            wp = out(zmm_reg) wp,
            s0 = in(zmm_reg) scale[0],
            s1 = in(zmm_reg) scale[1],
            be = in(zmm_reg) bias[0],
            bo = in(zmm_reg) bias[1],
            table = in(zmm_reg) r.table,
            one_e = in(zmm_reg) r.one_e,
            one_o = in(zmm_reg) r.one_o,
            options(nomem, nostack, preserves_flags),
        );
        (wp, [n0, n1])
    }

    /// One k step of form `FORM` (with the dequantisation when `DQ`) for one pair.
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 available.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn step<const FORM: u8>(s: &mut [__m512i; 2], wp: __m512i, x: &Xsel, r: &Regs) {
        match FORM {
            CURRENT => step_current(s, wp, x, r),
            FUSED => step_fused(s, wp, x, r),
            _ => step_pair(s, wp, x, r),
        }
    }

    /// What the timing loop keeps in registers (values are arbitrary normal numbers).
    #[derive(Clone, Copy)]
    struct Inputs {
        regs: Regs,
        x: Xsel,
        wp: __m512i,
        words: [__m512i; 2],
        scale: [__m512; 2],
        bias: [__m512; 2],
    }

    /// `iters` k steps of `P` independent pairs, everything in registers. With `DQ`
    /// every pair dequantises from the same code registers and drops the shifted
    /// codes, so the shift costs its instruction but makes no chain across pairs.
    /// (The values are constant; the instructions cannot tell.)
    ///
    /// # Safety
    /// AVX512F, AVX512BW and AVX512_BF16 available.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn spin<const FORM: u8, const DQ: bool, const P: usize>(
        iters: u64,
        inp: &Inputs,
    ) -> [[__m512i; 2]; P] {
        const { assert!(P <= 16, "the unrolled loop below covers 16 pairs") };
        let inp = *inp;
        let mut st = [[_mm512_setzero_si512(); 2]; P];
        // With `DQ` each pair's w is dequantised one step before it is used, so the
        // step does not wait for the dequantisation's 5-deep dependency chain (measured
        // ~10% faster than dequantising right before use, as the kernel does).
        let mut wps = [inp.wp; P];
        // Unrolled by hand over constant indices (the compiler left a 16-pair loop
        // rolled, keeping the state in memory); pairs past P fold away.
        macro_rules! pairs {
            ($($i:literal)*) => {$(
                if let Some(s) = st.get_mut($i) {
                    let wp = if DQ {
                        let next = dequant(&inp.words, &inp.scale, &inp.bias, &inp.regs).0;
                        core::mem::replace(&mut wps[$i], next)
                    } else {
                        inp.wp
                    };
                    step::<FORM>(s, wp, &inp.x, &inp.regs);
                }
            )*};
        }
        for _ in 0..iters {
            pairs!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
        }
        st
    }

    /// A timed variant: form, dequantisation or not, pairs.
    #[derive(Clone, Copy)]
    struct Variant {
        form: u8,
        dq: bool,
        pairs: usize,
    }

    impl Variant {
        fn name(&self) -> String {
            let f = ["current", "fused", "pair"][self.form as usize];
            format!("{}{}", if self.dq { "dq+" } else { "" }, f)
        }

        /// Runs `iters` steps on this thread; returns the time taken.
        ///
        /// # Safety
        /// AVX512F, AVX512BW and AVX512_BF16 available.
        unsafe fn spin(&self, iters: u64, inp: &Inputs) -> Duration {
            macro_rules! go {
                ($f:expr, $dq:expr, $($p:literal)*) => {
                    match self.pairs {
                        $($p => {
                            let t = Instant::now();
                            black_box(spin::<{ $f }, { $dq }, $p>(iters, inp));
                            t.elapsed()
                        })*
                        _ => unreachable!("pairs {} not instantiated", self.pairs),
                    }
                };
            }
            match (self.form, self.dq) {
                (CURRENT, false) => go!(CURRENT, false, 2 4 8 12 16),
                (CURRENT, true) => go!(CURRENT, true, 2 4 8 12 16),
                (FUSED, false) => go!(FUSED, false, 2 4 8 12 16),
                (FUSED, true) => go!(FUSED, true, 2 4 8 12 16),
                (_, false) => go!(PAIR, false, 2 4 8 12 16),
                (_, true) => go!(PAIR, true, 2 4 8 12 16),
            }
        }
    }

    /// Elements per second of one variant: per-thread rate and total rate.
    struct Rate {
        per_thread: f64,
        total: f64,
    }

    /// Runs `iters` steps on each of `threads` threads at once, `REPS` times; median of
    /// the per-thread rate (mean over threads) and of the total rate (all threads'
    /// elements over the wall time from the first start to the last end).
    fn measure(v: Variant, iters: u64, threads: usize, inp: &Inputs) -> Rate {
        let elems = (iters as usize * v.pairs * ROWS) as f64;
        let mut per = Vec::with_capacity(REPS);
        let mut tot = Vec::with_capacity(REPS);
        for _ in 0..REPS {
            let barrier = Barrier::new(threads);
            let runs: Vec<(Instant, Duration)> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            let t0 = Instant::now();
                            // SAFETY: `run` checked AVX512F, AVX512BW and AVX512_BF16
                            // (`supported`) before measuring anything.
                            let d = unsafe { v.spin(iters, inp) };
                            (t0, d)
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("timing thread panicked"))
                    .collect()
            });
            let start = runs.iter().map(|r| r.0).min().expect("one thread at least");
            let end = runs
                .iter()
                .map(|r| r.0 + r.1)
                .max()
                .expect("one thread at least");
            let mean_secs = runs.iter().map(|r| r.1.as_secs_f64()).sum::<f64>() / threads as f64;
            per.push(elems / mean_secs);
            tot.push(threads as f64 * elems / (end - start).as_secs_f64());
        }
        Rate {
            per_thread: median(&mut per),
            total: median(&mut tot),
        }
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Steps per repetition so that one thread takes about `REP_SECS`.
    fn calibrate(v: Variant, inp: &Inputs) -> u64 {
        let mut iters = 1u64 << 12;
        loop {
            // SAFETY: features checked by `run` before any measurement.
            let d = unsafe { v.spin(iters, inp) };
            if d.as_secs_f64() > 0.02 {
                return ((iters as f64) * REP_SECS / d.as_secs_f64()).ceil() as u64;
            }
            iters *= 2;
        }
    }

    /// Core clock in GHz, estimated from a chain of dependent one-cycle integer adds;
    /// only used to print cycles next to nanoseconds.
    fn ghz() -> f64 {
        let adds: u64 = 100_000_000;
        let t = Instant::now();
        // SAFETY: integer adds and a loop on two registers; no memory, no stack.
        unsafe {
            asm!(
                "2:",
                "add {x}, 1",
                "add {x}, 1",
                "add {x}, 1",
                "add {x}, 1",
                "dec {n}",
                "jnz 2b",
                x = inout(reg) 0u64 => _,
                n = inout(reg) adds / 4 => _,
                options(nomem, nostack),
            );
        }
        adds as f64 / t.elapsed().as_secs_f64() / 1e9
    }

    /// Read bandwidth in bytes/s with `threads` threads over 3 sums of `buf`: (median,
    /// best). The best is printed too because other jobs on the 2 vCPUs can take a
    /// core away from one of the sums.
    fn bandwidth(buf: &[u64], threads: usize) -> (f64, f64) {
        let chunk = buf.len().div_ceil(threads);
        let mut t: Vec<f64> = (0..3)
            .map(|_| {
                let s = Instant::now();
                let sum: u64 = std::thread::scope(|sc| {
                    let hs: Vec<_> = buf
                        .chunks(chunk)
                        .map(|c| sc.spawn(|| c.iter().fold(0u64, |a, &b| a.wrapping_add(b))))
                        .collect();
                    hs.into_iter()
                        .map(|h| h.join().expect("sum thread panicked"))
                        .fold(0u64, u64::wrapping_add)
                });
                black_box(sum);
                s.elapsed().as_secs_f64()
            })
            .collect();
        let bytes = std::mem::size_of_val(buf) as f64;
        let med = median(&mut t);
        // `median` sorted `t`: t[0] is the fastest sum.
        (bytes / med, bytes / t[0])
    }

    // ---------------------------------------------------------------------------
    // Exactness check: the step routines above against a scalar emulation of MLX.
    // ---------------------------------------------------------------------------

    /// xorshift64* (deterministic, no dependency).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            ((self.next() >> 32) * n) >> 32
        }
        /// A random bf16 of either sign with unbiased exponent in `lo..=hi`.
        fn bf16(&mut self, lo: i32, hi: i32) -> u16 {
            let e = lo + self.below((hi - lo + 1) as u64) as i32;
            let sign = (self.below(2) as u16) << 15;
            sign | (((e + 127) as u16) << 7) | self.below(128) as u16
        }
    }

    /// MLX's `T()` for bf16: round to nearest even on the bit pattern; counts exact
    /// ties (the rounding the check most wants to see exercised).
    fn round_bf16(f: f32, ties: &mut u64) -> u16 {
        let u = f.to_bits();
        if u & 0xFFFF == 0x8000 {
            *ties += 1;
        }
        (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16
    }

    fn widen(h: u16) -> f32 {
        f32::from_bits((h as u32) << 16)
    }

    /// Row ids (0..32 within a pair) held by each f32 lane of a vector.
    type Lanes = [u8; 16];
    /// Row ids held by each bf16 word of a packed vector.
    type Words = [u8; 32];

    /// `vcvtne2ps2bf16 dst, hi, lo`: words 0..16 from `lo`, 16..32 from `hi`.
    fn pack(hi: &Lanes, lo: &Lanes) -> Words {
        core::array::from_fn(|j| if j < 16 { lo[j] } else { hi[j - 16] })
    }

    /// (lo, hi) lane sets whose `pack` gives `w`.
    fn split(w: &Words) -> (Lanes, Lanes) {
        (
            core::array::from_fn(|l| w[l]),
            core::array::from_fn(|l| w[16 + l]),
        )
    }

    /// The words that `vdpbf16ps` with an even / odd selector reads into lane l: 2l /
    /// 2l + 1; `unsel` is the packed layout whose even words are `e` and odd words `o`.
    fn unsel(e: &Lanes, o: &Lanes) -> Words {
        core::array::from_fn(|j| if j % 2 == 0 { e[j / 2] } else { o[j / 2] })
    }

    /// `vpunpck{l,h}wd`: dword 4q + t of the result pairs word 8q + 4h + t of each
    /// source (q = 128-bit lane).
    fn unpck(w: &Words, h: usize) -> Lanes {
        core::array::from_fn(|l| w[8 * (l / 4) + 4 * h + l % 4])
    }

    /// Where the rows are before a step (for each form's state) and where the step
    /// wants the next w.
    #[derive(Clone, Copy)]
    enum Layout {
        /// `current`: f32 lanes of the two accumulator vectors.
        Current(Lanes, Lanes),
        /// `fused`: rows of each 16-row group (lane d = row at words d and 16 + d).
        Fused(Lanes, Lanes),
        /// `pair`: the packed accumulator's words (the products share them).
        Pair(Words),
    }

    impl Layout {
        fn start(form: u8) -> Self {
            let a: Lanes = core::array::from_fn(|l| l as u8);
            let b: Lanes = core::array::from_fn(|l| 16 + l as u8);
            match form {
                CURRENT => Layout::Current(a, b),
                FUSED => Layout::Fused(a, b),
                _ => Layout::Pair(pack(&b, &a)),
            }
        }

        /// The `pair` step's unpack, two sums and pack: the next step's word layout.
        fn pair(w: &Words) -> Words {
            pack(&unpck(w, 1), &unpck(w, 0))
        }

        /// Layout after one step.
        fn next(&self) -> Self {
            match *self {
                // acc + T(p) keeps the lanes; vpermt2w word i -> lane i undoes the pack.
                Layout::Current(e, o) => {
                    let c = pack(&o, &e);
                    let (e2, o2) = split(&c);
                    Layout::Current(e2, o2)
                }
                Layout::Fused(a, b) => Layout::Fused(a, b),
                Layout::Pair(w) => Layout::Pair(Layout::pair(&w)),
            }
        }

        /// Rows of the w (packed) that a step starting in this layout consumes: for
        /// `current` the products it adds now, for the pipelined forms the products
        /// it rounds for the next step (in the next step's layout).
        fn w(&self) -> Words {
            match *self {
                Layout::Current(e, o) => {
                    // acc_e lane l adds word 2l of T(p), acc_o word 2l + 1; T(p) packs
                    // (pe, po), and pe lane l is x times word 2l of w.
                    let (pe, po) = split(&unsel(&e, &o));
                    unsel(&pe, &po)
                }
                // Products of group 0 from the even words, group 1 from the odd ones.
                Layout::Fused(a, b) => unsel(&a, &b),
                Layout::Pair(w) => {
                    let (lo, hi) = split(&Layout::pair(&w));
                    unsel(&lo, &hi)
                }
            }
        }
    }

    /// Per pair, the dequantisation's input layouts for a packed w layout: lanes of
    /// the code/scale vectors and of the two bias halves.
    fn dq_layout(w: &Words) -> ([Lanes; 2], [Lanes; 2]) {
        let (te, to) = split(w);
        let (q0, q1) = split(&unsel(&te, &to));
        ([q0, q1], [te, to])
    }

    fn lanes_f32(l: &Lanes, v: impl Fn(usize) -> f32) -> __m512 {
        let a: [f32; 16] = core::array::from_fn(|i| v(l[i] as usize));
        // SAFETY: an unaligned load of a local array; `run` checked AVX512F before
        // calling `check`, the only user.
        unsafe { _mm512_loadu_ps(a.as_ptr()) }
    }

    fn words_bf16(w: &Words, v: impl Fn(usize) -> u16) -> __m512i {
        let a: [u16; 32] = core::array::from_fn(|j| v(w[j] as usize));
        // SAFETY: as in `lanes_f32`.
        unsafe { _mm512_loadu_si512(a.as_ptr().cast()) }
    }

    fn store_u32(v: __m512i) -> [u32; 16] {
        let mut a = [0u32; 16];
        // SAFETY: as in `lanes_f32`.
        unsafe { _mm512_storeu_si512(a.as_mut_ptr().cast(), v) };
        a
    }

    fn store_u16(v: __m512i) -> [u16; 32] {
        let mut a = [0u16; 32];
        // SAFETY: as in `lanes_f32`.
        unsafe { _mm512_storeu_si512(a.as_mut_ptr().cast(), v) };
        a
    }

    /// The accumulator bits (bf16) of every row as the state holds them.
    fn read_acc(layout: &Layout, st: &[__m512i; 2]) -> [u16; ROWS] {
        let mut acc = [0u16; ROWS];
        match layout {
            Layout::Current(e, o) => {
                for (v, lanes) in [e, o].into_iter().enumerate() {
                    let bits = store_u32(st[v]);
                    for (l, &row) in lanes.iter().enumerate() {
                        // A widened bf16 has a zero low half; anything else differs.
                        acc[row as usize] = if bits[l] & 0xFFFF == 0 {
                            (bits[l] >> 16) as u16
                        } else {
                            !((bits[l] >> 16) as u16)
                        };
                    }
                }
            }
            Layout::Fused(a, b) => {
                for (g, lanes) in [a, b].into_iter().enumerate() {
                    let w = store_u16(st[g]);
                    for (d, &row) in lanes.iter().enumerate() {
                        acc[row as usize] = w[16 + d];
                    }
                }
            }
            Layout::Pair(words) => {
                let w = store_u16(st[0]);
                for (j, &row) in words.iter().enumerate() {
                    acc[row as usize] = w[j];
                }
            }
        }
        acc
    }

    /// Runs `form` (with the dequantisation if `dq`) on `trials` random cases of `k`
    /// steps for one pair and compares every row's accumulator with the scalar
    /// emulation after every step. Returns the number of rounding ties seen by the
    /// reference; `Err` describes the first mismatch.
    fn check(form: u8, dq: bool, trials: usize, k: usize, rng: &mut Rng) -> Result<u64, String> {
        let mut ties = 0u64;
        // SAFETY: `run` checked the features before calling `check`.
        let regs = unsafe { Regs::new() };
        // Pipelined forms spend one extra step rounding the first products.
        let pipelined = form != CURRENT;
        let steps = k + pipelined as usize;
        // Layout before each step (independent of the values).
        let mut layouts = Vec::with_capacity(steps + 1);
        layouts.push(Layout::start(form));
        for i in 0..steps {
            let next = layouts[i].next();
            layouts.push(next);
        }
        for trial in 0..trials {
            let x: Vec<u16> = (0..k).map(|_| rng.bf16(-4, 4)).collect();
            let scale: Vec<u16> = (0..ROWS).map(|_| rng.bf16(-8, -3)).collect();
            let bias: Vec<u16> = (0..ROWS).map(|_| rng.bf16(-6, 0)).collect();
            let mut codes = vec![[0u8; ROWS]; k];
            let mut w = vec![[0u16; ROWS]; k];
            for (c, wk) in codes.iter_mut().zip(w.iter_mut()) {
                for row in 0..ROWS {
                    if dq {
                        c[row] = rng.below(16) as u8;
                        // w = T(T(scale * q) + bias).
                        let sq = round_bf16(widen(scale[row]) * c[row] as f32, &mut ties);
                        wk[row] = round_bf16(widen(sq) + widen(bias[row]), &mut ties);
                    } else {
                        wk[row] = rng.bf16(-4, 2);
                    }
                }
            }
            // Reference chain: acc[i] after i steps.
            let mut want = vec![[0u16; ROWS]; k + 1];
            for i in 0..k {
                for row in 0..ROWS {
                    let p = round_bf16(widen(x[i]) * widen(w[i][row]), &mut ties);
                    want[i + 1][row] = round_bf16(widen(want[i][row]) + widen(p), &mut ties);
                }
            }
            let mut st = [regs.zero; 2];
            // Code registers: refilled every 8 steps with the next 8 steps' nibbles,
            // nibble j of lane l belonging to whichever row that lane feeds at step j.
            let mut words = [regs.zero; 2];
            for s in 0..steps {
                // Harness step s multiplies chain step s's x and w (the pipelined forms
                // add the product one harness step later; their last step multiplies
                // nothing real).
                let wl = layouts[s].w();
                let xs = x.get(s).copied().unwrap_or(ONE as u16);
                let wp = if dq {
                    if s % 8 == 0 {
                        for (v, wv) in words.iter_mut().enumerate() {
                            let mut a = [0u32; 16];
                            for j in 0..8 {
                                let Some(c) = codes.get(s + j) else { break };
                                let (q, _) = dq_layout(&layouts[s + j].w());
                                for (l, al) in a.iter_mut().enumerate() {
                                    *al |= (c[q[v][l] as usize] as u32) << (4 * j);
                                }
                            }
                            // SAFETY: as in `lanes_f32`.
                            *wv = unsafe { _mm512_loadu_si512(a.as_ptr().cast()) };
                        }
                    }
                    let (q, b) = dq_layout(&wl);
                    let sc = [
                        lanes_f32(&q[0], |r| widen(scale[r])),
                        lanes_f32(&q[1], |r| widen(scale[r])),
                    ];
                    let bi = [
                        lanes_f32(&b[0], |r| widen(bias[r])),
                        lanes_f32(&b[1], |r| widen(bias[r])),
                    ];
                    // SAFETY: features checked by `run`.
                    let (wp, next) = unsafe { dequant(&words, &sc, &bi, &regs) };
                    words = next;
                    wp
                } else {
                    words_bf16(&wl, |r| w.get(s).map_or(0, |wk| wk[r]))
                };
                // SAFETY: features checked by `run`.
                unsafe {
                    let xsel = Xsel::new(xs);
                    match form {
                        CURRENT => step::<CURRENT>(&mut st, wp, &xsel, &regs),
                        FUSED => step::<FUSED>(&mut st, wp, &xsel, &regs),
                        _ => step::<PAIR>(&mut st, wp, &xsel, &regs),
                    }
                }
                // Chain steps completed: s + 1, or s for the pipelined forms.
                let done = s + 1 - pipelined as usize;
                let got = read_acc(&layouts[s + 1], &st);
                for row in 0..ROWS {
                    if got[row] != want[done][row] {
                        return Err(format!(
                            "trial {trial}, after k step {done}, row {row}: got bf16 {:#06x}, \
                             MLX gives {:#06x}",
                            got[row], want[done][row]
                        ));
                    }
                }
            }
        }
        Ok(ties)
    }

    // ---------------------------------------------------------------------------

    const HIDDEN: usize = 2048;
    const VOCAB: usize = 151_936;
    const TOP_K: usize = 8;
    const INTER: usize = 768;
    const GS: usize = 64;

    /// (name, weight elements) of the decode matmuls.
    const OPS: [(&str, usize); 3] = [
        ("lm_head 151936x2048", VOCAB * HIDDEN),
        ("expert SwiGLU 8x2x768x2048", TOP_K * 2 * INTER * HIDDEN),
        ("expert down 8x2048x768", TOP_K * HIDDEN * INTER),
    ];

    /// Bytes one 4-bit, group-64 matmul must read: codes plus a bf16 scale and bias per
    /// group.
    fn op_bytes(elems: usize) -> usize {
        elems / 2 + elems / GS * 2 * 2
    }

    pub fn run() {
        let t_start = Instant::now();
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("exact_chain_floor: {model}, {cpus} CPUs available");

        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for form in [CURRENT, FUSED, PAIR] {
            for dq in [false, true] {
                let v = Variant { form, dq, pairs: 1 };
                match check(form, dq, 300, 16, &mut rng) {
                    Ok(ties) => println!(
                        "exact: {:<12} 300 x 16 steps x 32 rows bit-identical to MLX's chain \
                         ({ties} rounding ties in the reference)",
                        v.name()
                    ),
                    Err(e) => {
                        eprintln!("exact_chain_floor: {} differs from MLX: {e}", v.name());
                        std::process::exit(1);
                    }
                }
            }
        }

        // 1 GiB of u64, written first so that every page is really mapped.
        let n = (1usize << 30) / 8;
        let mut buf = vec![0u64; n];
        std::thread::scope(|s| {
            for (c, part) in buf.chunks_mut(n / 2).enumerate() {
                s.spawn(move || {
                    for (i, v) in part.iter_mut().enumerate() {
                        *v = (c * n / 2 + i) as u64;
                    }
                });
            }
        });
        let (bw1, bw1_best) = bandwidth(&buf, 1);
        let (bw2, bw2_best) = bandwidth(&buf, 2);
        drop(buf);
        println!(
            "read bandwidth (sum of 1 GiB, median of 3 [best]): 1 thread {:.2} [{:.2}] GB/s, \
             2 threads {:.2} [{:.2}] GB/s",
            bw1 / 1e9,
            bw1_best / 1e9,
            bw2 / 1e9,
            bw2_best / 1e9
        );

        // SAFETY: `supported()` was checked by `main` before `run`.
        let inp = unsafe {
            Inputs {
                regs: Regs::new(),
                x: Xsel::new(0x3F81),
                wp: _mm512_set1_epi32(0x3F82_BF83u32 as i32),
                words: [
                    _mm512_set1_epi32(0x7654_3210),
                    _mm512_set1_epi32(0x0123_4567),
                ],
                scale: [_mm512_set1_ps(0.0123), _mm512_set1_ps(0.0071)],
                bias: [_mm512_set1_ps(-0.052), _mm512_set1_ps(0.031)],
            }
        };

        let clock = ghz();
        println!(
            "\nthroughput, operands in registers; elements = rows x k steps; \
             median of {REPS} x ~{REP_SECS} s; cycles at the {clock:.2} GHz estimated \
             from dependent adds"
        );
        println!(
            "{:<14} {:>5} {:>13} {:>13} {:>13} {:>9} {:>9} {:>9}",
            "form",
            "pairs",
            "1thr Gelem/s",
            "2thr /thread",
            "2thr total",
            "ns/32",
            "cyc/32",
            "2thr/1thr"
        );
        let mut best: Vec<(String, f64)> = Vec::new();
        for (form, dq) in [
            (CURRENT, false),
            (FUSED, false),
            (PAIR, false),
            (CURRENT, true),
            (FUSED, true),
            (PAIR, true),
        ] {
            let mut top = 0f64;
            let mut name = String::new();
            // The kernel's decode path runs 2 pairs (four 16-row blocks); shown for it.
            let pairs: &[usize] = if form == CURRENT && dq {
                &[2, 4, 8, 12, 16]
            } else {
                &[4, 8, 12, 16]
            };
            for &pairs in pairs {
                let v = Variant { form, dq, pairs };
                name = v.name();
                let iters = calibrate(v, &inp);
                let r1 = measure(v, iters, 1, &inp);
                let r2 = measure(v, iters, 2, &inp);
                let ns32 = 32.0 / r1.total * 1e9;
                println!(
                    "{:<14} {:>5} {:>13.2} {:>13.2} {:>13.2} {:>9.3} {:>9.2} {:>9.2}",
                    name,
                    pairs,
                    r1.total / 1e9,
                    r2.per_thread / 1e9,
                    r2.total / 1e9,
                    ns32,
                    ns32 * clock,
                    r2.total / r1.total
                );
                top = top.max(r2.total);
            }
            best.push((name, top));
        }

        println!(
            "\nQwen3-30B-A3B decode, 4-bit g64 bf16; floor = bytes / median 2-thread \
             bandwidth [at the best of 3]"
        );
        for (op, elems) in OPS {
            let bytes = op_bytes(elems);
            let floor = bytes as f64 / bw2;
            let target = 2.0 * floor;
            println!(
                "{op}: {:.2} MiB, {:.1} M elements; floor {:.3} [{:.3}] ms, target (2x floor) \
                 {:.3} [{:.3}] ms",
                bytes as f64 / (1 << 20) as f64,
                elems as f64 / 1e6,
                floor * 1e3,
                bytes as f64 / bw2_best * 1e3,
                target * 1e3,
                2.0 * bytes as f64 / bw2_best * 1e3
            );
            for (name, rate) in &best {
                let bound = elems as f64 / rate;
                println!(
                    "    {:<14} lower bound {:>8.3} ms = {:>5.2}x target [{:>5.2}x]",
                    name,
                    bound * 1e3,
                    bound / target,
                    bound / (2.0 * bytes as f64 / bw2_best)
                );
            }
        }
        println!(
            "\n(best pairs count per form, 2 threads; total run {:.1} s)",
            t_start.elapsed().as_secs_f64()
        );
    }
}
