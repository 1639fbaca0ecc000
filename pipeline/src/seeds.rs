//! `run` over several seeds (`shear run --seeds N`): the whole recipe — with `compare`, every
//! arm — once per seed in `OUT/seed-K/`, each a complete run directory of its own, with the
//! pruning and training seeds (data order, mask samples, random initial weights) moved by K.
//! The data split is the recipe's in every seed, so every arm is scored on the same sequences.
//! `OUT/run.json` ([`SeedsSummary`]) then holds each arm's per-domain losses, mean loss and
//! largest gap against every reference as mean and range over the seeds, and the paper's
//! claims judged by the criterion stated in [`CRITERION`] (docs/algorithm.md §6.6).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_train::{Event, Observer};

use crate::error::{invalid, Result};
use crate::recipe::Recipe;
use crate::report::largest_gap;
use crate::run::{run, RunOptions};
use crate::summary::{ModelMetrics, RunSummary};

/// How the claims are judged over seeds (written into the report before its numbers).
pub const CRITERION: &str = "pruned + continued beats scratch when its mean loss is lower in a \
     majority of the seeds; dynamic beats static when its largest gap against the first reference \
     (the scaling law when the recipe has one) is smaller in a majority of the seeds (2 of 3) and \
     its mean loss, averaged over the seeds, is not worse than static's by more than the seed \
     spread (the larger of the two arms' ranges of mean loss); the target shape is reached when \
     every seed materializes it exactly";

/// Mean and range of one figure over the seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Self {
        Spread {
            mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }

    /// max − min.
    pub fn range(&self) -> f64 {
        self.max - self.min
    }
}

/// Reference losses per domain, and what they are (`scaling`, `values` or `source`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedReference {
    pub kind: String,
    pub losses: Vec<f64>,
}

/// One arm's final evaluation over the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// `dynamic` (the recipe's own stages), `static` or `scratch`.
    pub arm: String,
    /// Per domain, in [`SeedsSummary::domains`] order.
    pub domains: Vec<Spread>,
    pub mean_loss: Spread,
    /// The largest gap to each of [`SeedsSummary::references`], in that order.
    pub largest_gap: Vec<Spread>,
    /// Per seed: the mean loss, and the largest gap to each reference.
    pub seed_mean_loss: Vec<f64>,
    pub seed_largest_gap: Vec<Vec<f64>>,
}

/// A claim of the paper and whether the seeds support it under [`CRITERION`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub claim: String,
    pub holds: bool,
    pub detail: String,
}

/// One seed's run directory and summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    /// The pruning and training seeds (the recipe's plus K).
    pub prune_seed: u64,
    pub train_seed: u64,
    /// Relative to the run directory: `seed-K`.
    pub dir: PathBuf,
    pub summary: RunSummary,
}

/// `run.json` of a run over seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedsSummary {
    pub shear_version: String,
    pub recipe_file: PathBuf,
    pub domains: Vec<String>,
    /// The recipe's reference first (when it is not the source), then the source's losses.
    pub references: Vec<NamedReference>,
    pub arms: Vec<ArmStats>,
    pub criterion: String,
    pub verdicts: Vec<Verdict>,
    pub wall_seconds: f64,
    pub runs: Vec<SeedRun>,
}

impl SeedsSummary {
    pub fn arm(&self, name: &str) -> Option<&ArmStats> {
        self.arms.iter().find(|a| a.arm == name)
    }

    /// Reads `dir/run.json` of a run over seeds.
    pub fn read(dir: &Path) -> Result<Self> {
        Ok(shear_io::read_json(&dir.join("run.json"))?)
    }
}

/// Runs `recipe_file` once per seed (`seeds` ≥ 2) under `opts.out/seed-K`, then writes
/// `opts.out/run.json` and the report over the seeds. A seed whose run is complete is skipped
/// stage by stage, like any run.
pub fn run_seeds<B: Backend>(
    recipe_file: &Path,
    opts: &RunOptions,
    seeds: usize,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<SeedsSummary> {
    if seeds < 2 {
        return invalid!("--seeds {seeds}: a run over seeds needs at least 2");
    }
    if opts.nodes.is_some() {
        return invalid!("--seeds runs on one node (run each seed's recipe with --nodes instead)");
    }
    let started = std::time::Instant::now();
    let recipe = Recipe::from_toml_file_with(recipe_file, &opts.overrides)?;
    let (p0, t0) = (recipe.prune.hyper.seed, recipe.train.config.seed);
    let _lock = crate::out::create_locked(&opts.out)?;
    let mut runs = Vec::with_capacity(seeds);
    for k in 0..seeds as u64 {
        let dir = PathBuf::from(format!("seed-{k}"));
        let (ps, ts) = (p0 + k, t0 + k);
        observer.event(Event::Message(&format!(
            "seed {} of {seeds}: prune.seed={ps}, train.seed={ts} -> {}",
            k + 1,
            opts.out.join(&dir).display()
        )));
        let mut o = opts.clone();
        o.out = opts.out.join(&dir);
        o.overrides.push(format!("prune.seed={ps}"));
        o.overrides.push(format!("train.seed={ts}"));
        let summary = run::<B>(recipe_file, &o, device, observer)?;
        runs.push(SeedRun {
            prune_seed: ps,
            train_seed: ts,
            dir,
            summary,
        });
    }
    let summary = summarize(recipe_file, runs, started.elapsed().as_secs_f64())?;
    shear_io::write_json_atomic(&opts.out.join("run.json"), &summary)?;
    crate::report::write_seeds_report(&opts.out, &summary)?;
    Ok(summary)
}

/// The statistics and verdicts over the seeds' summaries.
pub fn summarize(
    recipe_file: &Path,
    runs: Vec<SeedRun>,
    wall_seconds: f64,
) -> Result<SeedsSummary> {
    let Some(first) = runs.first() else {
        return invalid!("no seeds to summarize");
    };
    let s0 = &first.summary;
    let domains: Vec<String> = s0
        .metrics
        .source
        .domains
        .iter()
        .map(|d| d.domain.clone())
        .collect();
    let mut references = Vec::new();
    let recipe_ref = &s0.recipe.dynamic.reference;
    if recipe_ref.kind() != "source" {
        let losses = match &s0.compare {
            Some(c) => c.reference.clone(),
            None => recipe_ref
                .resolve(&domains, s0.target.params as f64)?
                .unwrap_or_default(),
        };
        references.push(NamedReference {
            kind: recipe_ref.kind().into(),
            losses,
        });
    }
    references.push(NamedReference {
        kind: "source".into(),
        losses: s0.metrics.source.losses(),
    });
    type Pick = fn(&RunSummary) -> Option<&ModelMetrics>;
    let mut arms = Vec::new();
    for (name, pick) in [
        ("dynamic", (|s| Some(s.metrics.last())) as Pick),
        ("static", |s: &RunSummary| {
            s.compare.as_ref().map(|c| &c.static_)
        }),
        ("scratch", |s: &RunSummary| {
            s.compare.as_ref().map(|c| &c.scratch)
        }),
    ] {
        let per_seed: Option<Vec<&ModelMetrics>> = runs.iter().map(|r| pick(&r.summary)).collect();
        if let Some(m) = per_seed {
            arms.push(arm_stats(name, &m, &references, domains.len()));
        }
    }
    let verdicts = verdicts(&arms, &runs, &references);
    Ok(SeedsSummary {
        shear_version: env!("CARGO_PKG_VERSION").into(),
        recipe_file: recipe_file.to_path_buf(),
        domains,
        references,
        arms,
        criterion: CRITERION.into(),
        verdicts,
        wall_seconds,
        runs,
    })
}

fn arm_stats(name: &str, m: &[&ModelMetrics], refs: &[NamedReference], n: usize) -> ArmStats {
    let losses: Vec<Vec<f64>> = m.iter().map(|x| x.losses()).collect();
    let domains = (0..n)
        .map(|i| Spread::of(&losses.iter().map(|l| l[i]).collect::<Vec<_>>()))
        .collect();
    let seed_mean_loss: Vec<f64> = m.iter().map(|x| x.mean_loss()).collect();
    let seed_largest_gap: Vec<Vec<f64>> = losses
        .iter()
        .map(|l| refs.iter().map(|r| largest_gap(l, &r.losses)).collect())
        .collect();
    let largest_gap = (0..refs.len())
        .map(|j| Spread::of(&seed_largest_gap.iter().map(|g| g[j]).collect::<Vec<_>>()))
        .collect();
    ArmStats {
        arm: name.into(),
        domains,
        mean_loss: Spread::of(&seed_mean_loss),
        largest_gap,
        seed_mean_loss,
        seed_largest_gap,
    }
}

/// The claims under [`CRITERION`] (only those whose arms ran).
fn verdicts(arms: &[ArmStats], runs: &[SeedRun], refs: &[NamedReference]) -> Vec<Verdict> {
    let find = |n: &str| arms.iter().find(|a| a.arm == n);
    let n = runs.len();
    let majority = n / 2 + 1;
    let mut out = Vec::new();
    let Some(dynamic) = find("dynamic") else {
        return out;
    };
    if let Some(scratch) = find("scratch") {
        let wins = (0..n)
            .filter(|&k| dynamic.seed_mean_loss[k] < scratch.seed_mean_loss[k])
            .count();
        out.push(Verdict {
            claim: "(a) pruned + continued beats training the target shape from scratch".into(),
            holds: wins >= majority,
            detail: format!(
                "mean loss lower in {wins} of {n} seeds ({:.4} vs {:.4} on average)",
                dynamic.mean_loss.mean, scratch.mean_loss.mean
            ),
        });
    }
    if let Some(fixed) = find("static") {
        let wins = (0..n)
            .filter(|&k| dynamic.seed_largest_gap[k][0] < fixed.seed_largest_gap[k][0])
            .count();
        let spread = dynamic.mean_loss.range().max(fixed.mean_loss.range());
        let worse = dynamic.mean_loss.mean - fixed.mean_loss.mean;
        out.push(Verdict {
            claim: "(b) dynamic batch loading beats a static mixture".into(),
            holds: wins >= majority && worse <= spread,
            detail: format!(
                "largest gap to the {} reference smaller in {wins} of {n} seeds ({:+.4} vs {:+.4} \
                 on average); mean loss {:.4} vs {:.4} ({:+.4}, seed spread {:.4})",
                refs[0].kind,
                dynamic.largest_gap[0].mean,
                fixed.largest_gap[0].mean,
                dynamic.mean_loss.mean,
                fixed.mean_loss.mean,
                worse,
                spread
            ),
        });
    }
    let shapes: Vec<bool> = runs
        .iter()
        .filter_map(|r| r.summary.compare.as_ref().map(|c| c.shape.reached))
        .collect();
    if shapes.len() == n {
        let reached = shapes.iter().filter(|r| **r).count();
        out.push(Verdict {
            claim: "(c) the exact target shape is reached".into(),
            holds: reached == n,
            detail: format!("materialized exactly in {reached} of {n} seeds"),
        });
    }
    out
}
