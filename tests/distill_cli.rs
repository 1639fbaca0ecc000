//! Logit distillation through the binary (docs/algorithm.md §7.1): `shear prune --distill-from`
//! at weight 0 is the run without a teacher bit for bit; with a teacher it logs the KL beside
//! the cross-entropy, learns other masks, and a killed run resumes exactly (the teacher is
//! reloaded, never checkpointed); `shear run` distils in both stages with `[prune] distill` and
//! `[train] distill`; `shear plan --distill-from` counts the teacher.

mod common;

use std::path::Path;

use common::*;

fn prune_args(data: &Path, out: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    let mut a = tiny_prune_args(data, out, steps);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// `shear materialize --source SRC --masks MASKS --out OUT`.
fn materialize_masks(src: &Path, masks: &Path, out: &Path) {
    let arg = |p: &Path| p.to_str().unwrap().to_string();
    succeed(&[
        "materialize".into(),
        "--source".into(),
        arg(src),
        "--masks".into(),
        arg(masks),
        "--out".into(),
        arg(out),
    ]);
}

/// The newest `checkpoints/step-N` of a run directory.
fn newest_checkpoint(run: &Path) -> std::path::PathBuf {
    let mut steps: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("step-")
        })
        .collect();
    steps.sort();
    steps.pop().expect("a checkpoint")
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pruning_at_distillation_weight_zero_is_the_run_without_a_teacher_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    two_domains(&d, [3, 60, 60]);
    let src = fixture("pruning/source");
    let src = src.to_str().unwrap();
    let (plain, zero) = (tmp.path().join("plain"), tmp.path().join("zero"));
    succeed(&prune_args(&d, &plain, 6, &[]));
    succeed(&prune_args(
        &d,
        &zero,
        6,
        &["--distill-from", src, "--distill-weight", "0"],
    ));
    assert_eq!(
        lines(&plain.join("prune_log.jsonl")),
        lines(&zero.join("prune_log.jsonl"))
    );
    assert_eq!(
        raw_tensors(&plain.join("masks.safetensors")),
        raw_tensors(&zero.join("masks.safetensors"))
    );
    assert_eq!(
        std::fs::read(plain.join("model/model.safetensors")).unwrap(),
        std::fs::read(zero.join("model/model.safetensors")).unwrap()
    );
}

#[test]
fn distilled_pruning_logs_the_kl_and_a_killed_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    two_domains(&d, [3, 60, 60]);
    let src = fixture("pruning/source");
    let teacher = [
        "--distill-from",
        src.to_str().unwrap(),
        "--distill-temperature",
        "2",
    ];
    let (whole, killed, plain) = (
        tmp.path().join("whole"),
        tmp.path().join("killed"),
        tmp.path().join("plain"),
    );
    succeed(&prune_args(&d, &whole, 24, &teacher));
    let log = json_lines(&whole.join("prune_log.jsonl"));
    assert_eq!(log.len(), 24);
    // The first step's student is the teacher with sampled masks: a positive KL; the logged
    // cross-entropy is the plain run's at that step (same weights, masks and batch).
    succeed(&prune_args(&d, &plain, 24, &["--stop-after", "4"]));
    let plain_log = json_lines(&plain.join("prune_log.jsonl"));
    let (ce0, plain_ce0) = (
        log[0]["ce_loss"].as_f64().unwrap(),
        plain_log[0]["ce_loss"].as_f64().unwrap(),
    );
    assert!(
        (ce0 - plain_ce0).abs() <= 1e-5 * plain_ce0,
        "{ce0} vs {plain_ce0}"
    );
    assert!(plain_log[0].get("kl").is_none());
    for (i, l) in log.iter().enumerate() {
        let kl = l["kl"]
            .as_f64()
            .unwrap_or_else(|| panic!("step {i}: no kl in {l}"));
        assert!(kl.is_finite() && kl > 0.0, "step {i}: kl {kl}");
    }
    // The distillation term changes the gradient: the second step's masks differ.
    assert_ne!(
        log[1]["expected_sparsity"], plain_log[1]["expected_sparsity"],
        "distillation changes what the masks learn"
    );

    // Killed after 7 steps (checkpoints every 4), resumed: the same log and model.
    let args = prune_args(&d, &killed, 24, &teacher);
    let at_kill = kill_after(&args, &killed.join("prune_log.jsonl"), 7);
    assert!(at_kill < 24, "killed before the end ({at_kill} steps)");
    let mut resume = args.clone();
    resume.push("--resume".into());
    let stderr = succeed(&resume);
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert_eq!(
        lines(&whole.join("prune_log.jsonl")),
        lines(&killed.join("prune_log.jsonl"))
    );
    assert_eq!(
        raw_tensors(&whole.join("masks.safetensors")),
        raw_tensors(&killed.join("masks.safetensors"))
    );
    assert_eq!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        std::fs::read(killed.join("model/model.safetensors")).unwrap()
    );
    // The teacher is not in the checkpoints: they hold the plain run's files, of its sizes.
    let files = |dir: &Path| -> Vec<(String, u64)> {
        let mut f: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                let len = e.metadata().unwrap().len();
                // Only the tensors' sizes are fixed; the JSON holds figures of the run.
                (name.clone(), if name.ends_with(".mpk") { len } else { 0 })
            })
            .collect();
        f.sort();
        f
    };
    assert_eq!(
        files(&newest_checkpoint(&whole)),
        files(&newest_checkpoint(&plain))
    );
}

#[test]
fn a_recipe_run_distils_in_both_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = mini_recipe(tmp.path(), 2);
    let out = tmp.path().join("run");
    let o = run_shear(
        &[
            "run",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "prune.distill=true",
            "--set",
            "train.distill=true",
            "--set",
            "prune.distill_temperature=2.0",
            "--set",
            "prune.save_every=1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (log, stage) in [
        ("prune/prune_log.jsonl", "prune"),
        ("train/train_log.jsonl", "train"),
    ] {
        let log = json_lines(&out.join(log));
        assert!(!log.is_empty(), "{stage}");
        for l in &log {
            let kl = l["kl"]
                .as_f64()
                .unwrap_or_else(|| panic!("{stage}: no kl in {l}"));
            assert!(kl.is_finite() && kl >= 0.0, "{stage}: kl {kl}");
        }
    }
    // The settings the checkpoints record name the teacher: the source.
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(newest_checkpoint(&out.join("prune")).join("state.json")).unwrap(),
    )
    .unwrap();
    let teacher = settings["settings"]["distill_from"].as_str().unwrap();
    assert!(teacher.ends_with("source"), "{teacher}");
    assert_eq!(settings["settings"]["distill_temperature"], 2.0);
}

/// `shear plan --distill-from` adds the teacher's row, and nothing else changes.
#[test]
fn plan_counts_the_teacher() {
    let src = fixture("llama-mha");
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec![
            "plan",
            src.to_str().unwrap(),
            "--seq",
            "64",
            "--batch",
            "2",
            "--json",
        ];
        a.extend_from_slice(extra);
        let o = run_shear(&a, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (without, with) = (plan(&[]), plan(&["--distill-from", src.to_str().unwrap()]));
    let bytes = |v: &serde_json::Value, k: &str| v["bytes_per_device"][k].as_u64().unwrap();
    assert_eq!(bytes(&without, "teacher"), 0);
    let teacher = bytes(&with, "teacher");
    let params = with["params"].as_u64().unwrap();
    assert!(
        teacher > 4 * params,
        "the teacher's f32 weights at least: {teacher}"
    );
    assert_eq!(
        with["total_bytes_per_device"].as_u64().unwrap(),
        without["total_bytes_per_device"].as_u64().unwrap() + teacher
    );
    let table = run_shear(
        &[
            "plan",
            src.to_str().unwrap(),
            "--distill-from",
            src.to_str().unwrap(),
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("teacher (frozen)") && text.contains("distilled from"),
        "{text}"
    );
}

/// `shear prune --method importance`: seconds, the exact target, a deterministic mask file that
/// `shear materialize` turns into the same model, the scores and their cost in importance.json.
#[test]
fn importance_pruning_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    two_domains(&d, [3, 60, 60]);
    let out = tmp.path().join("imp");
    let mut args = tiny_prune_args(&d, &out, 4);
    args.extend(["--method", "importance", "--calibration-batches", "5"].map(String::from));
    let o = run_shear(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("pruned by importance to layers=3,hidden=48,heads=2"),
        "{stdout}"
    );
    let c = shear_model::LlamaConfig::from_file(out.join("model")).unwrap();
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size
        ),
        (3, 48, 2, 96)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("importance.json")).unwrap())
            .unwrap();
    // 5 batches of 4 sequences (tiny_prune_args) of the prepared data's 32 tokens.
    assert_eq!(report["tokens"], 5 * 4 * 32);
    assert!(report["seconds"].as_f64().unwrap() < 30.0);
    assert_eq!(report["scores"]["layer"].as_array().unwrap().len(), 4);
    // The mask file is the deterministic kind: materialize reproduces the model.
    let again = tmp.path().join("again");
    let src = fixture("pruning/source");
    materialize_masks(&src, &out.join("masks.safetensors"), &again);
    assert_eq!(
        raw_tensors(&out.join("model/model.safetensors")),
        raw_tensors(&again.join("model.safetensors"))
    );
    // Nothing to resume, nothing to distil.
    let mut resume = args.clone();
    resume.push("--resume".into());
    let o = run_shear(&resume.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume and --stop-after do not apply"));
}

/// `shear prune --method obs`: the same exact target, the greedy scores beside the magnitude ones
/// in importance.json, and a model refitted to the cut: its logits are nearer the source's than
/// those of the same cut without the refit (`shear materialize` of the source with the masks).
#[test]
fn obs_pruning_through_the_binary() {
    use burn::prelude::*;
    use shear_testkit::{device, max_abs_diff, B};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    two_domains(&d, [3, 60, 60]);
    let out = tmp.path().join("obs");
    let mut args = tiny_prune_args(&d, &out, 4);
    args.extend(["--method", "obs", "--calibration-batches", "10"].map(String::from));
    let o = run_shear(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("pruned by structured OBS to layers=3,hidden=48,heads=2"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("importance.json")).unwrap())
            .unwrap();
    assert_eq!(report["tokens"], 10 * 4 * 32);
    let ranked = report["obs"]["intermediate"][0].as_array().unwrap();
    assert_eq!(ranked.len(), 176);
    // Greedy ranks: 1 .. 176, each once.
    let mut r: Vec<u64> = ranked.iter().map(|v| v.as_f64().unwrap() as u64).collect();
    r.sort();
    assert_eq!(r, (1..=176).collect::<Vec<_>>());
    let unfitted = tmp.path().join("unfitted");
    let src = fixture("pruning/source");
    materialize_masks(&src, &out.join("masks.safetensors"), &unfitted);
    let load = |p: &Path| shear_model::load_llama::<B>(p, &device()).unwrap();
    let (source, refitted, plain) = (load(&src), load(&out.join("model")), load(&unfitted));
    let ids: Vec<i64> = (0..4 * 32).map(|i| ((i * 37 + 11) % 500) as i64).collect();
    let x = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [4, 32]), &device());
    let logits =
        |m: &shear_model::Llama<B>| shear_model::to_vec_f32(m.forward(x.clone()).into_data());
    let want = logits(&source);
    let (a, b) = (
        max_abs_diff(&logits(&refitted), &want),
        max_abs_diff(&logits(&plain), &want),
    );
    eprintln!("logits vs source: refitted {a}, unrefitted {b}");
    assert!(a < b, "refitted {a} vs unrefitted {b}");
}

/// `shear run` with `[prune] method = "importance"`: the pruning stage is the cut, continued
/// training starts from it, and the run's report is written.
#[test]
fn a_recipe_run_prunes_by_importance() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = mini_recipe(tmp.path(), 2);
    let out = tmp.path().join("run");
    let o = run_shear(
        &[
            "run",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "prune.method=\"importance\"",
            "--set",
            "prune.calibration_batches=3",
            "--set",
            "train.distill=true",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pruned = shear_model::LlamaConfig::from_file(out.join("prune/model")).unwrap();
    assert_eq!(
        (
            pruned.num_hidden_layers,
            pruned.hidden_size,
            pruned.num_attention_heads,
            pruned.intermediate_size
        ),
        (1, 32, 2, 64)
    );
    assert!(out.join("prune/importance.json").is_file());
    assert!(out.join("train/model/model.safetensors").is_file());
    assert!(out.join("report.md").is_file());
    let train = json_lines(&out.join("train/train_log.jsonl"));
    assert!(train.iter().all(|l| l["kl"].as_f64().is_some()));
    // --compare runs the learned-mask arms only.
    let o = run_shear(
        &[
            "run",
            recipe.to_str().unwrap(),
            "--out",
            tmp.path().join("cmp").to_str().unwrap(),
            "--compare",
            "--set",
            "prune.method=\"importance\"",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--compare runs the learned-mask baselines")
    );
}
