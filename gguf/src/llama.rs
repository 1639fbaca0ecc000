//! A LLaMA-architecture GGUF as a Hugging Face `LlamaForCausalLM` checkpoint: `config.json`,
//! tensor names and layouts.
//!
//! Names follow llama.cpp's `gguf-py/gguf/tensor_mapping.py` (`MODEL_ARCH.LLAMA`); metadata keys
//! follow its `constants.py` (`Keys.LLM`, `Keys.Attention`, `Keys.Rope`). Shapes below are in
//! row-major (PyTorch) order, with `h` = hidden size, `f` = intermediate size, `v` = vocab size,
//! `q` = heads x head_dim and `k` = kv heads x head_dim.

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::reader::{Gguf, TensorInfo};

/// The hyper-parameters read from a LLaMA GGUF.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub rope_scaling: Option<Json>,
    pub bos_token_id: Option<u64>,
    pub eos_token_id: Option<u64>,
    pub pad_token_id: Option<u64>,
}

/// Where a Hugging Face tensor's values come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A GGUF tensor, dequantized; `unpermute_heads: Some(n)` undoes llama.cpp's q/k row
    /// permutation over `n` heads.
    Gguf {
        name: String,
        unpermute_heads: Option<usize>,
    },
    /// All zeros: a bias the GGUF leaves out while Hugging Face's layout (one `attention_bias`
    /// / `mlp_bias` flag for all projections) needs it, e.g. `o_proj.bias` beside q/k/v biases.
    Zeros,
}

/// One tensor of the Hugging Face checkpoint, before its values are read.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    /// Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub hf_name: String,
    /// Row-major shape, e.g. `[q, h]` for `q_proj.weight`.
    pub shape: Vec<usize>,
    pub source: Source,
}

/// A LLaMA GGUF turned into what a Hugging Face Llama checkpoint holds. Tensor values are read
/// one at a time, on demand ([`Converted::load`], [`Converted::iter`]), so converting a large
/// model never holds more than one dequantized tensor.
pub struct Converted<'a> {
    /// `config.json` in the layout of transformers' `LlamaConfig`.
    pub config: Json,
    /// `tokenizer.json` for the `tokenizers` library; `None` when the GGUF has no tokenizer this
    /// crate can express (see `notes`).
    pub tokenizer: Option<Json>,
    /// A minimal `tokenizer_config.json` to go with `tokenizer`.
    pub tokenizer_config: Option<Json>,
    /// The hyper-parameters behind `config`.
    pub params: LlamaParams,
    /// Every tensor of the checkpoint, in Hugging Face order: `model.embed_tokens.weight`
    /// `[v, h]`; per layer `self_attn.{q,k,v,o}_proj.weight` (`[q, h]`, `[k, h]`, `[k, h]`,
    /// `[h, q]`) and their biases if any, `mlp.{gate,up,down}_proj.weight` (`[f, h]`, `[f, h]`,
    /// `[h, f]`), `input_layernorm.weight` and `post_attention_layernorm.weight` (`[h]`);
    /// `model.norm.weight` `[h]`; `lm_head.weight` `[v, h]` unless the embeddings are tied.
    pub tensors: Vec<PlannedTensor>,
    /// Things the conversion could not carry over exactly, in words (e.g. a tokenizer
    /// pre-tokenizer it does not know); empty for a faithful conversion.
    pub notes: Vec<String>,
    gguf: &'a Gguf,
}

impl std::fmt::Debug for Converted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converted")
            .field("params", &self.params)
            .field("tensors", &self.tensors.len())
            .field("notes", &self.notes)
            .finish()
    }
}

impl<'a> Converted<'a> {
    /// The values of `t` (one of [`Converted::tensors`]): row-major `f32`, `t.shape` elements.
    pub fn load(&self, t: &PlannedTensor) -> Result<Vec<f32>> {
        match &t.source {
            Source::Zeros => Ok(vec![0.0; t.shape.iter().product()]),
            Source::Gguf {
                name,
                unpermute_heads,
            } => {
                let mut values = self.gguf.tensor_f32(name)?;
                if let Some(heads) = *unpermute_heads {
                    let cols = t.shape.get(1).copied().unwrap_or(1);
                    unpermute_rows(&mut values, t.shape[0], cols, heads);
                }
                Ok(values)
            }
        }
    }

    /// Every tensor as `(hf_name, shape, values)`, read lazily one at a time in the order of
    /// [`Converted::tensors`].
    pub fn iter(&self) -> impl Iterator<Item = Result<(String, Vec<usize>, Vec<f32>)>> + '_ {
        self.tensors
            .iter()
            .map(move |t| Ok((t.hf_name.clone(), t.shape.clone(), self.load(t)?)))
    }

    /// The GGUF this conversion reads from.
    pub fn gguf(&self) -> &'a Gguf {
        self.gguf
    }
}

/// Undoes llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py) on a `[rows, cols]` q or k
/// projection (or a `[rows]` bias with `cols == 1`) split into `heads` heads of
/// `rows / heads` rows.
///
/// The converter writes Hugging Face row `head * d + half * d/2 + i` (`half` in 0..2, `i` in
/// 0..d/2, `d` = rows per head) to GGUF row `head * d + 2 * i + half`, interleaving the two
/// rotary halves; this moves each row back. transformers' GGUF loader applies the same inverse.
///
/// # Panics
///
/// If `heads` is 0, `rows` is not a multiple of `2 * heads`, or `values.len() != rows * cols`
/// ([`Converted::load`] only calls it on shapes checked against the config).
pub fn unpermute_rows(values: &mut [f32], rows: usize, cols: usize, heads: usize) {
    assert!(heads > 0 && rows.is_multiple_of(2 * heads) && values.len() == rows * cols);
    let d = rows / heads;
    let mut head_buf = vec![0f32; d * cols];
    for head in values.chunks_exact_mut(d * cols) {
        head_buf.copy_from_slice(head);
        for half in 0..2 {
            for i in 0..d / 2 {
                let src = (2 * i + half) * cols;
                let dst = (half * d / 2 + i) * cols;
                head[dst..dst + cols].copy_from_slice(&head_buf[src..src + cols]);
            }
        }
    }
}

/// llama.cpp's `LlamaModel.permute` (convert_hf_to_gguf.py): the inverse of [`unpermute_rows`],
/// moving Hugging Face row `head * d + half * d/2 + i` to GGUF row `head * d + 2 * i + half`.
///
/// # Panics
///
/// As [`unpermute_rows`].
pub fn permute_rows(values: &mut [f32], rows: usize, cols: usize, heads: usize) {
    assert!(heads > 0 && rows.is_multiple_of(2 * heads) && values.len() == rows * cols);
    let d = rows / heads;
    let mut head_buf = vec![0f32; d * cols];
    for head in values.chunks_exact_mut(d * cols) {
        head_buf.copy_from_slice(head);
        for half in 0..2 {
            for i in 0..d / 2 {
                let src = (half * d / 2 + i) * cols;
                let dst = (2 * i + half) * cols;
                head[dst..dst + cols].copy_from_slice(&head_buf[src..src + cols]);
            }
        }
    }
}

fn required(g: &Gguf, key: &str) -> Result<u64> {
    g.get_u64(key)?.ok_or_else(|| Error::MissingKey {
        file: g.file_name().to_string(),
        key: key.to_string(),
    })
}

fn to_usize(g: &Gguf, key: &str, v: u64) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| Error::BadValue {
            file: g.file_name().to_string(),
            key: key.to_string(),
            message: format!("{v} is not a usable size"),
        })
}

/// An `f32` metadata value as the shortest decimal that reads back as the same `f32` (so
/// `1e-5` stored as `f32` becomes `1e-5`, not `9.999999747378752e-6`); `f64` values as is.
fn float_key(g: &Gguf, key: &str) -> Result<Option<f64>> {
    match g.get(key) {
        Some(crate::Value::F32(x)) => Ok(Some(format!("{x}").parse::<f64>().unwrap_or(*x as f64))),
        _ => g.get_f64(key),
    }
}

/// The 9 weights each layer must have: (GGUF suffix, HF suffix).
pub(crate) const LAYER_WEIGHTS: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

const ATTN_BIASES: [&str; 4] = ["attn_q", "attn_k", "attn_v", "attn_output"];
const MLP_BIASES: [&str; 3] = ["ffn_gate", "ffn_up", "ffn_down"];

/// Refuses what is not a plain LLaMA: another `general.architecture`, or mixture-of-experts.
fn check_architecture(g: &Gguf) -> Result<()> {
    let file = g.file_name().to_string();
    let arch = g
        .get_str("general.architecture")?
        .ok_or_else(|| Error::MissingKey {
            file: file.clone(),
            key: "general.architecture".into(),
        })?;
    if arch != "llama" {
        return Err(Error::UnsupportedArchitecture {
            file,
            architecture: arch.to_string(),
        });
    }
    if g.get_u64("llama.expert_count")?.unwrap_or(0) > 0 {
        return Err(Error::Unsupported {
            file,
            message: "mixture-of-experts LLaMA (llama.expert_count > 0) is not supported".into(),
        });
    }
    Ok(())
}

/// Reads the hyper-parameters of a LLaMA GGUF and checks them against the tensors.
pub fn llama_params(g: &Gguf) -> Result<LlamaParams> {
    check_architecture(g)?;
    let file = g.file_name().to_string();
    let size = |key: &str| -> Result<usize> { to_usize(g, key, required(g, key)?) };
    let hidden = size("llama.embedding_length")?;
    let ffn = size("llama.feed_forward_length")?;
    let layers = size("llama.block_count")?;
    let heads = size("llama.attention.head_count")?;
    let kv_heads = match g.get_u64("llama.attention.head_count_kv")? {
        Some(v) => to_usize(g, "llama.attention.head_count_kv", v)?,
        None => heads,
    };
    if heads % kv_heads != 0 {
        return Err(Error::BadValue {
            file,
            key: "llama.attention.head_count_kv".into(),
            message: format!("{kv_heads} does not divide the {heads} attention heads"),
        });
    }
    let head_dim = match g.get_u64("llama.attention.key_length")? {
        Some(v) => to_usize(g, "llama.attention.key_length", v)?,
        None => {
            if hidden % heads != 0 {
                return Err(Error::BadValue {
                    file,
                    key: "llama.attention.head_count".into(),
                    message: format!("{heads} heads do not divide the hidden size {hidden}"),
                });
            }
            hidden / heads
        }
    };
    if let Some(vl) = g.get_u64("llama.attention.value_length")? {
        if vl != head_dim as u64 {
            return Err(Error::Unsupported {
                file,
                message: format!(
                    "llama.attention.value_length {vl} differs from the key length {head_dim}; \
                     Hugging Face Llama has one head_dim"
                ),
            });
        }
    }
    if let Some(rd) = g.get_u64("llama.rope.dimension_count")? {
        if rd != head_dim as u64 {
            return Err(Error::Unsupported {
                file,
                message: format!(
                    "llama.rope.dimension_count {rd} differs from head_dim {head_dim} \
                     (partial rotary embeddings are not a Hugging Face Llama)"
                ),
            });
        }
    }
    if head_dim % 2 != 0 {
        return Err(Error::BadValue {
            file,
            key: "llama.attention.key_length".into(),
            message: format!("head_dim {head_dim} is odd; rotary embeddings need an even one"),
        });
    }
    // q_proj has heads x head_dim rows: a product past usize must not wrap in expected_shape.
    if heads.checked_mul(head_dim).is_none() {
        return Err(Error::BadValue {
            file,
            key: "llama.attention.head_count".into(),
            message: format!("{heads} heads of {head_dim} overflow the size of q_proj"),
        });
    }
    let rms_norm_eps =
        float_key(g, "llama.attention.layer_norm_rms_epsilon")?.ok_or_else(|| {
            Error::MissingKey {
                file: file.clone(),
                key: "llama.attention.layer_norm_rms_epsilon".into(),
            }
        })?;
    let rope_theta = float_key(g, "llama.rope.freq_base")?.unwrap_or(10000.0);
    let max_position_embeddings = size("llama.context_length")?;

    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor {
            file: file.clone(),
            tensor: "token_embd.weight".into(),
        })?;
    let embd_shape = embd.shape();
    if embd_shape.len() != 2 || embd_shape[1] != hidden {
        return Err(Error::ShapeMismatch {
            file,
            tensor: embd.name.clone(),
            found: embd_shape,
            expected: vec![0, hidden],
        });
    }
    let vocab_size = embd_shape[0];
    if let Some(v) = g.get_u64("llama.vocab_size")? {
        if v != vocab_size as u64 {
            return Err(Error::BadValue {
                file,
                key: "llama.vocab_size".into(),
                message: format!("{v}, but token_embd.weight has {vocab_size} rows"),
            });
        }
    }
    if let Some(tokens) = g.get_str_array("tokenizer.ggml.tokens")? {
        if tokens.len() != vocab_size {
            return Err(Error::BadValue {
                file,
                key: "tokenizer.ggml.tokens".into(),
                message: format!(
                    "{} tokens, but token_embd.weight has {vocab_size} rows",
                    tokens.len()
                ),
            });
        }
    }

    // Some `blk.{l}.{s}.bias`, l < layers: scans the tensors, as block_count may be huge.
    let any_bias = |names: &[&str]| {
        g.tensors().iter().any(|t| {
            let parts = t.name.strip_prefix("blk.").and_then(|r| r.split_once('.'));
            parts.is_some_and(|(l, rest)| {
                l.parse::<usize>()
                    .is_ok_and(|n| n < layers && n.to_string() == l)
                    && rest
                        .strip_suffix(".bias")
                        .is_some_and(|s| names.contains(&s))
            })
        })
    };
    let rope_scaling = rope_scaling(g, head_dim, rope_theta)?;
    Ok(LlamaParams {
        vocab_size,
        hidden_size: hidden,
        intermediate_size: ffn,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        max_position_embeddings,
        tie_word_embeddings: g.tensor("output.weight").is_none(),
        attention_bias: any_bias(&ATTN_BIASES),
        mlp_bias: any_bias(&MLP_BIASES),
        rope_scaling,
        bos_token_id: g.get_u64("tokenizer.ggml.bos_token_id")?,
        eos_token_id: g.get_u64("tokenizer.ggml.eos_token_id")?,
        pad_token_id: g.get_u64("tokenizer.ggml.padding_token_id")?,
    })
}

/// `rope_scaling` for config.json from llama.cpp's `llama.rope.scaling.*` keys (or the older
/// `llama.rope.scale_linear`); `None` when the file has none. A `rope_freqs.weight` tensor
/// (llama.cpp's encoding of Llama-3-style scaling) is turned back into the `llama3` parameters.
fn rope_scaling(g: &Gguf, head_dim: usize, rope_theta: f64) -> Result<Option<Json>> {
    let file = g.file_name().to_string();
    let factor = float_key(g, "llama.rope.scaling.factor")?;
    let original = g.get_u64("llama.rope.scaling.original_context_length")?;
    let scaling = match g.get_str("llama.rope.scaling.type")? {
        None | Some("none") => match float_key(g, "llama.rope.scale_linear")? {
            Some(f) if f != 1.0 => Some(json!({"rope_type": "linear", "factor": f})),
            _ => None,
        },
        Some("linear") => factor.map(|f| json!({"rope_type": "linear", "factor": f})),
        Some("yarn") => {
            let mut m = Map::new();
            m.insert("rope_type".into(), json!("yarn"));
            m.insert("factor".into(), json!(factor.unwrap_or(1.0)));
            if let Some(o) = original {
                m.insert("original_max_position_embeddings".into(), json!(o));
            }
            for (key, hf) in [
                ("llama.rope.scaling.yarn_beta_fast", "beta_fast"),
                ("llama.rope.scaling.yarn_beta_slow", "beta_slow"),
                ("llama.rope.scaling.attn_factor", "attention_factor"),
            ] {
                if let Some(v) = float_key(g, key)? {
                    m.insert(hf.into(), json!(v));
                }
            }
            Some(Json::Object(m))
        }
        Some(other) => {
            return Err(Error::Unsupported {
                file,
                message: format!(
                    "rope scaling type `{other}` (llama.rope.scaling.type) is not supported"
                ),
            })
        }
    };
    match g.tensor("rope_freqs.weight") {
        None => Ok(scaling),
        Some(_) if scaling.is_some() => Err(Error::Unsupported {
            file,
            message: "both llama.rope.scaling.type and a rope_freqs.weight tensor".into(),
        }),
        Some(t) => {
            let t = t.clone();
            let factors = g.dequantize(&t)?;
            crate::rope::fit_llama3(&factors, head_dim, rope_theta, original).map_err(|message| {
                Error::UnexpectedTensor {
                    file,
                    tensor: t.name.clone(),
                    message,
                }
            })
        }
    }
}

/// `config.json` for `params`, in transformers' `LlamaConfig` layout.
pub fn config_json(p: &LlamaParams) -> Json {
    let mut c = Map::new();
    c.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    c.insert("model_type".into(), json!("llama"));
    c.insert("vocab_size".into(), json!(p.vocab_size));
    c.insert("hidden_size".into(), json!(p.hidden_size));
    c.insert("intermediate_size".into(), json!(p.intermediate_size));
    c.insert("num_hidden_layers".into(), json!(p.num_hidden_layers));
    c.insert("num_attention_heads".into(), json!(p.num_attention_heads));
    c.insert("num_key_value_heads".into(), json!(p.num_key_value_heads));
    c.insert("head_dim".into(), json!(p.head_dim));
    c.insert("hidden_act".into(), json!("silu"));
    c.insert(
        "max_position_embeddings".into(),
        json!(p.max_position_embeddings),
    );
    c.insert("rms_norm_eps".into(), json!(p.rms_norm_eps));
    c.insert("rope_theta".into(), json!(p.rope_theta));
    if let Some(s) = &p.rope_scaling {
        c.insert("rope_scaling".into(), s.clone());
    }
    c.insert("attention_bias".into(), json!(p.attention_bias));
    c.insert("mlp_bias".into(), json!(p.mlp_bias));
    c.insert("tie_word_embeddings".into(), json!(p.tie_word_embeddings));
    for (key, v) in [
        ("bos_token_id", p.bos_token_id),
        ("eos_token_id", p.eos_token_id),
        ("pad_token_id", p.pad_token_id),
    ] {
        if let Some(v) = v {
            c.insert(key.into(), json!(v));
        }
    }
    c.insert("torch_dtype".into(), json!("float32"));
    Json::Object(c)
}

/// Maps a GGUF tensor name to its Hugging Face name and the heads to unpermute over, or explains
/// why the tensor does not belong in a LLaMA checkpoint.
fn map_name(name: &str, p: &LlamaParams) -> Result<Option<(String, Option<usize>)>, String> {
    Ok(Some(match name {
        "token_embd.weight" => ("model.embed_tokens.weight".into(), None),
        "output_norm.weight" => ("model.norm.weight".into(), None),
        "output.weight" => ("lm_head.weight".into(), None),
        // Llama-3 rope factors: carried by config.json's rope_scaling instead.
        "rope_freqs.weight" => return Ok(None),
        _ => {
            let rest = name
                .strip_prefix("blk.")
                .ok_or_else(|| "not a tensor of a LLaMA model".to_string())?;
            let (layer, rest) = rest
                .split_once('.')
                .ok_or_else(|| "not a tensor of a LLaMA model".to_string())?;
            let layer: usize = layer
                .parse()
                .map_err(|_| "not a tensor of a LLaMA model".to_string())?;
            if layer >= p.num_hidden_layers {
                return Err(format!(
                    "layer {layer} is past llama.block_count {}",
                    p.num_hidden_layers
                ));
            }
            let (module, kind) = rest
                .rsplit_once('.')
                .filter(|(_, k)| *k == "weight" || *k == "bias")
                .ok_or_else(|| "not a tensor of a LLaMA model".to_string())?;
            let hf = LAYER_WEIGHTS
                .iter()
                .find(|(g, _)| *g == module)
                .map(|(_, hf)| *hf)
                .ok_or_else(|| {
                    format!("`{module}` is not part of a LLaMA layer this converter knows")
                })?;
            if kind == "bias" && module.ends_with("_norm") {
                return Err("a norm bias is not part of LLaMA's RMSNorm".into());
            }
            let heads = match module {
                "attn_q" => Some(p.num_attention_heads),
                "attn_k" => Some(p.num_key_value_heads),
                _ => None,
            };
            (format!("model.layers.{layer}.{hf}.{kind}"), heads)
        }
    }))
}

/// The expected row-major shape of Hugging Face tensor `hf`.
fn expected_shape(hf: &str, p: &LlamaParams) -> Vec<usize> {
    let (h, f, v) = (p.hidden_size, p.intermediate_size, p.vocab_size);
    let q = p.num_attention_heads * p.head_dim;
    let k = p.num_key_value_heads * p.head_dim;
    let weight = hf.ends_with(".weight");
    let pick = |rows: usize, cols: usize| if weight { vec![rows, cols] } else { vec![rows] };
    if hf == "model.embed_tokens.weight" || hf == "lm_head.weight" {
        vec![v, h]
    } else if hf.ends_with("norm.weight") {
        vec![h]
    } else if hf.contains("q_proj") {
        pick(q, h)
    } else if hf.contains("k_proj") || hf.contains("v_proj") {
        pick(k, h)
    } else if hf.contains("o_proj") {
        pick(h, q)
    } else if hf.contains("gate_proj") || hf.contains("up_proj") {
        pick(f, h)
    } else {
        // down_proj
        pick(h, f)
    }
}

/// The Hugging Face tensors of a LLaMA GGUF with their shapes and sources; every GGUF tensor must
/// map to one, and every layer must be complete.
pub fn plan_tensors(g: &Gguf, p: &LlamaParams) -> Result<Vec<PlannedTensor>> {
    let file = g.file_name().to_string();
    let mut planned: Vec<(String, PlannedTensor)> = Vec::new();
    for t in g.tensors() {
        let TensorInfo { name, .. } = t;
        let (hf_name, heads) = match map_name(name, p) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(message) => {
                return Err(Error::UnexpectedTensor {
                    file,
                    tensor: name.clone(),
                    message,
                })
            }
        };
        let shape = t.shape();
        let expected = expected_shape(&hf_name, p);
        if shape != expected {
            return Err(Error::ShapeMismatch {
                file,
                tensor: name.clone(),
                found: shape,
                expected,
            });
        }
        planned.push((
            hf_name.clone(),
            PlannedTensor {
                hf_name,
                shape,
                source: Source::Gguf {
                    name: name.clone(),
                    unpermute_heads: heads,
                },
            },
        ));
    }

    // Hugging Face order, with missing required tensors reported and missing biases zero-filled.
    let mut by_name: std::collections::HashMap<String, PlannedTensor> =
        planned.into_iter().collect();
    let mut out = Vec::with_capacity(by_name.len());
    let mut take = |hf: String, gguf_name: String, required: bool| -> Result<()> {
        match by_name.remove(&hf) {
            Some(t) => out.push(t),
            None if required => {
                return Err(Error::MissingTensor {
                    file: file.clone(),
                    tensor: gguf_name,
                })
            }
            None => out.push(PlannedTensor {
                shape: expected_shape(&hf, p),
                hf_name: hf,
                source: Source::Zeros,
            }),
        }
        Ok(())
    };
    take(
        "model.embed_tokens.weight".into(),
        "token_embd.weight".into(),
        true,
    )?;
    for l in 0..p.num_hidden_layers {
        for (gs, hs) in LAYER_WEIGHTS {
            take(
                format!("model.layers.{l}.{hs}.weight"),
                format!("blk.{l}.{gs}.weight"),
                true,
            )?;
            let bias = (p.attention_bias && ATTN_BIASES.contains(&gs))
                || (p.mlp_bias && MLP_BIASES.contains(&gs));
            if bias {
                take(
                    format!("model.layers.{l}.{hs}.bias"),
                    format!("blk.{l}.{gs}.bias"),
                    false,
                )?;
            }
        }
    }
    take(
        "model.norm.weight".into(),
        "output_norm.weight".into(),
        true,
    )?;
    if !p.tie_word_embeddings {
        take("lm_head.weight".into(), "output.weight".into(), true)?;
    }
    debug_assert!(by_name.is_empty());
    Ok(out)
}

/// Converts a LLaMA GGUF: config, tokenizer, and the plan of its tensors (read lazily).
pub fn convert(g: &Gguf) -> Result<Converted<'_>> {
    let params = llama_params(g)?;
    let tensors = plan_tensors(g, &params)?;
    let mut notes = Vec::new();
    if tensors.iter().any(|t| t.source == Source::Zeros) {
        notes.push(
            "some projection biases are absent from the GGUF and were filled with zeros \
             (Hugging Face Llama has one bias flag for all of q/k/v/o and one for the MLP)"
                .to_string(),
        );
    }
    let (tokenizer, tokenizer_config) = match crate::tokenizer::tokenizer_json(g, &mut notes)? {
        Some((t, mut c)) => {
            if let Some(obj) = c.as_object_mut() {
                obj.insert(
                    "model_max_length".into(),
                    json!(params.max_position_embeddings),
                );
            }
            (Some(t), Some(c))
        }
        None => (None, None),
    };
    Ok(Converted {
        config: config_json(&params),
        tokenizer,
        tokenizer_config,
        params,
        tensors,
        notes,
        gguf: g,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_permute() {
        for (rows, cols, heads) in [(8, 3, 2), (12, 1, 3), (64, 5, 4), (4, 2, 1)] {
            let w: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
            let mut p = w.clone();
            permute_rows(&mut p, rows, cols, heads);
            assert_ne!(p, w);
            unpermute_rows(&mut p, rows, cols, heads);
            assert_eq!(p, w);
        }
    }

    #[test]
    fn unpermute_known_small_case() {
        // One head of 4 rows: HF rows [a0, a1, b0, b1] (halves a, b) are stored interleaved as
        // [a0, b0, a1, b1].
        let mut stored = vec![0.0, 2.0, 1.0, 3.0];
        unpermute_rows(&mut stored, 4, 1, 1);
        assert_eq!(stored, vec![0.0, 1.0, 2.0, 3.0]);
        permute_rows(&mut stored, 4, 1, 1);
        assert_eq!(stored, vec![0.0, 2.0, 1.0, 3.0]);
        // Two heads of 4 rows, 2 columns: each head interleaved on its own.
        let mut w: Vec<f32> = (0..16).map(|x| x as f32).collect();
        permute_rows(&mut w, 8, 2, 2);
        let rows: Vec<f32> = w.chunks(2).map(|r| r[0] / 2.0).collect();
        assert_eq!(rows, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }
}
