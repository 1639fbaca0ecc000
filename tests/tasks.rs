//! Zero-shot multiple-choice scoring: continuation log-likelihoods against a hand computation
//! (log-softmax in f64 of the model's logits), harness-style tokenization, `shear eval --tasks`.

mod common;

use burn::prelude::*;
use common::*;
use shear_data::tasks::{read_tasks, McTokens};
use shear_data::Tokenizer;
use shear_train::eval::{continuation_logliks, score_task};

/// log P(continuation | context) by hand: the model's logits for the unpadded sequence, then a
/// log-softmax in f64.
fn by_hand(model: &shear_model::Llama<B>, ctx: &[u32], cont: &[u32]) -> f64 {
    let seq: Vec<i64> = ctx.iter().chain(cont).map(|&t| t as i64).collect();
    let n = seq.len();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seq.clone(), [1, n]), &device());
    let logits: Vec<f32> = model.forward(ids).into_data().to_vec().unwrap();
    let v = logits.len() / n;
    (ctx.len()..n)
        .map(|t| {
            let row = &logits[(t - 1) * v..t * v];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, x| m.max(*x as f64));
            let lse = max
                + row
                    .iter()
                    .map(|x| (*x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            row[seq[t] as usize] as f64 - lse
        })
        .sum()
}

#[test]
fn logliks_and_accuracy_match_a_hand_computation() {
    let model = shear_model::load_llama::<B>(&fixture("llama-mha"), &device()).unwrap();
    let ctx = vec![1u32, 5, 9, 77];
    let conts = vec![vec![12u32, 40], vec![7], vec![300, 2, 9, 999]];
    let got = continuation_logliks(&model, &ctx, &conts);
    for (c, g) in conts.iter().zip(&got) {
        let want = by_hand(&model, &ctx, c);
        assert!((g - want).abs() < 1e-4, "{g} vs {want}");
    }
    // acc: the highest sum; acc_norm: the highest sum per character.
    let best = (0..3).max_by(|&a, &b| got[a].total_cmp(&got[b])).unwrap();
    let chars = vec![1usize, 50, 2];
    let best_norm = (0..3)
        .max_by(|&a, &b| (got[a] / chars[a] as f64).total_cmp(&(got[b] / chars[b] as f64)))
        .unwrap();
    let items: Vec<McTokens> = (0..3)
        .map(|label| McTokens {
            context: ctx.clone(),
            continuations: conts.clone(),
            chars: chars.clone(),
            label,
        })
        .collect();
    let s = score_task(&model, "t", &items);
    assert_eq!(s.items, 3);
    assert!(
        (s.acc - 1.0 / 3.0).abs() < 1e-12,
        "one label of three is the argmax"
    );
    assert!((s.acc_norm - 1.0 / 3.0).abs() < 1e-12);
    let one = score_task(&model, "t", &items[best..best + 1]);
    assert_eq!(one.acc, 1.0);
    let one = score_task(&model, "t", &items[best_norm..best_norm + 1]);
    assert_eq!(one.acc_norm, 1.0);
}

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
