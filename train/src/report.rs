//! The run report: PNG charts of the pruning and training logs (plotters, bitmap backend, the
//! DejaVu Sans font embedded) and `report.md` with the final tables.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
    #[error("chart {}: {msg}", path.display())]
    Chart { path: PathBuf, msg: String },
}

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (900, 520);

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid TrueType, so this cannot fail.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A named series of (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// A dashed horizontal line in the series' colour (a reference or target).
    pub reference: Option<f64>,
}

fn bounds(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.reference));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |a, x| {
        (a.0.min(x), a.1.max(x))
    });
    let (y0, y1) = ys
        .filter(|y| y.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, y| {
            (a.0.min(y), a.1.max(y))
        });
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    ((x0, x1), (y0 - pad, y1 + pad))
}

fn chart_err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |msg| ReportError::Chart {
        path: path.to_path_buf(),
        msg,
    }
}

/// Draws `series` as lines (with their dashed reference lines) on one chart.
fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), String> {
    let ((x0, x1), (y0, y1)) = bounds(series);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if let Some(r) = s.reference {
            let dashes = (0..40).map(|k| {
                let a = x0 + (x1 - x0) * k as f64 / 40.0;
                let b = x0 + (x1 - x0) * (k as f64 + 0.5) / 40.0;
                PathElement::new(vec![(a, r), (b, r)], color.mix(0.8).stroke_width(1))
            });
            chart.draw_series(dashes).map_err(|e| e.to_string())?;
        }
    }
    if series.len() > 1 {
        legend(&mut chart)?;
    }
    Ok(())
}

/// The series legend, upper right, on a light box (every chart draws it the same way).
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())
}

/// One chart of lines, saved as PNG.
pub fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), ReportError> {
    register_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| chart_err(path)(e.to_string()))?;
    draw_lines(&root, title, y_label, series).map_err(chart_err(path))?;
    root.present().map_err(|e| chart_err(path)(e.to_string()))
}

/// Panels of line charts in a grid (`cols` wide), one PNG.
pub fn grid_chart(
    path: &Path,
    title: &str,
    panels: &[(String, String, Vec<Series>)],
    cols: usize,
) -> Result<(), ReportError> {
    register_font();
    let rows = panels.len().div_ceil(cols);
    let root = BitMapBackend::new(path, (SIZE.0, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| chart_err(path)(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| chart_err(path)(e.to_string()))?;
    for (area, (t, y, s)) in root.split_evenly((rows, cols)).iter().zip(panels) {
        draw_lines(area, t, y, s).map_err(chart_err(path))?;
    }
    root.present().map_err(|e| chart_err(path)(e.to_string()))
}

/// Domain weights over steps, stacked (each band is a domain's share).
pub fn stacked_chart(
    path: &Path,
    title: &str,
    domains: &[String],
    steps: &[f64],
    weights: &[Vec<f64>],
) -> Result<(), ReportError> {
    register_font();
    let err = chart_err(path);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (x0, x1) = (
        steps.first().copied().unwrap_or(0.0),
        steps.last().copied().unwrap_or(1.0),
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), 0.0..1.0)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("share of sequences")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    // Draw the cumulative bands from the top down so each domain's band stays visible.
    for d in (0..domains.len()).rev() {
        let color = Palette99::pick(d).to_rgba();
        let top: Vec<(f64, f64)> = steps
            .iter()
            .zip(weights)
            .map(|(s, w)| (*s, w[..=d].iter().sum::<f64>().min(1.0)))
            .collect();
        chart
            .draw_series(AreaSeries::new(top, 0.0, color.mix(0.85)).border_style(color))
            .map_err(|e| err(e.to_string()))?
            .label(domains[d].clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    legend(&mut chart).map_err(&err)?;
    root.present().map_err(|e| err(e.to_string()))
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// The weight updates of a log: (step, record), the eval-before-training one first.
fn updates(log: &[Value]) -> Vec<(f64, Value)> {
    let mut out = Vec::new();
    for l in log {
        for key in ["eval_first_update", "domain_update"] {
            if let Some(u) = l.get(key) {
                out.push((u["step"].as_f64().unwrap_or(0.0), u.clone()));
            }
        }
    }
    out
}

/// Per-domain loss (with reference lines) and stacked weights of one stage.
fn domain_charts(
    dir: &Path,
    stage: &str,
    log: &[Value],
    charts: &mut Vec<(String, PathBuf)>,
) -> Result<(), ReportError> {
    let ups = updates(log);
    let Some((_, first)) = ups.first() else {
        return Ok(());
    };
    let domains: Vec<String> = first["domains"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let reference = f64s(&first["reference"]);
    let series: Vec<Series> = domains
        .iter()
        .enumerate()
        .map(|(i, d)| Series {
            name: d.clone(),
            points: ups
                .iter()
                .map(|(s, u)| (*s, f64s(&u["losses"])[i]))
                .collect(),
            reference: reference.get(i).copied().filter(|r| r.is_finite()),
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
    let mut weights = vec![f64s(&first["weights_before"])];
    for (s, u) in &ups {
        steps.push(*s);
        weights.push(f64s(&u["weights"]));
    }
    let path = dir.join(format!("{stage}_domain_weights.png"));
    stacked_chart(
        &path,
        &format!("{stage}: domain weights"),
        &domains,
        &steps,
        &weights,
    )?;
    charts.push((format!("{stage}: domain weights"), path));
    Ok(())
}

/// Writes `run_dir/charts/*.png` and `run_dir/report.md` from the stage logs and `run` (the
/// contents of run.json). Returns the report's path.
pub fn write_report(run_dir: &Path, run: &Value) -> Result<PathBuf, ReportError> {
    let charts_dir = run_dir.join("charts");
    std::fs::create_dir_all(&charts_dir).map_err(|e| ReportError::Io {
        path: charts_dir.clone(),
        msg: e.to_string(),
    })?;
    let mut charts: Vec<(String, PathBuf)> = Vec::new();
    let prune = read_jsonl(&run_dir.join("prune/prune_log.jsonl"));
    if !prune.is_empty() {
        let step = |l: &Value| l["step"].as_f64().unwrap_or(0.0) + 1.0;
        let target = &run["target"];
        let names = [
            ("layers", 0),
            ("hidden", 1),
            ("heads", 2),
            ("intermediate", 3),
        ];
        let panels: Vec<(String, String, Vec<Series>)> = names
            .iter()
            .map(|(n, k)| {
                let points = prune
                    .iter()
                    .map(|l| (step(l), f64s(&l["expected_shape"])[*k]))
                    .collect();
                (
                    format!("{n} (dashed: target)"),
                    "expected".to_string(),
                    vec![Series {
                        name: n.to_string(),
                        points,
                        reference: target[n].as_f64(),
                    }],
                )
            })
            .collect();
        let path = charts_dir.join("prune_shape.png");
        grid_chart(&path, "pruning: expected shape", &panels, 2)?;
        charts.push(("pruning: expected shape".into(), path));
        let types: Vec<String> = prune[0]["mask_types"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let all = ["layer", "hidden", "head", "intermediate", "mlp"];
        let mut series = Vec::new();
        for (which, key) in [("λ1", "lambda_1"), ("λ2", "lambda_2")] {
            for t in &types {
                let k = all.iter().position(|a| a == t).unwrap_or(0);
                series.push(Series {
                    name: format!("{which} {t}"),
                    points: prune.iter().map(|l| (step(l), f64s(&l[key])[k])).collect(),
                    reference: None,
                });
            }
        }
        let path = charts_dir.join("prune_lambdas.png");
        line_chart(&path, "pruning: Lagrange multipliers", "value", &series)?;
        charts.push(("pruning: Lagrange multipliers".into(), path));
        let path = charts_dir.join("prune_loss.png");
        line_chart(
            &path,
            "pruning: training loss",
            "value",
            &[
                Series {
                    name: "cross-entropy".into(),
                    points: prune
                        .iter()
                        .map(|l| (step(l), l["ce_loss"].as_f64().unwrap_or(f64::NAN)))
                        .collect(),
                    reference: None,
                },
                Series {
                    name: "Lagrangian".into(),
                    points: prune
                        .iter()
                        .map(|l| (step(l), l["lagrangian"].as_f64().unwrap_or(f64::NAN)))
                        .collect(),
                    reference: None,
                },
            ],
        )?;
        charts.push(("pruning: training loss".into(), path));
        domain_charts(&charts_dir, "prune", &prune, &mut charts)?;
    }
    let train = read_jsonl(&run_dir.join("train/train_log.jsonl"));
    if !train.is_empty() {
        let path = charts_dir.join("train_loss.png");
        line_chart(
            &path,
            "continued pre-training: training loss",
            "cross-entropy",
            &[Series {
                name: "loss".into(),
                points: train
                    .iter()
                    .map(|l| {
                        (
                            l["step"].as_f64().unwrap_or(0.0) + 1.0,
                            l["loss"].as_f64().unwrap_or(f64::NAN),
                        )
                    })
                    .collect(),
                reference: None,
            }],
        )?;
        charts.push(("continued pre-training: training loss".into(), path));
        domain_charts(&charts_dir, "train", &train, &mut charts)?;
    }
    let md = markdown(run, &charts, run_dir);
    let path = run_dir.join("report.md");
    std::fs::write(&path, md).map_err(|e| ReportError::Io {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    Ok(path)
}

fn markdown(run: &Value, charts: &[(String, PathBuf)], run_dir: &Path) -> String {
    let mut s = String::new();
    let m = &run["metrics"];
    let models: Vec<&str> = ["source", "pruned", "final"]
        .into_iter()
        .filter(|k| m.get(*k).is_some())
        .collect();
    let _ = writeln!(s, "# shear run report\n");
    let _ = writeln!(
        s,
        "Recipe `{}`, source `{}`, shear {}; wall time {:.1} s.\n",
        run["recipe_file"].as_str().unwrap_or("?"),
        run["source"].as_str().unwrap_or("?"),
        run["shear_version"].as_str().unwrap_or("?"),
        run["wall_seconds"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(s, "## Shape\n\n| | layers | hidden | heads | intermediate | parameters |\n|---|---|---|---|---|---|");
    for (name, shape) in [("source", &run["source_shape"]), ("target", &run["target"])] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            shape["layers"],
            shape["hidden"],
            shape["heads"],
            shape["intermediate"],
            shape["params"]
        );
    }
    // One row per domain / task, one column per model: `cell(model, index)`.
    let table = |s: &mut String,
                 title: &str,
                 first: &str,
                 labels: &[String],
                 cell: &dyn Fn(&str, usize) -> String| {
        let _ = writeln!(s, "\n## {title}\n");
        let _ = writeln!(s, "| {first} | {} |", models.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(models.len()));
        for (i, label) in labels.iter().enumerate() {
            let cells: Vec<String> = models.iter().map(|k| cell(k, i)).collect();
            let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
        }
    };
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let domains: Vec<String> = m[models[0]]["domains"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["domain"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    table(
        &mut s,
        "Per-domain eval loss (perplexity)",
        "domain",
        &domains,
        &|k, i| {
            let x = &m[k]["domains"][i];
            format!("{:.4} ({:.2})", num(&x["loss"]), num(&x["perplexity"]))
        },
    );
    let tasks: Vec<String> = m[models[0]]["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    format!(
                        "{} ({} items)",
                        t["task"].as_str().unwrap_or("?"),
                        t["items"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if !tasks.is_empty() {
        table(&mut s, "Tasks (acc / acc_norm)", "task", &tasks, &|k, i| {
            let x = &m[k]["tasks"][i];
            format!("{:.3} / {:.3}", num(&x["acc"]), num(&x["acc_norm"]))
        });
    }
    let _ = writeln!(
        s,
        "\n## Stages\n\n| stage | tokens | seconds | tokens/s | |\n|---|---|---|---|---|"
    );
    for st in run["stages"].as_array().cloned().unwrap_or_default() {
        let name = st["name"].as_str().unwrap_or("?");
        let secs = st["seconds"].as_f64().unwrap_or(0.0);
        let tokens = run["tokens"][name].as_u64();
        let rate = match (tokens, st["skipped"].as_bool()) {
            (Some(t), Some(false)) if secs > 0.0 => format!("{:.0}", t as f64 / secs),
            _ => "".into(),
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {secs:.1} | {rate} | {} |",
            tokens.map_or(String::new(), |t| t.to_string()),
            if st["skipped"].as_bool() == Some(true) {
                "skipped (already complete)"
            } else {
                ""
            }
        );
    }
    if run["compare"].is_object() {
        compare_markdown(&mut s, run, &domains);
    }
    if !charts.is_empty() {
        let _ = writeln!(s, "\n## Charts\n");
        for (title, path) in charts {
            let rel = path.strip_prefix(run_dir).unwrap_or(path);
            let _ = writeln!(s, "### {title}\n\n![{title}]({})\n", rel.display());
        }
    }
    s
}

/// Per-domain eval losses of one model in run.json.
fn losses(model: &Value) -> Vec<f64> {
    model["domains"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["loss"].as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .unwrap_or_default()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The largest gap to the reference loss over domains (the quantity dynamic batch loading
/// tries to shrink, SPEC §6).
pub fn largest_gap(losses: &[f64], reference: &[f64]) -> f64 {
    losses
        .iter()
        .zip(reference)
        .map(|(l, r)| l - r)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// The mini reproduction (`shear run --compare`): pruned + continued vs from scratch, dynamic vs
/// static loading, and the shape reached.
fn compare_markdown(s: &mut String, run: &Value, domains: &[String]) {
    let c = &run["compare"];
    let m = &run["metrics"];
    let ours = losses(&m["final"]);
    let ours = if ours.is_empty() {
        losses(&m["pruned"])
    } else {
        ours
    };
    let scratch = losses(&c["scratch"]);
    let fixed = losses(&c["static"]);
    let reference: Vec<f64> = c["reference"]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default();
    let _ = writeln!(s, "\n## Mini reproduction\n");
    let _ = writeln!(
        s,
        "### Pruned + continued vs from scratch ({} tokens each)\n\n| domain | pruned + continued | from scratch |\n|---|---|---|",
        c["tokens"]
    );
    for (i, d) in domains.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {d} | {:.4} | {:.4} |",
            ours.get(i).copied().unwrap_or(f64::NAN),
            scratch.get(i).copied().unwrap_or(f64::NAN)
        );
    }
    let (a, b) = (mean(&ours), mean(&scratch));
    let _ = writeln!(s, "| **mean** | **{a:.4}** | **{b:.4}** |\n");
    let _ = writeln!(
        s,
        "Pruned + continued is {} than from scratch by {:.4} nats of mean eval loss.",
        if a <= b { "lower" } else { "higher" },
        (a - b).abs()
    );
    let _ = writeln!(
        s,
        "\n### Dynamic vs static loading (same budget)\n\nLoss (gap to the reference loss).\n\n| domain | reference | dynamic | static |\n|---|---|---|---|"
    );
    let cell = |l: &[f64], i: usize| {
        let x = l.get(i).copied().unwrap_or(f64::NAN);
        let r = reference.get(i).copied().unwrap_or(f64::NAN);
        format!("{x:.4} ({:+.4})", x - r)
    };
    for (i, d) in domains.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {d} | {:.4} | {} | {} |",
            reference.get(i).copied().unwrap_or(f64::NAN),
            cell(&ours, i),
            cell(&fixed, i)
        );
    }
    let (gd, gs) = (
        largest_gap(&ours, &reference),
        largest_gap(&fixed, &reference),
    );
    let _ = writeln!(
        s,
        "| **largest gap** | | **{gd:+.4}** | **{gs:+.4}** |\n| **mean loss** | {:.4} | {:.4} | {:.4} |\n",
        mean(&reference),
        mean(&ours),
        mean(&fixed)
    );
    let _ = writeln!(
        s,
        "Dynamic loading's largest gap is {} than static loading's by {:.4}.",
        if gd <= gs { "smaller" } else { "larger" },
        (gd - gs).abs()
    );
    let sh = &c["shape"];
    let t = &run["target"];
    let _ = writeln!(
        s,
        "\n### Target shape\n\n| | layers | hidden | heads | intermediate | parameters |\n|---|---|---|---|---|---|"
    );
    for (name, x) in [("target", t), ("materialized", sh)] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            x["layers"], x["hidden"], x["heads"], x["intermediate"], x["params"]
        );
    }
    let fe: Vec<String> = sh["final_expected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("{:.2}", x.as_f64().unwrap_or(f64::NAN)))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "\nReached exactly: **{}**. Expected shape (layers, hidden, heads, intermediate) at the last pruning step: ({}); its trajectory is the chart \"pruning: expected shape\" below.",
        if sh["reached"].as_bool() == Some(true) { "yes" } else { "no" },
        fe.join(", ")
    );
}
