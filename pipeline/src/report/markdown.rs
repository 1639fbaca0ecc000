//! `report.md`: shape, per-domain loss and perplexity, task accuracy, stage throughput, the mini
//! reproduction's tables (with `compare`), and the charts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::summary::ModelMetrics;
use crate::summary::{CompareSummary, RunSummary, Shape};

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn shape_row(s: &mut String, name: &str, x: &Shape) {
    let _ = writeln!(
        s,
        "| {name} | {} | {} | {} | {} | {} | {} |",
        x.layers, x.hidden, x.heads, x.kv_heads, x.intermediate, x.params
    );
}

const SHAPE_HEADER: &str = "| | layers | hidden | heads | kv heads | intermediate | parameters |\n|---|---|---|---|---|---|---|";

/// One row per label, one column per model: `cell(model, index)`.
fn table(
    s: &mut String,
    title: &str,
    first: &str,
    models: &[(&str, &ModelMetrics)],
    labels: &[String],
    cell: &dyn Fn(&ModelMetrics, usize) -> String,
) {
    let names: Vec<&str> = models.iter().map(|(n, _)| *n).collect();
    let _ = writeln!(s, "\n## {title}\n");
    let _ = writeln!(s, "| {first} | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(models.len()));
    for (i, label) in labels.iter().enumerate() {
        let cells: Vec<String> = models.iter().map(|(_, m)| cell(m, i)).collect();
        let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
    }
}

pub(super) fn markdown(run: &RunSummary, charts: &[(String, PathBuf)], run_dir: &Path) -> String {
    let mut s = String::new();
    let m = &run.metrics;
    let mut models: Vec<(&str, &ModelMetrics)> = vec![("source", &m.source), ("pruned", &m.pruned)];
    if let Some(f) = &m.final_ {
        models.push(("final", f));
    }
    let _ = writeln!(s, "# shear run report\n");
    let _ = writeln!(
        s,
        "Recipe `{}`, source `{}`, shear {}; wall time {:.1} s.\n",
        run.recipe_file.display(),
        run.source.display(),
        run.shear_version,
        run.wall_seconds
    );
    let _ = writeln!(s, "## Shape\n\n{SHAPE_HEADER}");
    shape_row(&mut s, "source", &run.source_shape);
    shape_row(&mut s, "target", &run.target);
    let domains: Vec<String> = m.source.domains.iter().map(|d| d.domain.clone()).collect();
    table(
        &mut s,
        "Per-domain eval loss (perplexity)",
        "domain",
        &models,
        &domains,
        &|x, i| match x.domains.get(i) {
            Some(d) => format!("{:.4} ({:.2})", d.loss, d.perplexity),
            None => "-".into(),
        },
    );
    let tasks: Vec<String> = m
        .source
        .tasks
        .iter()
        .map(|t| format!("{} ({} items)", t.task, t.items))
        .collect();
    if !tasks.is_empty() {
        table(
            &mut s,
            "Tasks (acc / acc_norm)",
            "task",
            &models,
            &tasks,
            &|x, i| match x.tasks.get(i) {
                Some(t) => format!("{:.3} / {:.3}", t.acc, t.acc_norm),
                None => "-".into(),
            },
        );
    }
    let _ = writeln!(
        s,
        "\n## Stages\n\n| stage | tokens | seconds | tokens/s | |\n|---|---|---|---|---|"
    );
    for st in &run.stages {
        let rate = match st.tokens {
            Some(t) if !st.skipped && st.seconds > 0.0 && st.name != "data" => {
                format!("{:.0}", t as f64 / st.seconds)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {rate} | {} |",
            st.name,
            st.tokens.map_or(String::new(), |t| t.to_string()),
            st.seconds,
            if st.skipped {
                "skipped (already complete)"
            } else {
                ""
            }
        );
    }
    if let Some(c) = &run.compare {
        compare_markdown(&mut s, run, c, &domains);
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

/// How a report names a reference kind ([`shear_data::ReferenceLoss::kind`]).
pub(super) fn reference_name(kind: &str) -> &'static str {
    match kind {
        "scaling" => "the scaling law at the target's size",
        "values" => "the recipe's numbers",
        _ => "the source's own losses",
    }
}

/// The mini reproduction: pruned + continued vs from scratch, dynamic vs static loading, and
/// the shape reached.
fn compare_markdown(s: &mut String, run: &RunSummary, c: &CompareSummary, domains: &[String]) {
    let ours = run.metrics.last().losses();
    let scratch = c.scratch.losses();
    let fixed = c.static_.losses();
    let reference = &c.reference;
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    let _ = writeln!(s, "\n## Mini reproduction\n");
    let _ = writeln!(
        s,
        "### Pruned + continued vs from scratch ({} tokens each)\n\n| domain | pruned + continued | from scratch |\n|---|---|---|",
        c.tokens
    );
    for (i, d) in domains.iter().enumerate() {
        let _ = writeln!(s, "| {d} | {:.4} | {:.4} |", at(&ours, i), at(&scratch, i));
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
        "\n### Dynamic vs static loading (same budget)\n\nLoss (gap to the reference loss: {}).\n\n| domain | reference | dynamic | static |\n|---|---|---|---|",
        reference_name(&c.reference_kind)
    );
    let cell =
        |l: &[f64], i: usize| format!("{:.4} ({:+.4})", at(l, i), at(l, i) - at(reference, i));
    for (i, d) in domains.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {d} | {:.4} | {} | {} |",
            at(reference, i),
            cell(&ours, i),
            cell(&fixed, i)
        );
    }
    let (gd, gs) = (
        super::largest_gap(&ours, reference),
        super::largest_gap(&fixed, reference),
    );
    let _ = writeln!(s, "| **largest gap** | | **{gd:+.4}** | **{gs:+.4}** |");
    let src = &c.source_reference;
    if c.reference_kind != "source" && src.len() == reference.len() {
        let _ = writeln!(
            s,
            "| largest gap to the source's losses | | {:+.4} | {:+.4} |",
            super::largest_gap(&ours, src),
            super::largest_gap(&fixed, src)
        );
    }
    let _ = writeln!(
        s,
        "| **mean loss** | {:.4} | {:.4} | {:.4} |\n",
        mean(reference),
        mean(&ours),
        mean(&fixed)
    );
    let _ = writeln!(
        s,
        "Dynamic loading's largest gap is {} than static loading's by {:.4}.",
        if gd <= gs { "smaller" } else { "larger" },
        (gd - gs).abs()
    );
    let _ = writeln!(s, "\n### Target shape\n\n{SHAPE_HEADER}");
    shape_row(s, "target", &run.target);
    shape_row(s, "materialized", &c.shape.shape);
    let fe = match &c.shape.final_expected {
        Some(e) => format!(
            "({:.2}, {:.2}, {:.2}, {:.2})",
            e.layers, e.hidden, e.heads, e.intermediate
        ),
        None => "(no log)".into(),
    };
    let _ = writeln!(
        s,
        "\nReached exactly: **{}**. Expected shape (layers, hidden, heads, intermediate) at the last pruning step: {fe}; its trajectory is the chart \"pruning: expected shape\" below.",
        if c.shape.reached { "yes" } else { "no" },
    );
}
