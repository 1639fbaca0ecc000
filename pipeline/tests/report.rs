//! The report reads typed logs: a truncated or corrupt step log is an error naming the file and
//! line (not a panic, not an empty chart), and a well-formed one gives report.md and the charts.

use std::path::Path;

use shear_pipeline::recipe::Recipe;
use shear_pipeline::report::write_report;
use shear_pipeline::summary::ModelMetrics;
use shear_pipeline::summary::{Metrics, RunSummary, Shape, StageTiming};

fn summary(train: bool) -> RunSummary {
    let recipe = Recipe::from_toml_str(
        &format!(
            "[model]\nsource = \"m\"\ntarget = \"layers=3,hidden=48,heads=2,intermediate=96\"\n\
             [data]\n[[data.domain]]\nname = \"a\"\npaths = [\"x\"]\n[train]\nenabled = {train}\n"
        ),
        Path::new("."),
    )
    .unwrap();
    let shape = Shape {
        layers: 4,
        hidden: 64,
        heads: 4,
        kv_heads: 4,
        intermediate: 176,
        params: 1000,
    };
    let metrics = ModelMetrics {
        params: 1000,
        domains: vec![],
        tasks: vec![],
        texts: vec![],
    };
    RunSummary {
        shear_version: "test".into(),
        recipe_file: "r.toml".into(),
        recipe,
        source: "m".into(),
        source_shape: shape,
        target: Shape { layers: 3, ..shape },
        stages: vec![StageTiming {
            name: "prune".into(),
            seconds: 1.0,
            skipped: false,
            tokens: Some(100),
        }],
        wall_seconds: 1.0,
        metrics: Metrics {
            source: metrics.clone(),
            pruned: metrics,
            final_: None,
        },
        compare: None,
        final_model: "m".into(),
        gguf: None,
    }
}

/// One line of a pruning log as `shear prune` writes it.
const LINE: &str = r#"{"step":0,"lr_mult":0.0,"ce_loss":6.2,"lagrangian":0.0,"grad_norm":1.5,"tokens":64,"lambda_1":{"layer":0.0,"hidden":0.0,"head":0.0,"intermediate":0.0},"lambda_2":{"layer":0.0,"hidden":0.0,"head":0.0,"intermediate":0.0},"expected_shape":{"layers":4.0,"hidden":64.0,"heads":4.0,"kv_heads":4.0,"intermediate":176.0},"expected_sparsity":{"layer":0.002,"hidden":0.002,"head":0.002,"intermediate":0.002},"target_sparsity":{"layer":0.0,"hidden":0.0,"head":0.0,"intermediate":0.0},"expected_params":199000.0}"#;

#[test]
fn a_truncated_log_is_an_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("prune")).unwrap();
    let log = dir.path().join("prune/prune_log.jsonl");
    // The second line was cut off mid-write.
    std::fs::write(&log, format!("{LINE}\n{}", &LINE[..60])).unwrap();
    let e = write_report(dir.path(), &summary(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("prune_log.jsonl, line 2"), "{e}");
    assert!(
        !dir.path().join("report.md").exists(),
        "no report from a corrupt log"
    );

    // A missing log is an error naming it too.
    std::fs::remove_file(&log).unwrap();
    let e = write_report(dir.path(), &summary(false))
        .unwrap_err()
        .to_string();
    assert!(e.contains("prune_log.jsonl"), "{e}");

    // A complete log gives the report and its charts; a missing training log (the recipe trains)
    // is named.
    std::fs::write(
        &log,
        format!("{LINE}\n{}\n", LINE.replace("\"step\":0", "\"step\":1")),
    )
    .unwrap();
    let report = write_report(dir.path(), &summary(false)).unwrap();
    let md = std::fs::read_to_string(report).unwrap();
    assert!(
        md.contains("| target | 3 | 64 | 4 | 4 | 176 | 1000 |"),
        "{md}"
    );
    assert!(dir.path().join("charts/prune_shape.png").is_file());
    let e = write_report(dir.path(), &summary(true))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train_log.jsonl"), "{e}");
}
