//! `shear run RECIPE`: data prepare → prune (with materialization) → continued pre-training →
//! evaluation, in one run directory. A stage whose output is complete is skipped; an interrupted
//! pruning or training stage resumes from its newest checkpoint. `run.json` records the resolved recipe,
//! versions, stage timings and the final metrics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use shear_data::prepare::prepare;
use shear_data::{PreparedData, Proportions, Split, Tokenizer};
use shear_model::LlamaConfig;
use shear_train::recipe::{Recipe, ReferenceSpec};

use super::feed::DataArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe (TOML). Without one: the embedded default (the tiny source model and the
    /// four-domain corpus of assets/, unpacked into OUT/inputs).
    pub recipe: Option<PathBuf>,
    /// Run directory: data/, prune/, train/, run.json, report.md, charts/.
    #[arg(long)]
    pub out: PathBuf,
    /// Also run the baselines (in OUT/compare): the target shape trained from scratch on the
    /// same number of tokens, and pruning + continued training with a static mixture.
    #[arg(long)]
    pub compare: bool,
    /// Override a recipe key, e.g. `--set train.steps=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Marks a finished stage.
const DONE: &str = ".complete";

fn done(dir: &Path) -> bool {
    dir.join(DONE).is_file()
}

fn mark_done(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join(DONE), b"")
        .with_context(|| format!("cannot write {}", dir.join(DONE).display()))
}

#[derive(serde::Serialize)]
pub struct Stage {
    name: &'static str,
    seconds: f64,
    skipped: bool,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    let recipe_path = match &args.recipe {
        Some(p) => p.clone(),
        None => {
            let path = crate::embedded::unpack(&args.out.join("inputs"))?;
            eprintln!("recipe: the embedded default ({})", path.display());
            path
        }
    };
    let recipe = Recipe::from_toml_file_with(&recipe_path, &args.set)?;
    let source = super::resolve(&recipe.model.source, offline)?;
    let config = LlamaConfig::from_file(&source)?;
    // Everything the recipe says is checked before any work (token counts are not known yet:
    // proportions by tokens are checked again once the data is prepared).
    recipe
        .resolve(&config, &vec![1; recipe.data.domains.len()])
        .map_err(|e| anyhow::anyhow!("{}: {e}", recipe_path.display()))?;
    let tokenizer = Tokenizer::from_file(&source).with_context(|| {
        format!(
            "the recipe's source {} needs a tokenizer.json",
            source.display()
        )
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut stages = Vec::new();
    let started = Instant::now();

    // 1. Data.
    let data_dir = args.out.join("data");
    let t = Instant::now();
    let report = prepare(&recipe.data, &tokenizer, &data_dir, &mut |_| {})?;
    eprintln!(
        "data: {}",
        if report.up_to_date {
            "up to date".to_string()
        } else {
            format!(
                "{} tokens at {:.0} tokens/s",
                report.tokens,
                report.tokens_per_second()
            )
        }
    );
    stages.push(Stage {
        name: "data",
        seconds: t.elapsed().as_secs_f64(),
        skipped: report.up_to_date,
    });
    let data = PreparedData::open(&data_dir)?;
    let tokens: Vec<u64> = data
        .shards(Split::Prune)?
        .iter()
        .map(|s| (s.len() * data.manifest.seq_len) as u64)
        .collect();
    let resolved = recipe
        .resolve(&config, &tokens)
        .map_err(|e| anyhow::anyhow!("{}: {e}", recipe_path.display()))?;

    // The reference losses as something `--reference` reads.
    let mut source_reference = None;
    let reference = match &recipe.dynamic.reference {
        // Every stage (pruning, continued training, the baselines) measures its gaps against
        // the source model, not against the model it trains: evaluate the source once here
        // and hand the values on.
        ReferenceSpec::Named(n) if n == "source" => {
            let (losses, _) = super::eval::evaluate::<B>(
                &source,
                Some(&data_dir),
                Split::Eval,
                &[],
                recipe.dynamic.eval_batch,
                recipe.dynamic.eval_sequences,
                device,
            )
            .context("reference losses: evaluating the source model")?;
            source_reference = Some(losses.iter().map(|l| l.loss).collect());
            losses
                .iter()
                .map(|l| format!("{}={}", l.domain, l.loss))
                .collect::<Vec<_>>()
                .join(",")
        }
        ReferenceSpec::Named(n) => n.clone(),
        ReferenceSpec::Table(t) => {
            let path = args.out.join("reference.toml");
            let mut table = toml::Table::new();
            table.insert("reference".into(), toml::Value::try_from(t)?);
            std::fs::write(&path, toml::to_string(&table)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            path.to_string_lossy().into_owned()
        }
    };
    let stage = StageRunner::<B> {
        recipe: &recipe,
        resolved: &resolved,
        data_dir: data_dir.clone(),
        reference,
        reference_losses: resolved.reference.clone().or(source_reference),
        source: source.clone(),
        offline,
        device,
    };

    // 2. Prune (and materialize).
    let prune_dir = args.out.join("prune");
    stages.push(stage.prune("prune", &prune_dir, &recipe.dynamic.update_rule)?);
    let pruned = prune_dir.join("model");

    // 3. Continued pre-training.
    let train_dir = args.out.join("train");
    let tr = &recipe.train;
    let final_model = if tr.enabled {
        let proportions = match &resolved.train_weights {
            Some(_) => tr.proportions.to_string(),
            None => final_pruning_weights(&prune_dir, &data.domains())?,
        };
        stages.push(stage.train(
            "train",
            &train_dir,
            &pruned,
            TrainPlan::continued(tr, proportions, &recipe.dynamic.update_rule),
        )?);
        train_dir.join("model")
    } else {
        pruned.clone()
    };

    // 4. Evaluation of the source, the pruned and the final model.
    let t = Instant::now();
    let mut metrics = serde_json::Map::new();
    for (name, dir) in [
        ("source", &source),
        ("pruned", &pruned),
        ("final", &final_model),
    ] {
        if name == "final" && !tr.enabled {
            continue;
        }
        metrics.insert(name.into(), stage.eval(name, dir)?);
    }
    stages.push(Stage {
        name: "eval",
        seconds: t.elapsed().as_secs_f64(),
        skipped: false,
    });

    // 5. Baselines (--compare).
    let compare = if args.compare {
        let c = super::compare::run(&stage, &args.out, &prune_dir, &mut stages)?;
        Some(c)
    } else {
        None
    };
    let run = serde_json::json!({
        "shear_version": env!("CARGO_PKG_VERSION"),
        "recipe_file": recipe_path,
        "recipe": recipe,
        "source": source,
        "target": {
            "layers": resolved.target.layers, "hidden": resolved.target.hidden,
            "heads": resolved.target.heads, "intermediate": resolved.target.intermediate,
            "params": resolved.target_params,
        },
        "source_shape": {
            "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "heads": config.num_attention_heads, "intermediate": config.intermediate_size,
            "params": config.param_counts().total(),
        },
        "tokens": {
            "data": report.tokens,
            "prune": recipe.prune.steps * recipe.prune.batch * recipe.prune.grad_accum
                * data.manifest.seq_len,
            "train": if tr.enabled {
                tr.steps * tr.batch * tr.grad_accum * data.manifest.seq_len
            } else { 0 },
            "scratch": compare.as_ref().map(|c| {
                c["scratch_steps"].as_u64().unwrap_or(0) as usize
                    * tr.batch * tr.grad_accum * data.manifest.seq_len
            }),
            "static prune": compare.as_ref().map(|_| {
                recipe.prune.steps * recipe.prune.batch * recipe.prune.grad_accum
                    * data.manifest.seq_len
            }),
            "static train": compare.as_ref().filter(|_| tr.enabled).map(|_| {
                tr.steps * tr.batch * tr.grad_accum * data.manifest.seq_len
            }),
        },
        "stages": stages,
        "wall_seconds": started.elapsed().as_secs_f64(),
        "metrics": metrics,
        "compare": compare,
        "final_model": final_model,
    });
    let path = args.out.join("run.json");
    shear_model::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&run)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let report_path = shear_train::report::write_report(&args.out, &run)?;
    print_summary(&metrics, compare.as_ref());
    println!("report: {}", report_path.display());
    println!(
        "-> {} (run.json, {})",
        args.out.display(),
        final_model.display()
    );
    Ok(())
}

/// The pruning stage's final domain weights (from its loader state) as `name=w,...`.
fn final_pruning_weights(prune_dir: &Path, domains: &[String]) -> anyhow::Result<String> {
    let path = prune_dir.join("loader_state.json");
    let state: shear_data::LoaderState = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{}", path.display()))?;
    if state.domains != domains {
        bail!(
            "{}: domains differ from the prepared data's",
            path.display()
        );
    }
    // Exact weights: the explicit map is checked to sum to 1 within 1e-6.
    let map = state
        .domains
        .iter()
        .cloned()
        .zip(state.weights.iter().copied())
        .collect();
    Ok(Proportions::Explicit(map).to_string())
}

fn print_summary(
    metrics: &serde_json::Map<String, serde_json::Value>,
    compare: Option<&serde_json::Value>,
) {
    println!("{:<8} {:>14} {:>10}", "model", "parameters", "mean loss");
    let baselines = ["scratch", "static"].map(|k| (k, compare.map(|c| &c[k])));
    let rows = ["source", "pruned", "final"]
        .map(|k| (k, metrics.get(k)))
        .into_iter()
        .chain(baselines);
    for (name, m) in rows {
        let Some(m) = m.filter(|m| m.is_object()) else {
            continue;
        };
        let losses: Vec<f64> = m["domains"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d["loss"].as_f64()).collect())
            .unwrap_or_default();
        let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        println!(
            "{name:<8} {:>14} {mean:>10.4}",
            m["params"].as_u64().unwrap_or(0)
        );
    }
}

/// Runs `work` unless `dir` holds a completion marker; marks it complete after.
fn run_stage(
    name: &'static str,
    dir: &Path,
    work: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Stage> {
    let t = Instant::now();
    let skipped = done(dir);
    if !skipped {
        work().with_context(|| format!("{name} stage"))?;
        mark_done(dir)?;
    }
    Ok(Stage {
        name,
        seconds: t.elapsed().as_secs_f64(),
        skipped,
    })
}

/// Everything a stage needs, and the stages themselves (the main run and the baselines share
/// them).
pub struct StageRunner<'a, B: Backend> {
    pub recipe: &'a Recipe,
    pub resolved: &'a shear_train::recipe::Resolved,
    pub data_dir: PathBuf,
    /// As `--reference` reads it.
    pub reference: String,
    /// The reference losses every stage uses, per domain (known before the stages when they
    /// are the recipe's numbers or the source's losses; `None` for a scaling law).
    pub reference_losses: Option<Vec<f64>>,
    pub source: PathBuf,
    pub offline: bool,
    pub device: &'a B::Device,
}

/// One training stage's settings (continued pre-training, or a from-scratch baseline).
pub struct TrainPlan {
    pub init: super::train::Init,
    pub steps: usize,
    pub lr: f64,
    pub warmup: Option<usize>,
    pub proportions: String,
    pub update_rule: String,
}

impl TrainPlan {
    /// The recipe's continued pre-training.
    pub fn continued(
        tr: &shear_train::recipe::TrainSection,
        proportions: String,
        update_rule: &str,
    ) -> Self {
        TrainPlan {
            init: super::train::Init::Weights,
            steps: tr.steps,
            lr: tr.lr,
            warmup: tr.warmup,
            proportions,
            update_rule: update_rule.to_string(),
        }
    }
}

impl<B: Backend> StageRunner<'_, B> {
    fn feed(&self, proportions: String, update_every: usize, update_rule: &str) -> DataArgs {
        DataArgs {
            data: self.data_dir.clone(),
            seq: None,
            proportions,
            update_rule: update_rule.to_string(),
            update_every: Some(update_every),
            reference: self.reference.clone(),
            eval_batch: self.recipe.dynamic.eval_batch,
            eval_sequences: self.recipe.dynamic.eval_sequences,
        }
    }

    /// Prunes the source into `dir` (masks, log, materialized `model/`), unless already done.
    pub fn prune(
        &self,
        name: &'static str,
        dir: &Path,
        update_rule: &str,
    ) -> anyhow::Result<Stage> {
        run_stage(name, dir, || {
            let p = &self.recipe.prune;
            let target = &self.resolved.target;
            super::prune::run::<B>(
                super::prune::Args {
                    model: self.source.to_string_lossy().into_owned(),
                    target: Some(format!(
                        "layers={},hidden={},heads={},intermediate={}",
                        target.layers, target.hidden, target.heads, target.intermediate
                    )),
                    preset: None,
                    feed: self.feed(p.proportions.to_string(), p.update_every, update_rule),
                    out: dir.to_path_buf(),
                    steps: p.steps,
                    batch: p.batch,
                    grad_accum: p.grad_accum,
                    lr_weights: p.lr_weights,
                    lr_masks: p.lr_masks,
                    lr_lambda: p.lr_lambda,
                    lr_warmup: p.lr_warmup,
                    lagrangian_warmup: p.lagrangian_warmup,
                    save_every: p.save_every,
                    resume: true,
                    stop_after: None,
                    dtype: self.recipe.model.dtype.clone(),
                    seed: p.seed,
                    precision: self.recipe.model.precision,
                    layer_masks: match self.recipe.model.layer_masks.as_str() {
                        "head-layer-mlp" => super::prune::LayerMaskArg::HeadLayerMlp,
                        _ => super::prune::LayerMaskArg::Layer,
                    },
                },
                self.offline,
                self.device,
            )
        })
    }

    /// Trains `model` into `dir` as `plan` says, unless already done.
    pub fn train(
        &self,
        name: &'static str,
        dir: &Path,
        model: &Path,
        plan: TrainPlan,
    ) -> anyhow::Result<Stage> {
        run_stage(name, dir, || {
            let tr = &self.recipe.train;
            super::train::run::<B>(
                super::train::Args {
                    model: model.to_string_lossy().into_owned(),
                    feed: self.feed(plan.proportions, tr.update_every, &plan.update_rule),
                    out: dir.to_path_buf(),
                    steps: plan.steps,
                    batch: tr.batch,
                    grad_accum: tr.grad_accum,
                    lr: plan.lr,
                    warmup: plan.warmup,
                    min_lr_ratio: tr.min_lr_ratio,
                    weight_decay: tr.weight_decay,
                    max_grad_norm: tr.max_grad_norm,
                    save_every: tr.save_every,
                    resume: true,
                    stop_after: None,
                    init: plan.init,
                    distill_from: match plan.init {
                        super::train::Init::Weights => tr
                            .distill
                            .map(|_| self.source.to_string_lossy().into_owned()),
                        super::train::Init::Random => None,
                    },
                    distill_weight: tr.distill.map_or(1.0, |d| d.weight),
                    distill_temperature: tr.distill.map_or(1.0, |d| d.temperature),
                    dtype: self.recipe.model.dtype.clone(),
                    seed: tr.seed,
                    precision: self.recipe.model.precision,
                },
                self.offline,
                self.device,
            )
        })
    }

    /// Per-domain eval losses (and task scores) of the model in `dir`, as run.json holds them.
    pub fn eval(&self, name: &str, dir: &Path) -> anyhow::Result<serde_json::Value> {
        let e = &self.recipe.eval;
        let (losses, scores) = super::eval::evaluate::<B>(
            dir,
            Some(&self.data_dir),
            Split::Eval,
            &e.tasks,
            e.batch,
            e.max_sequences,
            self.device,
        )
        .with_context(|| format!("eval stage ({name})"))?;
        let params = LlamaConfig::from_file(dir)?.param_counts().total();
        Ok(serde_json::json!({ "params": params, "domains": losses, "tasks": scores }))
    }
}
