//! The model's tokenizer, read from its `tokenizer.json` with the `tokenizers` crate. Special
//! tokens (BOS/EOS) are added as the file's post-processor says.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `tokenizer.json` (the file, or the model directory holding it).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push("tokenizer.json");
        }
        if !path.is_file() {
            return Err(DataError::NotFound { path });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| DataError::Tokenizer {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        Ok(Tokenizer { inner, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`; with `add_special_tokens`, as the post-processor adds them (BOS for
    /// Llama-2).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| DataError::Encode(e.to_string()))
    }

    /// Text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| DataError::Encode(e.to_string()))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The end-of-sequence id appended to every document (docs/algorithm.md §8): `eos_token` of a
    /// `tokenizer_config.json` next to `tokenizer.json` when there is one, else the first of the
    /// usual EOS tokens (`</s>`, `<|end_of_text|>`, `<|endoftext|>`, `<|im_end|>`) in the vocabulary.
    pub fn eos_id(&self) -> Option<u32> {
        let from_config = self
            .path
            .parent()
            .map(|d| d.join("tokenizer_config.json"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| match v.get("eos_token") {
                Some(serde_json::Value::String(t)) => Some(t.clone()),
                Some(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                None => None,
            })
            .and_then(|t| self.token_to_id(&t));
        from_config.or_else(|| {
            ["</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>"]
                .iter()
                .find_map(|t| self.token_to_id(t))
        })
    }

    /// A fingerprint of the tokenizer: SHA-256 of its canonical serialisation (so the same
    /// tokenizer saved with other formatting has the same fingerprint). Shards record it.
    pub fn fingerprint(&self) -> Result<String> {
        use sha2::Digest;
        let canonical = self
            .inner
            .to_string(false)
            .map_err(|e| DataError::Encode(e.to_string()))?;
        Ok(format!(
            "sha256:{}",
            hex(&sha2::Sha256::digest(canonical.as_bytes()))
        ))
    }

    /// Encodes many documents in parallel (rayon), each as the post-processor says (BOS for
    /// Llama-2) with `eos` appended. Order is kept.
    pub fn encode_documents(&self, docs: &[String], eos: Option<u32>) -> Result<Vec<Vec<u32>>> {
        use rayon::prelude::*;
        docs.par_iter()
            .map(|d| {
                let mut ids = self.encode(d, true)?;
                ids.extend(eos);
                Ok(ids)
            })
            .collect()
    }
}

/// Lower-case hexadecimal of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
