//! Hub ids resolved through the Hugging Face cache layout (HF_HOME), offline.

mod common;

use common::*;

/// Lays out `HF_HOME/hub/models--acme--tiny-llama` as huggingface_hub does, holding `rel`.
fn fake_cache(rel: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--acme--tiny-llama");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for entry in std::fs::read_dir(fixture(rel)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snap.join(entry.file_name())).unwrap();
    }
    home
}

#[test]
fn hub_id_resolves_from_the_cache_offline() {
    let home = fake_cache("llama-mha");
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama-mha/generate.json")).unwrap())
            .unwrap();
    let want: Vec<String> = g["greedy_continuation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let out = run_shear(
        &[
            "generate",
            "acme/tiny-llama",
            "--prompt-ids",
            "714,628,384,648,392,436",
            "--max-new-tokens",
            "20",
            "--greedy",
            "--ids-only",
        ],
        &[
            ("HF_HOME", home.path().to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        want.join(" ")
    );
}

#[test]
fn offline_miss_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let out = run_shear(
        &["inspect", "acme/not-cached", "--offline"],
        &[("HF_HOME", home.path().to_str().unwrap())],
    );
    assert_one_line_error(
        &out,
        &["acme/not-cached", "not in the hub cache", "offline"],
    );
}
