//! The harness of shear's fuzz targets (fuzz/README.md): one module per parser, each with a
//! `run` that feeds arbitrary bytes to the parser's real entry points, returns quietly on an
//! error, and panics only on a bug (a panic inside the parser, or a broken invariant asserted
//! here).
//!
//! Why the modules live here and are included by path: the same `run` functions must also check
//! the seed corpora (fuzz/seeds) and the saved crash inputs (fuzz/regressions) under
//! `cargo test --workspace` on stable. This crate is outside the workspace (nightly, sanitizer
//! flags, its own Cargo.lock), so the owning crates' `tests/fuzz.rs` include the module file with
//! `#[path]` rather than depend on it. Each module therefore names only its parser's crate and
//! std, and the library crates get no fuzz-only API. A module that needs files takes the folder
//! to write them in; the fuzz targets pass [`scratch`], the tests a `tempfile` folder.

use std::path::Path;
use std::sync::OnceLock;

pub mod config_json;
pub mod gguf;
pub mod jsonl;
pub mod recipe;
pub mod safetensors_header;
pub mod shard_manifest;

/// A folder for the files a target writes, one per fuzzing process. It is never removed (the
/// fuzzer exits without running destructors): run the targets with `TMPDIR` pointing at a folder
/// to delete afterwards, as `.ci/run` does.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("shear-fuzz-")
            .tempdir()
            .expect("a temporary folder")
    })
    .path()
}
