//! The continued pre-training stage (docs/algorithm.md §7): a model (or a random one of its
//! shape) trained over a prepared folder's train split with dynamic batch loading, or a token
//! stream, optionally distilled from a teacher. Writes `OUT/train_log.jsonl`,
//! `OUT/checkpoints/step-N/`, `OUT/loader_state.json` and `OUT/model/`. The skeleton around it
//! is [`crate::runner::run`].

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_data::{PreparedData, ReferenceLoss, Split, UpdateRule};
use shear_model::precision::Compute;
use shear_model::{Dtype, Llama, LlamaConfig, RandomInit, SafetensorsSource};
use shear_train::execution::Execution;
use shear_train::trainer::{TrainConfig, Trainer};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, Result};
use crate::feed::{canonical, DataOptions, LoaderSpec};
use crate::stage::{save_with_tokenizer, FromCheckpoint, Job, Outcome, Stage, StageSettings, AD};

/// Where the weights start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The model's own weights (continued pre-training).
    #[default]
    Weights,
    /// Random weights of the model's shape (a from-scratch baseline).
    Random,
}

/// Everything a training run records in its checkpoints, and `--resume` restores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// The model directory (with `Init::Random`, only its config.json is used).
    pub model: PathBuf,
    pub init: Init,
    #[serde(flatten)]
    pub config: TrainConfig,
    #[serde(flatten)]
    pub data: DataOptions,
    /// The teacher of distillation (`config.distill_*` say how; none: no distillation).
    pub distill_from: Option<PathBuf>,
    pub precision: Compute,
}

impl TrainSettings {
    /// Continued pre-training of `model` as `config` says over `data`, in f32.
    pub fn new(model: impl Into<PathBuf>, config: TrainConfig, data: DataOptions) -> Self {
        TrainSettings {
            model: model.into(),
            init: Init::default(),
            config,
            data,
            distill_from: None,
            precision: Compute::F32,
        }
    }
}

/// A training run to do.
pub type TrainJob = Job<TrainSettings>;

/// Runs `job` (see the module documentation).
pub fn train<B: Backend>(
    job: &TrainJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    crate::runner::run::<Training, B>(job, device, observer)
}

/// What the peers of a training run share: the model to train (none when resuming) and the
/// teacher.
pub struct Loaded<B: Backend> {
    model: Option<Llama<AD<B>>>,
    teacher: Option<Llama<B>>,
}

/// The continued pre-training stage.
pub struct Training;

impl StageSettings for TrainSettings {
    fn canonical(&self) -> Self {
        TrainSettings {
            model: canonical(&self.model),
            data: self.data.clone().canonical(),
            distill_from: self.distill_from.as_deref().map(canonical),
            ..self.clone()
        }
    }
    fn model_dir(&self) -> &Path {
        &self.model
    }
    fn data(&self) -> &DataOptions {
        &self.data
    }
    fn precision(&self) -> Compute {
        self.precision
    }
    fn loader(&self) -> LoaderSpec {
        let c = &self.config;
        LoaderSpec::new(
            Split::Train,
            c.batch,
            c.grad_accum,
            c.steps,
            c.seed,
            400,
            true,
        )
    }
    fn teacher(&self) -> Option<&Path> {
        let on = self.config.distill_weight != 0.0;
        self.distill_from.as_deref().filter(|_| on)
    }
    fn check(&self, config: &LlamaConfig) -> Result<()> {
        self.config.validate()?;
        if self.init == Init::Weights {
            // Non-finite weights are refused before the data and the reference losses.
            SafetensorsSource::open(&self.model)?.check_finite()?;
        }
        let d = &self.data;
        let dynamic =
            PreparedData::is_prepared(&d.data) && d.dynamic.update_rule != UpdateRule::Constant;
        if dynamic && d.dynamic.reference == ReferenceLoss::Source && d.reference_model.is_none() {
            return invalid!(
                "reference `source` needs the source model's directory (--reference-model DIR, \
                 or reference_model): the model being trained is no reference for itself"
            );
        }
        match &self.distill_from {
            Some(t) => check_teacher(t, config),
            None => Ok(()),
        }
    }
}

impl Stage for Training {
    type Settings = TrainSettings;
    type Loaded<B: Backend> = Loaded<B>;
    type Stepper<B: Backend> = Trainer<AD<B>>;
    const LOG: &'static str = "train_log.jsonl";
    const PRUNING: bool = false;
    const WHAT: &'static str = "training";

    fn stored_dtype(s: &TrainSettings) -> Result<Dtype> {
        match s.init {
            Init::Random => Ok(Dtype::F32),
            Init::Weights => Ok(SafetensorsSource::open(&s.model)?.stored_dtype()),
        }
    }
    fn reference_params(_s: &TrainSettings, config: &LlamaConfig) -> f64 {
        config.param_counts().total() as f64
    }

    fn load<B: Backend>(
        s: &TrainSettings,
        config: &LlamaConfig,
        fresh: bool,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<Loaded<B>> {
        // At weight 0 no teacher is loaded (the run is the one without it).
        let teacher = match s.teacher() {
            Some(t) => Some(load_model(t, "teacher", device, observer)?),
            None => None,
        };
        let model = match (fresh, s.init) {
            (false, _) => None,
            (true, Init::Weights) => Some(load_model(&s.model, "model", device, observer)?),
            (true, Init::Random) => {
                <AD<B> as Backend>::seed(device, s.config.seed);
                Some(Llama::from_source(
                    config,
                    &mut RandomInit::default(),
                    device,
                )?)
            }
        };
        Ok(Loaded { model, teacher })
    }
    /// The model being trained is no reference for itself.
    fn reference_model<B: Backend>(_loaded: &Loaded<B>) -> Option<Llama<B>> {
        None
    }
    fn stepper<B: Backend>(
        loaded: &Loaded<B>,
        s: &TrainSettings,
        from: Option<&FromCheckpoint>,
        exec: Execution,
        device: &B::Device,
    ) -> Result<Trainer<AD<B>>> {
        let (config, teacher) = (s.config.clone(), loaded.teacher.clone());
        let teacher = teacher.map(|t| t.fork(device));
        let trainer = match (from, &loaded.model) {
            (Some(f), _) => {
                let state = f.loop_state.clone();
                Trainer::load(&f.dir, config, f.step, state, teacher, device)?
            }
            (None, Some(model)) => Trainer::new(model.clone().fork(device), config, teacher),
            (None, None) => unreachable!("a fresh run has its model"),
        };
        Ok(trainer.with_execution(exec))
    }

    fn finish<B: Backend>(
        trainer: &Trainer<AD<B>>,
        s: &TrainSettings,
        out: &Path,
        dtype: Dtype,
    ) -> Result<PathBuf> {
        let dir = out.join("model");
        save_with_tokenizer(&trainer.inference_model(), &dir, dtype, &s.model)?;
        Ok(dir)
    }
}

/// Refuses a teacher whose vocabulary is not the student's (`config`).
pub(crate) fn check_teacher(teacher: &Path, config: &LlamaConfig) -> Result<()> {
    let vocab = LlamaConfig::from_file(teacher)?.vocab_size;
    if vocab != config.vocab_size {
        return invalid!(
            "teacher {}: vocabulary {vocab} differs from the student's {}",
            teacher.display(),
            config.vocab_size
        );
    }
    Ok(())
}

/// Loads the `what` (model, teacher) in `dir`.
pub(crate) fn load_model<B: Backend>(
    dir: &Path,
    what: &str,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Llama<B>> {
    observer.event(Event::Busy(&format!("loading {}", dir.display())));
    let model = shear_model::load_llama(dir, device)
        .context(format!("cannot load {what} {}", dir.display()))?;
    Ok(model)
}
