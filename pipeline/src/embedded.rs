//! The embedded default: the recipe `assets/recipes/default.toml`, the four-domain corpus
//! `assets/corpus/` and the tiny source model `assets/tiny/`, compiled into the binary so that
//! `shear run` with no recipe works from any directory with no network. `unpack` writes them
//! out keeping their layout under `assets/`, so the recipe's relative paths hold.

use std::path::{Path, PathBuf};

macro_rules! asset {
    ($path:literal) => {
        (
            $path,
            include_bytes!(concat!("../../assets/", $path)) as &[u8],
        )
    };
}

/// (path under assets/, contents).
const FILES: &[(&str, &[u8])] = &[
    asset!("recipes/default.toml"),
    asset!("corpus/code.jsonl.gz"),
    asset!("corpus/book.jsonl.gz"),
    asset!("corpus/dictionary.jsonl.gz"),
    asset!("corpus/quotes.jsonl.gz"),
    asset!("corpus/SOURCES.md"),
    asset!("tiny/config.json"),
    asset!("tiny/model.safetensors"),
    asset!("tiny/tokenizer.json"),
    asset!("tiny/tokenizer_config.json"),
];

/// The default recipe's path under assets/.
pub const RECIPE: &str = "recipes/default.toml";

/// Writes the embedded files under `dir` (a file already there with the same contents is left
/// alone, so a resumed run sees unchanged inputs) and returns the recipe's path.
pub fn unpack(dir: &Path) -> crate::Result<PathBuf> {
    for (rel, bytes) in FILES {
        let path = dir.join(rel);
        if std::fs::read(&path).is_ok_and(|old| old == *bytes) {
            continue;
        }
        let parent = path.parent().expect("asset paths have a folder");
        std::fs::create_dir_all(parent).map_err(shear_io::IoError::at(parent))?;
        shear_io::write_atomic(&path, bytes)?;
    }
    Ok(dir.join(RECIPE))
}
