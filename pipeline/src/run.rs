//! `run`: a whole recipe — data prepare → prune (with materialization) → continued pre-training
//! → evaluation, in one run directory — and, with `compare`, the baselines of the mini
//! reproduction. A stage whose output is complete is skipped; an interrupted pruning or training
//! stage resumes from its newest checkpoint (its settings must still be the recipe's).
//! `run.json` ([`RunSummary`]) records the resolved recipe, stage timings and the metrics, and
//! the report is drawn from it and the stage logs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use shear_data::prepare::prepare;
use shear_data::{
    LoaderState, PreparedData, Proportions, ReferenceLoss, Split, Tokenizer, UpdateRule,
};
use shear_model::LlamaConfig;
use shear_train::peers::{Nodes, Topology};
use shear_train::trainer::{Distill, TrainConfig};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, PipelineError, Result};
use crate::eval::{evaluate, EvalJob, ModelMetrics};
use crate::feed::DataOptions;
use crate::prune::{prune, PruneJob, PruneSettings};
use crate::recipe::{Recipe, Resolved};
use crate::stage::Resume;
use crate::summary::{Metrics, RunSummary, Shape, StageTiming};
use crate::train::{train, Init, TrainJob, TrainSettings};

/// How to run a recipe.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The run directory: data/, prune/, train/, run.json, report.md, charts/.
    pub out: PathBuf,
    /// Also run the baselines (in OUT/compare).
    pub compare: bool,
    /// `KEY=VALUE` overrides of recipe keys.
    pub overrides: Vec<String>,
    /// Only use models already in the Hugging Face cache.
    pub offline: bool,
    /// Workers per training or pruning step (see [`crate::stage::Job::workers`]; 0 counts as 1).
    pub workers: usize,
    /// Data-parallel peers per node in the pruning and training stages (see
    /// [`crate::stage::Job::topology`]); `None`: the recipe's `[run] devices` (default 1).
    pub devices: Option<usize>,
    /// Distinct devices on this machine ([`Topology::physical`]; 0 counts as 1).
    pub physical: usize,
    /// The nodes of a multi-node run.
    pub nodes: Option<Nodes>,
    /// Recompute each block in the backward pass of the pruning and training stages.
    pub recompute: bool,
    /// Set to stop the running stage after its current step, with a checkpoint (see
    /// [`crate::stage::Job::stop`]); running the recipe again continues it.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Marks a finished stage.
const DONE: &str = ".complete";

/// Runs `recipe_file` as `opts` says; returns the summary written to `OUT/run.json` (the report
/// is `OUT/report.md`).
pub fn run<B: Backend>(
    recipe_file: &Path,
    opts: &RunOptions,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let started = Instant::now();
    let recipe = Recipe::from_toml_file_with(recipe_file, &opts.overrides)?;
    let source = shear_model::hub::resolve_model(&recipe.model.source, opts.offline)
        .context("cannot open the recipe's source model")?;
    let config = LlamaConfig::from_file(&source)?;
    // Everything the recipe says is checked before any work (token counts are not known yet:
    // proportions by tokens are checked again once the data is prepared).
    recipe
        .resolve(&config, &vec![1; recipe.data.domains.len()])
        .and_then(|_| recipe.check_data_present())
        .map_err(|e| PipelineError::Invalid(format!("{}: {e}", recipe_file.display())))?;
    let tokenizer = Tokenizer::from_file(&source).context(format!(
        "the recipe's source {} needs a tokenizer.json",
        source.display()
    ))?;
    std::fs::create_dir_all(&opts.out).map_err(shear_io::IoError::at(&opts.out))?;
    let mut stages = Vec::new();

    // 1. Data.
    let data_dir = opts.out.join("data");
    let t = Instant::now();
    observer.event(Event::Busy("preparing data"));
    let report = prepare(&recipe.data, &tokenizer, &data_dir, &mut |_| {})?;
    observer.event(Event::Message(&if report.up_to_date {
        "data: up to date".to_string()
    } else {
        format!(
            "data: {} tokens at {:.0} tokens/s",
            report.tokens,
            report.tokens_per_second()
        )
    }));
    stages.push(StageTiming {
        name: "data".into(),
        seconds: t.elapsed().as_secs_f64(),
        skipped: report.up_to_date,
        tokens: Some(report.tokens),
    });
    let data = PreparedData::open(&data_dir)?;
    let tokens: Vec<u64> = data
        .shards(Split::Prune)?
        .iter()
        .map(|s| (s.len() * data.manifest.seq_len) as u64)
        .collect();
    let resolved = recipe
        .resolve(&config, &tokens)
        .map_err(|e| PipelineError::Invalid(format!("{}: {e}", recipe_file.display())))?;

    // The reference losses every stage uses: the recipe's numbers, or the source model's eval
    // losses computed once here (every stage, baselines included, measures its gaps against the
    // source, not against the model it trains).
    let spec = recipe
        .dynamic
        .reference
        .to_loss()
        .map_err(PipelineError::Invalid)?;
    let (reference, reference_losses) = match (&spec, &resolved.reference) {
        (ReferenceLoss::Source, _) => {
            let m = evaluate::<B>(
                &EvalJob {
                    data: Some(data_dir.clone()),
                    batch: recipe.dynamic.eval_batch,
                    max_sequences: recipe.dynamic.eval_sequences,
                    ..EvalJob::new(&source)
                },
                device,
                observer,
            )
            .context("reference losses: evaluating the source model")?;
            let values = m
                .domains
                .iter()
                .map(|d| (d.domain.clone(), d.loss))
                .collect();
            (ReferenceLoss::Values(values), Some(m.losses()))
        }
        (other, r) => (other.clone(), r.clone()),
    };
    let stage = Stages {
        recipe: &recipe,
        resolved: &resolved,
        data_dir: data_dir.clone(),
        seq: data.manifest.seq_len,
        reference,
        reference_losses,
        source: source.clone(),
        workers: opts.workers.max(1),
        topology: Topology {
            devices: opts.devices.unwrap_or(recipe.run.devices),
            physical: opts.physical.max(1),
            nodes: opts.nodes.clone(),
        },
        recompute: opts.recompute,
        stop: opts.stop.clone(),
    };

    // 2. Prune (and materialize).
    let prune_dir = opts.out.join("prune");
    stages.push(stage.prune::<B>(
        "prune",
        &prune_dir,
        recipe.dynamic.update_rule,
        device,
        observer,
    )?);
    let pruned = prune_dir.join("model");

    // 3. Continued pre-training.
    let train_dir = opts.out.join("train");
    let tr = &recipe.train;
    let final_model = if tr.enabled {
        let proportions = match &resolved.train_weights {
            Some(_) => tr.proportions.clone(),
            None => final_pruning_weights(&prune_dir, &data.domains())?,
        };
        let plan = TrainPlan::continued(&recipe, proportions, recipe.dynamic.update_rule);
        stages.push(stage.train::<B>("train", &train_dir, &pruned, plan, device, observer)?);
        train_dir.join("model")
    } else {
        pruned.clone()
    };

    // 4. Evaluation of the source, the pruned and the final model.
    let t = Instant::now();
    let metrics = Metrics {
        source: stage.eval::<B>("source", &source, device, observer)?,
        pruned: stage.eval::<B>("pruned", &pruned, device, observer)?,
        final_: match tr.enabled {
            true => Some(stage.eval::<B>("final", &final_model, device, observer)?),
            false => None,
        },
    };
    stages.push(StageTiming {
        name: "eval".into(),
        seconds: t.elapsed().as_secs_f64(),
        skipped: false,
        tokens: None,
    });

    // 5. Baselines.
    let compare = match opts.compare {
        true => Some(crate::compare::compare::<B>(
            &stage,
            &opts.out,
            &prune_dir,
            &mut stages,
            device,
            observer,
        )?),
        false => None,
    };
    let target_config = resolved.target.config(&config);
    let summary = RunSummary {
        shear_version: env!("CARGO_PKG_VERSION").into(),
        recipe_file: recipe_file.to_path_buf(),
        recipe: recipe.clone(),
        source: source.clone(),
        source_shape: Shape::of(&config),
        target: Shape::of(&target_config),
        stages,
        wall_seconds: started.elapsed().as_secs_f64(),
        metrics,
        compare,
        final_model,
    };
    shear_io::write_json_atomic(&opts.out.join("run.json"), &summary)?;
    crate::report::write_report(&opts.out, &summary)?;
    Ok(summary)
}

/// The pruning stage's final domain weights (from its loader state).
fn final_pruning_weights(prune_dir: &Path, domains: &[String]) -> Result<Proportions> {
    let path = prune_dir.join("loader_state.json");
    let text = std::fs::read_to_string(&path).map_err(shear_io::IoError::at(&path))?;
    let state: LoaderState = serde_json::from_str(&text).map_err(|e| shear_io::IoError::Json {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    if state.domains != domains {
        return invalid!(
            "{}: domains differ from the prepared data's",
            path.display()
        );
    }
    // Exact weights: the explicit map is checked to sum to 1 within 1e-6.
    Ok(Proportions::Explicit(
        state.domains.into_iter().zip(state.weights).collect(),
    ))
}

/// One training stage's settings (continued pre-training, or a from-scratch baseline).
pub(crate) struct TrainPlan {
    pub init: Init,
    pub steps: usize,
    pub lr: f64,
    pub warmup: Option<usize>,
    pub proportions: Proportions,
    pub update_rule: UpdateRule,
    pub distill: Option<Distill>,
}

impl TrainPlan {
    /// The recipe's continued pre-training.
    pub(crate) fn continued(recipe: &Recipe, proportions: Proportions, rule: UpdateRule) -> Self {
        let tr = &recipe.train;
        TrainPlan {
            init: Init::Weights,
            steps: tr.steps,
            lr: tr.lr,
            warmup: tr.warmup,
            proportions,
            update_rule: rule,
            distill: tr.distill.map(|d| Distill {
                weight: d.weight,
                temperature: d.temperature,
            }),
        }
    }
}

/// Everything a stage needs, and the stages themselves (the main run and the baselines share
/// them).
pub(crate) struct Stages<'a> {
    pub recipe: &'a Recipe,
    pub resolved: &'a Resolved,
    pub data_dir: PathBuf,
    pub seq: usize,
    /// As the stages read it: explicit values when the source was evaluated.
    pub reference: ReferenceLoss,
    /// The reference losses per domain, when known before the stages (the recipe's numbers or
    /// the source's losses; `None` for a scaling law).
    pub reference_losses: Option<Vec<f64>>,
    pub source: PathBuf,
    pub workers: usize,
    pub topology: Topology,
    pub recompute: bool,
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Runs `work` unless `dir` holds a completion marker; marks it complete after.
fn run_stage(
    name: &str,
    dir: &Path,
    tokens: u64,
    work: impl FnOnce() -> Result<()>,
) -> Result<StageTiming> {
    let t = Instant::now();
    let skipped = dir.join(DONE).is_file();
    if !skipped {
        work().context(format!("{name} stage"))?;
        shear_io::write_atomic(&dir.join(DONE), b"")?;
    }
    Ok(StageTiming {
        name: name.into(),
        seconds: t.elapsed().as_secs_f64(),
        skipped,
        tokens: Some(tokens),
    })
}

/// Every setting a recipe stage records is the recipe's: a resumed stage whose checkpoint says
/// otherwise is refused.
fn resume_stage() -> Resume {
    Resume::Newest {
        explicit: vec!["*".into()],
        warn_if_none: false,
    }
}

impl Stages<'_> {
    fn data(&self, proportions: Proportions, every: usize, rule: UpdateRule) -> DataOptions {
        let d = &self.recipe.dynamic;
        DataOptions::new(&self.data_dir)
            .with_proportions(proportions)
            .with_update_rule(rule)
            .with_update_every(every)
            .with_reference(self.reference.clone())
            .with_eval(d.eval_batch, d.eval_sequences)
    }

    /// Tokens of the pruning stage.
    pub(crate) fn prune_tokens(&self) -> u64 {
        let p = &self.recipe.prune;
        (p.steps * p.batch * p.grad_accum * self.seq) as u64
    }

    /// Tokens of a training stage of `steps` steps.
    pub(crate) fn train_tokens(&self, steps: usize) -> u64 {
        let t = &self.recipe.train;
        (steps * t.batch * t.grad_accum * self.seq) as u64
    }

    /// Prunes the source into `dir` (masks, log, materialized `model/`), unless already done.
    pub(crate) fn prune<B: Backend>(
        &self,
        name: &str,
        dir: &Path,
        rule: UpdateRule,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<StageTiming> {
        let p = &self.recipe.prune;
        let m = &self.recipe.model;
        let config = self.recipe.prune_config(self.resolved.target);
        let job = PruneJob {
            settings: PruneSettings {
                source: self.source.clone(),
                config,
                batch: p.batch,
                data: self.data(p.proportions.clone(), p.update_every, rule),
                precision: m.precision,
            },
            out: dir.to_path_buf(),
            save_every: p.save_every,
            keep_checkpoints: p.keep_checkpoints,
            stop_after: None,
            resume: resume_stage(),
            dtype: m.dtype,
            workers: self.workers,
            topology: self.topology.clone(),
            recompute: self.recompute,
            stop: self.stop.clone(),
            max_skipped: 10,
        };
        observer.event(Event::Message(&format!("stage {name}")));
        run_stage(name, dir, self.prune_tokens(), || {
            prune::<B>(&job, device, observer).map(|_| ())
        })
    }

    /// Trains `model` into `dir` as `plan` says, unless already done.
    pub(crate) fn train<B: Backend>(
        &self,
        name: &str,
        dir: &Path,
        model: &Path,
        plan: TrainPlan,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<StageTiming> {
        let tr = &self.recipe.train;
        let config = TrainConfig::new(plan.steps)
            .with_lr(plan.lr)
            .with_warmup(plan.warmup)
            .with_min_lr_ratio(tr.min_lr_ratio)
            .with_weight_decay(tr.weight_decay)
            .with_max_grad_norm(tr.max_grad_norm)
            .with_grad_accum(tr.grad_accum)
            .with_seed(tr.seed)
            .with_distill(plan.distill);
        let job = TrainJob {
            settings: TrainSettings {
                model: model.to_path_buf(),
                init: plan.init,
                config,
                batch: tr.batch,
                data: self.data(plan.proportions, tr.update_every, plan.update_rule),
                distill_from: plan.distill.map(|_| self.source.clone()),
                precision: self.recipe.model.precision,
            },
            out: dir.to_path_buf(),
            save_every: tr.save_every,
            keep_checkpoints: tr.keep_checkpoints,
            stop_after: None,
            resume: resume_stage(),
            dtype: self.recipe.model.dtype,
            workers: self.workers,
            topology: self.topology.clone(),
            recompute: self.recompute,
            stop: self.stop.clone(),
            max_skipped: 10,
        };
        observer.event(Event::Message(&format!("stage {name}")));
        run_stage(name, dir, self.train_tokens(plan.steps), || {
            train::<B>(&job, device, observer).map(|_| ())
        })
    }

    /// Per-domain eval losses (and task scores) of the model in `dir`.
    pub(crate) fn eval<B: Backend>(
        &self,
        name: &str,
        dir: &Path,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<ModelMetrics> {
        let e = &self.recipe.eval;
        let job = EvalJob {
            data: Some(self.data_dir.clone()),
            tasks: e.tasks.clone(),
            batch: e.batch,
            max_sequences: e.max_sequences,
            ..EvalJob::new(dir)
        };
        evaluate::<B>(&job, device, observer).context(format!("eval stage ({name})"))
    }
}
