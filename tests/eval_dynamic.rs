//! Per-domain evaluation against transformers' loss, `shear eval`, and `shear prune` with
//! dynamic batch loading over a prepared data folder.

mod common;

use std::path::Path;

use common::*;
use shear_data::{PreparedData, Split};
use shear_train::eval::eval_domains;

/// The llama-mha fixture's two 16-token sequences, as ids.
fn fixture_ids() -> Vec<Vec<u32>> {
    let (_, ids) = read_tensor(&fixture("llama-mha/expected.safetensors"), "input_ids");
    ids.chunks(16)
        .map(|c| c.iter().map(|&x| x as u32).collect())
        .collect()
}

/// Domain `both` holds both fixture sequences in its eval split, `first` only the first one.
fn fixture_data(dir: &Path) {
    let seqs = fixture_ids();
    write_prepared(
        dir,
        16,
        1000,
        &[("both", [2, 2, 2]), ("first", [1, 1, 1])],
        |_, _, i| seqs[i].clone(),
    );
}

#[test]
fn eval_cli_prints_every_domain() {
    let tmp = tempfile::tempdir().unwrap();
    fixture_data(tmp.path());
    let model = fixture("llama-mha");
    let o = run_shear(
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            tmp.path().to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, want) = read_tensor(&fixture("llama-mha/expected.safetensors"), "loss");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["domain"], "both");
    assert!((lines[0]["loss"].as_f64().unwrap() - want[0] as f64).abs() < 1e-5);
    // Shards with ids beyond the model's vocabulary are refused.
    let big = tempfile::tempdir().unwrap();
    write_prepared(big.path(), 16, 5000, &[("x", [1, 1, 1])], |_, _, _| {
        vec![3; 16]
    });
    let o = run_shear(
        &[
            "eval",
            model.to_str().unwrap(),
            "--data",
            big.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_error(&o, &["vocabulary of 5000", "1000"]);
}

/// Three domains of random ids below 500; `rare` has only 3 prune sequences, so it runs out.
fn pruning_data(dir: &Path) {
    write_prepared(
        dir,
        16,
        500,
        &[
            ("web", [3, 40, 4]),
            ("code", [3, 40, 4]),
            ("rare", [3, 3, 4]),
        ],
        |d, s, i| {
            (0..16u32)
                .map(|t| (t * 31 + i as u32 * 97 + d as u32 * 211 + s as u32 * 7) % 500)
                .collect()
        },
    );
}

fn prune_args<'a>(data: &'a str, out: &'a str, src: &'a str) -> Vec<&'a str> {
    vec![
        "prune",
        src,
        "--target",
        "layers=3,hidden=48,heads=2,intermediate=96",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        "6",
        "--batch",
        "4",
        "--grad-accum",
        "1",
        "--update-every",
        "2",
    ]
}

#[test]
fn prune_with_dynamic_batch_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    pruning_data(&data);
    let out = tmp.path().join("run");
    let src = fixture("pruning/source");
    let mut args = prune_args(
        data.to_str().unwrap(),
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    );
    args.extend(["--proportions", "web=0.4,code=0.3,rare=0.3"]);
    let o = run_shear(&args, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("domain `rare` used up"), "{stderr}");

    // The reference losses are the source model's own eval losses.
    let source = shear_model::load_llama::<B>(&src, &device()).unwrap();
    let prepared = PreparedData::open(&data).unwrap();
    let eval = eval_domains(
        &source,
        None,
        &prepared.domains(),
        &prepared.shards(Split::Eval).unwrap(),
        8,
        None,
    );

    let log = std::fs::read_to_string(out.join("prune_log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    let updates: Vec<&serde_json::Value> = lines
        .iter()
        .filter_map(|l| l.get("domain_update"))
        .collect();
    assert_eq!(updates.len(), 3, "an update after steps 2, 4, 6");
    let mut before = vec![0.4, 0.3, 0.3];
    for (k, u) in updates.iter().enumerate() {
        assert_eq!(u["step"].as_u64().unwrap(), 2 * (k as u64 + 1));
        assert_eq!(u["rule"], "code");
        let reference = f64s(&u["reference"]);
        for (r, e) in reference.iter().zip(&eval) {
            assert!(
                (r - e.loss).abs() < 1e-6,
                "reference {r} vs source loss {}",
                e.loss
            );
        }
        let (losses, w) = (f64s(&u["losses"]), f64s(&u["weights"]));
        assert_eq!(f64s(&u["weights_before"]), before);
        // The logged weights are the code rule applied to the logged losses.
        let want = shear_data::UpdateRule::Code.apply(&before, &losses, &reference);
        for (a, b) in w.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12);
        }
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        before = w;
    }
    assert!(lines.iter().any(|l| l.get("loader_events").is_some()));
    // The loader state was saved, with the final weights.
    let state: shear_data::LoaderState =
        serde_json::from_str(&std::fs::read_to_string(out.join("loader_state.json")).unwrap())
            .unwrap();
    assert_eq!(state.weights, before);
    assert_eq!(state.batches, 6);
    assert!(out.join("model/config.json").is_file());
}

#[test]
fn prune_refuses_bad_dynamic_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    pruning_data(&data);
    let out = tmp.path().join("run");
    let src = fixture("pruning/source");
    let base = prune_args(
        data.to_str().unwrap(),
        out.to_str().unwrap(),
        src.to_str().unwrap(),
    );
    let with = |extra: &[&str]| {
        let mut a = base.clone();
        a.extend_from_slice(extra);
        run_shear(&a, &[])
    };
    assert_error_line(
        &with(&["--proportions", "web=0.5,code=0.6,rare=0"]),
        &["sum to 1.1"],
    );
    assert_error_line(
        &with(&["--proportions", "web=0.5,code=0.5,wiki=0"]),
        &["`wiki`", "no data"],
    );
    assert_error_line(&with(&["--reference", "llama2"]), &["reference", "`web`"]);
    let bad_rule = with(&["--update-rule", "fast"]);
    assert_usage_error(&bad_rule, &["--update-rule", "update rule `fast`"]);
    assert_error_line(&with(&["--seq", "32"]), &["seq 32", "16 tokens"]);
    assert!(!out.join("prune_log.jsonl").exists(), "nothing written");
}

#[test]
fn a_stopped_pruning_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    pruning_data(&data);
    let src = fixture("pruning/source");
    let run = |out: &Path, extra: &[&str]| {
        let mut args = prune_args(
            data.to_str().unwrap(),
            out.to_str().unwrap(),
            src.to_str().unwrap(),
        );
        args.extend(["--proportions", "web=0.4,code=0.3,rare=0.3"]);
        args.extend_from_slice(extra);
        let o = run_shear(&args, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let whole = tmp.path().join("whole");
    run(&whole, &[]);
    let split = tmp.path().join("split");
    let o = run(&split, &["--stop-after", "3"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped after step 3"));
    assert!(split.join("checkpoints/step-00000003/state.json").is_file());
    assert!(!split.join("model").exists());
    let o = run(&split, &["--resume"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming from"));
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(
        String::from_utf8(read(&whole.join("prune_log.jsonl"))).unwrap(),
        String::from_utf8(read(&split.join("prune_log.jsonl"))).unwrap(),
        "same log line for line: losses, masks, λ's, domain updates"
    );
    // Every tensor bit-identical (the header's metadata map has no fixed order).
    for f in ["masks.safetensors", "model/model.safetensors"] {
        let same = raw_tensors(&whole.join(f)) == raw_tensors(&split.join(f));
        assert!(same, "{f} differs");
    }
    let same = read(&whole.join("loader_state.json")) == read(&split.join("loader_state.json"));
    assert!(same, "loader_state.json differs");
}
