//! `shear data prepare` through the binary.

mod common;

use common::*;
use shear_data::{PreparedData, Split};

#[test]
fn cli_prepares_from_a_recipe_and_reports_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    write_corpus(tmp.path());
    let recipe = tmp.path().join("data.toml");
    std::fs::write(
        &recipe,
        r#"[data]
seq_len = 64
eval_sequences = 2
seed = 1

[[data.domain]]
name = "web"
paths = ["web-a.jsonl", "web-b.jsonl.gz"]

[[data.domain]]
name = "code"
paths = ["code"]
"#,
    )
    .unwrap();
    let out = tmp.path().join("shards");
    let tok = fixture("llama2-tokenizer/tokenizer.json");
    let args = [
        "data",
        "prepare",
        "--recipe",
        recipe.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = run_shear(&args, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("tokens/s"), "{stdout}");
    let m = PreparedData::open(&out).unwrap().manifest;
    assert_eq!(m.seq_len, 64);
    assert_eq!(m.domains[1].splits[&Split::Eval].sequences, 2);
    let o = run_shear(&args, &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("up to date"));

    // Flags instead of a recipe, with a bad JSON line.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"a\"}\nnot json\n").unwrap();
    let o = run_shear(
        &[
            "data",
            "prepare",
            "--domain",
            &format!("web={}", bad.display()),
            "--tokenizer",
            tok.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_error(&o, &["bad.jsonl:2:", "invalid JSON"]);
}
