//! GGUF import: a llama.cpp GGUF file (read by `shear-gguf`: dequantized, q/k rows un-permuted,
//! config and tokenizer rebuilt from the metadata) written as a Hugging Face checkpoint
//! directory. `shear convert model.gguf OUT` writes one; any command that takes a MODEL accepts
//! a `.gguf` through [`gguf_model_dir`], which converts it once into the shear cache.
//!
//! GGUF export, the other way: [`export_gguf`] writes a Hugging Face checkpoint as the GGUF file
//! llama.cpp loads (`shear convert MODEL OUT.gguf`), see docs/algorithm.md §14.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use shear_gguf::{
    Converted, ExportSource, Gguf, PlannedTensor, TensorOut, TensorType, TokenizerFiles,
};

use crate::checkpoint::SafetensorsSource;

use crate::config::{LlamaConfig, RopeScaling};
use crate::dtype::Dtype;
use crate::error::{ModelError, Result};
/// The storage types of an exported GGUF file (`f32`, `f16`, `bf16`, `q8_0`).
pub use shear_gguf::TensorType as GgufType;

/// Whether `path` names a GGUF file.
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        && path.is_file()
}

/// One tensor, dequantized only when the safetensors writer asks for it (so a large model is
/// converted one tensor at a time).
struct LazyGguf<'a> {
    converted: &'a Converted<'a>,
    tensor: &'a PlannedTensor,
    dtype: Dtype,
}

impl safetensors::View for LazyGguf<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype.to_safetensors()
    }
    fn shape(&self) -> &[usize] {
        &self.tensor.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        // The tensor was checked when the conversion was planned; a failure here is a file that
        // changed underneath (reported as zeros would be wrong): read it up front in `convert`.
        let values = self
            .converted
            .load(self.tensor)
            .expect("every tensor was read once before writing");
        Cow::Owned(self.dtype.encode(&values))
    }
    fn data_len(&self) -> usize {
        self.tensor.shape.iter().product::<usize>() * self.dtype.size_in_bytes()
    }
}

/// Writes the GGUF file `path` as a Hugging Face checkpoint in `out` (created if needed):
/// `model.safetensors` in `dtype`, `config.json`, and `tokenizer.json` +
/// `tokenizer_config.json` when the file has a tokenizer. Returns the config and any notes on
/// what could not be carried over exactly.
pub fn convert_gguf(path: &Path, out: &Path, dtype: Dtype) -> Result<(LlamaConfig, Vec<String>)> {
    let gguf = Gguf::open(path)?;
    let converted = shear_gguf::convert(&gguf)?;
    let config = LlamaConfig::from_json_str(&converted.config.to_string(), path)?;
    // Every tensor is dequantized once before anything is written, so a bad block is an error
    // naming the tensor rather than a panic inside the writer.
    for t in &converted.tensors {
        converted.load(t)?;
    }
    std::fs::create_dir_all(out).map_err(crate::error::io_err(out))?;
    let views: Vec<(&str, LazyGguf)> = converted
        .tensors
        .iter()
        .map(|t| {
            let view = LazyGguf {
                converted: &converted,
                tensor: t,
                dtype,
            };
            (t.hf_name.as_str(), view)
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let weights = out.join("model.safetensors");
    shear_io::write_atomic_path(&weights, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(|e| ModelError::Write {
            path: weights.clone(),
            msg: e.to_string(),
        })
    })?;
    let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("JSON serialises");
    shear_io::write_atomic(
        &out.join("config.json"),
        json(&config.to_hf_json(dtype)).as_bytes(),
    )?;
    if let (Some(t), Some(tc)) = (&converted.tokenizer, &converted.tokenizer_config) {
        shear_io::write_atomic(&out.join("tokenizer.json"), json(t).as_bytes())?;
        shear_io::write_atomic(&out.join("tokenizer_config.json"), json(tc).as_bytes())?;
    }
    Ok((config, converted.notes.clone()))
}

/// The shear cache: `$SHEAR_CACHE`, else `~/.cache/shear`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("SHEAR_CACHE") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".cache/shear"),
    }
}

/// A Hugging Face directory for the GGUF file `path`: converted (f32, exact) into
/// `cache_dir()/gguf/<name>-<key>/` the first time, reused while the file is unchanged (the key
/// hashes its absolute path, size and modification time).
pub fn gguf_model_dir(path: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(path).map_err(crate::error::io_err(path))?;
    let meta = std::fs::metadata(&abs).map_err(crate::error::io_err(&abs))?;
    let mut h = std::hash::DefaultHasher::new();
    (&abs, meta.len(), meta.modified().ok()).hash(&mut h);
    let stem = abs.file_stem().unwrap_or_default().to_string_lossy();
    let dir = cache_dir()
        .join("gguf")
        .join(format!("{stem}-{:016x}", h.finish()));
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    let tmp = shear_io::AtomicDir::create(&dir)?;
    convert_gguf(&abs, tmp.path(), Dtype::F32)?;
    Ok(tmp.commit()?)
}

/// What [`export_gguf`] wrote.
#[derive(Debug, Clone)]
pub struct GgufExport {
    pub config: LlamaConfig,
    /// The file's main type (1-D tensors are always f32).
    pub ty: TensorType,
    /// Bytes written.
    pub bytes: u64,
    pub tensors: usize,
    /// What was stored differently than asked, or not carried over exactly.
    pub notes: Vec<String>,
}

/// The GGUF type a checkpoint stored in `d` keeps by default.
pub fn gguf_type_of(d: Dtype) -> TensorType {
    match d {
        Dtype::F32 => TensorType::F32,
        Dtype::F16 => TensorType::F16,
        Dtype::BF16 => TensorType::Bf16,
    }
}

/// `config`'s `rope_scaling` as Hugging Face writes it.
fn rope_scaling_json(config: &LlamaConfig) -> Option<serde_json::Value> {
    match config.rope.scaling {
        RopeScaling::None => None,
        RopeScaling::Linear { factor } => {
            Some(serde_json::json!({"rope_type": "linear", "factor": factor}))
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => Some(serde_json::json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        })),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the Hugging Face checkpoint `dir` as the GGUF file `out` that llama.cpp loads, in
/// `ty` (default: the checkpoint's storage dtype), one tensor at a time, atomically: a failure
/// leaves no file behind. Refused: an `out` inside `dir`, a checkpoint without tokenizer.json
/// (llama.cpp needs the vocabulary), and shapes llama.cpp's LLaMA cannot hold
/// ([`shear_gguf::plan_export`]).
pub fn export_gguf(dir: &Path, out: &Path, ty: Option<TensorType>) -> Result<GgufExport> {
    let refuse = |path: &Path, msg: String| ModelError::GgufExport {
        path: path.to_path_buf(),
        msg,
    };
    let src_abs = std::fs::canonicalize(dir).map_err(crate::error::io_err(dir))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent_abs = std::fs::canonicalize(&parent).map_err(crate::error::io_err(&parent))?;
    if parent_abs.starts_with(&src_abs) {
        return Err(refuse(
            out,
            format!(
                "inside the model directory {}; write the GGUF file elsewhere",
                dir.display()
            ),
        ));
    }
    let config = LlamaConfig::from_file(dir.join("config.json"))?;
    let hf = config.to_hf_json(Dtype::F32);
    let tokenizer_path = dir.join("tokenizer.json");
    if !tokenizer_path.is_file() {
        return Err(refuse(
            &tokenizer_path,
            "missing: a GGUF file carries the vocabulary, which llama.cpp needs".into(),
        ));
    }
    let tokenizer = read_json(&tokenizer_path)?;
    let tc_path = dir.join("tokenizer_config.json");
    let tokenizer_config = if tc_path.is_file() {
        Some(read_json(&tc_path)?)
    } else {
        None
    };
    let params = shear_gguf::LlamaParams {
        vocab_size: config.vocab_size,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        num_hidden_layers: config.num_hidden_layers,
        num_attention_heads: config.num_attention_heads,
        num_key_value_heads: config.num_key_value_heads,
        head_dim: config.head_dim,
        rms_norm_eps: config.rms_norm_eps,
        rope_theta: config.rope.theta,
        max_position_embeddings: config.max_position_embeddings,
        tie_word_embeddings: config.tie_word_embeddings,
        attention_bias: config.attention_bias,
        mlp_bias: hf
            .get("mlp_bias")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        rope_scaling: rope_scaling_json(&config),
        bos_token_id: config.bos_token_id.map(u64::from),
        eos_token_id: config.eos_token_ids.first().copied().map(u64::from),
        pad_token_id: hf.get("pad_token_id").and_then(|v| v.as_u64()),
    };
    let mut source = SafetensorsSource::open(dir)?;
    let ty = ty.unwrap_or_else(|| gguf_type_of(source.stored_dtype()));
    let name = src_abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let files = TokenizerFiles {
        tokenizer: &tokenizer,
        config: tokenizer_config.as_ref(),
    };
    let plan = shear_gguf::plan_export(&params, &name, ty, &files).map_err(|e| match e {
        shear_gguf::ExportError::Tokenizer(m) => refuse(&tokenizer_path, m),
        shear_gguf::ExportError::Shape(m) => refuse(&dir.join("config.json"), m),
    })?;
    let infos: Vec<TensorOut> = plan.tensors.iter().map(|t| t.out.clone()).collect();
    let mut failed: Option<ModelError> = None;
    let mut bytes = 0;
    let written = shear_io::write_atomic_path(out, |tmp| {
        let file = std::fs::File::create(tmp).map_err(crate::error::io_err(tmp))?;
        let mut w = std::io::BufWriter::new(file);
        let data = |i: usize| {
            let t = &plan.tensors[i];
            let values = match &t.source {
                ExportSource::Computed(_) => Vec::new(),
                ExportSource::Checkpoint { hf_name, .. } => {
                    match source.read(hf_name, &t.out.shape) {
                        Ok(v) => v,
                        Err(e) => {
                            let m = e.to_string();
                            failed = Some(e);
                            return Err(m);
                        }
                    }
                }
            };
            Ok(t.encode(values))
        };
        bytes = shear_gguf::write_gguf(&mut w, &plan.metadata, &infos, data).map_err(|e| {
            ModelError::Write {
                path: out.to_path_buf(),
                msg: e.to_string(),
            }
        })?;
        Ok::<(), ModelError>(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    written?;
    Ok(GgufExport {
        config,
        ty,
        bytes,
        tensors: infos.len(),
        notes: plan.notes,
    })
}
