//! Bad inputs: one clear line on stderr, exit code 1, no panic, no half-written output.

mod common;

use std::path::Path;

use common::*;

fn generate(dir: &Path) -> std::process::Output {
    run_shear(
        &[
            "generate",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
            "--greedy",
            "--ids-only",
        ],
        &[],
    )
}

fn convert(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["convert", dir.to_str().unwrap(), out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_shear(&args, &[])
}

/// The output directory is absent or holds no file.
fn assert_nothing_written(out: &Path) {
    if out.exists() {
        let names: Vec<_> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "left behind: {names:?}");
    }
}

#[test]
fn missing_config_json() {
    let tmp = copy_fixture("llama-mha");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    assert_one_line_error(&generate(tmp.path()), &["config.json", "not found"]);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x");
    assert_one_line_error(&convert(tmp.path(), &target, &[]), &["config.json"]);
    assert_nothing_written(&target);
}

#[test]
fn truncated_safetensors() {
    let tmp = copy_fixture("llama-mha");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&generate(tmp.path()), &["model.safetensors", "truncated"]);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x");
    assert_one_line_error(
        &convert(tmp.path(), &target, &["--dtype", "bf16"]),
        &["truncated"],
    );
    assert_nothing_written(&target);
}

#[test]
fn tensor_with_the_wrong_shape() {
    let tmp = copy_fixture("llama-mha");
    let path = tmp.path().join("model.safetensors");
    // Rewrite the file with one row dropped from the LM head: [1000, 64] -> [999, 64].
    let tensors = raw_tensors(&path);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, _, shape, data)| {
            let (shape, data) = if name == "lm_head.weight" {
                (vec![999, 64], &data[..999 * 64 * 4])
            } else {
                (shape.clone(), &data[..])
            };
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    assert_one_line_error(
        &generate(tmp.path()),
        &["lm_head.weight", "shape [999, 64]", "expected [1000, 64]"],
    );
}

#[test]
fn missing_shard_named_in_the_index() {
    let tmp = copy_fixture("llama-gqa-tied-bf16-sharded");
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    assert_one_line_error(
        &generate(tmp.path()),
        &[
            "model.safetensors.index.json",
            "model-00002-of-00002.safetensors",
            "does not exist",
        ],
    );
}

#[test]
fn unknown_dtype() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x");
    let o = convert(&fixture("llama-mha"), &target, &["--dtype", "f8"]);
    assert_one_line_error(&o, &["unknown dtype `f8`"]);
    assert_nothing_written(&target);
}

#[test]
fn unsupported_model_type() {
    let tmp = copy_fixture("llama-mha");
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(r#""llama""#, r#""gpt_neox""#);
    std::fs::write(&path, text).unwrap();
    assert_one_line_error(
        &generate(tmp.path()),
        &["config.json", "unsupported model_type `gpt_neox`"],
    );
    let o = run_shear(&["inspect", tmp.path().to_str().unwrap()], &[]);
    assert_one_line_error(&o, &["unsupported model_type `gpt_neox`"]);
}

#[test]
fn not_a_model() {
    let o = run_shear(&["inspect", "/no/such/dir"], &[]);
    assert_one_line_error(&o, &["/no/such/dir", "not a model directory"]);
    let o = run_shear(
        &[
            "generate",
            fixture("llama-mha").to_str().unwrap(),
            "--prompt-ids",
            "5000",
            "--ids-only",
        ],
        &[],
    );
    assert_one_line_error(&o, &["token id 5000", "vocabulary"]);
}
