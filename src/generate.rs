//! Text generation: chunked prefill, pipelined decode, greedy or seeded sampling.
//!
//! The loop is mlx-lm's `generate_step`: the prompt but its last token is run in
//! chunks that only fill the KV cache; the last token gives the first logits; each
//! decode step queues the next step (`async_eval`) before reading the current token,
//! so on a GPU the host builds step n+1 while the device runs step n. On the CPU the
//! host waits for the queued step before each read (the CPU stream and the host
//! share the same cores, and overlapping them corrupted MLX's heap now and then).
//!
//! Speeds follow mlx-lm's definitions: prompt tokens/s is the prompt length over the
//! time until the first generated token is available (so it includes one decode
//! step); decode tokens/s is the number of generated tokens over the time from that
//! moment until the last token was read.

use std::time::Instant;

use mlx::{ops, random, Array, Dtype, StreamOrDevice};

use crate::error::{Error, Result};
use crate::models::qwen3_moe::Qwen3Moe;

/// Host time of decode steps (see `ZMLX_STEP_TIMING` in [`generate`]), seconds.
#[derive(Default)]
struct StepTiming {
    build: f64,
    encode: f64,
    wait: f64,
    steps: usize,
}

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// A random token from the tempered distribution, optionally limited to the
    /// `top_k` most likely tokens and to the smallest set holding `top_p` of the mass.
    Random {
        /// Divides the logits (must be > 0).
        temperature: f32,
        /// Keep only this many tokens (0 = all).
        top_k: usize,
        /// Keep the most likely tokens holding this much probability (1.0 = all).
        top_p: f32,
        /// The seed of the PRNG key.
        seed: u64,
    },
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Generation stops at any of these (not included in the output).
    pub stop_tokens: Vec<u32>,
    /// Prompt tokens per prefill chunk (mlx-lm: 2048).
    pub prefill_step: usize,
    /// Keep a host copy of each step's logits (f32), for fidelity checks.
    pub record_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 200,
            sampling: Sampling::Greedy,
            stop_tokens: Vec::new(),
            prefill_step: 2048,
            record_logits: false,
        }
    }
}

/// The result of [`generate`].
#[derive(Clone, Debug, Default)]
pub struct Generation {
    /// The generated token ids.
    pub tokens: Vec<u32>,
    /// The logits of each generated token's step (when recorded).
    pub logits: Vec<Vec<f32>>,
    /// The number of prompt tokens.
    pub prompt_tokens: usize,
    /// Prompt tokens per second (mlx-lm's definition, see the module docs).
    pub prompt_tps: f64,
    /// Generated tokens per second (mlx-lm's definition, see the module docs).
    pub decode_tps: f64,
    /// MLX's peak memory during the call, in bytes.
    pub peak_memory: usize,
}

/// One step's outputs: the chosen token (shape `[1]`) and the step's logits, as f32
/// when the caller keeps them. Both are read on the host without any further op: a
/// new node (a reshape, a cast) would be queued on the device stream behind the
/// next step, and reading it would wait for that step too, which undoes the
/// pipelining.
struct Step {
    token: Array,
    logits: Array,
}

struct Sampler {
    sampling: Sampling,
    key: Option<Array>,
}

impl Sampler {
    fn new(sampling: &Sampling) -> Result<Sampler> {
        let key = match sampling {
            Sampling::Greedy => None,
            Sampling::Random {
                temperature,
                top_p,
                seed,
                ..
            } => {
                // Written so that NaN settings are rejected too.
                let valid = *temperature > 0.0 && *top_p > 0.0 && *top_p <= 1.0;
                if !valid {
                    return Err(Error::InvalidArgument(format!(
                        "sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}"
                    )));
                }
                Some(random::key(*seed)?)
            }
        };
        Ok(Sampler {
            sampling: sampling.clone(),
            key,
        })
    }

    /// Picks tokens from `logprobs` `[batch, vocab]`.
    fn sample(&mut self, logprobs: &Array, s: StreamOrDevice) -> Result<Array> {
        match self.sampling {
            Sampling::Greedy => Ok(ops::argmax(logprobs, -1, false, s)?),
            Sampling::Random {
                temperature,
                top_k,
                top_p,
                ..
            } => {
                let mut lp = logprobs.clone();
                let vocab = lp.shape()[lp.ndim() - 1];
                if top_k > 0 && (top_k as i32) < vocab {
                    // Drop everything outside the top k, as mlx-lm's apply_top_k.
                    let neg = ops::negative(&lp, s)?;
                    let part = ops::argpartition(&neg, top_k as i32 - 1, -1, s)?;
                    let nd = part.ndim();
                    let mut start = vec![0; nd];
                    start[nd - 1] = top_k as i32;
                    let drop = ops::slice(&part, &start, part.shape(), &vec![1; nd], s)?;
                    let ninf = ops::full(
                        drop.shape(),
                        &Array::scalar(f32::NEG_INFINITY)?,
                        lp.dtype(),
                        s,
                    )?;
                    lp = ops::put_along_axis(&lp, &drop, &ninf, -1, s)?;
                }
                if top_p < 1.0 {
                    // Nucleus filtering, as mlx-lm's apply_top_p.
                    let sorted = ops::sort(&lp, -1, s)?;
                    let probs = ops::exp(&ops::astype(&sorted, Dtype::Float32, s)?, s)?;
                    let above = ops::cumsum(&probs, -1, true, false, s)?;
                    let nd = probs.ndim();
                    let mut stop = probs.shape().to_vec();
                    stop[nd - 1] = 1;
                    let first = ops::slice(&probs, &vec![0; nd], &stop, &vec![1; nd], s)?;
                    let first_above = ops::slice(&above, &vec![0; nd], &stop, &vec![1; nd], s)?;
                    let total = ops::add(&first_above, &first, s)?;
                    let dropped = ops::greater_equal(
                        &above,
                        &ops::multiply(
                            &total,
                            &Array::scalar_as(top_p as f64, Dtype::Float32)?,
                            s,
                        )?,
                        s,
                    )?;
                    let n_dropped =
                        ops::sum(&ops::astype(&dropped, Dtype::Int32, s)?, &[-1], true, s)?;
                    let threshold = ops::take_along_axis(
                        &sorted,
                        &ops::astype(&n_dropped, Dtype::Uint32, s)?,
                        -1,
                        s,
                    )?;
                    let ninf = Array::scalar_as(f64::NEG_INFINITY, lp.dtype())?;
                    lp = ops::r#where(&ops::less(&lp, &threshold, s)?, &ninf, &lp, s)?;
                }
                let key = self.key.take().expect("random sampling has a key");
                let keys = random::split(&key, 2, s)?;
                let parts = ops::split(&keys, 2, 0, s)?;
                self.key = Some(ops::squeeze(&parts[0], &[0], s)?);
                let scaled = ops::multiply(
                    &lp,
                    &Array::scalar_as(1.0 / temperature as f64, lp.dtype())?,
                    s,
                )?;
                Ok(random::categorical(
                    &scaled,
                    -1,
                    Some(&ops::squeeze(&parts[1], &[0], s)?),
                    s,
                )?)
            }
        }
    }
}

/// Generates up to `opts.max_tokens` tokens after `prompt`.
///
/// # Errors
/// An empty prompt, a token id outside the vocabulary, bad sampling settings, or an
/// MLX failure.
pub fn generate(model: &Qwen3Moe, prompt: &[u32], opts: &GenerateOptions) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    let vocab = model.config.vocab_size;
    if let Some(bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::InvalidArgument(format!(
            "prompt token {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let step_len = opts.prefill_step.max(1);
    let mut sampler = Sampler::new(&opts.sampling)?;
    mlx::memory::reset_peak_memory()?;
    let mut cache = model.make_cache();
    let start = Instant::now();

    let mut rest = prompt;
    while rest.len() > 1 {
        let n = step_len.min(rest.len() - 1);
        let chunk = Array::from_slice(&rest[..n], &[1, n as i32])?;
        // Only the cache is evaluated: the logits of prefill chunks are never needed.
        let _ = model.hidden_states(&chunk, &mut cache)?;
        let state: Vec<&Array> = cache.iter().flat_map(|c| c.state()).collect();
        mlx::eval(&state)?;
        mlx::memory::clear_cache()?;
        rest = &rest[n..];
    }

    let on_cpu = model.stream.device()?.kind == mlx::DeviceType::Cpu;
    let s = model.stream;
    let mut step = |input: &Array, cache: &mut [crate::kv_cache::KvCache]| -> Result<Step> {
        let tokens = ops::reshape(input, &[1, -1], s)?;
        let logits = model.forward(&tokens, cache)?;
        let l = logits.shape()[1];
        let v = logits.shape()[2];
        let last = ops::reshape(
            &ops::slice(&logits, &[0, l - 1, 0], &[1, l, v], &[1, 1, 1], s)?,
            &[1, v],
            s,
        )?;
        let logprobs = ops::subtract(&last, &ops::logsumexp(&last, &[-1], true, s)?, s)?;
        let token = sampler.sample(&logprobs, s)?;
        let logits = if opts.record_logits {
            ops::astype(&last, Dtype::Float32, s)?
        } else {
            last
        };
        Ok(Step { token, logits })
    };

    let mut out = Generation {
        prompt_tokens: prompt.len(),
        ..Generation::default()
    };
    let first_input = Array::from_slice(rest, &[rest.len() as i32])?;
    let mut current = step(&first_input, &mut cache)?;
    mlx::async_eval(&[&current.token, &current.logits])?;
    let mut decode_start = start;
    let mut n = 0usize;
    // ZMLX_STEP_TIMING=1: where a decode step's host time goes (building the graph,
    // MLX encoding it in async_eval, waiting for the GPU), printed at the end.
    let mut timing = std::env::var("ZMLX_STEP_TIMING")
        .is_ok_and(|v| v == "1")
        .then(StepTiming::default);
    loop {
        let next = if n != opts.max_tokens {
            let t0 = Instant::now();
            let s = step(&current.token, &mut cache)?;
            let t1 = Instant::now();
            mlx::async_eval(&[&s.token, &s.logits])?;
            if let Some(tm) = timing.as_mut().filter(|_| n > 0) {
                tm.build += (t1 - t0).as_secs_f64();
                tm.encode += t1.elapsed().as_secs_f64();
                tm.steps += 1;
            }
            Some(s)
        } else {
            None
        };
        if n == 0 {
            current.token.eval()?;
            let t = start.elapsed().as_secs_f64();
            out.prompt_tps = prompt.len() as f64 / t;
            decode_start = Instant::now();
        }
        if n == opts.max_tokens {
            break;
        }
        let t_wait = Instant::now();
        if on_cpu {
            // On the CPU the host waits for the queued step before reading: letting
            // it build the next graph while MLX's CPU stream runs corrupted the heap
            // now and then (notebook.md, 2026-11-26 05:30); the CPU has no device to
            // overlap with anyway. On a GPU the read waits only for this token.
            s.synchronize()?;
        }
        let token = current.token.item::<u32>()?;
        if let Some(tm) = timing.as_mut().filter(|_| n > 0) {
            tm.wait += t_wait.elapsed().as_secs_f64();
        }
        if opts.stop_tokens.contains(&token) {
            break;
        }
        out.tokens.push(token);
        if opts.record_logits {
            out.logits.push(current.logits.to_vec::<f32>()?);
        }
        if n % 256 == 0 {
            mlx::memory::clear_cache()?;
        }
        match next {
            Some(s) => current = s,
            None => break,
        }
        n += 1;
    }
    let t = decode_start.elapsed().as_secs_f64();
    if let Some(tm) = timing.filter(|tm| tm.steps > 0) {
        let per = |x: f64| x * 1e3 / tm.steps as f64;
        eprintln!(
            "step timing ({} decode steps, ms per step): build {:.3}, encode (async_eval) \
             {:.3}, wait for the token {:.3}; wall {:.3}",
            tm.steps,
            per(tm.build),
            per(tm.encode),
            per(tm.wait),
            per(t)
        );
    }
    out.decode_tps = if t > 0.0 {
        out.tokens.len() as f64 / t
    } else {
        0.0
    };
    out.peak_memory = mlx::memory::peak_memory()?;
    Ok(out)
}

/// The logits a model gives at each step when fed `prompt` and then `forced` one
/// token at a time (teacher forcing, on the decode path): entry `t` is the
/// distribution the model predicts `forced[t]` from. Used to score a patched model
/// along a baseline's tokens.
///
/// # Errors
/// As [`generate`].
pub fn teacher_forced_logits(
    model: &Qwen3Moe,
    prompt: &[u32],
    forced: &[u32],
) -> Result<Vec<Vec<f32>>> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    let s = model.stream;
    let mut cache = model.make_cache();
    let (head, last) = prompt.split_at(prompt.len() - 1);
    if !head.is_empty() {
        let chunk = Array::from_slice(head, &[1, head.len() as i32])?;
        let _ = model.hidden_states(&chunk, &mut cache)?;
        let state: Vec<&Array> = cache.iter().flat_map(|c| c.state()).collect();
        mlx::eval(&state)?;
    }
    let mut out = Vec::with_capacity(forced.len());
    let inputs = last.iter().chain(forced.iter()).take(forced.len());
    for &t in inputs {
        let tok = Array::from_slice(&[t], &[1, 1])?;
        let logits = model.forward(&tok, &mut cache)?;
        let v = logits.shape()[2];
        let row = ops::astype(&ops::reshape(&logits, &[v], s)?, Dtype::Float32, s)?;
        out.push(row.to_vec::<f32>()?);
    }
    Ok(out)
}
