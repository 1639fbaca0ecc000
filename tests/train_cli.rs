//! `shear train` end to end: dynamic loading over the train split, a stopped run resumed with
//! `--resume` that reproduces the uninterrupted run bit for bit, random init, refusals.

mod common;

use std::path::Path;

use common::*;

fn data(dir: &Path) {
    write_prepared(
        dir,
        16,
        1000,
        &[("x", [2, 1, 9]), ("y", [2, 1, 5])],
        |d, s, i| {
            (0..16u32)
                .map(|t| (t * 13 + i as u32 * 101 + d as u32 * 307 + s as u32) % 1000)
                .collect()
        },
    );
}

fn run(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let model = fixture("llama-mha");
    let mut args = vec![
        "train",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch",
        "2",
        "--update-every",
        "2",
        "--lr",
        "1e-3",
    ];
    // The reference losses are those of the model this one came from (here: itself).
    if !extra.contains(&"--reference") {
        args.extend(["--reference-model", model.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    if !extra.contains(&"--steps") {
        args.extend(["--steps", "6"]);
    }
    run_shear(&args, &[])
}

fn log(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn train_resume_and_random_init() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);

    let whole = tmp.path().join("whole");
    let o = run(&d, &whole, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = log(&whole);
    assert_eq!(a.len(), 6);
    assert!(
        a[0].get("eval_first_update").is_some(),
        "evaluation before step 0"
    );
    assert_eq!(
        a.iter()
            .filter(|l| l.get("domain_update").is_some())
            .count(),
        3
    );
    assert!(whole.join("model/config.json").is_file());
    assert!(whole.join("loader_state.json").is_file());

    // Stopped after 3 steps, then resumed: the same log and the same weights, bit for bit.
    let split = tmp.path().join("split");
    let o = run(&d, &split, &["--stop-after", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped after step 3"));
    assert!(!split.join("model").exists());
    let o = run(&d, &split, &["--resume"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    let b = log(&split);
    assert_eq!(
        a, b,
        "the resumed run logs exactly what the uninterrupted one did"
    );
    assert_eq!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        std::fs::read(split.join("model/model.safetensors")).unwrap()
    );

    // From scratch: the first loss is about ln(vocab).
    let scratch = tmp.path().join("scratch");
    let o = run(&d, &scratch, &["--init", "random", "--steps", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let l0 = log(&scratch)[0]["loss"].as_f64().unwrap();
    assert!((l0 - 1000f64.ln()).abs() < 0.1, "{l0}");
}

#[test]
fn train_refuses_bad_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    let out = tmp.path().join("o");
    let teacher = fixture("pruning/source");
    assert_error_line(
        &run(&d, &out, &["--distill-from", teacher.to_str().unwrap()]),
        &["teacher", "vocabulary 500", "1000"],
    );
    assert_error_line(
        &run(&d, &out, &["--proportions", "x=0.2,y=0.2"]),
        &["sum to 0.4"],
    );
    assert_error_line(&run(&d, &out, &["--steps", "0"]), &["steps 0"]);
}

/// Defect fixed: `--reference source` (the default) evaluated the model being trained as its
/// own reference, so every gap started at 0. It now needs the source model, or is refused.
#[test]
fn train_needs_the_source_model_for_a_source_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    let out = tmp.path().join("o");
    let o = run(&d, &out, &["--reference", "source"]);
    assert_error_line(&o, &["reference `source`", "--reference-model"]);
    assert!(
        !out.join("train_log.jsonl").exists(),
        "refused before any work"
    );
    // With the source named, its eval losses are the reference: here another random model of
    // the same shape, so the first gaps are the trained model's losses minus that model's.
    use burn::tensor::backend::Backend;
    let other = tmp.path().join("other");
    let config = shear_model::LlamaConfig::from_file(fixture("llama-mha")).unwrap();
    B::seed(&device(), 99);
    let m = shear_model::Llama::<B>::from_source(
        &config,
        &mut shear_model::RandomInit::default(),
        &device(),
    )
    .unwrap();
    shear_model::save_llama(&m, &other, shear_model::Dtype::F32).unwrap();
    let o = run(
        &d,
        &out,
        &[
            "--reference",
            "source",
            "--reference-model",
            other.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = &log(&out)[0]["eval_first_update"];
    let prepared = shear_data::PreparedData::open(&d).unwrap();
    let want = shear_train::eval::eval_domains(
        &m,
        None,
        &prepared.domains(),
        &prepared.shards(shear_data::Split::Eval).unwrap(),
        8,
        None,
    );
    for (r, w) in f64s(&first["reference"]).iter().zip(&want) {
        assert!((r - w.loss).abs() < 1e-6, "reference {r} vs {}", w.loss);
    }
    assert!(
        f64s(&first["gaps"]).iter().all(|g| g.abs() > 1e-4),
        "not zero by construction"
    );
}
