//! Resolving a model argument: a local directory, or a Hugging Face hub id (`owner/name`) looked
//! up in the hub cache (`HF_HOME`, default `~/.cache/huggingface`) and downloaded when missing.
//! `HF_HUB_OFFLINE=1` (or `offline = true`) only looks in the cache; `HF_TOKEN` authenticates.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;

use crate::checkpoint::TOKENIZER_FILES;
use crate::error::{ModelError, Result};

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// True when `HF_HUB_OFFLINE` asks for cache-only lookups.
pub fn offline_from_env() -> bool {
    env_flag("HF_HUB_OFFLINE")
}

fn looks_like_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

fn hub_error(spec: &str, msg: String) -> ModelError {
    ModelError::Hub {
        id: spec.to_string(),
        msg,
    }
}

/// `config.json` of hub model `spec` from the hub cache only (offline mode).
fn cached_config(spec: &str) -> Result<PathBuf> {
    let cache = Cache::from_env();
    cache
        .model(spec.to_string())
        .get("config.json")
        .ok_or_else(|| {
            hub_error(
                spec,
                format!(
                    "config.json is not in the hub cache {} (offline mode)",
                    cache.path().display()
                ),
            )
        })
}

/// Hub model `spec`, authenticated with `HF_TOKEN` when it is set.
fn hub_repo(spec: &str) -> Result<hf_hub::api::sync::ApiRepo> {
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let mut builder = ApiBuilder::from_env();
    if token.is_some() {
        builder = builder.with_token(token);
    }
    let api = builder
        .build()
        .map_err(|e| hub_error(spec, e.to_string()))?;
    Ok(api.model(spec.to_string()))
}

/// The directory holding a downloaded or cached `config.json`.
fn parent_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Returns the `config.json` of the model named by `spec` without its weights: a config file,
/// a model directory, or a hub id (only its config.json is fetched or looked up in the cache).
pub fn resolve_config(spec: &str, offline: bool) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_file() && !crate::gguf::is_gguf(path) {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        return Ok(path.join("config.json"));
    }
    if path.exists() || !looks_like_repo_id(spec) {
        return Err(hub_error(
            spec,
            "not a config.json, a model directory, or a hub id of the form owner/name".into(),
        ));
    }
    if offline {
        return cached_config(spec);
    }
    hub_repo(spec)?
        .get("config.json")
        .map_err(|e| hub_error(spec, e.to_string()))
}

/// Returns the local directory holding the model named by `spec`: a directory, a GGUF file
/// (converted once into the shear cache, see [`crate::gguf::gguf_model_dir`]), or a hub id.
pub fn resolve_model(spec: &str, offline: bool) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if crate::gguf::is_gguf(path) {
        return crate::gguf::gguf_model_dir(path);
    }
    if path.exists() || !looks_like_repo_id(spec) {
        return Err(hub_error(
            spec,
            "not a model directory, and not a hub id of the form owner/name".into(),
        ));
    }
    let hub = |msg: String| hub_error(spec, msg);
    // A mistyped local path shaped like owner/name reaches here too: say both readings.
    let neither = |msg: String| {
        hub_error(
            spec,
            format!("no such local directory, and not found on the hub: {msg}"),
        )
    };
    if offline {
        let config = cached_config(spec).map_err(|e| match e {
            ModelError::Hub { msg, .. } => neither(msg),
            other => other,
        })?;
        return Ok(parent_dir(&config));
    }
    let repo = hub_repo(spec)?;
    let dir = parent_dir(
        &repo
            .get("config.json")
            .map_err(|e| neither(e.to_string()))?,
    );
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(crate::error::io_err(&index))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| ModelError::Json {
                    path: index.clone(),
                    source,
                })?;
            let mut shards: Vec<String> = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            for shard in shards {
                repo.get(&shard).map_err(|e| hub(format!("{shard}: {e}")))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors")
                .map_err(|e| hub(format!("model.safetensors: {e}")))?;
        }
    }
    for name in TOKENIZER_FILES {
        // Optional files: a model without them is still a model.
        let _ = repo.get(name);
    }
    Ok(dir)
}
