//! The continued pre-training stage (docs/algorithm.md §7) as a function of a typed job: a
//! model (or a random one of its shape) trained over a prepared folder's train split with
//! dynamic batch loading, or a token stream. Writes `OUT/train_log.jsonl`,
//! `OUT/checkpoints/step-N/`, `OUT/loader_state.json` and `OUT/model/`.

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_data::{ReferenceLoss, Split, UpdateRule};
use shear_model::precision::Compute;
use shear_model::{Dtype, Llama, LlamaConfig, RandomInit, SafetensorsSource};
use shear_train::driver::Stepper;
use shear_train::trainer::{TrainConfig, Trainer};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, Result};
use crate::feed::{canonical, DataOptions, Feed};
use crate::prune::save_with_tokenizer;
use crate::reference::reference_losses;
use crate::stage::{run_loop, start, Resume};

/// Where the weights start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The model's own weights (continued pre-training).
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
    /// Sequences per micro-batch.
    pub batch: usize,
    #[serde(flatten)]
    pub data: DataOptions,
    /// The teacher of distillation (`config.distill` says how).
    pub distill_from: Option<PathBuf>,
    pub precision: Compute,
}

/// A training run to do.
#[derive(Clone, Debug)]
pub struct TrainJob {
    pub settings: TrainSettings,
    pub out: PathBuf,
    /// Checkpoint every this many steps (0: only when stopping early).
    pub save_every: usize,
    /// Stop after this many steps in total (the schedule still follows `config.steps`).
    pub stop_after: Option<usize>,
    pub resume: Resume,
    /// Storage dtype of the trained model (default: the model's; f32 from random weights).
    pub dtype: Option<Dtype>,
}

impl TrainJob {
    /// Trains `model` over `data` into `out`, 4 sequences per micro-batch.
    pub fn new(
        model: impl Into<PathBuf>,
        config: TrainConfig,
        data: DataOptions,
        out: impl Into<PathBuf>,
    ) -> Self {
        TrainJob {
            settings: TrainSettings {
                model: model.into(),
                init: Init::Weights,
                config,
                batch: 4,
                data,
                distill_from: None,
                precision: Compute::F32,
            },
            out: out.into(),
            save_every: 0,
            stop_after: None,
            resume: Resume::Fresh,
            dtype: None,
        }
    }
}

/// What a training run produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// Steps done (less than `total` when stopped early).
    pub steps: usize,
    /// Steps of the run.
    pub total: usize,
    pub finished: bool,
    /// The trained model's directory (when finished).
    pub model_dir: Option<PathBuf>,
}

/// Runs `job` (see the module documentation).
pub fn train<B: Backend>(
    job: &TrainJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<TrainOutcome> {
    type AD<B> = Autodiff<B>;
    let _precision = shear_model::precision::autocast(job.settings.precision);
    let model_dir = canonical(&job.settings.model);
    let config = LlamaConfig::from_file(&model_dir)?;
    job.settings.config.validate()?;
    let requested = TrainSettings {
        model: model_dir.clone(),
        data: job.settings.data.clone().canonical(),
        distill_from: job.settings.distill_from.as_deref().map(canonical),
        ..job.settings.clone()
    };
    let begin = start(&job.out, requested, &job.resume)?;
    let s = begin.settings;
    s.config.validate()?;
    if s.config.distill.is_some() != s.distill_from.is_some() {
        return invalid!("distillation needs both a teacher (distill_from) and its settings");
    }
    let dtype = match (job.dtype, s.init) {
        (Some(d), _) => d,
        (None, Init::Random) => Dtype::F32,
        (None, Init::Weights) => SafetensorsSource::open(&model_dir)?.stored_dtype(),
    };
    let (feed, warning) = Feed::open(&s.data, &model_dir, &config)?;
    if let Some(w) = warning {
        observer.event(Event::Message(&format!("warning: {w}")));
    }
    // The initial weights can be refused: before any model is loaded or evaluated.
    feed.initial_weights(&s.data, Split::Train)?;
    let dynamic = matches!(feed, Feed::Prepared(_)) && s.data.update_rule != UpdateRule::Constant;
    if dynamic && s.data.reference == ReferenceLoss::Source && s.data.reference_model.is_none() {
        return invalid!(
            "reference `source` needs the source model's directory (--reference-model DIR, or \
             reference_model): the model being trained is no reference for itself"
        );
    }
    let teacher = match &s.distill_from {
        Some(t) => {
            let tconf = LlamaConfig::from_file(t)?;
            if tconf.vocab_size != config.vocab_size {
                return invalid!(
                    "teacher {}: vocabulary {} differs from the student's {}",
                    t.display(),
                    tconf.vocab_size,
                    config.vocab_size
                );
            }
            Some(
                shear_model::load_llama::<B>(t, device)
                    .context(format!("cannot load teacher {}", t.display()))?,
            )
        }
        None => None,
    };
    std::fs::create_dir_all(&job.out).map_err(shear_io::IoError::at(&job.out))?;
    let n_params = config.param_counts().total() as f64;
    let reference =
        reference_losses::<B>(&feed, &s.data, n_params, &model_dir, None, device, observer)?;
    let mut source = feed.source::<AD<B>>(
        &s.data,
        Split::Train,
        s.batch,
        s.config.seed,
        400,
        true,
        reference,
        device,
    )?;
    let mut trainer = match begin.from {
        Some(from) => {
            let t = Trainer::<AD<B>>::load(
                &from.dir,
                s.config.clone(),
                from.step,
                from.loop_state,
                teacher,
                device,
            )?;
            if let Some(state) = from.loader {
                source.restore(state)?;
            }
            observer.event(Event::Message(&format!(
                "resuming from {} (step {})",
                from.dir.display(),
                from.step
            )));
            t
        }
        None => {
            observer.event(Event::Busy(&format!("loading {}", model_dir.display())));
            let model: Llama<AD<B>> = match s.init {
                Init::Weights => shear_model::load_llama(&model_dir, device)
                    .context(format!("cannot load model {}", model_dir.display()))?,
                Init::Random => {
                    <AD<B> as Backend>::seed(device, s.config.seed);
                    Llama::from_source(&config, &mut RandomInit::default(), device)?
                }
            };
            Trainer::new(model, s.config.clone(), teacher)
        }
    };
    let steps = s.config.steps;
    let until = job.stop_after.unwrap_or(steps).min(steps);
    run_loop(
        &mut trainer,
        source.as_mut(),
        &job.out,
        "train_log.jsonl",
        &s,
        job.save_every,
        until,
        "training",
        observer,
    )?;
    if let Some(state) = source.state() {
        shear_io::write_json_atomic(&job.out.join("loader_state.json"), &state)?;
    }
    if trainer.done() < steps {
        return Ok(TrainOutcome {
            steps: trainer.done(),
            total: steps,
            finished: false,
            model_dir: None,
        });
    }
    let out_model = job.out.join("model");
    save_with_tokenizer(&trainer.inference_model(), &out_model, dtype, &model_dir)?;
    Ok(TrainOutcome {
        steps,
        total: steps,
        finished: true,
        model_dir: Some(out_model),
    })
}
