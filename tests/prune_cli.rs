//! `shear prune` and `shear materialize` end to end, and their refusals.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn token_file(dir: &Path, max: u32) -> PathBuf {
    let path = dir.join("tokens.ids");
    let ids: Vec<String> = (0..4000u32)
        .map(|i| ((i * 7919 + 13) % max).to_string())
        .collect();
    std::fs::write(&path, ids.join(" ")).unwrap();
    path
}

fn prune(args: &[&str]) -> std::process::Output {
    let mut all = vec!["prune"];
    all.extend_from_slice(args);
    run_shear(&all, &[])
}

fn prune_end_to_end(extra: &[&str], mask_types: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path(), 500);
    let out = tmp.path().join("run");
    let src = fixture("pruning/source");
    let mut args = vec![
        src.to_str().unwrap(),
        "--target",
        "layers=3,hidden=48,heads=2,intermediate=96",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "12",
        "--seq",
        "16",
        "--batch",
        "2",
        "--grad-accum",
        "1",
    ];
    args.extend_from_slice(extra);
    let o = prune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::read_to_string(out.join("prune_log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    for key in [
        "ce_loss",
        "lagrangian",
        "lambda_1",
        "lambda_2",
        "expected_shape",
        "expected_sparsity",
        "expected_params",
    ] {
        assert!(lines[11].get(key).is_some(), "log has {key}");
    }
    let mut types: Vec<&str> = lines[11]["expected_sparsity"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = mask_types.to_vec();
    types.sort();
    want.sort();
    assert_eq!(types, want);
    let cfg = shear_model::LlamaConfig::from_file(out.join("model")).unwrap();
    assert_eq!(
        (
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size
        ),
        (3, 48, 2, 96)
    );
    let again = tmp.path().join("again");
    let o = run_shear(
        &[
            "materialize",
            "--source",
            out.join("checkpoint").to_str().unwrap(),
            "--masks",
            out.join("masks.safetensors").to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(again.join("model.safetensors")).unwrap(),
        std::fs::read(out.join("model/model.safetensors")).unwrap()
    );
}

#[test]
fn prune_writes_model_masks_log_and_materialize_reproduces_it() {
    prune_end_to_end(&[], &["layer", "hidden", "head", "intermediate"]);
}

#[test]
fn prune_with_head_layer_and_mlp_masks_removes_whole_layers() {
    prune_end_to_end(
        &["--layer-masks", "head-layer-mlp"],
        &["layer", "hidden", "head", "intermediate", "mlp"],
    );
}

/// Defect fixed: the temperature could not be chosen. With `--temperature 0.83` (the paper's)
/// the mask file records it, and `materialize` from that file rebuilds the same model.
#[test]
fn prune_with_the_papers_temperature_records_it() {
    prune_end_to_end(
        &["--temperature", "0.83"],
        &["layer", "hidden", "head", "intermediate"],
    );
}

fn small_run(tmp: &Path, extra: &[&str]) -> (std::process::Output, PathBuf) {
    let data = token_file(tmp, 500);
    let out = tmp.join("run");
    let src = fixture("pruning/source");
    let mut args = vec![
        src.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--seq",
        "16",
    ];
    args.extend_from_slice(extra);
    (prune(&args), out)
}

/// Defect fixed: the CLI's defaults gave 4 sequences per step, not the paper's 32; a run with
/// the defaults now trains on 32 sequences per step (4 per micro-batch, 8 micro-batches).
#[test]
fn prune_defaults_to_the_papers_batch_of_32_sequences() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = small_run(
        tmp.path(),
        &[
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--steps",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::read_to_string(out.join("prune_log.jsonl")).unwrap();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["tokens"], 32 * 16, "32 sequences of 16 tokens per step");
    }
}

/// Defect fixed: every dimension was always pruned. `--prune heads,layers` prunes only those: the
/// log has no hidden or intermediate mask, and the model keeps the source's hidden and
/// intermediate sizes.
#[test]
fn prune_a_subset_of_the_dimensions() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = small_run(
        tmp.path(),
        &[
            "--target",
            "layers=3,hidden=64,heads=2,intermediate=176",
            "--prune",
            "heads,layers",
            "--steps",
            "3",
            "--grad-accum",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::read_to_string(out.join("prune_log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let mut types: Vec<&String> = last["expected_sparsity"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    types.sort();
    assert_eq!(types, ["head", "layer"]);
    let cfg = shear_model::LlamaConfig::from_file(out.join("model")).unwrap();
    assert_eq!(
        (
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size
        ),
        (3, 64, 2, 176)
    );
    // Shrinking a dimension that is not pruned is refused before any work.
    let tmp = tempfile::tempdir().unwrap();
    let (o, out) = small_run(
        tmp.path(),
        &[
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=176",
            "--prune",
            "heads,layers",
        ],
    );
    assert_one_line_error(&o, &["target hidden 48", "`hidden` is not pruned"]);
    assert!(!out.exists());
}

/// Defect fixed: a mask file with non-finite values gave a NaN model; it is one clear error.
#[test]
fn materialize_refuses_non_finite_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture("pruning/source");
    let masks = tmp.path().join("masks.safetensors");
    let mut la = [4.6f32; 4];
    la[2] = f32::NAN;
    let bytes: Vec<u8> = la.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        "target".to_string(),
        "layers=3,hidden=64,heads=4,intermediate=176".to_string(),
    );
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &bytes).unwrap();
    std::fs::write(
        &masks,
        safetensors::serialize([("log_alpha.layer", view)], Some(meta)).unwrap(),
    )
    .unwrap();
    let out = tmp.path().join("small");
    let o = run_shear(
        &[
            "materialize",
            "--source",
            src.to_str().unwrap(),
            "--masks",
            masks.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_error(
        &o,
        &["log_alpha of the `layer` mask, row 0, entry 2", "NaN"],
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn materialize_accepts_deterministic_masks() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_shear(
        &[
            "materialize",
            "--source",
            fixture("pruning/source").to_str().unwrap(),
            "--masks",
            fixture("pruning/masks_and_logits.safetensors")
                .to_str()
                .unwrap(),
            "--out",
            tmp.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = raw_tensors(&tmp.path().join("model.safetensors"));
    let want = raw_tensors(&fixture("pruning/pruned/model.safetensors"));
    assert_eq!(got.len(), want.len());
}

fn refused(target: &[&str], needles: &[&str]) {
    refused_with(target, 1, needles)
}

/// As [`refused`], with exit status `code` (2: the argument parser's refusal).
fn refused_with(target: &[&str], code: i32, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path(), 500);
    let out = tmp.path().join("run");
    let src = fixture("pruning/source");
    let mut args = vec![src.to_str().unwrap()];
    args.extend_from_slice(target);
    args.extend_from_slice(&[
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "5",
    ]);
    assert_refused(&prune(&args), code, needles);
    assert!(!out.exists(), "nothing is written for a refused run");
}

#[test]
fn refuses_a_target_bigger_than_the_source() {
    refused(
        &["--target", "layers=5,hidden=48,heads=2,intermediate=96"],
        &["target layers 5 is bigger than the source's 4"],
    );
}

/// A hidden size that is not heads × head_dim is a valid Llama (as long as the heads divide it,
/// transformers' rule): the source's head_dim is kept and written to config.json.
#[test]
fn hidden_need_not_be_heads_times_head_dim() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path(), 500);
    let out = tmp.path().join("run");
    let src = fixture("pruning/source");
    let o = prune(&[
        src.to_str().unwrap(),
        "--target",
        "layers=3,hidden=54,heads=3,intermediate=96",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "2",
        "--seq",
        "16",
        "--batch",
        "1",
        "--grad-accum",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["hidden_size"], 54);
    assert_eq!(cfg["num_attention_heads"], 3);
    assert_eq!(
        cfg["head_dim"], 16,
        "the source's head_dim, written explicitly"
    );
}

#[test]
fn refuses_zero_layers() {
    refused(
        &["--target", "layers=0,hidden=48,heads=2,intermediate=96"],
        &["target layers is 0"],
    );
}

#[test]
fn refuses_a_malformed_target() {
    refused_with(
        &["--target", "layers=3,hidden=48,heads=2"],
        2,
        &["--target", "missing `intermediate=`"],
    );
}

#[test]
fn refuses_a_preset_for_a_source_of_another_shape() {
    refused(
        &["--preset", "sheared-1.3b"],
        &[
            "preset `sheared-1.3b`",
            "is defined for a source of shape layers=32,hidden=4096",
        ],
    );
}

#[test]
fn refuses_an_unknown_preset() {
    refused_with(
        &["--preset", "tiny"],
        2,
        &[
            "--target",
            "`tiny` is neither a shape",
            "nor a preset (sheared-1.3b",
        ],
    );
}

#[test]
fn refuses_missing_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = prune(&[
        fixture("pruning/source").to_str().unwrap(),
        "--target",
        "layers=3,hidden=48,heads=2,intermediate=96",
        "--data",
        "/no/such/tokens.ids",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["/no/such/tokens.ids", "not found"]);
    assert!(!out.exists());
}

#[test]
fn refuses_tokens_outside_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path(), 900);
    let out = tmp.path().join("run");
    let o = prune(&[
        fixture("pruning/source").to_str().unwrap(),
        "--target",
        "layers=3,hidden=48,heads=2,intermediate=96",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_error(&o, &["outside the model's vocabulary (size 500)"]);
    assert!(!out.exists());
}

#[test]
fn materialize_refuses_masks_of_another_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_shear(
        &[
            "materialize",
            "--source",
            fixture("llama-mha").to_str().unwrap(),
            "--masks",
            fixture("pruning/masks_and_logits.safetensors")
                .to_str()
                .unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
        &[],
    );
    assert_one_line_error(
        &o,
        &[
            "masks_and_logits.safetensors",
            "`z_head`",
            "shape [4, 4]",
            "expected [2, 4]",
        ],
    );
}

/// transformers (5.x) refuses a Llama config whose hidden size the heads do not divide, even with
/// `head_dim` given: such a target is refused before any work.
#[test]
fn refuses_a_hidden_size_the_heads_do_not_divide() {
    refused(
        &["--target", "layers=3,hidden=50,heads=3,intermediate=96"],
        &[
            "target hidden 50 is not a multiple of heads 3",
            "take e.g. hidden 48 or 51",
        ],
    );
}

#[test]
fn refuses_a_grouped_query_target_for_a_multi_head_source() {
    refused(
        &[
            "--target",
            "layers=3,hidden=48,heads=2,kv_heads=1,intermediate=96",
        ],
        &[
            "2 query heads per key/value head",
            "cannot add query heads to a group",
        ],
    );
}

/// A grouped-query, tied source (8 heads in 2 groups) pruned to a grouped-query target through
/// the binary: exactly the target shape, still tied, with the target's parameter count; the
/// materialized model loads and gives finite logits.
#[test]
fn prunes_a_grouped_query_tied_source_to_a_grouped_query_target() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path(), 500);
    let src = fixture("llama-gqa-tied-bf16-sharded");
    let out = tmp.path().join("run");
    let target = "layers=2,hidden=40,heads=4,kv_heads=2,intermediate=64";
    let o = prune(&[
        src.to_str().unwrap(),
        "--target",
        target,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "6",
        "--seq",
        "16",
        "--batch",
        "2",
        "--grad-accum",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let source = shear_model::LlamaConfig::from_file(&src).unwrap();
    let got = shear_model::LlamaConfig::from_file(out.join("model")).unwrap();
    let t: shear_model::TargetShape = target.parse().unwrap();
    assert_eq!(shear_model::TargetShape::of(&got), t);
    assert!(got.tie_word_embeddings, "a tied source gives a tied result");
    assert_eq!(
        got.param_counts().total(),
        t.config(&source).param_counts().total()
    );
    let names: Vec<String> = raw_tensors(&out.join("model/model.safetensors"))
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert!(
        !names.iter().any(|n| n == "lm_head.weight"),
        "no separate head"
    );
    let log = std::fs::read_to_string(out.join("prune_log.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(
        last["expected_sparsity"].get("kv_head").is_some(),
        "a group mask"
    );
    let model = shear_model::load_llama::<B>(&out.join("model"), &device()).unwrap();
    let ids = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new((0..8i64).collect::<Vec<_>>(), [1, 8]),
        &device(),
    );
    let logits: Vec<f32> = model.forward(ids).into_data().to_vec().unwrap();
    assert!(logits.iter().all(|x| x.is_finite()));
}

/// `--workers` splits every step's rows over copies of the model (docs/algorithm.md §4.2): the
/// same run, up to the order of floating-point sums; 0 workers is refused.
#[test]
fn workers_change_the_arithmetic_order_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path(), 500);
    let src = fixture("pruning/source");
    let run = |workers: &str| {
        let out = tmp.path().join(format!("run-{workers}"));
        let o = prune(&[
            src.to_str().unwrap(),
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "6",
            "--seq",
            "16",
            "--batch",
            "4",
            "--grad-accum",
            "2",
            "--workers",
            workers,
        ]);
        (o, out)
    };
    let log = |out: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join("prune_log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (o1, one) = run("1");
    assert!(
        o1.status.success(),
        "{}",
        String::from_utf8_lossy(&o1.stderr)
    );
    let (o3, three) = run("3");
    assert!(
        o3.status.success(),
        "{}",
        String::from_utf8_lossy(&o3.stderr)
    );
    let (a, b) = (log(&one), log(&three));
    assert_eq!(a.len(), 6);
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        for key in ["ce_loss", "lagrangian", "grad_norm", "expected_params"] {
            let (x, y) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1.0),
                "step {step}: {key} {x} with 1 worker, {y} with 3"
            );
        }
    }
    let o = run("0").0;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--workers"));
}
