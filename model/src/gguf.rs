//! GGUF import: a llama.cpp GGUF file (read by `shear-gguf`: dequantized, q/k rows un-permuted,
//! config and tokenizer rebuilt from the metadata) written as a Hugging Face checkpoint
//! directory. `shear convert model.gguf OUT` writes one; any command that takes a MODEL accepts
//! a `.gguf` through [`gguf_model_dir`], which converts it once into the shear cache.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use shear_gguf::{Converted, Gguf, PlannedTensor};

use crate::config::LlamaConfig;
use crate::dtype::Dtype;
use crate::error::{ModelError, Result};

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
