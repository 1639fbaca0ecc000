//! `shear run --compare` on the embedded default (no recipe given) with a reduced budget: the
//! inputs are unpacked from the binary, every baseline runs, and the paper's first claim holds in
//! direction — pruning + continued training ends at a lower mean eval loss than training the
//! same shape from scratch on as many tokens.

mod common;

use common::*;

fn mean_loss(model: &serde_json::Value) -> f64 {
    let domains = model["domains"].as_array().unwrap();
    domains
        .iter()
        .map(|d| d["loss"].as_f64().unwrap())
        .sum::<f64>()
        / domains.len() as f64
}

#[test]
fn pruned_and_continued_beats_scratch_on_a_reduced_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = run_shear(
        &[
            "run",
            "--out",
            out.to_str().unwrap(),
            "--compare",
            "--set",
            "prune.steps=16",
            "--set",
            "prune.update_every=8",
            "--set",
            "prune.save_every=0",
            "--set",
            "train.steps=24",
            "--set",
            "train.update_every=12",
            "--set",
            "train.save_every=0",
            "--set",
            "prune.batch=4",
            "--set",
            "train.batch=4",
            "--set",
            "dynamic.eval_sequences=8",
            "--set",
            "eval.max_sequences=8",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The embedded inputs were unpacked.
    for f in [
        "recipes/default.toml",
        "corpus/code.jsonl.gz",
        "tiny/model.safetensors",
        "tiny/tokenizer.json",
    ] {
        assert!(out.join("inputs").join(f).is_file(), "{f}");
    }
    let run = read_run_json(&out);
    assert_eq!(run["recipe"]["prune"]["steps"], 16);
    let stages = stage_names(&run);
    assert_eq!(
        stages,
        [
            "data",
            "prune",
            "train",
            "eval",
            "export",
            "scratch",
            "static prune",
            "static train"
        ]
    );
    let c = &run["compare"];
    // Same total tokens: (16 + 24) steps of 4 x 128.
    assert_eq!(c["tokens"], 40 * 4 * 128);
    assert_eq!(c["scratch_steps"], 40);
    assert_eq!(c["shape"]["reached"], true);
    assert_eq!(c["reference"].as_array().unwrap().len(), 4);
    let ours = mean_loss(&run["metrics"]["final"]);
    let scratch = mean_loss(&c["scratch"]);
    let fixed = mean_loss(&c["static"]);
    eprintln!("mean eval loss: pruned + continued {ours:.4}, from scratch {scratch:.4}, static loading {fixed:.4}");
    assert!(ours.is_finite() && scratch.is_finite() && fixed.is_finite());
    assert!(
        ours <= scratch,
        "pruned + continued {ours:.4} vs from scratch {scratch:.4}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "## Mini reproduction",
        "### Pruned + continued vs from scratch (20480 tokens each)",
        "### Dynamic vs static loading",
        "| **largest gap** |",
        "Reached exactly: **yes**",
        "charts/prune_shape.png",
    ] {
        assert!(report.contains(needle), "`{needle}` not in report.md");
    }
}
