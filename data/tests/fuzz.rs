//! The fuzz targets `shard_manifest` and `jsonl` (fuzz/README.md) on stable: every seed and saved
//! crash input through the same harness, the hand-made seeds read as valid files, and regression
//! tests for what the fuzzers found.

use shear_data::corpus::read_documents;
use shear_data::{PreparedData, Split};

#[path = "../../fuzz/src/jsonl.rs"]
mod jsonl;
#[path = "../../fuzz/seed_inputs.rs"]
mod seed_inputs;
#[path = "../../fuzz/src/shard_manifest.rs"]
mod shard_manifest;

#[test]
fn shard_manifest_seeds_and_crash_inputs_run_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in seed_inputs::inputs("shard_manifest") {
        eprintln!("{}", path.display());
        shard_manifest::run(dir.path(), &bytes);
    }
}

#[test]
fn jsonl_seeds_and_crash_inputs_run_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in seed_inputs::inputs("jsonl") {
        eprintln!("{}", path.display());
        jsonl::run(dir.path(), &bytes);
    }
}

#[test]
fn seeds_are_valid_files() {
    // The fuzzers start from files that read all the way, so they mutate deep paths.
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in seed_inputs::inputs("shard_manifest") {
        if path.parent().unwrap().ends_with("seeds/shard_manifest") {
            shard_manifest::run(dir.path(), &bytes);
            let data = PreparedData::open(dir.path()).unwrap();
            assert_eq!(data.domains(), ["web", "code"]);
        }
    }
    let complete = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds/shard_manifest/u16-seq2-complete.json"),
    )
    .unwrap();
    shard_manifest::run(dir.path(), &complete);
    let data = PreparedData::open(dir.path()).unwrap();
    assert!(data.manifest.shards_complete(dir.path()));
    for (path, bytes) in seed_inputs::inputs("jsonl") {
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.starts_with("step-log") || !path.parent().unwrap().ends_with("seeds/jsonl") {
            continue;
        }
        let file = dir.path().join(name);
        std::fs::write(&file, &bytes).unwrap();
        let docs = read_documents(
            &file,
            if name == "capitals.jsonl" {
                "context"
            } else {
                "text"
            },
        );
        assert!(!docs.unwrap().is_empty(), "{name}");
    }
}

#[test]
fn a_sequence_length_past_usize_is_an_error_not_an_overflow() {
    // fuzz/regressions/shard_manifest/overflow-seq-len.json (a one-field mutation of a seed,
    // fuzz/README.md): seq_len 1e19 overflowed the shard size in `shards_complete` and the row
    // size in `Shard::open`.
    let dir = tempfile::tempdir().unwrap();
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds/shard_manifest/u16-seq4.json");
    let text = std::fs::read_to_string(seed)
        .unwrap()
        .replace("\"seq_len\": 4,", "\"seq_len\": 10000000000000000000,");
    std::fs::write(dir.path().join("manifest.json"), text).unwrap();
    std::fs::create_dir(dir.path().join("eval")).unwrap();
    std::fs::write(dir.path().join("eval/web.bin"), [0u8; 16]).unwrap();
    let data = PreparedData::open(dir.path()).unwrap();
    assert_eq!(data.manifest.seq_len, 10_000_000_000_000_000_000);
    assert!(!data.manifest.shards_complete(dir.path()));
    let e = data.shards(Split::Eval).err().unwrap().to_string();
    assert!(
        e.contains("eval/web.bin") && e.contains("not a whole number"),
        "{e}"
    );
}
