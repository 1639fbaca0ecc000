//! The stages of a recipe run, built in one place: what every stage shares (the recipe, the
//! prepared data, the reference losses, how the peers run), the pruning and training jobs made
//! from the recipe's sections, and the completion marker that lets a finished stage be skipped
//! when the run is started again. `run` and `compare` both drive them.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use shear_data::{Proportions, ReferenceLoss, UpdateRule};
use shear_train::execution::Execution;
use shear_train::peers::Topology;
use shear_train::trainer::TrainConfig;
use shear_train::{Event, Observer};

use crate::controls::Checkpointing;
use crate::error::{Context, Result};
use crate::eval::{evaluate, EvalJob};
use crate::feed::{DataOptions, Mixture};
use crate::importance::{importance, ImportanceJob, PruneMethod};
use crate::prune::{prune, PruneSettings};
use crate::recipe::{Recipe, Resolved};
use crate::stage::{Job, Resume};
use crate::summary::{ModelMetrics, StageTiming};
use crate::train::{train, Init, TrainSettings};

/// Marks a finished stage.
const DONE: &str = ".complete";

/// One training stage's settings (continued pre-training, or a from-scratch baseline).
pub(crate) struct TrainStageSpec {
    pub init: Init,
    pub steps: usize,
    pub lr: f64,
    pub warmup: Option<usize>,
    pub proportions: Proportions,
    pub update_rule: UpdateRule,
    /// Distil from the source model.
    pub distill: bool,
}

impl TrainStageSpec {
    /// The recipe's continued pre-training.
    pub(crate) fn continued(recipe: &Recipe, proportions: Proportions, rule: UpdateRule) -> Self {
        let tr = &recipe.train;
        TrainStageSpec {
            init: Init::Weights,
            steps: tr.config.steps,
            lr: tr.config.lr,
            warmup: tr.config.warmup,
            proportions,
            update_rule: rule,
            distill: tr.distill,
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
    pub exec: Execution,
    pub topology: Topology,
    pub stop: Option<Arc<AtomicBool>>,
    pub on_lost: Option<crate::watch::OnLost>,
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

impl Stages<'_> {
    /// A stage's job in `dir`: every setting a recipe stage records is the recipe's, so a
    /// resumed stage whose checkpoint says otherwise is refused.
    fn job<S>(&self, settings: S, dir: &Path, checkpoints: Checkpointing) -> Job<S> {
        Job {
            checkpoints,
            resume: Resume::Newest {
                explicit: vec!["*".into()],
                warn_if_none: false,
            },
            dtype: self.recipe.model.dtype,
            exec: self.exec.clone(),
            topology: self.topology.clone(),
            stop: self.stop.clone(),
            guard: self.recipe.run.guard,
            on_lost: self.on_lost,
            ..Job::new(settings, dir)
        }
    }

    /// A stage's data: the run's prepared folder with `mixture`, the recipe's dynamic batch
    /// loading (with `rule`) and the reference losses all stages share.
    fn data(&self, mixture: Mixture, rule: UpdateRule) -> DataOptions {
        let mut dynamic = self.recipe.dynamic.clone();
        dynamic.update_rule = rule;
        dynamic.reference = self.reference.clone();
        DataOptions {
            mixture,
            dynamic,
            ..DataOptions::new(&self.data_dir)
        }
    }

    /// Tokens of the pruning stage.
    pub(crate) fn prune_tokens(&self) -> u64 {
        let p = &self.recipe.prune;
        let h = &p.hyper;
        match p.method {
            PruneMethod::Learned => (h.steps * h.batch * h.grad_accum * self.seq) as u64,
            // The calibration batches.
            PruneMethod::Importance | PruneMethod::Obs => {
                (p.calibration_batches * h.batch * self.seq) as u64
            }
        }
    }

    /// Tokens of a training stage of `steps` steps.
    pub(crate) fn train_tokens(&self, steps: usize) -> u64 {
        let c = &self.recipe.train.config;
        (steps * c.batch * c.grad_accum * self.seq) as u64
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
        if p.method.is_one_shot() {
            return self.importance::<B>(name, dir, device, observer);
        }
        let settings = PruneSettings {
            source: self.source.clone(),
            config: self.recipe.prune_config(self.resolved.target),
            data: self.data(p.mixture.clone(), rule),
            distill_from: p.distill.then(|| self.source.clone()),
            precision: self.recipe.model.precision,
        };
        let job = self.job(settings, dir, p.checkpoints);
        observer.event(Event::Message(&format!("stage {name}")));
        run_stage(name, dir, self.prune_tokens(), || {
            prune::<B>(&job, device, observer).map(|_| ())
        })
    }

    /// The pruning stage by importance (docs/algorithm.md §15): calibration batches of the
    /// prune split at its initial proportions, then the cut; an empty step log.
    fn importance<B: Backend>(
        &self,
        name: &str,
        dir: &Path,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<StageTiming> {
        let p = &self.recipe.prune;
        let job = ImportanceJob {
            source: self.source.clone(),
            target: self.resolved.target,
            prune: p.hyper.prune,
            data: self.data(p.mixture.clone(), UpdateRule::Constant),
            batches: p.calibration_batches,
            batch: p.hyper.batch,
            seed: p.hyper.seed,
            out: dir.to_path_buf(),
            dtype: self.recipe.model.dtype,
            obs: p.method == PruneMethod::Obs,
        };
        let method = p.method.label();
        observer.event(Event::Message(&format!("stage {name} ({method})")));
        run_stage(name, dir, self.prune_tokens(), || {
            importance::<B>(&job, device, observer)?;
            shear_io::write_atomic(
                &dir.join(<crate::prune::Pruning as crate::stage::Stage>::LOG),
                b"",
            )?;
            Ok(())
        })
    }

    /// Trains `model` into `dir` as `spec` says, unless already done.
    pub(crate) fn train<B: Backend>(
        &self,
        name: &str,
        dir: &Path,
        model: &Path,
        spec: TrainStageSpec,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<StageTiming> {
        let tr = &self.recipe.train;
        let config = TrainConfig {
            steps: spec.steps,
            lr: spec.lr,
            warmup: spec.warmup,
            ..tr.config.clone()
        };
        let mixture = Mixture {
            proportions: spec.proportions,
            ..tr.mixture.clone()
        };
        let settings = TrainSettings {
            model: model.to_path_buf(),
            init: spec.init,
            config,
            data: self.data(mixture, spec.update_rule),
            distill_from: spec.distill.then(|| self.source.clone()),
            precision: self.recipe.model.precision,
        };
        let job = self.job(settings, dir, tr.checkpoints);
        observer.event(Event::Message(&format!("stage {name}")));
        run_stage(name, dir, self.train_tokens(spec.steps), || {
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
