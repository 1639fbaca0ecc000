//! `LlamaConfig`: the model shape, read straight from a Hugging Face `config.json` (both the
//! Llama-2 layout with `rope_theta` at top level and the newer `rope_parameters` / `rope_scaling`
//! layouts, including Llama-3.1's `llama3` RoPE scaling), and written back with the same keys.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::dtype::Dtype;
use crate::error::{ModelError, Result};

/// How rotary frequencies are scaled (`rope_type` in Hugging Face configs).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`default`).
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama-3.1 frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

/// Rotary embedding parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// The shape and constants of a LLaMA model.
#[derive(Clone, Debug)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope: RopeConfig,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v/o projections (`attention_bias`, e.g. Qwen-style LLaMAs).
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Every key of the file this config was read from, so a saved config keeps them all.
    raw: Map<String, Value>,
}

struct Reader<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, key: &str, msg: impl Into<String>) -> ModelError {
        ModelError::ConfigKey {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize_req(&self, key: &str) -> Result<usize> {
        match self.get(key) {
            None => Err(self.err(key, "missing")),
            Some(v) => self.as_usize(key, v),
        }
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|v| self.as_usize(key, v)).transpose()
    }

    fn as_usize(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, found {v}")))
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| self.err(key, format!("expected a number, found {v}")))
            })
            .transpose()
    }

    fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.err(key, format!("expected true or false, found {v}")))
            })
            .transpose()
    }

    fn token_ids(&self, key: &str) -> Result<Vec<u32>> {
        match self.get(key) {
            None => Ok(vec![]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| self.as_usize(key, v).map(|x| x as u32))
                .collect(),
            Some(v) => Ok(vec![self.as_usize(key, v)? as u32]),
        }
    }
}

impl LlamaConfig {
    /// Reads `config.json` (the file itself, or the directory holding it).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path: PathBuf = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push("config.json");
        }
        if !path.exists() {
            return Err(ModelError::MissingConfig { path });
        }
        let text = std::fs::read_to_string(&path).map_err(crate::error::io_err(&path))?;
        Self::from_json_str(&text, &path)
    }

    /// Parses the text of a `config.json`; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|source| ModelError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let Value::Object(map) = value else {
            return Err(ModelError::ConfigKey {
                path: path.to_path_buf(),
                key: "(root)".into(),
                msg: "expected a JSON object".into(),
            });
        };
        Self::from_map(map, path)
    }

    fn from_map(map: Map<String, Value>, path: &Path) -> Result<Self> {
        let r = Reader { path, map: &map };
        match r.get("model_type").and_then(Value::as_str) {
            Some("llama") => {}
            Some(other) => {
                return Err(ModelError::UnsupportedModel {
                    path: path.to_path_buf(),
                    model_type: other.to_string(),
                })
            }
            None => return Err(r.err("model_type", "missing")),
        }
        if let Some(act) = r.get("hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(r.err(
                    "hidden_act",
                    format!("only `silu` is supported, found {act}"),
                ));
            }
        }
        if let Some(q) = r.get("quantization_config") {
            let method = q
                .get("quant_method")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Err(r.err(
                "quantization_config",
                format!(
                    "quantized weights ({method}) are not supported; give the unquantized \
                     model (f32, bf16 or f16 safetensors, or a GGUF)"
                ),
            ));
        }
        if r.bool_opt("mlp_bias")? == Some(true) {
            return Err(r.err(
                "mlp_bias",
                "biases in the FFN are not supported (attention biases are)",
            ));
        }
        let hidden_size = r.usize_req("hidden_size")?;
        let num_attention_heads = r.usize_req("num_attention_heads")?;
        let num_key_value_heads = r
            .usize_opt("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        let head_dim = match r.usize_opt("head_dim")? {
            Some(d) => d,
            None if num_attention_heads > 0 => hidden_size / num_attention_heads,
            None => 0,
        };
        let cfg = LlamaConfig {
            vocab_size: r.usize_req("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize_req("intermediate_size")?,
            num_hidden_layers: r.usize_req("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: match r.f64_opt("rms_norm_eps")?.unwrap_or(1e-6) {
                eps if eps.is_finite() && eps > 0.0 => eps,
                eps => return Err(r.err("rms_norm_eps", format!("{eps}: must be positive"))),
            },
            rope: Self::read_rope(&r)?,
            max_position_embeddings: r.usize_opt("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: r.bool_opt("tie_word_embeddings")?.unwrap_or(false),
            attention_bias: r.bool_opt("attention_bias")?.unwrap_or(false),
            bos_token_id: r.usize_opt("bos_token_id")?.map(|x| x as u32),
            eos_token_ids: r.token_ids("eos_token_id")?,
            raw: map.clone(),
        };
        cfg.validate().map_err(|e| match e {
            ModelError::InvalidShape(msg) => ModelError::ConfigKey {
                path: path.to_path_buf(),
                key: "(shape)".into(),
                msg,
            },
            e => e,
        })?;
        Ok(cfg)
    }

    fn read_rope(r: &Reader) -> Result<RopeConfig> {
        // Newer files: `rope_parameters` holds theta and the scaling; older: `rope_theta` at top
        // level and an optional `rope_scaling` object.
        let (key, params) = match (r.get("rope_parameters"), r.get("rope_scaling")) {
            (Some(p), _) => ("rope_parameters", Some(p)),
            (None, Some(s)) => ("rope_scaling", Some(s)),
            (None, None) => ("rope_scaling", None),
        };
        let params = match params {
            Some(Value::Object(m)) => Some(m),
            Some(v) => return Err(r.err(key, format!("expected an object, found {v}"))),
            None => None,
        };
        let sub = params.map(|m| Reader {
            path: r.path,
            map: m,
        });
        let theta = match sub.as_ref().map(|s| s.f64_opt("rope_theta")).transpose()? {
            Some(Some(t)) => t,
            _ => r.f64_opt("rope_theta")?.unwrap_or(10000.0),
        };
        if !(theta.is_finite() && theta > 0.0) {
            return Err(r.err("rope_theta", format!("{theta}: must be positive")));
        }
        let Some(s) = sub else {
            return Ok(RopeConfig {
                theta,
                scaling: RopeScaling::None,
            });
        };
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let need = |k: &str| -> Result<f64> {
            match s.f64_opt(k)? {
                Some(v) if v.is_finite() && v > 0.0 => Ok(v),
                Some(v) => Err(r.err(&format!("{key}.{k}"), format!("{v}: must be positive"))),
                None => Err(r.err(&format!("{key}.{k}"), "missing")),
            }
        };
        let scaling = match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: need("original_max_position_embeddings")?,
            },
            other => {
                return Err(r.err(
                    &format!("{key}.rope_type"),
                    format!("unsupported RoPE type `{other}` (supported: default, linear, llama3)"),
                ))
            }
        };
        Ok(RopeConfig { theta, scaling })
    }

    /// A fresh config with the keys transformers writes for `LlamaForCausalLM`.
    pub fn new(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
    ) -> Self {
        let raw = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "mlp_bias": false,
            "model_type": "llama",
            "pad_token_id": null,
            "pretraining_tp": 1,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let Value::Object(raw) = raw else {
            unreachable!("literal object")
        };
        LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: hidden_size / num_attention_heads.max(1),
            rms_norm_eps: 1e-5,
            rope: RopeConfig {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
            max_position_embeddings: 4096,
            tie_word_embeddings: false,
            attention_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            raw,
        }
    }

    /// Checks that the numbers describe a buildable model.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidShape(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        // The sizes multiply into parameter counts (param_counts, to_hf_json): they must fit.
        if self.checked_param_count().is_none() {
            return bad("the parameter count of this shape overflows usize".into());
        }
        Ok(())
    }

    /// An upper bound of [`Self::param_counts`]'s total (the head counted even when tied), by
    /// checked arithmetic: `None` when it overflows.
    fn checked_param_count(&self) -> Option<usize> {
        let (d, l) = (self.hidden_size, self.num_hidden_layers);
        let q = self.num_attention_heads.checked_mul(self.head_dim)?;
        let kv = self.num_key_value_heads.checked_mul(self.head_dim)?;
        let attention = d.checked_mul(q.checked_add(kv)?.checked_mul(2)?)?;
        let mlp = d.checked_mul(self.intermediate_size)?.checked_mul(3)?;
        let norms = l.checked_mul(2)?.checked_add(1)?.checked_mul(d)?;
        let embeddings = self.vocab_size.checked_mul(d)?.checked_mul(2)?;
        l.checked_mul(attention.checked_add(mlp)?)?
            .checked_add(norms)?
            .checked_add(embeddings)
    }

    /// Query heads per key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// The config as Hugging Face writes it: the keys this config was read with (or the standard
    /// set for a fresh one), with shape and dtype fields set from this struct.
    pub fn to_hf_json(&self, dtype: Dtype) -> Value {
        let mut m = self.raw.clone();
        let set = |m: &mut Map<String, Value>, k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        set(&mut m, "vocab_size", self.vocab_size.into());
        set(&mut m, "hidden_size", self.hidden_size.into());
        set(&mut m, "intermediate_size", self.intermediate_size.into());
        set(&mut m, "num_hidden_layers", self.num_hidden_layers.into());
        set(
            &mut m,
            "num_attention_heads",
            self.num_attention_heads.into(),
        );
        set(
            &mut m,
            "num_key_value_heads",
            self.num_key_value_heads.into(),
        );
        set(
            &mut m,
            "max_position_embeddings",
            self.max_position_embeddings.into(),
        );
        set(&mut m, "rms_norm_eps", self.rms_norm_eps.into());
        set(
            &mut m,
            "tie_word_embeddings",
            self.tie_word_embeddings.into(),
        );
        set(&mut m, "attention_bias", self.attention_bias.into());
        if m.contains_key("head_dim")
            || self.head_dim * self.num_attention_heads != self.hidden_size
        {
            set(&mut m, "head_dim", self.head_dim.into());
        }
        if !m.contains_key("rope_parameters") && !m.contains_key("rope_scaling") {
            set(&mut m, "rope_theta", self.rope.theta.into());
        }
        let dtype_key = if m.contains_key("dtype") {
            "dtype"
        } else {
            "torch_dtype"
        };
        set(&mut m, dtype_key, dtype.hf_name().into());
        Value::Object(m)
    }

    /// Parameters of a model of this shape, by component.
    pub fn param_counts(&self) -> ParamCounts {
        let d = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let l = self.num_hidden_layers;
        ParamCounts {
            embedding: self.vocab_size * d,
            attention: l * (d * q + 2 * d * kv + q * d),
            mlp: l * 3 * d * self.intermediate_size,
            norms: (2 * l + 1) * d,
            lm_head: if self.tie_word_embeddings {
                0
            } else {
                self.vocab_size * d
            },
        }
    }
}

/// Parameter counts of a LLaMA model by component (docs/algorithm.md §3.1 bookkeeping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCounts {
    pub embedding: usize,
    pub attention: usize,
    pub mlp: usize,
    pub norms: usize,
    pub lm_head: usize,
}

impl ParamCounts {
    pub fn total(&self) -> usize {
        self.embedding + self.attention + self.mlp + self.norms + self.lm_head
    }
    /// Attention + MLP weights: what structured pruning can remove (docs/algorithm.md §3.1).
    pub fn prunable(&self) -> usize {
        self.attention + self.mlp
    }
}
