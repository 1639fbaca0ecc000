//! `shear generate` through the binary.

mod common;

use common::*;

#[test]
fn cli_generate_ids_only_prints_the_continuation() {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama-mha/generate.json")).unwrap())
            .unwrap();
    let join = |k: &str, sep: &str| {
        g[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    };
    let dir = fixture("llama-mha");
    let prompt = join("prompt_ids", ",");
    let out = run_shear(
        &[
            "generate",
            dir.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "--max-new-tokens",
            "20",
            "--greedy",
            "--ids-only",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", join("greedy_continuation", " "))
    );
}
