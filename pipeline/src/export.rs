//! A model directory written as the llama.cpp GGUF file next to it (`DIR` → `DIR.gguf`), for
//! `shear run` (`[export] gguf`) and `shear materialize --gguf` (docs/algorithm.md §14).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use shear_model::gguf::{export_gguf, GgufExport, GgufType};

use crate::error::Result;

/// The GGUF file next to the model directory `dir`: `train/model` → `train/model.gguf`.
pub fn gguf_next_to(dir: &Path) -> PathBuf {
    let mut name: OsString = dir.components().as_path().as_os_str().to_owned();
    name.push(".gguf");
    PathBuf::from(name)
}

/// Writes `dir` as `DIR.gguf` in `ty`; returns the file and what was written.
pub fn export_next_to(dir: &Path, ty: GgufType) -> Result<(PathBuf, GgufExport)> {
    let out = gguf_next_to(dir);
    let done = export_gguf(dir, &out, Some(ty))?;
    Ok((out, done))
}

/// One line for the user: the file, its type, size and tensor count.
pub fn export_line(path: &Path, e: &GgufExport) -> String {
    format!(
        "gguf: {} ({}, {} tensors, {:.1} MiB)",
        path.display(),
        e.ty,
        e.tensors,
        e.bytes as f64 / (1024.0 * 1024.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_sits_next_to_the_directory() {
        assert_eq!(
            gguf_next_to(Path::new("runs/default/train/model")),
            PathBuf::from("runs/default/train/model.gguf")
        );
        assert_eq!(
            gguf_next_to(Path::new("small/")),
            PathBuf::from("small.gguf")
        );
        assert_eq!(gguf_next_to(Path::new("a.b")), PathBuf::from("a.b.gguf"));
    }
}
