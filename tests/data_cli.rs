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

/// `shear data bench` measures both figures it promises: tokenization of a corpus with the
/// given tokenizer (the document and token counts it reports are those of the corpus) and the
/// loader over prepared data (batches of the asked shape).
#[test]
fn data_bench_reports_tokenization_and_loader_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    two_domains(&data, [2, 30, 2]);
    let corpus = tmp.path().join("c.jsonl");
    let docs: Vec<String> = (0..20).map(|i| doc(0, i)).collect();
    std::fs::write(&corpus, jsonl(&docs)).unwrap();
    let tokenizer = fixture("llama2-tokenizer/tokenizer.json");
    let out = shear()
        .args(["data", "bench", "--data"])
        .arg(&data)
        .args([
            "--batch",
            "3",
            "--batches",
            "40",
            "--repeats",
            "3",
            "--corpus",
        ])
        .arg(&corpus)
        .arg("--tokenizer")
        .arg(&tokenizer)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    // The token count the benchmark reports is the corpus's, counted here independently.
    let tok = shear_data::Tokenizer::from_file(&tokenizer).unwrap();
    let eos = tok.eos_id();
    let want: usize = tok
        .encode_documents(&docs, eos)
        .unwrap()
        .iter()
        .map(Vec::len)
        .sum();
    assert!(
        lines[0].starts_with("tokenization: ")
            && lines[0].contains(&format!("median of 3; 20 documents, {want} tokens")),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("loader: ")
            && lines[1].contains("median of 3; batches of 3 x 32 tokens"),
        "{stdout}"
    );
    for l in &lines {
        let rate: f64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{l}");
    }
}
