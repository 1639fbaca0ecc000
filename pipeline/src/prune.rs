//! The pruning stage (docs/algorithm.md §4, §5): the source model pruned to a target shape over
//! a prepared data folder (dynamic batch loading over its prune split) or a token stream, then
//! materialized. Writes `OUT/prune_log.jsonl`, `OUT/checkpoints/step-N/`,
//! `OUT/masks.safetensors`, `OUT/loader_state.json`, `OUT/checkpoint/` (the full-size model with
//! its trained weights) and `OUT/model/` (the pruned Hugging Face checkpoint). The skeleton
//! around it is [`crate::runner::run`].

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_data::Split;
use shear_model::precision::Compute;
use shear_model::{Dtype, Llama, LlamaConfig, SafetensorsSource};
use shear_train::execution::Execution;
use shear_train::prune::{PruneConfig, PruneRun};
use shear_train::{Event, Observer};

use crate::error::{Context, Result};
use crate::feed::{canonical, DataOptions, LoaderSpec};
use crate::stage::{save_with_tokenizer, FromCheckpoint, Job, Outcome, Stage, StageSettings, AD};

/// Everything a pruning run records in its checkpoints, and `--resume` restores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneSettings {
    /// The source model directory.
    pub source: PathBuf,
    #[serde(flatten)]
    pub config: PruneConfig,
    #[serde(flatten)]
    pub data: DataOptions,
    /// The teacher of distillation, usually the source itself (`config.hyper.distill_*` say
    /// how; none: no distillation).
    #[serde(default)]
    pub distill_from: Option<PathBuf>,
    pub precision: Compute,
}

/// A pruning run to do.
pub type PruneJob = Job<PruneSettings>;

impl PruneSettings {
    /// Pruning `source` as `config` says over `data`, in f32.
    pub fn new(source: impl Into<PathBuf>, config: PruneConfig, data: DataOptions) -> Self {
        PruneSettings {
            source: source.into(),
            config,
            data,
            distill_from: None,
            precision: Compute::F32,
        }
    }
}

/// Runs `job` (see the module documentation).
pub fn prune<B: Backend>(
    job: &PruneJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    crate::runner::run::<Pruning, B>(job, device, observer)
}

/// The pruning stage.
pub struct Pruning;

/// What the peers of a pruning run share: the source (none when resuming: the weights are the
/// checkpoint's) and the teacher (reloaded on resume, never checkpointed).
pub struct Loaded<B: Backend> {
    model: Option<Llama<AD<B>>>,
    teacher: Option<Llama<B>>,
}

impl StageSettings for PruneSettings {
    fn canonical(&self) -> Self {
        PruneSettings {
            source: canonical(&self.source),
            data: self.data.clone().canonical(),
            distill_from: self.distill_from.as_deref().map(canonical),
            ..self.clone()
        }
    }
    fn model_dir(&self) -> &Path {
        &self.source
    }
    fn data(&self) -> &DataOptions {
        &self.data
    }
    fn precision(&self) -> Compute {
        self.precision
    }
    fn loader(&self) -> LoaderSpec {
        let h = &self.config.hyper;
        LoaderSpec::new(
            Split::Prune,
            h.batch,
            h.grad_accum,
            h.steps,
            h.seed,
            50,
            false,
        )
    }
    fn teacher(&self) -> Option<&Path> {
        let on = self.config.hyper.distill_weight != 0.0;
        self.distill_from.as_deref().filter(|_| on)
    }
    fn check(&self, config: &LlamaConfig) -> Result<()> {
        self.config.validate(config)?;
        match &self.distill_from {
            Some(t) => crate::train::check_teacher(t, config),
            None => Ok(()),
        }
    }
}

impl Stage for Pruning {
    type Settings = PruneSettings;
    type Loaded<B: Backend> = Loaded<B>;
    type Stepper<B: Backend> = PruneRun<AD<B>>;
    const LOG: &'static str = "prune_log.jsonl";
    const PRUNING: bool = true;
    const WHAT: &'static str = "pruning";

    fn stored_dtype(s: &PruneSettings) -> Result<Dtype> {
        Ok(SafetensorsSource::open(&s.source)?.stored_dtype())
    }
    /// A scaling-law reference is read at the target's size.
    fn reference_params(s: &PruneSettings, config: &LlamaConfig) -> f64 {
        s.config.target.config(config).param_counts().total() as f64
    }

    fn load<B: Backend>(
        s: &PruneSettings,
        _config: &LlamaConfig,
        fresh: bool,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<Loaded<B>> {
        let model = match fresh {
            true => {
                observer.event(Event::Busy(&format!("loading {}", s.source.display())));
                let model = shear_model::load_llama::<AD<B>>(&s.source, device)
                    .context(format!("cannot load model {}", s.source.display()))?;
                Some(model)
            }
            false => None,
        };
        // At weight 0 no teacher is loaded (the run is the one without it).
        let teacher = match s.teacher() {
            Some(t) => match &model {
                // The frozen source is the model as loaded.
                Some(m) if canonical(t) == canonical(&s.source) => Some(m.valid()),
                _ => Some(crate::train::load_model(t, "teacher", device, observer)?),
            },
            None => None,
        };
        Ok(Loaded { model, teacher })
    }
    fn reference_model<B: Backend>(loaded: &Loaded<B>) -> Option<Llama<B>> {
        loaded.model.as_ref().map(|m| m.valid())
    }
    fn stepper<B: Backend>(
        loaded: &Loaded<B>,
        s: &PruneSettings,
        from: Option<&FromCheckpoint>,
        exec: Execution,
        device: &B::Device,
    ) -> Result<PruneRun<AD<B>>> {
        let config = s.config.clone();
        let run = match (from, &loaded.model) {
            (Some(f), _) => PruneRun::load(&f.dir, config, f.step, f.loop_state.clone(), device)?,
            (None, Some(model)) => PruneRun::new(model.clone().fork(device), config),
            (None, None) => unreachable!("a fresh run loads the source"),
        };
        let teacher = loaded.teacher.clone().map(|t| t.fork(device));
        Ok(run.with_teacher(teacher).with_execution(exec))
    }

    /// The masks (and multipliers) are written even when the run stops early.
    fn after_loop<B: Backend>(run: &PruneRun<AD<B>>, out: &Path) -> Result<()> {
        Ok(run.save_masks(&out.join("masks.safetensors"))?)
    }

    fn finish<B: Backend>(
        run: &PruneRun<AD<B>>,
        s: &PruneSettings,
        out: &Path,
        dtype: Dtype,
    ) -> Result<PathBuf> {
        // The full-size model with its trained weights: with masks.safetensors it is the
        // pruning checkpoint (`shear materialize --source OUT/checkpoint --masks ...`).
        let full = out.join("checkpoint");
        save_with_tokenizer(&run.pruner().model.valid(), &full, dtype, &s.source)?;
        let model_dir = out.join("model");
        save_with_tokenizer(&run.finish()?, &model_dir, dtype, &s.source)?;
        Ok(model_dir)
    }
}

/// The shape line printed for a model: `layers 3 hidden 64 heads 2 (kv 2) intermediate 176`.
pub fn shape_line(c: &LlamaConfig) -> String {
    shear_model::TargetShape::of(c).to_string()
}
