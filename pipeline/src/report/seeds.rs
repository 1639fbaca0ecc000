//! The report of a run over seeds (`OUT/report.md`, `OUT/charts/`): the criterion, then each
//! arm's per-domain loss, mean loss and largest gaps as mean [min, max], the per-seed figures,
//! the verdicts, and two charts — final loss per arm with error bars, and the dynamic arm's
//! domain weights over steps with their band across seeds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shear_data::UpdateRecord;
use shear_train::prune::PruneLog;
use shear_train::trainer::TrainLog;

use super::charts::{band_chart, error_bar_chart, Band, Bars};
use super::markdown::reference_name;
use super::{updates, ReportError};
use crate::seeds::{SeedsSummary, Spread};

fn cell(s: &Spread) -> String {
    format!("{:.4} [{:.4}, {:.4}]", s.mean, s.min, s.max)
}

fn gap_cell(s: &Spread) -> String {
    format!("{:+.4} [{:+.4}, {:+.4}]", s.mean, s.min, s.max)
}

/// One seed's domain weights over a stage: `(step, weights)` per update.
type Weights = Vec<(f64, Vec<f64>)>;

/// The weights of every update of one stage, per seed.
fn stage_weights(
    run_dir: &Path,
    sum: &SeedsSummary,
    stage: &str,
) -> Result<Vec<Weights>, ReportError> {
    let mut out = Vec::new();
    for r in &sum.runs {
        let dir = run_dir.join(&r.dir);
        let owned: Vec<(Option<UpdateRecord>, Option<UpdateRecord>)> = match stage {
            "prune" => shear_io::read_jsonl::<PruneLog>(&dir.join("prune/prune_log.jsonl"))?
                .into_iter()
                .map(|l| (None, l.data.domain_update))
                .collect(),
            _ => shear_io::read_jsonl::<TrainLog>(&dir.join("train/train_log.jsonl"))?
                .into_iter()
                .map(|l| (l.eval_first_update, l.data.domain_update))
                .collect(),
        };
        let ups = updates(owned.iter().map(|(a, b)| (a.as_ref(), b.as_ref())));
        let mut seed = Vec::new();
        if let Some((_, u)) = ups.first() {
            seed.push((0.0, u.weights_before.clone()));
        }
        seed.extend(ups.iter().map(|(s, u)| (*s, u.weights.clone())));
        out.push(seed);
    }
    Ok(out)
}

/// Domain weights over steps: the mean over seeds with its min–max band, per domain.
fn weight_bands(per_seed: &[Weights], domains: &[String]) -> Vec<Band> {
    let n = per_seed.iter().map(Vec::len).min().unwrap_or(0);
    domains
        .iter()
        .enumerate()
        .map(|(d, name)| Band {
            name: name.clone(),
            points: (0..n)
                .map(|i| {
                    let v: Vec<f64> = per_seed.iter().map(|s| s[i].1[d]).collect();
                    let sp = Spread::of(&v);
                    (per_seed[0][i].0, sp.mean, sp.min, sp.max)
                })
                .collect(),
        })
        .collect()
}

/// Writes `run_dir/charts/` and `run_dir/report.md` for a run over seeds.
pub fn write_seeds_report(run_dir: &Path, sum: &SeedsSummary) -> Result<PathBuf, ReportError> {
    let charts_dir = super::charts_dir(run_dir)?;
    let mut charts: Vec<(String, PathBuf)> = Vec::new();
    let mut categories = sum.domains.clone();
    categories.push("mean".into());
    let groups: Vec<Bars> = sum
        .arms
        .iter()
        .map(|a| Bars {
            name: a.arm.clone(),
            values: a
                .domains
                .iter()
                .chain(std::iter::once(&a.mean_loss))
                .map(|s| (s.mean, s.min, s.max))
                .collect(),
        })
        .collect();
    let path = charts_dir.join("final_loss_by_arm.png");
    error_bar_chart(
        &path,
        &format!(
            "final eval loss per arm over {} seeds (mean, min–max)",
            sum.runs.len()
        ),
        "cross-entropy",
        &categories,
        &groups,
    )?;
    charts.push(("final eval loss per arm".into(), path));
    let train = sum.runs[0].summary.recipe.train.enabled;
    for stage in ["prune", "train"] {
        if stage == "train" && !train {
            continue;
        }
        let bands = weight_bands(&stage_weights(run_dir, sum, stage)?, &sum.domains);
        if bands.iter().all(|b| b.points.is_empty()) {
            continue;
        }
        let path = charts_dir.join(format!("{stage}_domain_weights_seeds.png"));
        band_chart(
            &path,
            &format!("{stage}: domain weights (mean, min–max over seeds)"),
            "share of sequences",
            &bands,
        )?;
        charts.push((format!("{stage}: domain weights over seeds"), path));
    }
    let md = markdown(sum, &charts, run_dir);
    let path = run_dir.join("report.md");
    shear_io::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

fn markdown(sum: &SeedsSummary, charts: &[(String, PathBuf)], run_dir: &Path) -> String {
    let mut s = String::new();
    let n = sum.runs.len();
    let _ = writeln!(s, "# shear run report over {n} seeds\n");
    let _ = writeln!(
        s,
        "Recipe `{}`, shear {}; wall time {:.1} s. Each seed is a whole run in its own directory \
         (its report beside it); the pruning and training seeds (data order, mask samples, random \
         initial weights) are the recipe's plus 0..{n}; the data split is the same in all.\n",
        sum.recipe_file.display(),
        sum.shear_version,
        sum.wall_seconds
    );
    let _ = writeln!(s, "**Criterion.** {}.\n", sum.criterion);
    let arms: Vec<&str> = sum.arms.iter().map(|a| a.arm.as_str()).collect();
    let _ = writeln!(s, "## Final eval loss, mean [min, max] over {n} seeds\n");
    let refs: Vec<String> = sum
        .references
        .iter()
        .map(|r| format!("reference: {}", r.kind))
        .collect();
    let _ = writeln!(
        s,
        "| domain | {} | {} |",
        refs.join(" | "),
        arms.join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---|".repeat(refs.len() + arms.len()));
    for (i, d) in sum.domains.iter().enumerate() {
        let r: Vec<String> = sum
            .references
            .iter()
            .map(|r| format!("{:.4}", r.losses[i]))
            .collect();
        let a: Vec<String> = sum.arms.iter().map(|a| cell(&a.domains[i])).collect();
        let _ = writeln!(s, "| {d} | {} | {} |", r.join(" | "), a.join(" | "));
    }
    let r: Vec<String> = sum
        .references
        .iter()
        .map(|r| {
            format!(
                "{:.4}",
                r.losses.iter().sum::<f64>() / r.losses.len().max(1) as f64
            )
        })
        .collect();
    let a: Vec<String> = sum
        .arms
        .iter()
        .map(|a| format!("**{}**", cell(&a.mean_loss)))
        .collect();
    let _ = writeln!(s, "| **mean** | {} | {} |", r.join(" | "), a.join(" | "));
    let blank = vec![""; refs.len()].join(" | ");
    for (j, reference) in sum.references.iter().enumerate() {
        let a: Vec<String> = sum
            .arms
            .iter()
            .map(|a| gap_cell(&a.largest_gap[j]))
            .collect();
        let _ = writeln!(
            s,
            "| largest gap to {} | {blank} | {} |",
            reference_name(&reference.kind),
            a.join(" | ")
        );
    }
    let _ = writeln!(s, "\n## Per seed\n");
    let mut head = vec!["seed (prune, train)".to_string()];
    for a in &sum.arms {
        head.push(format!("{} mean loss", a.arm));
        for r in &sum.references {
            head.push(format!("{} gap ({})", a.arm, r.kind));
        }
    }
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
    for (k, run) in sum.runs.iter().enumerate() {
        let mut row = vec![format!(
            "[{}]({}/report.md) ({}, {})",
            run.dir.display(),
            run.dir.display(),
            run.prune_seed,
            run.train_seed
        )];
        for a in &sum.arms {
            row.push(format!("{:.4}", a.seed_mean_loss[k]));
            for g in &a.seed_largest_gap[k] {
                row.push(format!("{g:+.4}"));
            }
        }
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    if !sum.verdicts.is_empty() {
        let _ = writeln!(s, "\n## Verdicts\n");
        for v in &sum.verdicts {
            let _ = writeln!(
                s,
                "- {}: **{}** — {}.",
                v.claim,
                if v.holds { "holds" } else { "does not hold" },
                v.detail
            );
        }
    }
    let _ = writeln!(s, "\n## Charts\n");
    for (title, path) in charts {
        let rel = path.strip_prefix(run_dir).unwrap_or(path);
        let _ = writeln!(s, "### {title}\n\n![{title}]({})\n", rel.display());
    }
    s
}
