//! The run report: PNG charts of the pruning and training logs ([`charts`]) and `report.md`
//! with the final tables ([`markdown`]), drawn from the typed run summary and step logs. A
//! missing or corrupt log is an error naming the file.

pub mod charts;
mod markdown;
mod seeds;

use std::path::{Path, PathBuf};

use shear_data::UpdateRecord;
use shear_model::MaskType;
use shear_train::prune::PruneLog;
use shear_train::trainer::TrainLog;

use crate::summary::RunSummary;
use charts::{grid_chart, line_chart, stacked_chart, Series};

pub use crate::error::ReportError;
pub use seeds::write_seeds_report;

/// The weight updates of a stage: (step, record), the evaluation before training first.
fn updates<'a>(
    lines: impl Iterator<Item = (Option<&'a UpdateRecord>, Option<&'a UpdateRecord>)>,
) -> Vec<(f64, &'a UpdateRecord)> {
    let mut out = Vec::new();
    for (first, update) in lines {
        for u in [first, update].into_iter().flatten() {
            out.push((u.step as f64, u));
        }
    }
    out
}

/// Per-domain loss (with reference lines) and stacked weights of one stage.
fn domain_charts(
    dir: &Path,
    stage: &str,
    ups: &[(f64, &UpdateRecord)],
    charts: &mut Vec<(String, PathBuf)>,
) -> Result<(), ReportError> {
    let Some((_, first)) = ups.first() else {
        return Ok(());
    };
    let series: Vec<Series> = first
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| Series {
            name: d.clone(),
            points: ups
                .iter()
                .filter_map(|(s, u)| u.losses.get(i).map(|l| (*s, *l)))
                .collect(),
            reference: first.reference.get(i).copied().filter(|r| r.is_finite()),
        })
        .collect();
    let path = dir.join(format!("{stage}_domain_loss.png"));
    line_chart(
        &path,
        &format!("{stage}: eval loss per domain (dashed: reference)"),
        "cross-entropy",
        &series,
    )?;
    charts.push((format!("{stage}: eval loss per domain"), path));
    let mut steps = vec![0.0];
    let mut weights = vec![first.weights_before.clone()];
    for (s, u) in ups {
        steps.push(*s);
        weights.push(u.weights.clone());
    }
    let path = dir.join(format!("{stage}_domain_weights.png"));
    stacked_chart(
        &path,
        &format!("{stage}: domain weights"),
        &first.domains,
        &steps,
        &weights,
    )?;
    charts.push((format!("{stage}: domain weights"), path));
    Ok(())
}

/// The pruning charts: expected shape against the target, multipliers, loss, domains.
fn prune_charts(
    dir: &Path,
    log: &[PruneLog],
    run: &RunSummary,
    charts: &mut Vec<(String, PathBuf)>,
) -> Result<(), ReportError> {
    let step = |l: &PruneLog| l.step as f64 + 1.0;
    let t = &run.target;
    type Get = fn(&PruneLog) -> f64;
    let panels: Vec<(String, String, Vec<Series>)> = [
        ("layers", t.layers, (|l| l.expected_shape.layers) as Get),
        ("hidden", t.hidden, |l: &PruneLog| l.expected_shape.hidden),
        ("heads", t.heads, |l: &PruneLog| l.expected_shape.heads),
        ("intermediate", t.intermediate, |l: &PruneLog| {
            l.expected_shape.intermediate
        }),
    ]
    .into_iter()
    .map(|(n, target, get)| {
        (
            format!("{n} (dashed: target)"),
            "expected".to_string(),
            vec![Series {
                name: n.to_string(),
                points: log.iter().map(|l| (step(l), get(l))).collect(),
                reference: Some(target as f64),
            }],
        )
    })
    .collect();
    let path = dir.join("prune_shape.png");
    grid_chart(&path, "pruning: expected shape", &panels, 2)?;
    charts.push(("pruning: expected shape".into(), path));
    let types: Vec<MaskType> = log.first().map(|l| l.lambda_1.types()).unwrap_or_default();
    let mut series = Vec::new();
    for (which, get) in [
        (
            "λ1",
            (|l: &PruneLog, k| l.lambda_1.get(k).copied())
                as fn(&PruneLog, MaskType) -> Option<f64>,
        ),
        ("λ2", |l: &PruneLog, k| l.lambda_2.get(k).copied()),
    ] {
        for k in &types {
            series.push(Series {
                name: format!("{which} {k}"),
                points: log
                    .iter()
                    .filter_map(|l| get(l, *k).map(|v| (step(l), v)))
                    .collect(),
                reference: None,
            });
        }
    }
    let path = dir.join("prune_lambdas.png");
    line_chart(&path, "pruning: Lagrange multipliers", "value", &series)?;
    charts.push(("pruning: Lagrange multipliers".into(), path));
    let path = dir.join("prune_loss.png");
    line_chart(
        &path,
        "pruning: training loss",
        "value",
        &[
            Series {
                name: "cross-entropy".into(),
                points: log.iter().map(|l| (step(l), l.ce_loss)).collect(),
                reference: None,
            },
            Series {
                name: "Lagrangian".into(),
                points: log.iter().map(|l| (step(l), l.lagrangian)).collect(),
                reference: None,
            },
        ],
    )?;
    charts.push(("pruning: training loss".into(), path));
    let ups = updates(log.iter().map(|l| (None, l.data.domain_update.as_ref())));
    domain_charts(dir, "prune", &ups, charts)
}

/// `run_dir/charts/`, created.
fn charts_dir(run_dir: &Path) -> Result<PathBuf, ReportError> {
    let dir = run_dir.join("charts");
    std::fs::create_dir_all(&dir).map_err(|e| ReportError::Io {
        path: dir.clone(),
        msg: e.to_string(),
    })?;
    Ok(dir)
}

/// Writes `run_dir/charts/*.png` and `run_dir/report.md` from the stage logs and `run` (the
/// contents of run.json). Returns the report's path.
pub fn write_report(run_dir: &Path, run: &RunSummary) -> Result<PathBuf, ReportError> {
    let charts_dir = charts_dir(run_dir)?;
    let mut charts: Vec<(String, PathBuf)> = Vec::new();
    let prune = shear_io::read_jsonl::<PruneLog>(&run_dir.join("prune/prune_log.jsonl"))?;
    if !prune.is_empty() {
        prune_charts(&charts_dir, &prune, run, &mut charts)?;
    }
    if run.recipe.train.enabled {
        let train = shear_io::read_jsonl::<TrainLog>(&run_dir.join("train/train_log.jsonl"))?;
        let path = charts_dir.join("train_loss.png");
        line_chart(
            &path,
            "continued pre-training: training loss",
            "cross-entropy",
            &[Series {
                name: "loss".into(),
                points: train
                    .iter()
                    .map(|l| (l.step as f64 + 1.0, l.loss))
                    .collect(),
                reference: None,
            }],
        )?;
        charts.push(("continued pre-training: training loss".into(), path));
        let ups = updates(
            train
                .iter()
                .map(|l| (l.eval_first_update.as_ref(), l.data.domain_update.as_ref())),
        );
        domain_charts(&charts_dir, "train", &ups, &mut charts)?;
    }
    let md = markdown::markdown(run, &charts, run_dir);
    let path = run_dir.join("report.md");
    shear_io::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// The largest gap to the reference loss over domains (the quantity dynamic batch loading
/// tries to shrink, docs/algorithm.md §6).
pub fn largest_gap(losses: &[f64], reference: &[f64]) -> f64 {
    losses
        .iter()
        .zip(reference)
        .map(|(l, r)| l - r)
        .fold(f64::NEG_INFINITY, f64::max)
}
