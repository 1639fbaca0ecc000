//! The pruning stage as a function of a typed job: the source model pruned to a target shape
//! over a prepared data folder (dynamic batch loading) or a token stream, then materialized
//! (docs/algorithm.md §4, §5). Writes `OUT/prune_log.jsonl`, `OUT/checkpoints/step-N/`,
//! `OUT/masks.safetensors`, `OUT/loader_state.json`, `OUT/checkpoint/` (the full-size model with
//! its trained weights) and `OUT/model/` (the pruned Hugging Face checkpoint).

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_data::Split;
use shear_model::checkpoint::copy_tokenizer_files;
use shear_model::precision::Compute;
use shear_model::{Dtype, Llama, LlamaConfig, SafetensorsSource, TargetShape};
use shear_train::peers::Peer;
use shear_train::prune::{PruneConfig, PruneRun};
use shear_train::{Event, Observer};

use crate::error::{Context, Result};
use crate::feed::{canonical, DataOptions, LoaderPlan};
use crate::reference::reference_losses;
use crate::stage::{check_peers, open_data, resumed, run_loop, run_peers, start, Job, Outcome};

/// Everything a pruning run records in its checkpoints, and `--resume` restores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneSettings {
    /// The source model directory.
    pub source: PathBuf,
    #[serde(flatten)]
    pub config: PruneConfig,
    /// Sequences per micro-batch (`config.grad_accum` micro-batches per step).
    pub batch: usize,
    #[serde(flatten)]
    pub data: DataOptions,
    pub precision: Compute,
}

/// A pruning run to do.
pub type PruneJob = Job<PruneSettings>;

impl PruneJob {
    /// Prunes `source` to `config.target` over `data`, 4 sequences per micro-batch, into `out`.
    pub fn new(
        source: impl Into<PathBuf>,
        config: PruneConfig,
        data: DataOptions,
        out: impl Into<PathBuf>,
    ) -> Self {
        let settings = PruneSettings {
            source: source.into(),
            config,
            batch: 4,
            data,
            precision: Compute::F32,
        };
        Job::with_settings(settings, out.into())
    }

    pub fn with_batch(mut self, batch: usize) -> Self {
        self.settings.batch = batch;
        self
    }
}

/// Runs `job` (see the module documentation).
pub fn prune<B: Backend>(
    job: &PruneJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    type AD<B> = Autodiff<B>;
    let _precision = shear_model::precision::autocast(job.settings.precision);
    let source_dir = canonical(&job.settings.source);
    let config = LlamaConfig::from_file(&source_dir)?;
    // Everything that can be refused is checked before the model is loaded.
    job.settings.config.validate(&config)?;
    let requested = PruneSettings {
        source: source_dir.clone(),
        data: job.settings.data.clone().canonical(),
        ..job.settings.clone()
    };
    let begin = start(job, requested, observer)?;
    let s = begin.settings;
    s.config.validate(&config)?;
    check_peers(&job.topology, s.batch)?;
    let dtype = match job.dtype {
        Some(d) => d,
        None => SafetensorsSource::open(&source_dir)?.stored_dtype(),
    };
    let feed = open_data(
        &s.data,
        &source_dir,
        &config,
        Split::Prune,
        &job.out,
        observer,
    )?;
    let target_params = s.config.target.config(&config).param_counts().total() as f64;

    observer.event(Event::Busy(&format!("loading {}", source_dir.display())));
    let model = match begin.from {
        // A resumed run's weights come from the checkpoint.
        Some(_) => None,
        None => Some(
            shear_model::load_llama::<AD<B>>(&source_dir, device)
                .context(format!("cannot load model {}", source_dir.display()))?,
        ),
    };
    let reference = reference_losses::<B>(
        &feed,
        &s.data,
        target_params,
        &source_dir,
        model.as_ref().map(|m| {
            use burn::module::AutodiffModule;
            m.valid()
        }),
        device,
        observer,
    )?;
    let plan = LoaderPlan {
        split: Split::Prune,
        batch: s.batch,
        grad_accum: s.config.grad_accum,
        steps: s.config.steps,
        seed: s.config.seed,
        default_every: 50,
        eval_first: false,
        peer: Peer::solo(),
    };
    let from = begin.from;
    // One pruning run per data-parallel peer; peer 0's is kept for the outputs.
    let peer_run = |peer: Peer, device: &B::Device, observer: &mut dyn Observer| {
        let _precision = shear_model::precision::autocast(s.precision);
        let plan = LoaderPlan {
            peer: peer.clone(),
            ..plan.clone()
        };
        let mut source = feed.source::<AD<B>>(&s.data, &plan, reference.clone(), device)?;
        let run = match (&from, &model) {
            (Some(from), _) => {
                resumed(from, source.as_mut(), observer)?;
                let (config, state) = (s.config.clone(), from.loop_state.clone());
                PruneRun::<AD<B>>::load(&from.dir, config, from.step, state, device)?
            }
            (None, Some(model)) => PruneRun::new(model.clone().fork(device), s.config.clone()),
            (None, None) => unreachable!("a fresh run loads the source"),
        };
        let mut run = run
            .with_workers(job.workers)
            .with_peer(peer.clone())
            .with_recompute(job.recompute);
        let (steps, total) = run_loop(
            &mut run,
            source.as_mut(),
            job,
            &s,
            "prune_log.jsonl",
            "pruning",
            &peer,
            device,
            observer,
        )?;
        Ok((steps, total, run))
    };
    let (steps, total, run) =
        run_peers::<B, _>(&job.topology, s.batch, device, observer, peer_run)?;
    run.save_masks(&job.out.join("masks.safetensors"))?;
    if steps < total {
        return Ok(Outcome {
            steps,
            total,
            model_dir: None,
        });
    }
    // The full-size model with its trained weights: with masks.safetensors it is the pruning
    // checkpoint (`shear materialize --source OUT/checkpoint --masks OUT/masks.safetensors`).
    let full = job.out.join("checkpoint");
    {
        use burn::module::AutodiffModule;
        shear_model::save_llama(&run.pruner().model.valid(), &full, dtype)?;
    }
    copy_tokenizer_files(&source_dir, &full)?;
    let model_dir = job.out.join("model");
    save_with_tokenizer(&run.finish()?, &model_dir, dtype, &source_dir)?;
    Ok(Outcome {
        steps,
        total,
        model_dir: Some(model_dir),
    })
}

/// Saves `model` as a Hugging Face checkpoint with the tokenizer files of `tokenizer_from`.
pub fn save_with_tokenizer<B: Backend>(
    model: &Llama<B>,
    dir: &Path,
    dtype: Dtype,
    tokenizer_from: &Path,
) -> Result<()> {
    shear_model::save_llama(model, dir, dtype)?;
    copy_tokenizer_files(tokenizer_from, dir)?;
    Ok(())
}

/// The shape line printed for a model: `layers 3 hidden 64 heads 2 (kv 2) intermediate 176`.
pub fn shape_line(c: &LlamaConfig) -> String {
    TargetShape::of(c).to_string()
}
