//! Qwen3-MoE, computing what mlx-lm's `qwen3_moe.py` computes, op for op.
//!
//! Pre-norm decoder layers: attention (q/k/v/o without bias, per-head RMS norms of
//! q and k before non-traditional RoPE, grouped KV heads, a causal mask for prompts
//! and none for one token), then an MoE block (router gate, precise softmax, top-k,
//! optional renormalisation, SwitchGLU experts, weighted sum) or a dense SwiGLU MLP
//! where `mlp_only_layers` / `decoder_sparse_step` say so. The MoE, linear and norm
//! ops go through the model's [`Slots`], which the patch layer may swap; two slot
//! flags change only how many ops run, never the bits: `merge_projections` (q, k, v
//! as one matmul) and `decode_views` (one-token head layouts as single reshapes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mlx::fast::{rope, scaled_dot_product_attention, AttentionMask};
use mlx::quantization::{QuantSpec as MlxQuantSpec, QuantizedWeight};
use mlx::{ops, Array, Dtype, StreamOrDevice};
use zmlx_kernels::down_combine::{DownCombineInput, NextNorm, NormCounter};
use zmlx_kernels::expert_swiglu::swiglu;
use zmlx_kernels::expert_swiglu::{ExpertHidden, RouterMatmul, RouterScratch};
use zmlx_kernels::moe_gate::{RouterSpec, Routing};
use zmlx_kernels::norm::{
    add_norm_support, fused_add_rms_norm, fused_head_norm_rope, fused_head_norm_rope_into_cache,
    head_norm_rope_support, kv_write_support, HeadNormRopeSpec,
};
use zmlx_kernels::Weight;
use zmlx_patch::Slots;

use crate::checkpoint::load::{eval_with_progress, load_tensors};
use crate::config::Qwen3MoeConfig;
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::nn::{Embedding, Linear, MergedProjection, RmsNorm};

/// Self-attention with per-head q/k norms and RoPE.
#[derive(Clone, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    /// Per-head norm of queries.
    pub q_norm: RmsNorm,
    /// Per-head norm of keys.
    pub k_norm: RmsNorm,
    /// q, k and v as one matmul when patched.
    qkv: MergedProjection,
    n_heads: i32,
    n_kv_heads: i32,
    head_dim: i32,
    rope_theta: f32,
}

impl Attention {
    /// The q/k norms and RoPE as the fused op takes them (`None` when the two norms
    /// differ in epsilon, which one fused op cannot express).
    fn head_norm_rope_spec(&self) -> Option<HeadNormRopeSpec> {
        (self.q_norm.eps == self.k_norm.eps).then_some(HeadNormRopeSpec {
            q_heads: self.n_heads,
            kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            eps: self.q_norm.eps,
            rope_base: self.rope_theta,
            rope_scale: 1.0,
        })
    }

    fn forward(
        &self,
        slots: &Slots,
        x: &Array,
        cache: &mut KvCache,
        s: StreamOrDevice,
    ) -> Result<Array> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let parts = [&self.q_proj, &self.k_proj, &self.v_proj];
        let offset = cache.offset();
        // One token with merged q/k/v and per-head views: the merged output is
        // reshaped once and split per head group.
        let by_heads = match l == 1 && slots.decode_views && !slots.fuse_head_norm_rope {
            true => self.qkv.forward_heads(
                slots,
                &parts,
                x,
                &[self.n_heads, self.n_kv_heads, self.n_kv_heads],
                self.head_dim,
                s,
            )?,
            false => None,
        };
        // q and k normed, all three laid out [b, heads, l, d]; RoPE follows.
        let (q, k, v) = match by_heads {
            Some(heads) => {
                let [q, k, v]: [Array; 3] = heads
                    .try_into()
                    .map_err(|_| Error::InvalidArgument("q/k/v split gave a wrong count".into()))?;
                (
                    self.q_norm.forward(slots, &q, s)?,
                    self.k_norm.forward(slots, &k, s)?,
                    v,
                )
            }
            None => {
                let [q, k, v]: [Array; 3] = self
                    .qkv
                    .forward(slots, &parts, x, s)?
                    .try_into()
                    .expect("three projections give three outputs");
                let fused = match self.head_norm_rope_spec() {
                    // The kernel takes one dtype throughout; anything else (MLX would
                    // promote) keeps MLX's ops.
                    Some(spec)
                        if l == 1
                            && slots.fuse_head_norm_rope
                            && [&k, &self.q_norm.weight, &self.k_norm.weight]
                                .iter()
                                .all(|a| a.dtype() == q.dtype())
                            && head_norm_rope_support(&spec, l, Some(q.dtype()), s.device()?)
                                .is_yes() =>
                    {
                        Some(spec)
                    }
                    _ => None,
                };
                if let Some(spec) = fused {
                    // With room in the cache, the same kernel writes the keys and
                    // values into it (one op instead of three).
                    if slots.fuse_kv_write
                        && kv_write_support(&spec, Some(q.dtype()), s.device()?).is_yes()
                    {
                        if let Some(caches) = cache.writable(1) {
                            let q = fused_head_norm_rope_into_cache(
                                &q,
                                &k,
                                &v,
                                &self.q_norm.weight,
                                &self.k_norm.weight,
                                &spec,
                                offset,
                                caches,
                                s,
                            )?;
                            let (k, v) = cache.commit_written(1, s)?;
                            return self.attend_cached(slots, &q, &k, &v, s);
                        }
                    }
                    // Both norms and both rotations in one op; the outputs are already
                    // [b, heads, 1, d].
                    let (q, k) = fused_head_norm_rope(
                        &q,
                        &k,
                        &self.q_norm.weight,
                        &self.k_norm.weight,
                        &spec,
                        offset,
                        s,
                    )?;
                    let v = ops::reshape(&v, &[b, self.n_kv_heads, 1, -1], s)?;
                    return self.attend(slots, &q, &k, &v, cache, s);
                }
                if l == 1 && slots.decode_views {
                    // One token: [b, 1, n * d] -> [b, n, 1, d] is a single reshape (the
                    // same array mlx-lm's reshape + transpose gives, since only a size-1
                    // axis moves), three view ops fewer per layer.
                    let q = ops::reshape(&q, &[b, self.n_heads, 1, -1], s)?;
                    let k = ops::reshape(&k, &[b, self.n_kv_heads, 1, -1], s)?;
                    let v = ops::reshape(&v, &[b, self.n_kv_heads, 1, -1], s)?;
                    (
                        self.q_norm.forward(slots, &q, s)?,
                        self.k_norm.forward(slots, &k, s)?,
                        v,
                    )
                } else {
                    let q = self.q_norm.forward(
                        slots,
                        &ops::reshape(&q, &[b, l, self.n_heads, -1], s)?,
                        s,
                    )?;
                    let k = self.k_norm.forward(
                        slots,
                        &ops::reshape(&k, &[b, l, self.n_kv_heads, -1], s)?,
                        s,
                    )?;
                    let v = ops::reshape(&v, &[b, l, self.n_kv_heads, -1], s)?;
                    (
                        ops::transpose(&q, &[0, 2, 1, 3], s)?,
                        ops::transpose(&k, &[0, 2, 1, 3], s)?,
                        ops::transpose(&v, &[0, 2, 1, 3], s)?,
                    )
                }
            }
        };
        let q = rope(&q, self.head_dim, false, self.rope_theta, 1.0, offset, s)?;
        let k = rope(&k, self.head_dim, false, self.rope_theta, 1.0, offset, s)?;
        self.attend(slots, &q, &k, &v, cache, s)
    }

    /// Attention over the cache for `q`, `k`, `v` laid out `[b, heads, l, d]` (RoPE
    /// applied), then the output projection.
    fn attend(
        &self,
        slots: &Slots,
        q: &Array,
        k: &Array,
        v: &Array,
        cache: &mut KvCache,
        s: StreamOrDevice,
    ) -> Result<Array> {
        let (k, v) = cache.update_and_fetch(k, v, s)?;
        self.attend_cached(slots, q, &k, &v, s)
    }

    /// Attention of `q` (`[b, heads, l, d]`, RoPE applied) over every cached key and
    /// value (the current step's included), then the output projection.
    fn attend_cached(
        &self,
        slots: &Slots,
        q: &Array,
        k: &Array,
        v: &Array,
        s: StreamOrDevice,
    ) -> Result<Array> {
        let (b, l) = (q.shape()[0], q.shape()[2]);
        let mask = if l > 1 {
            AttentionMask::Causal
        } else {
            AttentionMask::None
        };
        let scale = (self.head_dim as f32).powf(-0.5);
        let o = scaled_dot_product_attention(q, k, v, scale, mask, s)?;
        let o = if l == 1 && slots.decode_views {
            ops::reshape(&o, &[b, 1, -1], s)?
        } else {
            ops::reshape(&ops::transpose(&o, &[0, 2, 1, 3], s)?, &[b, l, -1], s)?
        };
        self.o_proj.forward(slots, &o, s)
    }
}

/// The sparse MoE block.
#[derive(Clone, Debug)]
pub struct MoeBlock {
    /// The router, `[experts, hidden]`.
    pub gate: Linear,
    /// Stacked gate projections, `[experts, inter, hidden]`.
    pub gate_proj: Weight,
    /// Stacked up projections, `[experts, inter, hidden]`.
    pub up_proj: Weight,
    /// Stacked down projections, `[experts, hidden, inter]`.
    pub down_proj: Weight,
    /// How tokens are routed.
    pub router: RouterSpec,
    /// Scratch of the down + combine op that also computes the next norm (made on
    /// first use; a clone of the block gets its own).
    pub norm_counter: ScratchCell<NormCounter>,
    /// Scratch of the SwiGLU op that also computes the router logits (made on first
    /// use; a clone of the block gets its own).
    pub router_scratch: ScratchCell<RouterScratch>,
}

/// Kernel scratch ([`NormCounter`], [`RouterScratch`]) made on first use. Each MoE
/// block owns its own, since calls that share scratch must run one after another;
/// cloning gives an empty cell, so two clones of a model never share one.
#[derive(Debug)]
pub struct ScratchCell<T>(OnceLock<T>);

impl<T> Default for ScratchCell<T> {
    fn default() -> Self {
        ScratchCell(OnceLock::new())
    }
}

impl<T> Clone for ScratchCell<T> {
    fn clone(&self) -> Self {
        ScratchCell::default()
    }
}

impl<T> ScratchCell<T> {
    fn get(&self, make: impl FnOnce() -> Result<T>) -> Result<&T> {
        if let Some(c) = self.0.get() {
            return Ok(c);
        }
        let c = make()?;
        Ok(self.0.get_or_init(|| c))
    }
}

impl MoeBlock {
    /// The router logits, then the routing and the expert SwiGLU: in one op where
    /// the routed SwiGLU slot has a kernel for them, else in two.
    fn route_and_swiglu(
        &self,
        slots: &Slots,
        x: &Array,
        s: StreamOrDevice,
    ) -> Result<(ExpertHidden, Routing)> {
        let logits = self.gate.forward(slots, x, s)?;
        if slots.fuse_route_swiglu {
            if let Some(both) = slots.expert_swiglu.forward_routed(
                x,
                &logits,
                &self.router,
                &self.gate_proj,
                &self.up_proj,
                s,
            )? {
                return Ok(both);
            }
        }
        let routing = slots.router.route(&logits, &self.router, s)?;
        let hidden = slots
            .expert_swiglu
            .forward(x, &self.gate_proj, &self.up_proj, &routing, s)?;
        Ok((hidden, routing))
    }

    /// `residual + moe(x)`: the residual add travels with the down + combine op,
    /// which the fused implementation folds into its kernel (one op fewer). With
    /// `next`, the norm that follows may come back too, computed in the same op.
    fn forward(
        &self,
        slots: &Slots,
        x: &Array,
        residual: &Array,
        next: Option<&RmsNorm>,
        s: StreamOrDevice,
    ) -> Result<(Array, Option<Array>)> {
        // With the routed SwiGLU slot, the kernel may compute the router logits too
        // (one op for router, routing and SwiGLU); else it routes from them.
        let fused = match slots.fuse_route_swiglu {
            true => slots.expert_swiglu.forward_router_routed(
                x,
                &RouterMatmul {
                    weight: &self.gate.weight,
                    scratch: self.router_scratch.get(|| Ok(RouterScratch::new()?))?,
                },
                &self.router,
                &self.gate_proj,
                &self.up_proj,
                s,
            )?,
            false => None,
        };
        let (hidden, routing) = match fused {
            Some(both) => both,
            None => self.route_and_swiglu(slots, x, s)?,
        };
        let input = DownCombineInput {
            hidden: &hidden,
            down: &self.down_proj,
            routing: &routing,
            residual: Some(residual),
        };
        if let Some(norm) = next.filter(|_| slots.fuse_down_norm) {
            let next = NextNorm {
                weight: &norm.weight,
                eps: norm.eps,
                counter: self.norm_counter.get(|| Ok(NormCounter::new()?))?,
            };
            if let Some((h, n)) = slots.down_combine.forward_normed(&input, &next, s)? {
                return Ok((h, Some(n)));
            }
        }
        Ok((slots.down_combine.forward(&input, s)?, None))
    }
}

/// The feed-forward part of a layer.
#[derive(Clone, Debug)]
pub enum Mlp {
    /// A dense SwiGLU MLP.
    Dense {
        /// Gate projection.
        gate_proj: Linear,
        /// Up projection.
        up_proj: Linear,
        /// Down projection.
        down_proj: Linear,
    },
    /// A sparse MoE block.
    Moe(MoeBlock),
}

impl Mlp {
    /// `residual + mlp(x)`, and where the MoE block fuses it, the norm `next` of
    /// that.
    fn forward(
        &self,
        slots: &Slots,
        x: &Array,
        residual: &Array,
        next: Option<&RmsNorm>,
        s: StreamOrDevice,
    ) -> Result<(Array, Option<Array>)> {
        match self {
            Mlp::Dense {
                gate_proj,
                up_proj,
                down_proj,
            } => {
                let g = gate_proj.forward(slots, x, s)?;
                let u = up_proj.forward(slots, x, s)?;
                let r = down_proj.forward(slots, &swiglu(&g, &u, s)?, s)?;
                Ok((ops::add(residual, &r, s)?, None))
            }
            Mlp::Moe(m) => m.forward(slots, x, residual, next, s),
        }
    }
}

/// One decoder layer.
#[derive(Clone, Debug)]
pub struct DecoderLayer {
    /// Attention.
    pub self_attn: Attention,
    /// Feed-forward.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the feed-forward part.
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// The layer's output for `x`. `x_normed` is this layer's input norm of `x` when
    /// the previous layer computed it already; `next` is the norm that follows the
    /// layer, which comes back computed when the MoE block fuses it.
    fn forward(
        &self,
        slots: &Slots,
        x: &Array,
        x_normed: Option<Array>,
        next: Option<&RmsNorm>,
        cache: &mut KvCache,
        s: StreamOrDevice,
    ) -> Result<(Array, Option<Array>)> {
        let x_normed = match x_normed {
            Some(n) => n,
            None => self.input_layernorm.forward(slots, x, s)?,
        };
        let r = self.self_attn.forward(slots, &x_normed, cache, s)?;
        let post = &self.post_attention_layernorm;
        let hidden = x.shape().last().copied().unwrap_or(0);
        // The kernel takes two arrays of one shape and dtype and a weight of that
        // dtype; anything else (MLX would broadcast or promote) keeps MLX's ops.
        let (h, normed) = if slots.fuse_add_norm
            && r.shape() == x.shape()
            && r.dtype() == x.dtype()
            && post.weight.dtype() == x.dtype()
            && add_norm_support(hidden, Some(x.dtype()), s.device()?).is_yes()
        {
            fused_add_rms_norm(x, &r, &post.weight, post.eps, s)?
        } else {
            let h = ops::add(x, &r, s)?;
            let normed = post.forward(slots, &h, s)?;
            (h, normed)
        };
        self.mlp.forward(slots, &normed, &h, next, s)
    }
}

/// A Qwen3-MoE language model.
#[derive(Clone, Debug)]
pub struct Qwen3Moe {
    /// The configuration it was built from.
    pub config: Qwen3MoeConfig,
    /// Token embeddings.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection (`None` with tied embeddings).
    pub lm_head: Option<Linear>,
    /// The implementations the model calls (reference unless patched).
    pub slots: Slots,
    /// Where the model runs.
    pub stream: StreamOrDevice,
}

impl Qwen3Moe {
    /// Loads the checkpoint in `dir` (`config.json` and safetensors: one file or
    /// shards; mlx-community or Hugging Face layout) and reads its weights.
    ///
    /// # Errors
    /// A bad config, an invalid file, or tensors that do not fit the config
    /// ([`Error::Weights`] lists them).
    pub fn load(dir: impl AsRef<Path>, s: StreamOrDevice) -> Result<Qwen3Moe> {
        let dir = dir.as_ref();
        let config = Qwen3MoeConfig::from_file(dir.join("config.json"))?;
        let tensors = load_tensors(dir, s)?;
        let model = Qwen3Moe::from_tensors(config, tensors, dir, s)?;
        let params = model.parameters();
        eval_with_progress("loading weights", &params)?;
        Ok(model)
    }

    /// Builds the model from named tensors (lazy), following the checkpoint's key
    /// paths; `dir` only names the checkpoint in errors.
    ///
    /// # Errors
    /// [`Error::Weights`] listing every missing, unused or mis-shaped tensor.
    pub fn from_tensors(
        config: Qwen3MoeConfig,
        tensors: BTreeMap<String, Array>,
        dir: &Path,
        s: StreamOrDevice,
    ) -> Result<Qwen3Moe> {
        config.validate()?;
        let tensors = sanitize(&config, tensors, s)?;
        let mut t = Taker::new(&config, tensors, dir);
        let c = &config;
        let (h, hd) = (c.hidden_size as i32, c.head_dim as i32);
        let (nh, nkv) = (c.num_attention_heads as i32, c.num_key_value_heads as i32);
        let eps = c.rms_norm_eps as f32;
        let embed_tokens = Embedding {
            weight: t.weight("model.embed_tokens", None, c.vocab_size as i32, h),
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let self_attn = Attention {
                q_proj: t.linear(&format!("{p}.self_attn.q_proj"), nh * hd, h),
                k_proj: t.linear(&format!("{p}.self_attn.k_proj"), nkv * hd, h),
                v_proj: t.linear(&format!("{p}.self_attn.v_proj"), nkv * hd, h),
                o_proj: t.linear(&format!("{p}.self_attn.o_proj"), h, nh * hd),
                q_norm: t.norm(&format!("{p}.self_attn.q_norm"), hd, eps),
                k_norm: t.norm(&format!("{p}.self_attn.k_norm"), hd, eps),
                qkv: MergedProjection::default(),
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                rope_theta: c.rope_theta as f32,
            };
            let mlp = if c.is_moe_layer(i) {
                let (e, inter) = (c.num_experts as i32, c.moe_intermediate_size as i32);
                Mlp::Moe(MoeBlock {
                    gate: t.linear(&format!("{p}.mlp.gate"), e, h),
                    gate_proj: t.weight(
                        &format!("{p}.mlp.switch_mlp.gate_proj"),
                        Some(e),
                        inter,
                        h,
                    ),
                    up_proj: t.weight(&format!("{p}.mlp.switch_mlp.up_proj"), Some(e), inter, h),
                    down_proj: t.weight(
                        &format!("{p}.mlp.switch_mlp.down_proj"),
                        Some(e),
                        h,
                        inter,
                    ),
                    router: RouterSpec::SoftmaxTopK {
                        k: c.num_experts_per_tok as i32,
                        normalize: c.norm_topk_prob,
                    },
                    norm_counter: ScratchCell::default(),
                    router_scratch: ScratchCell::default(),
                })
            } else {
                let inter = c.intermediate_size as i32;
                Mlp::Dense {
                    gate_proj: t.linear(&format!("{p}.mlp.gate_proj"), inter, h),
                    up_proj: t.linear(&format!("{p}.mlp.up_proj"), inter, h),
                    down_proj: t.linear(&format!("{p}.mlp.down_proj"), h, inter),
                }
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: t.norm(&format!("{p}.input_layernorm"), h, eps),
                post_attention_layernorm: t.norm(&format!("{p}.post_attention_layernorm"), h, eps),
            });
        }
        let norm = t.norm("model.norm", h, eps);
        let lm_head = (!c.tie_word_embeddings).then(|| t.linear("lm_head", c.vocab_size as i32, h));
        t.finish()?;
        Ok(Qwen3Moe {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
            slots: Slots::reference(),
            stream: s,
        })
    }

    /// A fresh KV cache, one entry per layer.
    pub fn make_cache(&self) -> Vec<KvCache> {
        (0..self.layers.len()).map(|_| KvCache::new()).collect()
    }

    /// The dtype of activations and logits.
    pub fn dtype(&self) -> Dtype {
        self.embed_tokens.dtype()
    }

    /// Logits `[batch, len, vocab]` for `tokens` (`[batch, len]`, uint32), appending
    /// to `cache`.
    ///
    /// # Errors
    /// When `cache` does not have one entry per layer, or MLX fails.
    pub fn forward(&self, tokens: &Array, cache: &mut [KvCache]) -> Result<Array> {
        let h = self.hidden_states(tokens, cache)?;
        self.logits(&h)
    }

    /// The final-norm hidden states `[batch, len, hidden]` (no output projection).
    ///
    /// # Errors
    /// As [`Qwen3Moe::forward`].
    pub fn hidden_states(&self, tokens: &Array, cache: &mut [KvCache]) -> Result<Array> {
        if cache.len() != self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "the cache has {} entries, the model {} layers",
                cache.len(),
                self.layers.len()
            )));
        }
        if tokens.ndim() != 2 {
            return Err(Error::InvalidArgument(format!(
                "tokens must be [batch, len], got shape {:?}",
                tokens.shape()
            )));
        }
        let s = self.stream;
        let mut h = self.embed_tokens.forward(tokens, s)?;
        // A layer may hand over the next layer's input norm (or the final norm).
        let mut normed = None;
        for (i, (layer, c)) in self.layers.iter().zip(cache.iter_mut()).enumerate() {
            let next = match self.layers.get(i + 1) {
                Some(l) => &l.input_layernorm,
                None => &self.norm,
            };
            (h, normed) = layer.forward(&self.slots, &h, normed, Some(next), c, s)?;
        }
        match normed {
            Some(n) => Ok(n),
            None => self.norm.forward(&self.slots, &h, s),
        }
    }

    /// The output projection of final hidden states.
    ///
    /// # Errors
    /// When MLX fails.
    pub fn logits(&self, h: &Array) -> Result<Array> {
        match &self.lm_head {
            Some(head) => head.forward(&self.slots, h, self.stream),
            None => self.embed_tokens.as_linear(&self.slots, h, self.stream),
        }
    }

    /// Every parameter array (for evaluation and byte counts).
    pub fn parameters(&self) -> Vec<&Array> {
        let mut out = self.embed_tokens.weight.arrays();
        for l in &self.layers {
            let a = &l.self_attn;
            for lin in [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj] {
                out.extend(lin.weight.arrays());
            }
            out.extend([&a.q_norm.weight, &a.k_norm.weight]);
            out.extend([
                &l.input_layernorm.weight,
                &l.post_attention_layernorm.weight,
            ]);
            match &l.mlp {
                Mlp::Dense {
                    gate_proj,
                    up_proj,
                    down_proj,
                } => {
                    for lin in [gate_proj, up_proj, down_proj] {
                        out.extend(lin.weight.arrays());
                    }
                }
                Mlp::Moe(m) => {
                    out.extend(m.gate.weight.arrays());
                    for w in [&m.gate_proj, &m.up_proj, &m.down_proj] {
                        out.extend(w.arrays());
                    }
                }
            }
        }
        out.push(&self.norm.weight);
        if let Some(h) = &self.lm_head {
            out.extend(h.weight.arrays());
        }
        out
    }
}

/// mlx-lm's `sanitize`: drop a tied `lm_head`, stack Hugging Face per-expert weights
/// into `switch_mlp` stacks.
fn sanitize(
    c: &Qwen3MoeConfig,
    mut t: BTreeMap<String, Array>,
    s: StreamOrDevice,
) -> Result<BTreeMap<String, Array>> {
    if c.tie_word_embeddings {
        t.remove("lm_head.weight");
    }
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        if !t.contains_key(&format!("{p}.mlp.experts.0.up_proj.weight")) {
            continue;
        }
        for n in ["up_proj", "down_proj", "gate_proj"] {
            let mut parts = Vec::with_capacity(c.num_experts);
            for e in 0..c.num_experts {
                let key = format!("{p}.mlp.experts.{e}.{n}.weight");
                match t.remove(&key) {
                    Some(a) => parts.push(a),
                    None => {
                        return Err(Error::Weights {
                            path: PathBuf::new(),
                            missing: vec![key],
                            unused: vec![],
                            mismatched: vec![],
                        })
                    }
                }
            }
            let refs: Vec<&Array> = parts.iter().collect();
            t.insert(
                format!("{p}.mlp.switch_mlp.{n}.weight"),
                ops::stack(&refs, 0, s)?,
            );
        }
    }
    Ok(t)
}

/// Takes named tensors out of the map, collecting every problem before failing.
struct Taker<'a> {
    config: &'a Qwen3MoeConfig,
    tensors: BTreeMap<String, Array>,
    dir: &'a Path,
    missing: Vec<String>,
    mismatched: Vec<String>,
    float_dtype: Option<Dtype>,
}

impl<'a> Taker<'a> {
    fn new(config: &'a Qwen3MoeConfig, tensors: BTreeMap<String, Array>, dir: &'a Path) -> Self {
        Taker {
            config,
            tensors,
            dir,
            missing: Vec::new(),
            mismatched: Vec::new(),
            float_dtype: None,
        }
    }

    /// A placeholder for a tensor that failed (the build fails in `finish`).
    fn placeholder() -> Array {
        Array::scalar(0.0f32).expect("a scalar always builds")
    }

    fn take(&mut self, name: &str) -> Option<Array> {
        let a = self.tensors.remove(name);
        if a.is_none() {
            self.missing.push(name.to_string());
        }
        a
    }

    fn check_float(&mut self, name: &str, a: &Array) -> bool {
        let d = a.dtype();
        if !matches!(d, Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16) {
            self.mismatched
                .push(format!("{name}: dtype {d:?}, expected f32, f16 or bf16"));
            return false;
        }
        // Every float tensor of a checkpoint must share one dtype: MLX would promote
        // mixed dtypes and silently change what the model computes.
        match self.float_dtype {
            None => self.float_dtype = Some(d),
            Some(f) if f != d => {
                self.mismatched
                    .push(format!("{name}: dtype {d:?}, but other tensors are {f:?}"));
                return false;
            }
            _ => {}
        }
        true
    }

    fn norm(&mut self, module: &str, dim: i32, eps: f32) -> RmsNorm {
        let name = format!("{module}.weight");
        let weight = match self.take(&name) {
            Some(a) if a.shape() == [dim] => {
                if self.check_float(&name, &a) {
                    a
                } else {
                    Self::placeholder()
                }
            }
            Some(a) => {
                self.mismatched
                    .push(format!("{name}: shape {:?}, expected [{dim}]", a.shape()));
                Self::placeholder()
            }
            None => Self::placeholder(),
        };
        RmsNorm { weight, eps }
    }

    fn linear(&mut self, module: &str, out: i32, inp: i32) -> Linear {
        Linear {
            weight: self.weight(module, None, out, inp),
        }
    }

    /// A float or quantized weight of logical shape `[experts?, out, inp]`.
    fn weight(&mut self, module: &str, experts: Option<i32>, out: i32, inp: i32) -> Weight {
        let name = format!("{module}.weight");
        let scales_name = format!("{module}.scales");
        let lead: Vec<i32> = experts.into_iter().collect();
        if !self.tensors.contains_key(&scales_name) {
            let Some(w) = self.take(&name) else {
                return Weight::Float(Self::placeholder());
            };
            let want: Vec<i32> = lead.iter().copied().chain([out, inp]).collect();
            if w.shape() != want.as_slice() {
                self.mismatched
                    .push(format!("{name}: shape {:?}, expected {want:?}", w.shape()));
            } else if self.config.quant_for(module).is_some() {
                self.mismatched.push(format!(
                    "{name}: float, but config.json quantizes {module} (its {scales_name} is missing)"
                ));
            } else {
                self.check_float(&name, &w);
            }
            return Weight::Float(w);
        }
        let Some(spec) = self.config.quant_for(module) else {
            self.mismatched.push(format!(
                "{scales_name}: the checkpoint quantizes {module} but config.json has no quantization for it"
            ));
            self.tensors.remove(&scales_name);
            self.tensors.remove(&format!("{module}.biases"));
            self.tensors.remove(&name);
            return Weight::Float(Self::placeholder());
        };
        let mode = spec.mode;
        let spec = MlxQuantSpec {
            group_size: spec.group_size as i32,
            bits: spec.bits as i32,
            mode,
        };
        let w = self.take(&name);
        let scales = self.take(&scales_name);
        let biases = if mode.has_biases() {
            self.take(&format!("{module}.biases"))
        } else {
            None
        };
        let (Some(w), Some(scales)) = (w, scales) else {
            return Weight::Float(Self::placeholder());
        };
        let packed = inp * spec.bits / 32;
        let groups = inp / spec.group_size;
        let want_w: Vec<i32> = lead.iter().copied().chain([out, packed]).collect();
        let want_s: Vec<i32> = lead.iter().copied().chain([out, groups]).collect();
        if w.dtype() != Dtype::Uint32 || w.shape() != want_w.as_slice() {
            self.mismatched.push(format!(
                "{name}: {:?} {:?}, expected uint32 {want_w:?} ({}-bit of {inp} inputs)",
                w.dtype(),
                w.shape(),
                spec.bits
            ));
        }
        if scales.shape() != want_s.as_slice() {
            self.mismatched.push(format!(
                "{scales_name}: shape {:?}, expected {want_s:?} (group size {})",
                scales.shape(),
                spec.group_size
            ));
        } else {
            self.check_float(&scales_name, &scales);
        }
        if let Some(b) = &biases {
            if b.shape() != want_s.as_slice() || b.dtype() != scales.dtype() {
                self.mismatched.push(format!(
                    "{module}.biases: {:?} {:?}, expected {:?} {want_s:?}",
                    b.dtype(),
                    b.shape(),
                    scales.dtype()
                ));
            }
        }
        Weight::Quantized(QuantizedWeight {
            weight: w,
            scales,
            biases,
            spec,
        })
    }

    fn finish(self) -> Result<()> {
        let unused: Vec<String> = self.tensors.keys().cloned().collect();
        if self.missing.is_empty() && self.mismatched.is_empty() && unused.is_empty() {
            return Ok(());
        }
        Err(Error::Weights {
            path: self.dir.to_path_buf(),
            missing: self.missing,
            unused,
            mismatched: self.mismatched,
        })
    }
}

impl zmlx_patch::Patchable for Qwen3Moe {
    fn family(&self) -> &str {
        &self.config.model_type
    }

    fn device(&self) -> mlx::Result<mlx::Device> {
        self.stream.device()
    }

    fn modules(&self) -> Vec<zmlx_patch::Module<'_>> {
        use zmlx_patch::Module;
        fn lin(path: String, l: &Linear) -> zmlx_patch::Module<'_> {
            zmlx_patch::Module::Linear {
                path,
                weight: &l.weight,
            }
        }
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            let a = &l.self_attn;
            for (n, x) in [
                ("q_proj", &a.q_proj),
                ("k_proj", &a.k_proj),
                ("v_proj", &a.v_proj),
                ("o_proj", &a.o_proj),
            ] {
                out.push(lin(format!("{p}.self_attn.{n}"), x));
            }
            out.push(Module::Attention {
                path: format!("{p}.self_attn"),
                head_norm_rope: a.head_norm_rope_spec(),
                hidden: i32::try_from(self.config.hidden_size).unwrap_or(i32::MAX),
            });
            out.push(Module::Projections {
                path: format!("{p}.self_attn (q, k, v)"),
                weights: vec![&a.q_proj.weight, &a.k_proj.weight, &a.v_proj.weight],
            });
            match &l.mlp {
                Mlp::Dense {
                    gate_proj,
                    up_proj,
                    down_proj,
                } => {
                    for (n, x) in [
                        ("gate_proj", gate_proj),
                        ("up_proj", up_proj),
                        ("down_proj", down_proj),
                    ] {
                        out.push(lin(format!("{p}.mlp.{n}"), x));
                    }
                }
                Mlp::Moe(m) => {
                    out.push(lin(format!("{p}.mlp.gate"), &m.gate));
                    out.push(Module::Moe {
                        path: format!("{p}.mlp"),
                        router: &m.router,
                        experts: m.gate_proj.experts(),
                        gate: &m.gate_proj,
                        up: &m.up_proj,
                        down: &m.down_proj,
                    });
                }
            }
        }
        match &self.lm_head {
            Some(h) => out.push(lin("lm_head".into(), h)),
            None => out.push(Module::Linear {
                path: "model.embed_tokens (tied lm_head)".into(),
                weight: &self.embed_tokens.weight,
            }),
        }
        out
    }

    fn slots_mut(&mut self) -> &mut Slots {
        &mut self.slots
    }
}
