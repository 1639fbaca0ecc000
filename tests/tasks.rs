//! Zero-shot multiple-choice scoring: continuation log-likelihoods against a hand computation
//! (log-softmax in f64 of the model's logits), harness-style tokenization, `shear eval --tasks`.

mod common;

use common::*;
use shear_data::tasks::{read_tasks, McTokens};
use shear_data::Tokenizer;
use shear_train::eval::score_task;

#[test]
fn tasks_tokenize_like_the_harness_and_the_cli_scores_them() {
    let tok = Tokenizer::from_file(fixture("llama2-tokenizer")).unwrap();
    let tasks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tasks");
    let items = read_tasks(&tasks.join("capitals.jsonl")).unwrap();
    assert_eq!(items.len(), 12);
    let t = items[0].tokenize(&tok).unwrap();
    assert_eq!(t.context[0], 1, "BOS");
    for (c, ids) in items[0].choices.iter().zip(&t.continuations) {
        assert_eq!(
            tok.decode(ids).unwrap(),
            c.trim_start(),
            "continuation is the choice"
        );
    }

    // A tiny random model with the Llama-2 vocabulary and tokenizer.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let model = tiny_llama2_vocab_model(&dir);
    let file = tasks.join("arithmetic.jsonl");
    let o = run_shear(
        &[
            "eval",
            dir.to_str().unwrap(),
            "--tasks",
            file.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    let toks: Vec<McTokens> = read_tasks(&file)
        .unwrap()
        .iter()
        .map(|i| i.tokenize(&tok).unwrap())
        .collect();
    let want = score_task(&model, "arithmetic", &toks);
    assert_eq!(line["task"], "arithmetic");
    assert_eq!(line["items"], 12);
    assert!((line["acc"].as_f64().unwrap() - want.acc).abs() < 1e-12);
    let got = line["logliks"].as_array().unwrap();
    for (g, w) in got.iter().zip(&want.logliks) {
        for (a, b) in f64s(g).iter().zip(w) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    // A bad task file: one line naming the file and line.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"context\": \"x\", \"choices\": [\"a\", \"b\"], \"label\": 2}}\n",
            std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .next()
                .unwrap()
        ),
    )
    .unwrap();
    let o = run_shear(
        &[
            "eval",
            dir.to_str().unwrap(),
            "--tasks",
            bad.to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_error(&o, &["bad.jsonl:2:", "label 2"]);
}
