//! The continued pre-training stage (docs/algorithm.md §7) as a function of a typed job: a
//! model (or a random one of its shape) trained over a prepared folder's train split with
//! dynamic batch loading, or a token stream. Writes `OUT/train_log.jsonl`,
//! `OUT/checkpoints/step-N/`, `OUT/loader_state.json` and `OUT/model/`.

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_data::{ReferenceLoss, Split, UpdateRule};
use shear_model::precision::Compute;
use shear_model::{Dtype, Llama, LlamaConfig, RandomInit, SafetensorsSource};
use shear_train::peers::Peer;
use shear_train::trainer::{TrainConfig, Trainer};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, Result};
use crate::feed::{canonical, DataOptions, Feed, LoaderPlan};
use crate::prune::save_with_tokenizer;
use crate::reference::reference_losses;
use crate::stage::{check_peers, open_data, resumed, run_loop, run_peers, start, Job, Outcome};

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
pub type TrainJob = Job<TrainSettings>;

impl TrainJob {
    /// Trains `model` over `data` into `out`, 4 sequences per micro-batch.
    pub fn new(
        model: impl Into<PathBuf>,
        config: TrainConfig,
        data: DataOptions,
        out: impl Into<PathBuf>,
    ) -> Self {
        let settings = TrainSettings {
            model: model.into(),
            init: Init::Weights,
            config,
            batch: 4,
            data,
            distill_from: None,
            precision: Compute::F32,
        };
        Job::with_settings(settings, out.into())
    }
}

/// Runs `job` (see the module documentation).
pub fn train<B: Backend>(
    job: &TrainJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
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
    let begin = start(job, requested, observer)?;
    let s = begin.settings;
    s.config.validate()?;
    check_peers(&job.topology, s.batch)?;
    if s.config.distill.is_some() != s.distill_from.is_some() {
        return invalid!("distillation needs both a teacher (distill_from) and its settings");
    }
    if s.init == Init::Weights {
        // Non-finite weights are refused before the data and the reference losses.
        SafetensorsSource::open(&model_dir)?.check_finite()?;
    }
    let dtype = match (job.dtype, s.init) {
        (Some(d), _) => d,
        (None, Init::Random) => Dtype::F32,
        (None, Init::Weights) => SafetensorsSource::open(&model_dir)?.stored_dtype(),
    };
    let feed = open_data(
        &s.data,
        &model_dir,
        &config,
        Split::Train,
        &job.out,
        observer,
    )?;
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
    let n_params = config.param_counts().total() as f64;
    let reference =
        reference_losses::<B>(&feed, &s.data, n_params, &model_dir, None, device, observer)?;
    let plan = LoaderPlan {
        split: Split::Train,
        batch: s.batch,
        grad_accum: s.config.grad_accum,
        steps: s.config.steps,
        seed: s.config.seed,
        default_every: 400,
        eval_first: true,
        peer: Peer::solo(),
    };
    let from = begin.from;
    let model: Option<Llama<AD<B>>> = match (&from, s.init) {
        (Some(_), _) => None,
        (None, Init::Weights) => {
            observer.event(Event::Busy(&format!("loading {}", model_dir.display())));
            Some(
                shear_model::load_llama(&model_dir, device)
                    .context(format!("cannot load model {}", model_dir.display()))?,
            )
        }
        (None, Init::Random) => {
            <AD<B> as Backend>::seed(device, s.config.seed);
            Some(Llama::from_source(
                &config,
                &mut RandomInit::default(),
                device,
            )?)
        }
    };
    // One trainer per data-parallel peer; peer 0's is kept for the outputs.
    let peer_run = |peer: Peer, device: &B::Device, observer: &mut dyn Observer| {
        let _precision = shear_model::precision::autocast(s.precision);
        let plan = LoaderPlan {
            peer: peer.clone(),
            ..plan.clone()
        };
        let mut source = feed.source::<AD<B>>(&s.data, &plan, reference.clone(), device)?;
        let teacher = teacher.clone().map(|t| t.fork(device));
        let trainer = match (&from, &model) {
            (Some(from), _) => {
                resumed(from, source.as_mut(), observer)?;
                let (config, step, state) = (s.config.clone(), from.step, from.loop_state.clone());
                Trainer::<AD<B>>::load(&from.dir, config, step, state, teacher, device)?
            }
            (None, Some(model)) => {
                Trainer::new(model.clone().fork(device), s.config.clone(), teacher)
            }
            (None, None) => unreachable!("a fresh run has its model"),
        };
        let mut trainer = trainer
            .with_workers(job.workers)
            .with_peer(peer.clone())
            .with_recompute(job.recompute);
        let (steps, total) = run_loop(
            &mut trainer,
            source.as_mut(),
            job,
            &s,
            "train_log.jsonl",
            "training",
            &peer,
            device,
            observer,
        )?;
        Ok((steps, total, trainer))
    };
    let (steps, total, trainer) =
        run_peers::<B, _>(&job.topology, s.batch, device, observer, peer_run)?;
    if steps < total {
        return Ok(Outcome {
            steps,
            total,
            model_dir: None,
        });
    }
    let out_model = job.out.join("model");
    save_with_tokenizer(&trainer.inference_model(), &out_model, dtype, &model_dir)?;
    Ok(Outcome {
        steps,
        total,
        model_dir: Some(out_model),
    })
}
