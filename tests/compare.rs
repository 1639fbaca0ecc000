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

/// The reduced budget of these tests: (16 + 24) steps of 4 sequences, 8 eval sequences.
const REDUCED: [&str; 20] = [
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
];

#[test]
fn compare_over_two_seeds_reports_every_arm_with_its_spread_against_both_references() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = vec![
        "run",
        "--out",
        out.to_str().unwrap(),
        "--compare",
        "--seeds",
        "2",
    ];
    args.extend(REDUCED);
    let o = run_shear(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The scaling law's prediction is printed next to the source's losses before any stage.
    assert!(
        stderr.contains("the scaling law at the target's") && stderr.contains("(source "),
        "{stderr}"
    );
    let run = read_run_json(&out);
    let kinds: Vec<&str> = run["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["scaling", "source"]);
    let arms: Vec<&str> = run["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arm"].as_str().unwrap())
        .collect();
    assert_eq!(arms, ["dynamic", "static", "scratch"]);
    for a in run["arms"].as_array().unwrap() {
        let m = &a["mean_loss"];
        let (lo, hi) = (m["min"].as_f64().unwrap(), m["max"].as_f64().unwrap());
        // Different seeds give different data orders, masks and initial weights.
        assert!(hi - lo > 1e-6, "{}: mean loss {lo} .. {hi}", a["arm"]);
        assert_eq!(a["seed_mean_loss"].as_array().unwrap().len(), 2);
        assert_eq!(
            a["largest_gap"].as_array().unwrap().len(),
            2,
            "one per reference"
        );
        assert_eq!(a["domains"].as_array().unwrap().len(), 4);
    }
    // Each seed is a whole run with its own seeds and its own report.
    let runs = run["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (k, r) in runs.iter().enumerate() {
        assert_eq!(r["prune_seed"], k as u64);
        assert_eq!(r["summary"]["recipe"]["train"]["seed"], k as u64);
        assert_eq!(r["summary"]["compare"]["reference_kind"], "scaling");
        assert!(out.join(format!("seed-{k}/report.md")).is_file());
    }
    let claims: Vec<&str> = run["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["claim"].as_str().unwrap())
        .collect();
    assert_eq!(claims.len(), 3, "{claims:?}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "# shear run report over 2 seeds",
        "**Criterion.**",
        "| largest gap to the scaling law at the target's size |",
        "| largest gap to the source's own losses |",
        "## Verdicts",
        "charts/final_loss_by_arm.png",
        "charts/prune_domain_weights_seeds.png",
        "charts/train_domain_weights_seeds.png",
    ] {
        assert!(report.contains(needle), "`{needle}` not in report.md");
    }
    for chart in [
        "final_loss_by_arm",
        "prune_domain_weights_seeds",
        "train_domain_weights_seeds",
    ] {
        let png = std::fs::read(out.join(format!("charts/{chart}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 4000, "{chart}");
    }
}

#[test]
fn pruned_and_continued_beats_scratch_on_a_reduced_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = vec!["run", "--out", out.to_str().unwrap(), "--compare"];
    args.extend(REDUCED);
    let o = run_shear(&args, &[]);
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
