//! The embedded default's tiny source model, through the binary: `data prepare` with the default
//! recipe, then `eval`.

mod common;

use common::*;

/// The tiny source model is genuinely trained: on every domain's eval split its perplexity is
/// far below a uniform model's (= the vocabulary size, 4096).
#[test]
fn the_source_model_is_far_better_than_uniform() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let recipe = assets().join("recipes/default.toml");
    let tiny = assets().join("tiny");
    let o = run_shear(
        &[
            "data",
            "prepare",
            "--recipe",
            recipe.to_str().unwrap(),
            "--tokenizer",
            tiny.to_str().unwrap(),
            "--out",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run_shear(
        &[
            "eval",
            tiny.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    // Committed model (2026-11-29): perplexity 69 (code), 68 (book), 78 (dictionary),
    // 243 (quotes); mean loss 4.58 nats against ln 4096 = 8.32 for a uniform model.
    for row in &rows {
        let ppl = row["perplexity"].as_f64().unwrap();
        assert!(
            ppl < 4096.0 / 10.0,
            "{}: perplexity {ppl} (uniform: 4096)",
            row["domain"]
        );
    }
    let mean = rows
        .iter()
        .map(|r| r["loss"].as_f64().unwrap())
        .sum::<f64>()
        / 4.0;
    assert!(
        mean < 4096f64.ln() - 3.0,
        "mean loss {mean} (uniform: {})",
        4096f64.ln()
    );
}
