//! The non-finite guard through the binary (docs/algorithm.md §9), with steps poisoned by the
//! test hook `SHEAR_TEST_POISON_STEPS` (their loss made NaN): a skipped step is recorded in
//! OUT/skipped.jsonl with its rows and changes nothing — the model, the masks, the multipliers
//! and the optimizers' state stay bit for bit, also when only one of two data-parallel peers
//! sees the NaN; more than `--max-skipped` skips stop the run with one line; and the count of
//! skipped steps survives a kill and a resume.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

use common::*;
use serde_json::Value;

const POISON: &str = "SHEAR_TEST_POISON_STEPS";
const STEPS: usize = 12;

fn data(dir: &Path) {
    two_domains(dir, [3, 60, 60]);
}

fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

/// Runs `shear args` with the steps `poison` poisoned.
fn poisoned(args: &[String], poison: &str) -> std::process::Output {
    shear().args(args).env(POISON, poison).output().unwrap()
}

fn jsonl(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn steps_of(path: &Path) -> Vec<u64> {
    jsonl(path)
        .iter()
        .map(|l| l["step"].as_u64().unwrap())
        .collect()
}

/// The files of a checkpoint that hold the run's state: every record (model, masks and
/// multipliers, each optimizer), not `state.json` (its step differs).
fn records(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "mpk" || x == "safetensors")
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // The mask file's tensors (its metadata holds the step); a record's content (an
            // optimizer's map of parameters is written in a HashMap's order).
            let bytes = match name.ends_with(".safetensors") {
                true => format!("{:?}", raw_tensors(&p)).into_bytes(),
                false => {
                    let bytes = std::fs::read(&p).unwrap();
                    let v = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
                    canonical(&v).into_bytes()
                }
            };
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

/// A MessagePack value as text with every map's entries in sorted order.
fn canonical(v: &rmpv::Value) -> String {
    match v {
        rmpv::Value::Map(entries) => {
            let mut e: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}:{}", canonical(k), canonical(v)))
                .collect();
            e.sort();
            format!("{{{}}}", e.join(","))
        }
        rmpv::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => format!("{other:?}"),
    }
}

fn checkpoint(out: &Path, step: usize) -> std::path::PathBuf {
    out.join(format!("checkpoints/step-{step:08}"))
}

/// A pruning run with step 3 poisoned: the step is skipped with a warning and a line in
/// skipped.jsonl naming its rows, and every record of the checkpoint after it (model, masks,
/// multipliers, the three optimizers) is the one before it, bit for bit.
fn a_skipped_step_changes_nothing(extra: &[&str], poison: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    let out = tmp.path().join("run");
    let mut args = tiny_prune_args(&d, &out, STEPS);
    let i = args.iter().position(|a| a == "--save-every").unwrap();
    args[i + 1] = "1".into();
    let args = with(args, &[&["--keep-checkpoints", "20"], extra].concat());
    let o = poisoned(&args, poison);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: step 3 skipped: not finite: cross-entropy NaN"),
        "{stderr}"
    );
    let logged = steps_of(&out.join("prune_log.jsonl"));
    assert_eq!(
        logged,
        (0..STEPS as u64).filter(|&s| s != 3).collect::<Vec<_>>()
    );
    let skips = jsonl(&out.join("skipped.jsonl"));
    assert_eq!(skips.len(), 1);
    assert_eq!(skips[0]["step"], 3);
    let rows = skips[0]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "the step's 2 × 4 rows: {rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["domain"] == "web" || r["domain"] == "code"));
    let (before, after) = (records(&checkpoint(&out, 3)), records(&checkpoint(&out, 4)));
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "masks.safetensors",
            "optim_lambdas.mpk",
            "optim_masks.mpk",
            "optim_weights.mpk",
            "pruner.mpk"
        ]
    );
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        assert!(a == b, "step 3 changed {name}");
    }
    assert!(
        records(&checkpoint(&out, 4)) != records(&checkpoint(&out, 5)),
        "step 4 was a real step"
    );
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(checkpoint(&out, 4).join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["loop_state"]["skipped"], 1);
}

#[test]
fn a_skipped_pruning_step_changes_no_weight_mask_multiplier_or_optimizer_state() {
    a_skipped_step_changes_nothing(&[], "3");
}

/// With two peers and the NaN on peer 1 only, both skip the step (they decide on the reduced
/// figures) and nothing changes on peer 0, which writes the checkpoints.
#[test]
fn one_poisoned_peer_of_two_skips_the_step_on_both() {
    a_skipped_step_changes_nothing(&["--devices", "2"], "3@1");
}

/// More skipped steps than `--max-skipped` stop the run with one line naming the step, the
/// rows and the file; the skipped steps are all in skipped.jsonl.
#[test]
fn too_many_skipped_steps_stop_the_run_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    for (cmd, args) in [
        (
            "prune",
            tiny_prune_args(&d, &tmp.path().join("prune"), STEPS),
        ),
        (
            "train",
            tiny_train_args(&d, &tmp.path().join("train"), STEPS),
        ),
    ] {
        let out = tmp.path().join(cmd);
        let o = poisoned(&with(args, &["--max-skipped", "1"]), "2,5");
        assert_last_line_error(
            &o,
            &[
                "step 5: not finite",
                "(rows web#",
                "2 steps skipped, more than the 1 allowed (--max-skipped)",
                &format!("{}", out.join("skipped.jsonl").display()),
            ],
        );
        assert_eq!(steps_of(&out.join("skipped.jsonl")), [2, 5], "{cmd}");
        assert!(
            !out.join("model").exists(),
            "{cmd}: no model after a stopped run"
        );
    }
}

/// The count of skipped steps is kept in checkpoints: a run with step 2 skipped, killed after
/// step 7 and resumed from its checkpoint at step 6, skips step 9 as its second — beyond
/// `--max-skipped 1`, so it stops there, as the uninterrupted run does; with the limit not
/// reached, the resumed run ends as the uninterrupted one.
#[test]
fn the_skip_count_survives_a_kill_and_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    let args = |out: &Path, max: &str| {
        let mut a = tiny_train_args(&d, out, STEPS);
        let i = a.iter().position(|a| a == "--save-every").unwrap();
        a[i + 1] = "3".into();
        with(a, &["--max-skipped", max])
    };
    // Uninterrupted, within the limit.
    let whole = tmp.path().join("whole");
    let o = poisoned(&args(&whole, "2"), "2,9");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Killed after step 7's line, resumed: the same log, skips and model.
    let parts = tmp.path().join("parts");
    let status = shear()
        .args(args(&parts, "2"))
        .env(POISON, "2,9")
        .env("SHEAR_TEST_KILL_AT", "step:7:logged")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9), "killed at step 7");
    let o = poisoned(&with(args(&parts, "2"), &["--resume"]), "2,9");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && said.contains("(step 6)"), "{said}");
    for file in ["train_log.jsonl", "skipped.jsonl"] {
        assert_eq!(lines(&whole.join(file)), lines(&parts.join(file)), "{file}");
    }
    assert!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap()
            == std::fs::read(parts.join("model/model.safetensors")).unwrap()
    );
    // The limit 1: the count from before the kill makes step 9 the second skip.
    let limited = tmp.path().join("limited");
    let status = shear()
        .args(args(&limited, "1"))
        .env(POISON, "2,9")
        .env("SHEAR_TEST_KILL_AT", "step:7:logged")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.signal(), Some(9));
    let o = poisoned(&with(args(&limited, "1"), &["--resume"]), "2,9");
    assert_last_line_error(
        &o,
        &[
            "step 9: not finite",
            "2 steps skipped, more than the 1 allowed",
        ],
    );
}
