//! `shear run` on a miniature recipe: every stage runs and leaves its artifacts; a second run
//! skips the finished stages.

mod common;

use common::*;

#[test]
fn the_pipeline_runs_every_stage_and_skips_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = mini_recipe(tmp.path(), 4);
    let out = tmp.path().join("run");
    let args = [
        "run",
        recipe.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--set",
        "export.gguf=\"f32\"",
    ];
    let o = run_shear(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    assert!(out.join("data/manifest.json").is_file());
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
    assert!(out.join("prune/prune_log.jsonl").is_file());
    assert!(out.join("prune/masks.safetensors").is_file());
    assert!(out.join("train/model/model.safetensors").is_file());
    assert!(out.join("train/model/tokenizer.json").is_file());
    assert!(out
        .join("train/checkpoints/step-00000002/state.json")
        .is_file());
    // Continued training started from the pruning stage's final weights.
    let prune_state: shear_data::LoaderState = serde_json::from_str(
        &std::fs::read_to_string(out.join("prune/loader_state.json")).unwrap(),
    )
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("train/train_log.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let before = f64s(&first["eval_first_update"]["weights_before"]);
    for (a, b) in before.iter().zip(&prune_state.weights) {
        assert!((a - b).abs() < 1e-12);
    }

    let run = read_run_json(&out);
    let stages = stage_names(&run);
    assert_eq!(stages, ["data", "prune", "train", "eval", "export"]);
    // [export] gguf: the final model next to its directory, which reads back (through shear's
    // GGUF reader) to the same tensors; its Llama-2 vocabulary as SentencePiece.
    let gguf = out.join("train/model.gguf");
    assert_eq!(run["gguf"].as_str(), gguf.to_str());
    let back = tmp.path().join("back");
    let o = run_shear(
        &["convert", gguf.to_str().unwrap(), back.to_str().unwrap()],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut want = raw_tensors(&out.join("train/model/model.safetensors"));
    let mut got = raw_tensors(&back.join("model.safetensors"));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        want, got,
        "the GGUF holds the final model's f32 tensors exactly"
    );
    for m in ["source", "pruned", "final"] {
        let metrics = &run["metrics"][m];
        assert_eq!(metrics["domains"].as_array().unwrap().len(), 2, "{m}");
        assert_eq!(metrics["tasks"][0]["items"], 12, "{m}");
    }
    assert!(
        run["metrics"]["pruned"]["params"].as_u64() < run["metrics"]["source"]["params"].as_u64()
    );
    assert_eq!(run["target"]["layers"], 1);

    // The report and its charts.
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for chart in [
        "prune_shape",
        "prune_lambdas",
        "prune_loss",
        "prune_domain_loss",
        "prune_domain_weights",
        "train_loss",
        "train_domain_loss",
        "train_domain_weights",
    ] {
        let path = out.join(format!("charts/{chart}.png"));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "{chart}");
        assert!(
            report.contains(&format!("charts/{chart}.png")),
            "{chart} in report.md"
        );
    }
    for needle in [
        "## Shape",
        "| web |",
        "| books |",
        "capitals (12 items)",
        "| prune |",
    ] {
        assert!(
            report.contains(needle),
            "`{needle}` not in report.md:\n{report}"
        );
    }

    // Again: data, prune and train are complete and skipped.
    let o = run_shear(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = read_run_json(&out);
    let skipped: Vec<bool> = run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["skipped"].as_bool().unwrap())
        .collect();
    assert_eq!(skipped, [true, true, true, false, false]);
}
