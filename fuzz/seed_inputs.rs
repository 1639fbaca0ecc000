//! The inputs the seed tests feed to the fuzz harness: included with `#[path]` by the
//! `tests/fuzz.rs` of each crate that owns a fuzzed parser (fuzz/src/lib.rs says why), so the
//! seeds and every saved crash input keep being checked by `cargo test --workspace` on stable.

use std::path::{Path, PathBuf};

/// Every file of `fuzz/seeds/<target>` and of `fuzz/regressions/<target>` (the inputs the
/// fuzzers found a bug with, kept once it was fixed), sorted by path, with its bytes.
pub fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for (dir, required) in [("seeds", true), ("regressions", false)] {
        let dir = fuzz.join(dir).join(target);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(_) if !required => continue,
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        for entry in entries {
            let path = entry.expect("a folder entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    assert!(
        files.len() > 1,
        "fuzz/seeds/{target} holds the target's seeds"
    );
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read a seed");
            (path, bytes)
        })
        .collect()
}
