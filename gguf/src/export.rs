//! A LLaMA checkpoint described as llama.cpp reads it: the metadata keys, the tensor names and
//! types, and the tokenizer, the inverse of [`crate::convert`]. [`crate::write_gguf`] writes the
//! file; the caller supplies each tensor's `f32` values by its Hugging Face name.
//!
//! What llama.cpp expects (its `convert_hf_to_gguf.py`, `LlamaModel`, and `llama-model.cpp`):
//!
//! * `general.architecture = "llama"` and the `llama.*` shape keys as u32, the RoPE base and the
//!   RMSNorm epsilon as f32; `llama.attention.key_length` / `value_length` give the head size
//!   when it is not `hidden / heads`.
//! * Tensor names `token_embd`, `blk.N.attn_q` …, `output_norm`, `output` (left out when the
//!   embeddings are tied: llama.cpp then reads `token_embd` for the LM head), shapes in ggml's
//!   order, and the q/k rows permuted ([`crate::permute_rows`]).
//! * One-dimensional tensors (norms, biases) stay f32 whatever the file's type, as the converter
//!   keeps them; a matrix whose rows are not a multiple of 32 values is written f16 in a Q8_0
//!   file (the converter's fallback), with a note.
//! * Llama-3-style RoPE scaling as a `rope_freqs.weight` tensor of per-frequency divisors;
//!   linear scaling as `llama.rope.scaling.*` keys.
//! * A byte-level BPE tokenizer (`tokenizer.ggml.model = "gpt2"`): every token in id order
//!   with its type (1 normal, 3 control for special added tokens, 4 user-defined for the other
//!   added ones), the merges, the special ids, whether BOS is added, the chat template; the
//!   pre-tokenizer is named (`tokenizer.ggml.pre`) from the tokenizer.json's own pre-tokenizer,
//!   the names [`crate::convert`] reads back.
//! * A SentencePiece BPE as transformers stores it (byte fallback, Llama-2;
//!   `tokenizer.ggml.model = "llama"`): the tokens with types (2 unknown, 6 for the `<0xNN>`
//!   bytes), scores that make llama.cpp merge in tokenizer.json's merge order (there are no
//!   stored merges for this model), and `add_space_prefix` from the normalizer.

use serde_json::Value as Json;

use crate::llama::{LlamaParams, LAYER_WEIGHTS};
use crate::reader::{Array, Value};
use crate::rope::llama3_divisors;
use crate::write::{TensorOut, TensorType};

const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// SentencePiece's byte pieces, `<0x00>` … `<0xFF>`.
fn is_byte_token(t: &str) -> bool {
    t.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && t[3..5].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether llama.cpp should put a `▁` in front of the text (`add_space_prefix`), from the
/// tokenizer.json normalizer transformers writes for SentencePiece models (`Prepend("▁")` then
/// `Replace(" ", "▁")`; without the Prepend for models that add no prefix). Others are noted:
/// llama.cpp's SentencePiece tokenizer only knows these two.
fn spm_space_prefix(normalizer: &Json, pre: &Json, notes: &mut Vec<String>) -> bool {
    let kind = |v: &Json| v.get("type").and_then(Json::as_str).map(str::to_string);
    let parts: Vec<&Json> = match kind(normalizer).as_deref() {
        Some("Sequence") => normalizer
            .get("normalizers")
            .and_then(Json::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default(),
        Some(_) => vec![normalizer],
        None => vec![],
    };
    let prepend = parts.iter().any(|p| {
        kind(p).as_deref() == Some("Prepend")
            && p.get("prepend").and_then(Json::as_str) == Some("\u{2581}")
    });
    let replace = parts.iter().any(|p| kind(p).as_deref() == Some("Replace"));
    // Newer transformers write the same rule as a Metaspace pre-tokenizer instead.
    let metaspace = kind(pre).as_deref() == Some("Metaspace");
    if metaspace {
        return pre.get("prepend_scheme").and_then(Json::as_str) != Some("never");
    }
    if !replace || parts.len() > usize::from(prepend) + 1 {
        notes.push(format!(
            "tokenizer.json's normalizer {normalizer} is not SentencePiece's space rule; \
             llama.cpp replaces spaces with `▁`{}",
            if prepend { " and prepends one" } else { "" }
        ));
    }
    prepend
}

/// SentencePiece scores, which llama.cpp's tokenizer merges by (the highest-scoring pair
/// first): for a piece some merge makes, minus the rank of its first merge in tokenizer.json's
/// list, so that llama.cpp applies the merges in their order; 0 for the rest (single
/// characters, bytes, control and unknown tokens, which are never a merge's result).
fn spm_scores(tokens: &[String], types: &[i32], merges: &[String]) -> Vec<f32> {
    let mut rank: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(merges.len());
    for (r, m) in merges.iter().enumerate() {
        if let Some((a, b)) = m.split_once(' ') {
            rank.entry(format!("{a}{b}")).or_insert(r);
        }
    }
    tokens
        .iter()
        .zip(types)
        .map(|(t, &ty)| match (ty, rank.get(t)) {
            (NORMAL, Some(&r)) => -(r as f32),
            _ => 0.0,
        })
        .collect()
}

/// Why a checkpoint cannot be described as a llama.cpp GGUF.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The model has a shape or setting the format (or llama.cpp's LLaMA) cannot hold.
    #[error("{0}")]
    Shape(String),
    /// The tokenizer cannot be carried over; the message says what is wrong.
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
}

/// Where a tensor of the file gets its values.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportSource {
    /// The checkpoint's tensor of this Hugging Face name, with the q/k rows permuted over
    /// `permute_heads` heads where set.
    Checkpoint {
        hf_name: String,
        permute_heads: Option<usize>,
    },
    /// Values computed from the config (Llama-3 `rope_freqs`).
    Computed(Vec<f32>),
}

/// One tensor of the file and where its values come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTensor {
    pub out: TensorOut,
    pub source: ExportSource,
}

impl ExportTensor {
    /// The file's bytes for this tensor from its row-major `f32` values (the checkpoint's, for
    /// [`ExportSource::Checkpoint`]; ignored for computed ones).
    pub fn encode(&self, mut values: Vec<f32>) -> Vec<u8> {
        match &self.source {
            ExportSource::Computed(v) => self.out.ty.encode(v),
            ExportSource::Checkpoint { permute_heads, .. } => {
                if let Some(heads) = *permute_heads {
                    let rows = self.out.shape[0];
                    let cols = self.out.shape.get(1).copied().unwrap_or(1);
                    crate::llama::permute_rows(&mut values, rows, cols, heads);
                }
                self.out.ty.encode(&values)
            }
        }
    }
}

/// Everything the file will hold but the tensor data.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<ExportTensor>,
    /// What was not carried over exactly, or was stored in another type than asked.
    pub notes: Vec<String>,
}

/// The tokenizer files of a checkpoint.
pub struct TokenizerFiles<'a> {
    /// `tokenizer.json`.
    pub tokenizer: &'a Json,
    /// `tokenizer_config.json`, when there is one.
    pub config: Option<&'a Json>,
}

fn u32_of(v: usize, key: &str) -> Result<Value, ExportError> {
    u32::try_from(v)
        .map(Value::U32)
        .map_err(|_| ExportError::Shape(format!("{key} {v} does not fit GGUF's u32")))
}

fn check_shape(p: &LlamaParams) -> Result<(), ExportError> {
    let nonzero = [
        ("vocab_size", p.vocab_size),
        ("hidden_size", p.hidden_size),
        ("intermediate_size", p.intermediate_size),
        ("num_hidden_layers", p.num_hidden_layers),
        ("num_attention_heads", p.num_attention_heads),
        ("num_key_value_heads", p.num_key_value_heads),
        ("head_dim", p.head_dim),
    ];
    for (key, v) in nonzero {
        if v == 0 {
            return Err(ExportError::Shape(format!(
                "{key} is 0: llama.cpp cannot run a LLaMA without it"
            )));
        }
    }
    if !p.head_dim.is_multiple_of(2) {
        return Err(ExportError::Shape(format!(
            "head_dim {} is odd: rotary embeddings rotate pairs of dimensions",
            p.head_dim
        )));
    }
    if !p.num_attention_heads.is_multiple_of(p.num_key_value_heads) {
        return Err(ExportError::Shape(format!(
            "num_attention_heads {} is not a multiple of num_key_value_heads {}",
            p.num_attention_heads, p.num_key_value_heads
        )));
    }
    if p.mlp_bias {
        return Err(ExportError::Shape(
            "mlp_bias: llama.cpp's LLaMA has no FFN biases".into(),
        ));
    }
    Ok(())
}

/// The RoPE metadata and the extra tensor for `rope_scaling`.
fn rope_scaling(
    p: &LlamaParams,
    meta: &mut Vec<(String, Value)>,
) -> Result<Option<Vec<f32>>, ExportError> {
    let Some(s) = &p.rope_scaling else {
        return Ok(None);
    };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Json::as_str)
        .unwrap_or("default");
    let num = |key: &str| s.get(key).and_then(Json::as_f64);
    let need = |key: &str| {
        num(key).ok_or_else(|| ExportError::Shape(format!("rope_scaling ({kind}) has no `{key}`")))
    };
    match kind {
        "default" => Ok(None),
        "linear" => {
            meta.push((
                "llama.rope.scaling.type".into(),
                Value::String("linear".into()),
            ));
            meta.push((
                "llama.rope.scaling.factor".into(),
                Value::F32(need("factor")? as f32),
            ));
            Ok(None)
        }
        "llama3" => {
            // Not read by llama.cpp for this rope type; [`crate::convert`] uses it to recover
            // the scaling parameters from the divisors exactly.
            meta.push((
                "llama.rope.scaling.original_context_length".into(),
                Value::U32(need("original_max_position_embeddings")? as u32),
            ));
            let divisors = llama3_divisors(
                p.head_dim,
                p.rope_theta,
                need("factor")?,
                need("low_freq_factor")?,
                need("high_freq_factor")?,
                need("original_max_position_embeddings")?,
            );
            Ok(Some(divisors.into_iter().map(|d| d as f32).collect()))
        }
        other => Err(ExportError::Shape(format!(
            "rope_scaling type `{other}` is not one shear exports (default, linear, llama3)"
        ))),
    }
}

/// The GGUF layer module and the heads to permute over for a Hugging Face layer module.
fn layer_tensors(p: &LlamaParams) -> Vec<(&'static str, &'static str, Option<usize>)> {
    LAYER_WEIGHTS
        .iter()
        .map(|&(g, hf)| {
            let heads = match g {
                "attn_q" => Some(p.num_attention_heads),
                "attn_k" => Some(p.num_key_value_heads),
                _ => None,
            };
            (g, hf, heads)
        })
        .collect()
}

/// The plan of a GGUF file for a LLaMA of `params` stored mostly as `ty`, named `name`, with
/// the tokenizer of `tokenizer` (a model without one is refused: llama.cpp needs a vocabulary).
pub fn plan_export(
    params: &LlamaParams,
    name: &str,
    ty: TensorType,
    tokenizer: &TokenizerFiles,
) -> Result<ExportPlan, ExportError> {
    let p = params;
    check_shape(p)?;
    let mut notes = Vec::new();
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(ty.file_type())),
    ];
    if ty == TensorType::Q8_0 {
        meta.push(("general.quantization_version".into(), Value::U32(2)));
    }
    let shape_keys = [
        ("llama.vocab_size", p.vocab_size),
        ("llama.context_length", p.max_position_embeddings),
        ("llama.embedding_length", p.hidden_size),
        ("llama.block_count", p.num_hidden_layers),
        ("llama.feed_forward_length", p.intermediate_size),
        ("llama.attention.head_count", p.num_attention_heads),
        ("llama.attention.head_count_kv", p.num_key_value_heads),
        ("llama.rope.dimension_count", p.head_dim),
        ("llama.attention.key_length", p.head_dim),
        ("llama.attention.value_length", p.head_dim),
    ];
    for (key, v) in shape_keys {
        meta.push((key.into(), u32_of(v, key)?));
    }
    meta.push((
        "llama.rope.freq_base".into(),
        Value::F32(p.rope_theta as f32),
    ));
    meta.push((
        "llama.attention.layer_norm_rms_epsilon".into(),
        Value::F32(p.rms_norm_eps as f32),
    ));
    let rope_freqs = rope_scaling(p, &mut meta)?;
    meta.extend(tokenizer_metadata(p, tokenizer, &mut notes)?);

    let (h, f, v) = (p.hidden_size, p.intermediate_size, p.vocab_size);
    let (q, kv) = (
        p.num_attention_heads * p.head_dim,
        p.num_key_value_heads * p.head_dim,
    );
    let mut tensors = Vec::new();
    // Matrices whose rows cannot be blocked, by name and row length (one note per kind).
    let mut fallback: Vec<(String, usize)> = Vec::new();
    let mut push = |name: String, hf: String, shape: Vec<usize>, heads: Option<usize>| {
        let cols = if shape.len() == 2 { shape[1] } else { 0 };
        let t = if shape.len() == 1 {
            TensorType::F32
        } else if ty.fits_rows(cols) {
            ty
        } else {
            fallback.push((name.clone(), cols));
            TensorType::F16
        };
        tensors.push(ExportTensor {
            out: TensorOut { name, shape, ty: t },
            source: ExportSource::Checkpoint {
                hf_name: hf,
                permute_heads: heads,
            },
        });
    };
    push(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![v, h],
        None,
    );
    for layer in 0..p.num_hidden_layers {
        for (g, hf, heads) in layer_tensors(p) {
            let shape = match g {
                "attn_q" => vec![q, h],
                "attn_k" | "attn_v" => vec![kv, h],
                "attn_output" => vec![h, q],
                "ffn_gate" | "ffn_up" => vec![f, h],
                "ffn_down" => vec![h, f],
                _ => vec![h],
            };
            let rows = shape[0];
            push(
                format!("blk.{layer}.{g}.weight"),
                format!("model.layers.{layer}.{hf}.weight"),
                shape,
                heads,
            );
            if p.attention_bias && g.starts_with("attn_") && g != "attn_norm" {
                push(
                    format!("blk.{layer}.{g}.bias"),
                    format!("model.layers.{layer}.{hf}.bias"),
                    vec![rows],
                    heads,
                );
            }
        }
    }
    push(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![h],
        None,
    );
    if !p.tie_word_embeddings {
        push(
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![v, h],
            None,
        );
    }
    // `blk.0.ffn_down.weight`, `blk.1.ffn_down.weight` … as one note: `blk.*.ffn_down.weight`.
    let mut kinds: Vec<(String, usize, usize)> = Vec::new();
    for (name, cols) in fallback {
        let kind = match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((_, rest)) => format!("blk.*.{rest}"),
            None => name,
        };
        match kinds.iter_mut().find(|k| k.0 == kind && k.1 == cols) {
            Some(k) => k.2 += 1,
            None => kinds.push((kind, cols, 1)),
        }
    }
    for (kind, cols, n) in kinds {
        notes.push(format!(
            "{kind} ({n} tensor{}): rows of {cols} values are not a multiple of 32, so stored \
             f16 instead of {ty} (as llama.cpp's converter does)",
            if n == 1 { "" } else { "s" }
        ));
    }
    if let Some(divisors) = rope_freqs {
        tensors.push(ExportTensor {
            out: TensorOut {
                name: "rope_freqs.weight".into(),
                shape: vec![divisors.len()],
                ty: TensorType::F32,
            },
            source: ExportSource::Computed(divisors),
        });
    }
    Ok(ExportPlan {
        metadata: meta,
        tensors,
        notes,
    })
}

/// llama.cpp's pre-tokenizer name for a tokenizer.json pre-tokenizer, or `None` when it is not
/// one llama.cpp (and [`crate::convert`]) knows.
fn pre_tokenizer_name(pre: &Json) -> Option<&'static str> {
    let byte_level = |v: &Json, regex: bool| {
        v.get("type").and_then(Json::as_str) == Some("ByteLevel")
            && v.get("use_regex").and_then(Json::as_bool).unwrap_or(true) == regex
    };
    if byte_level(pre, true) {
        return Some("gpt-2");
    }
    let parts = pre.get("pretokenizers").and_then(Json::as_array)?;
    match parts.as_slice() {
        [digits, bl]
            if digits.get("type").and_then(Json::as_str) == Some("Digits")
                && digits.get("individual_digits").and_then(Json::as_bool) == Some(true)
                && byte_level(bl, true) =>
        {
            Some("smollm")
        }
        [split, bl] if byte_level(bl, false) => {
            let re = split.pointer("/pattern/Regex").and_then(Json::as_str)?;
            if re == crate::tokenizer::LLAMA3_SPLIT {
                Some("llama-bpe")
            } else if re == crate::tokenizer::QWEN2_SPLIT {
                Some("qwen2")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The id of a special token named in tokenizer_config.json (a string, or an object with
/// `content`).
fn config_token(
    config: Option<&Json>,
    key: &str,
    ids: &std::collections::HashMap<&str, u32>,
) -> Option<u32> {
    let v = config?.get(key)?;
    let s = v
        .as_str()
        .or_else(|| v.get("content").and_then(Json::as_str))?;
    ids.get(s).copied()
}

/// Whether the tokenizer adds BOS: its post-processor's template starts with the BOS token
/// (what shear's own tokenization does), else tokenizer_config.json's `add_bos_token`.
fn adds_bos(t: &TokenizerFiles, bos: Option<&str>) -> bool {
    let first = t
        .tokenizer
        .pointer("/post_processor/single/0/SpecialToken/id")
        .and_then(Json::as_str);
    if let (Some(first), Some(bos)) = (first, bos) {
        return first == bos;
    }
    let in_seq = t
        .tokenizer
        .pointer("/post_processor/processors")
        .and_then(Json::as_array)
        .is_some_and(|ps| {
            ps.iter().any(|p| {
                p.pointer("/single/0/SpecialToken/id")
                    .and_then(Json::as_str)
                    == bos
                    && bos.is_some()
            })
        });
    in_seq
        || t.config
            .and_then(|c| c.get("add_bos_token"))
            .and_then(Json::as_bool)
            .unwrap_or(false)
}

/// The `tokenizer.*` metadata of a BPE tokenizer.json: byte-level (`gpt2`), or SentencePiece
/// with byte fallback (`llama`: tokens, scores, token types, the space prefix).
fn tokenizer_metadata(
    p: &LlamaParams,
    t: &TokenizerFiles,
    notes: &mut Vec<String>,
) -> Result<Vec<(String, Value)>, ExportError> {
    let err = |m: String| ExportError::Tokenizer(m);
    let model = t
        .tokenizer
        .get("model")
        .ok_or_else(|| err("no `model`".into()))?;
    let kind = model.get("type").and_then(Json::as_str).unwrap_or("");
    if kind != "BPE" {
        return Err(err(format!(
            "a `{kind}` model; only BPE vocabularies (byte-level, or SentencePiece with byte \
             fallback) are exported"
        )));
    }
    // SentencePiece BPE as transformers stores it (Llama-2): byte fallback, `▁` for spaces.
    let spm = model.get("byte_fallback").and_then(Json::as_bool) == Some(true);
    let pre = t.tokenizer.get("pre_tokenizer").unwrap_or(&Json::Null);
    let normalizer = t.tokenizer.get("normalizer").unwrap_or(&Json::Null);
    let add_space_prefix = match spm {
        true => Some(spm_space_prefix(normalizer, pre, notes)),
        false => None,
    };
    if !spm && !normalizer.is_null() {
        notes.push(
            "tokenizer.json has a normalizer, which llama.cpp's byte-level BPE does not apply"
                .into(),
        );
    }
    let pre_name = match pre_tokenizer_name(pre) {
        _ if spm => "",
        Some(n) => n,
        None => {
            notes.push(format!(
                "tokenizer.json's pre-tokenizer {pre} is not one llama.cpp names; written as \
                 `default`, so llama.cpp may split text differently"
            ));
            "default"
        }
    };
    let unk_name = model.get("unk_token").and_then(Json::as_str);
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| err("model.vocab is not an object".into()))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut place = |id: usize, token: &str, ty: i32| -> Result<(), ExportError> {
        if id >= tokens.len() {
            tokens.resize(id + 1, None);
            types.resize(id + 1, UNUSED);
        }
        tokens[id] = Some(token.to_string());
        types[id] = ty;
        Ok(())
    };
    for (token, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| err(format!("model.vocab[{token:?}] is not a token id")))?;
        let ty = match spm {
            true if Some(token.as_str()) == unk_name => UNKNOWN,
            true if is_byte_token(token) => BYTE,
            _ => NORMAL,
        };
        place(id as usize, token, ty)?;
    }
    for added in t
        .tokenizer
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            added.get("id").and_then(Json::as_u64),
            added.get("content").and_then(Json::as_str),
        ) else {
            return Err(err(format!("added token {added} has no id or content")));
        };
        let special = added
            .get("special")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let ty = match special {
            true if spm && Some(content) == unk_name => UNKNOWN,
            true => CONTROL,
            false => USER_DEFINED,
        };
        place(id as usize, content, ty)?;
    }
    if tokens.len() > p.vocab_size {
        return Err(ExportError::Shape(format!(
            "the tokenizer has {} tokens, but the model's embedding has only {} rows",
            tokens.len(),
            p.vocab_size
        )));
    }
    let holes = tokens.iter().filter(|t| t.is_none()).count() + (p.vocab_size - tokens.len());
    if holes > 0 {
        notes.push(format!(
            "{holes} embedding rows have no token; they are named [PAD<id>] (unused), as \
             llama.cpp's converter names them"
        ));
    }
    tokens.resize(p.vocab_size, None);
    types.resize(p.vocab_size, UNUSED);
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    let merges: Vec<String> = model
        .get("merges")
        .and_then(Json::as_array)
        .ok_or_else(|| err("model.merges is not a list".into()))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) => match pair.as_slice() {
                [Json::String(a), Json::String(b)] => Ok(format!("{a} {b}")),
                _ => Err(err(format!("merge {m} is not a pair of strings"))),
            },
            _ => Err(err(format!("merge {m} is not a string or a pair"))),
        })
        .collect::<Result<_, _>>()?;

    let ids: std::collections::HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let bos = p
        .bos_token_id
        .map(|v| v as u32)
        .or_else(|| config_token(t.config, "bos_token", &ids));
    let eos = p
        .eos_token_id
        .map(|v| v as u32)
        .or_else(|| config_token(t.config, "eos_token", &ids));
    let pad = p
        .pad_token_id
        .map(|v| v as u32)
        .or_else(|| config_token(t.config, "pad_token", &ids));
    let unk = model
        .get("unk_token")
        .and_then(Json::as_str)
        .and_then(|u| ids.get(u).copied())
        .or_else(|| config_token(t.config, "unk_token", &ids));
    let special_ids = [
        ("tokenizer.ggml.bos_token_id", bos),
        ("tokenizer.ggml.eos_token_id", eos),
        ("tokenizer.ggml.unknown_token_id", unk),
        ("tokenizer.ggml.padding_token_id", pad),
    ];
    for (key, id) in special_ids {
        if let Some(id) = id.filter(|&id| id as usize >= tokens.len()) {
            return Err(ExportError::Shape(format!(
                "{key} {id} is past the {} rows of the embedding",
                tokens.len()
            )));
        }
    }
    let add_bos = adds_bos(t, bos.map(|b| tokens[b as usize].as_str()));
    let mut meta: Vec<(String, Value)> = match add_space_prefix {
        None => vec![
            ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
            ("tokenizer.ggml.pre".into(), Value::String(pre_name.into())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(Array::String(tokens)),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(Array::I32(types)),
            ),
            (
                "tokenizer.ggml.merges".into(),
                Value::Array(Array::String(merges)),
            ),
        ],
        Some(prefix) => {
            let scores = spm_scores(&tokens, &types, &merges);
            vec![
                ("tokenizer.ggml.model".into(), Value::String("llama".into())),
                (
                    "tokenizer.ggml.tokens".into(),
                    Value::Array(Array::String(tokens)),
                ),
                (
                    "tokenizer.ggml.scores".into(),
                    Value::Array(Array::F32(scores)),
                ),
                (
                    "tokenizer.ggml.token_type".into(),
                    Value::Array(Array::I32(types)),
                ),
                (
                    "tokenizer.ggml.add_space_prefix".into(),
                    Value::Bool(prefix),
                ),
            ]
        }
    };
    for (key, id) in special_ids {
        if let Some(id) = id {
            meta.push((key.into(), Value::U32(id)));
        }
    }
    meta.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)));
    meta.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)));
    if let Some(template) = t
        .config
        .and_then(|c| c.get("chat_template"))
        .and_then(Json::as_str)
    {
        meta.push((
            "tokenizer.chat_template".into(),
            Value::String(template.into()),
        ));
    }
    Ok(meta)
}
