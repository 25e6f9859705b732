//! Qwen3-MoE `config.json`: parsing, validation and the quantization map.
//!
//! The accepted fields and their meaning follow mlx-lm's `qwen3_moe.ModelArgs`
//! (mlx-lm 0.32): every field that mlx-lm requires is required here too, so a
//! config that this parser accepts is one that mlx-lm can build a model from.
//! Unknown fields (`architectures`, `torch_dtype`, `bos_token_id`, ...) are ignored.
//!
//! Parsing goes through a [`serde_json::Value`] and extracts field by field (rather
//! than a derived `Deserialize`) so that every error names the field it is about.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The `model_type` this module parses.
pub const MODEL_TYPE: &str = "qwen3_moe";

/// Largest `config.json` accepted: real ones are a few KiB, and the file may be
/// untrusted, so refuse to read an arbitrarily large one into memory.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The hyper-parameters of a Qwen3-MoE model, validated.
///
/// Build it with [`Qwen3MoeConfig::from_file`], [`Qwen3MoeConfig::from_json_str`],
/// [`Qwen3MoeConfig::from_value`] or serde (`Deserialize` runs the same validation).
/// Serializing gives a `config.json` that both this parser and mlx-lm accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct Qwen3MoeConfig {
    /// Always `"qwen3_moe"`.
    pub model_type: String,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Hidden width of the dense MLP used by non-MoE layers.
    pub intermediate_size: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// Width of one attention head (not necessarily `hidden_size / heads`).
    pub head_dim: usize,
    /// Number of routed experts per MoE layer (0: every layer is dense).
    pub num_experts: usize,
    /// Experts each token is routed to (top-k).
    pub num_experts_per_tok: usize,
    /// Hidden width of one expert's SwiGLU MLP.
    pub moe_intermediate_size: usize,
    /// Layer `i` is MoE when `(i + 1) % decoder_sparse_step == 0` (and not in `mlp_only_layers`).
    pub decoder_sparse_step: usize,
    /// Layers forced to the dense MLP.
    pub mlp_only_layers: Vec<usize>,
    /// Whether the top-k router probabilities are renormalised to sum to one.
    pub norm_topk_prob: bool,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Vocabulary size (rows of the embedding and of `lm_head`).
    pub vocab_size: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Whether `lm_head` reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// The mlx-community quantization block, if the checkpoint is quantized.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationConfig>,
}

/// Quantization mode: MLX's own type (one definition for the loader and MLX); in
/// `config.json` it is the lowercase name MLX uses.
pub use mlx::quantization::QuantMode;

fn serialize_mode<S: Serializer>(m: &QuantMode, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// How one module is quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct QuantSpec {
    /// Weights per scale (along the input dimension).
    pub group_size: usize,
    /// Bits per weight.
    pub bits: usize,
    /// The quantization mode.
    #[serde(serialize_with = "serialize_mode")]
    pub mode: QuantMode,
}

impl QuantSpec {
    /// Affine quantization with the given group size and bits.
    pub fn affine(group_size: usize, bits: usize) -> Self {
        QuantSpec {
            group_size,
            bits,
            mode: QuantMode::Affine,
        }
    }

    /// Checks the combination is one MLX implements; `field` names it in errors.
    fn check(&self, field: &str) -> Result<()> {
        let ok = match self.mode {
            QuantMode::Affine => {
                if ![2, 3, 4, 5, 6, 8].contains(&self.bits) {
                    return Err(Error::config(
                        format!("{field}.bits"),
                        format!(
                            "affine quantization supports 2, 3, 4, 5, 6 or 8 bits, not {}",
                            self.bits
                        ),
                    ));
                }
                [32, 64, 128].contains(&self.group_size)
            }
            QuantMode::Mxfp4 => self.bits == 4 && self.group_size == 32,
            QuantMode::Mxfp8 => self.bits == 8 && self.group_size == 32,
            QuantMode::Nvfp4 => self.bits == 4 && self.group_size == 16,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::config(
                format!("{field}.group_size"),
                format!(
                    "group size {} with {} bits is not supported by {} quantization",
                    self.group_size,
                    self.bits,
                    self.mode.as_str()
                ),
            ))
        }
    }
}

/// The `quantization` block of an mlx-community `config.json`.
///
/// Top-level `group_size`, `bits` and `mode` give the default; any other key that
/// maps to an object is a per-module override (e.g. `"model.layers.0.mlp.gate":
/// {"group_size": 64, "bits": 8}`), and a module mapped to `false` is not quantized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizationConfig {
    /// Applies to every quantized module without an override.
    pub default: QuantSpec,
    /// Per-module overrides keyed by module path; `None` means "not quantized".
    pub overrides: BTreeMap<String, Option<QuantSpec>>,
}

impl QuantizationConfig {
    /// A block with only a default.
    pub fn uniform(default: QuantSpec) -> Self {
        QuantizationConfig {
            default,
            overrides: BTreeMap::new(),
        }
    }

    /// How the module at `module_path` (e.g. `model.layers.3.mlp.gate`) is quantized
    /// according to this block: its override if it has one, else the default.
    ///
    /// mlx-lm additionally quantizes a module without an override only if the
    /// checkpoint holds `{module_path}.scales`, and then infers bits and group size
    /// from the tensor shapes; a loader must check the weights too.
    pub fn quant_for(&self, module_path: &str) -> Option<QuantSpec> {
        match self.overrides.get(module_path) {
            Some(spec) => *spec,
            None => Some(self.default),
        }
    }

    /// Parses the block; `field` is the key it was found under.
    fn from_value(value: &Value, field: &str) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            Error::config(field, format!("expected an object, found {}", kind(value)))
        })?;
        // mlx-lm's default mode is affine when the key is absent.
        let default = spec_from_object(obj, field, QuantMode::Affine)?;
        let mut overrides = BTreeMap::new();
        for (key, v) in obj {
            let sub = format!("{field}.{key}");
            match v {
                Value::Object(o) => {
                    // A per-module dict goes to `to_quantized(**dict)` in MLX, whose
                    // default mode is affine: it does not inherit the top-level mode.
                    let spec = spec_from_object(o, &sub, QuantMode::Affine)?;
                    overrides.insert(key.clone(), Some(spec));
                }
                Value::Bool(false) => {
                    overrides.insert(key.clone(), None);
                }
                // `true` means "quantize with the defaults", the same as no override.
                Value::Bool(true) => {}
                // Scalars are the default's own fields or tool metadata
                // (`quant_method`, ...): not modules.
                _ => {}
            }
        }
        Ok(QuantizationConfig { default, overrides })
    }
}

impl Serialize for QuantizationConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3 + self.overrides.len()))?;
        map.serialize_entry("group_size", &self.default.group_size)?;
        map.serialize_entry("bits", &self.default.bits)?;
        map.serialize_entry("mode", self.default.mode.as_str())?;
        for (path, spec) in &self.overrides {
            match spec {
                Some(spec) => map.serialize_entry(path, spec)?,
                None => map.serialize_entry(path, &false)?,
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for QuantizationConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        QuantizationConfig::from_value(&v, "quantization").map_err(serde::de::Error::custom)
    }
}

fn spec_from_object(
    obj: &Map<String, Value>,
    field: &str,
    default_mode: QuantMode,
) -> Result<QuantSpec> {
    let group_size = req_usize(obj, field, "group_size")?;
    let bits = req_usize(obj, field, "bits")?;
    let mode = match obj.get("mode") {
        None | Some(Value::Null) => default_mode,
        Some(Value::String(s)) => QuantMode::parse(s).map_err(|_| {
            Error::config(
                format!("{field}.mode"),
                format!("unknown quantization mode `{s}` (expected affine, mxfp4, mxfp8 or nvfp4)"),
            )
        })?,
        Some(other) => {
            return Err(Error::config(
                format!("{field}.mode"),
                format!("expected a string, found {}", kind(other)),
            ))
        }
    };
    let spec = QuantSpec {
        group_size,
        bits,
        mode,
    };
    spec.check(field)?;
    Ok(spec)
}

/// A JSON value's kind, for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn dotted(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn get<'a>(obj: &'a Map<String, Value>, prefix: &str, name: &str) -> Result<&'a Value> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(Error::config(
            dotted(prefix, name),
            "missing (required by Qwen3-MoE)",
        )),
        Some(v) => Ok(v),
    }
}

fn req_usize(obj: &Map<String, Value>, prefix: &str, name: &str) -> Result<usize> {
    let v = get(obj, prefix, name)?;
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            Error::config(
                dotted(prefix, name),
                format!("expected a non-negative integer, found {v}"),
            )
        })
}

fn req_f64(obj: &Map<String, Value>, name: &str) -> Result<f64> {
    let v = get(obj, "", name)?;
    v.as_f64()
        .ok_or_else(|| Error::config(name, format!("expected a number, found {}", kind(v))))
}

fn req_bool(obj: &Map<String, Value>, name: &str) -> Result<bool> {
    let v = get(obj, "", name)?;
    v.as_bool()
        .ok_or_else(|| Error::config(name, format!("expected true or false, found {}", kind(v))))
}

fn req_usize_list(obj: &Map<String, Value>, name: &str) -> Result<Vec<usize>> {
    let v = get(obj, "", name)?;
    let arr = v.as_array().ok_or_else(|| {
        Error::config(
            name,
            format!("expected an array of layer indices, found {}", kind(v)),
        )
    })?;
    arr.iter()
        .map(|x| {
            x.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| Error::config(name, format!("expected a layer index, found {x}")))
        })
        .collect()
}

fn positive(value: usize, field: &str) -> Result<()> {
    if value == 0 {
        Err(Error::config(field, "must be at least 1"))
    } else {
        Ok(())
    }
}

fn positive_finite(value: f64, field: &str) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("must be a positive finite number, not {value}"),
        ))
    }
}

impl Qwen3MoeConfig {
    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(Error::config(
                "<file>",
                format!(
                    "{} is {} bytes, more than the {MAX_CONFIG_BYTES} accepted for a config.json",
                    path.display(),
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_slice(&text)
    }

    /// Parses and validates JSON text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::from_json_slice(text.as_bytes())
    }

    /// Parses and validates JSON bytes.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes).map_err(Error::ConfigJson)?;
        Self::from_value(&value)
    }

    /// Validates an already-parsed JSON value.
    pub fn from_value(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| {
            Error::config(
                "<root>",
                format!("expected a JSON object, found {}", kind(value)),
            )
        })?;

        let model_type = match get(obj, "", "model_type")? {
            Value::String(s) => s.clone(),
            other => {
                return Err(Error::config(
                    "model_type",
                    format!("expected a string, found {}", kind(other)),
                ))
            }
        };
        if model_type != MODEL_TYPE {
            return Err(Error::config(
                "model_type",
                format!("this is a `{model_type}` model; only `{MODEL_TYPE}` is supported"),
            ));
        }

        // mlx-lm would build a different model (scaled RoPE) that zmlx does not
        // implement; refusing is better than silently computing something else.
        if let Some(v) = obj.get("rope_scaling") {
            if !v.is_null() {
                return Err(Error::config(
                    "rope_scaling",
                    "RoPE scaling is not supported yet (must be null or absent)",
                ));
            }
        }

        let quantization = match (obj.get("quantization"), obj.get("quantization_config")) {
            (Some(v), _) if !v.is_null() => {
                Some(QuantizationConfig::from_value(v, "quantization")?)
            }
            (_, Some(v)) if !v.is_null() => {
                // Hugging Face quantizers (awq, gptq, fp8, ...) use this key with a
                // `quant_method`; only the mlx-community duplicate is understood here.
                if let Some(m) = v.get("quant_method") {
                    return Err(Error::config(
                        "quantization_config.quant_method",
                        format!(
                            "{m} checkpoints are not supported; use an MLX-quantized checkpoint"
                        ),
                    ));
                }
                Some(QuantizationConfig::from_value(v, "quantization_config")?)
            }
            _ => None,
        };

        let cfg = Qwen3MoeConfig {
            model_type,
            hidden_size: req_usize(obj, "", "hidden_size")?,
            num_hidden_layers: req_usize(obj, "", "num_hidden_layers")?,
            intermediate_size: req_usize(obj, "", "intermediate_size")?,
            num_attention_heads: req_usize(obj, "", "num_attention_heads")?,
            num_key_value_heads: req_usize(obj, "", "num_key_value_heads")?,
            head_dim: req_usize(obj, "", "head_dim")?,
            num_experts: req_usize(obj, "", "num_experts")?,
            num_experts_per_tok: req_usize(obj, "", "num_experts_per_tok")?,
            moe_intermediate_size: req_usize(obj, "", "moe_intermediate_size")?,
            decoder_sparse_step: req_usize(obj, "", "decoder_sparse_step")?,
            mlp_only_layers: req_usize_list(obj, "mlp_only_layers")?,
            norm_topk_prob: req_bool(obj, "norm_topk_prob")?,
            rms_norm_eps: req_f64(obj, "rms_norm_eps")?,
            vocab_size: req_usize(obj, "", "vocab_size")?,
            rope_theta: req_f64(obj, "rope_theta")?,
            tie_word_embeddings: req_bool(obj, "tie_word_embeddings")?,
            max_position_embeddings: req_usize(obj, "", "max_position_embeddings")?,
            quantization,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values are consistent; every error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.model_type != MODEL_TYPE {
            return Err(Error::config(
                "model_type",
                format!("must be `{MODEL_TYPE}`"),
            ));
        }
        positive(self.hidden_size, "hidden_size")?;
        positive(self.num_hidden_layers, "num_hidden_layers")?;
        positive(self.num_attention_heads, "num_attention_heads")?;
        positive(self.num_key_value_heads, "num_key_value_heads")?;
        positive(self.head_dim, "head_dim")?;
        positive(self.vocab_size, "vocab_size")?;
        positive(self.max_position_embeddings, "max_position_embeddings")?;
        // mlx-lm computes `(i + 1) % decoder_sparse_step`: zero would divide by zero.
        positive(self.decoder_sparse_step, "decoder_sparse_step")?;
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(Error::config(
                "num_key_value_heads",
                format!(
                    "{} query heads cannot be grouped over {} key/value heads (must divide evenly)",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if self.num_key_value_heads > self.num_attention_heads {
            return Err(Error::config(
                "num_key_value_heads",
                "exceeds num_attention_heads",
            ));
        }
        if let Some(&bad) = self
            .mlp_only_layers
            .iter()
            .find(|&&l| l >= self.num_hidden_layers)
        {
            return Err(Error::config(
                "mlp_only_layers",
                format!(
                    "layer {bad} does not exist (num_hidden_layers = {})",
                    self.num_hidden_layers
                ),
            ));
        }
        if self.num_experts > 0 && self.num_moe_layers() > 0 {
            positive(self.num_experts_per_tok, "num_experts_per_tok")?;
            positive(self.moe_intermediate_size, "moe_intermediate_size")?;
            if self.num_experts_per_tok > self.num_experts {
                return Err(Error::config(
                    "num_experts_per_tok",
                    format!(
                        "top-{} routing over only {} experts",
                        self.num_experts_per_tok, self.num_experts
                    ),
                ));
            }
        }
        if self.num_moe_layers() < self.num_hidden_layers {
            positive(self.intermediate_size, "intermediate_size")?;
        }
        positive_finite(self.rms_norm_eps, "rms_norm_eps")?;
        positive_finite(self.rope_theta, "rope_theta")?;
        if let Some(q) = &self.quantization {
            q.default.check("quantization")?;
            if self.hidden_size % q.default.group_size != 0 {
                return Err(Error::config(
                    "quantization.group_size",
                    format!(
                        "group size {} does not divide hidden_size {}",
                        q.default.group_size, self.hidden_size
                    ),
                ));
            }
            for (path, spec) in &q.overrides {
                if let Some(spec) = spec {
                    spec.check(&format!("quantization.{path}"))?;
                }
            }
        }
        Ok(())
    }

    /// Whether layer `layer` uses the sparse MoE block (else the dense MLP), by
    /// mlx-lm's rule.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        !self.mlp_only_layers.contains(&layer)
            && self.num_experts > 0
            && self.decoder_sparse_step > 0
            && (layer + 1) % self.decoder_sparse_step == 0
    }

    /// How many layers are MoE layers.
    pub fn num_moe_layers(&self) -> usize {
        (0..self.num_hidden_layers)
            .filter(|&l| self.is_moe_layer(l))
            .count()
    }

    /// Width of all query heads together (`num_attention_heads * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// How the module at `module_path` is quantized by the config (`None` when the
    /// checkpoint is float or the module is excluded). See
    /// [`QuantizationConfig::quant_for`] for what a loader must check besides.
    pub fn quant_for(&self, module_path: &str) -> Option<QuantSpec> {
        self.quantization
            .as_ref()
            .and_then(|q| q.quant_for(module_path))
    }
}

impl TryFrom<Value> for Qwen3MoeConfig {
    type Error = Error;
    fn try_from(value: Value) -> Result<Self> {
        Qwen3MoeConfig::from_value(&value)
    }
}

impl std::str::FromStr for Qwen3MoeConfig {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Qwen3MoeConfig::from_json_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        serde_json::json!({
            "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
            "hidden_size": 2048, "num_hidden_layers": 48, "intermediate_size": 6144,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
            "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": true,
            "rms_norm_eps": 1e-6, "vocab_size": 151936, "rope_theta": 1000000.0,
            "tie_word_embeddings": false, "max_position_embeddings": 40960,
            "rope_scaling": null, "some_unknown_field": {"x": 1}
        })
    }

    fn field_of(v: Value) -> String {
        Qwen3MoeConfig::from_value(&v)
            .expect_err("config should be rejected")
            .config_field()
            .map(str::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn parses_qwen3_30b_a3b() {
        let c = Qwen3MoeConfig::from_value(&base()).unwrap();
        assert_eq!(c.hidden_size, 2048);
        assert_eq!(c.num_moe_layers(), 48);
        assert_eq!(c.q_dim(), 4096);
        assert_eq!(c.kv_dim(), 512);
        assert!(c.quantization.is_none());
        assert_eq!(c.quant_for("lm_head"), None);
    }

    #[test]
    fn errors_name_the_field() {
        for field in [
            "hidden_size",
            "head_dim",
            "num_experts",
            "norm_topk_prob",
            "rope_theta",
            "mlp_only_layers",
        ] {
            let mut v = base();
            v.as_object_mut().unwrap().remove(field);
            assert_eq!(field_of(v), field, "missing {field}");
        }
        let mut v = base();
        v["num_attention_heads"] = 0.into();
        assert_eq!(field_of(v), "num_attention_heads");
        let mut v = base();
        v["num_experts_per_tok"] = 129.into();
        assert_eq!(field_of(v), "num_experts_per_tok");
        let mut v = base();
        v["num_key_value_heads"] = 5.into();
        assert_eq!(field_of(v), "num_key_value_heads");
        let mut v = base();
        v["hidden_size"] = "2048".into();
        assert_eq!(field_of(v), "hidden_size");
        let mut v = base();
        v["hidden_size"] = (-1).into();
        assert_eq!(field_of(v), "hidden_size");
        let mut v = base();
        v["model_type"] = "llama".into();
        assert_eq!(field_of(v), "model_type");
        let mut v = base();
        v["decoder_sparse_step"] = 0.into();
        assert_eq!(field_of(v), "decoder_sparse_step");
        let mut v = base();
        v["mlp_only_layers"] = serde_json::json!([48]);
        assert_eq!(field_of(v), "mlp_only_layers");
        let mut v = base();
        v["rms_norm_eps"] = 0.into();
        assert_eq!(field_of(v), "rms_norm_eps");
        let mut v = base();
        v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0});
        assert_eq!(field_of(v), "rope_scaling");
    }

    #[test]
    fn quantization_block() {
        let mut v = base();
        v["quantization"] = serde_json::json!({
            "group_size": 64, "bits": 4,
            "model.layers.0.mlp.gate": {"group_size": 64, "bits": 8},
            "model.layers.1.mlp.gate": false,
            "lm_head": true
        });
        let c = Qwen3MoeConfig::from_value(&v).unwrap();
        assert_eq!(
            c.quant_for("model.layers.0.mlp.gate"),
            Some(QuantSpec::affine(64, 8))
        );
        assert_eq!(c.quant_for("model.layers.1.mlp.gate"), None);
        assert_eq!(c.quant_for("lm_head"), Some(QuantSpec::affine(64, 4)));
        assert_eq!(
            c.quant_for("model.layers.5.self_attn.q_proj"),
            Some(QuantSpec::affine(64, 4))
        );
        // Round trip through serde.
        let text = serde_json::to_string(&c).unwrap();
        let back: Qwen3MoeConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn quantization_config_duplicate_and_errors() {
        let mut v = base();
        v["quantization_config"] = serde_json::json!({"group_size": 32, "bits": 8});
        let c = Qwen3MoeConfig::from_value(&v).unwrap();
        assert_eq!(c.quant_for("lm_head"), Some(QuantSpec::affine(32, 8)));

        let mut v = base();
        v["quantization"] = serde_json::json!({"group_size": 64, "bits": 7});
        assert_eq!(field_of(v), "quantization.bits");
        let mut v = base();
        v["quantization"] = serde_json::json!({"bits": 4});
        assert_eq!(field_of(v), "quantization.group_size");
        let mut v = base();
        v["quantization"] = serde_json::json!({"group_size": 64, "bits": 4, "x.gate": {"bits": 8}});
        assert_eq!(field_of(v), "quantization.x.gate.group_size");
        let mut v = base();
        v["quantization_config"] = serde_json::json!({"quant_method": "awq", "bits": 4});
        assert_eq!(field_of(v), "quantization_config.quant_method");
    }

    #[test]
    fn bad_json_is_config_json_error() {
        assert!(matches!(
            Qwen3MoeConfig::from_json_str("{"),
            Err(Error::ConfigJson(_))
        ));
        assert_eq!(
            Qwen3MoeConfig::from_json_str("[]")
                .unwrap_err()
                .config_field(),
            Some("<root>")
        );
    }
}
