//! Fuzz harness of the recipe TOML parser (pipeline/src/recipe.rs); fuzz/src/lib.rs says why it
//! is shared by path.

use std::path::{Path, PathBuf};

use shear_model::LlamaConfig;
use shear_pipeline::recipe::Recipe;

/// Files and folders the seeds' recipes name (relative to the recipe), laid out as in assets/
/// so the repository's own recipes pass `Recipe::check`, which wants data and task paths that
/// exist. Names ending in `/` are folders.
const LAYOUT: &[&str] = &[
    "../corpus/code.jsonl.gz",
    "../corpus/book.jsonl.gz",
    "../corpus/dictionary.jsonl.gz",
    "../corpus/quotes.jsonl.gz",
    "../tiny/",
    "redpajama/common_crawl/",
    "redpajama/github/",
    "redpajama/book/",
    "redpajama/stackexchange/",
    "redpajama/wikipedia/",
    "redpajama/arxiv/",
    "redpajama/c4/",
    "web.jsonl",
    "code/",
    "a.txt",
    "tasks/capitals.jsonl",
];

/// Lays out [`LAYOUT`] under `dir` (once) and returns the folder recipes are read from.
pub fn layout(dir: &Path) -> PathBuf {
    let base = dir.join("recipes");
    for rel in LAYOUT {
        let path = base.join(rel);
        if path.exists() {
            continue;
        }
        if rel.ends_with('/') {
            std::fs::create_dir_all(&path).expect("create a scratch folder");
        } else {
            std::fs::create_dir_all(path.parent().expect("a file has a folder"))
                .expect("create a scratch folder");
            std::fs::write(&path, b"").expect("write a scratch file");
        }
    }
    base
}

/// Parses `data` as a recipe in the folder [`layout`] makes under `dir`, checks it as
/// `Recipe::from_toml_file` does, and resolves a recipe that passes (target, preset, proportions,
/// reference losses) against the tiny model of assets/tiny and the sources of the presets,
/// Llama-2-7B and Llama-3-8B.
pub fn run(dir: &Path, data: &[u8]) {
    let base = layout(dir);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(recipe) = Recipe::from_toml_str(text, &base) else {
        return;
    };
    if recipe.check().is_err() {
        return;
    }
    let tokens: Vec<u64> = (1..=recipe.data.domains.len() as u64)
        .map(|i| 1000 * i)
        .collect();
    for source in [
        LlamaConfig::new(4096, 128, 352, 4, 4, 4),
        LlamaConfig::new(32000, 4096, 11008, 32, 32, 32),
        LlamaConfig::new(128256, 4096, 14336, 32, 32, 8),
    ] {
        let _ = recipe.resolve(&source, &tokens);
    }
}
