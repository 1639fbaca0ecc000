//! One-shot importance pruning (docs/algorithm.md §15): calibration batches from the prune split
//! (or a token stream) through the source, the importance scores (shear_model::importance), the
//! target shape cut from them, then materialized. Writes `OUT/masks.safetensors` (deterministic
//! masks, as `shear materialize` reads them), `OUT/importance.json` (the scores and what they
//! cost) and `OUT/model/` (the pruned Hugging Face checkpoint). It takes seconds, so there is
//! nothing to resume: a second run recomputes it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_data::Split;
use shear_model::importance::ImportanceScores;
use shear_model::{Dtype, LlamaConfig, PruneModules, SafetensorsSource, TargetShape};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, Result};
use crate::feed::{DataOptions, Feed, LoaderSpec};
use crate::stage::{save_with_tokenizer, AD};

/// How a source is pruned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum PruneMethod {
    /// Hard-concrete masks learned under the Lagrangian, with the weights (the paper's).
    #[default]
    Learned,
    /// One-shot importance scores from calibration batches, then the cut (Minitron's).
    Importance,
    /// One-shot structured Optimal Brain Surgeon: heads and FFN channels ranked by greedy
    /// removal with the output projections refitted, then refitted to the cut by least
    /// squares on the calibration activations (docs/algorithm.md §15.1).
    Obs,
}

impl PruneMethod {
    /// Whether the method is a one-shot cut from calibration batches (no steps, no
    /// checkpoints).
    pub fn is_one_shot(self) -> bool {
        self != PruneMethod::Learned
    }

    /// Its name in messages: `learned`, `importance`, `structured OBS`.
    pub fn label(self) -> &'static str {
        match self {
            PruneMethod::Learned => "learned",
            PruneMethod::Importance => "importance",
            PruneMethod::Obs => "structured OBS",
        }
    }
}

/// An importance-pruning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportanceJob {
    /// The source model directory.
    pub source: PathBuf,
    pub target: TargetShape,
    /// The dimensions cut (the others keep the source's size).
    pub prune: PruneModules,
    pub data: DataOptions,
    /// Calibration batches of `batch` sequences.
    pub batches: usize,
    pub batch: usize,
    /// Seed of the calibration draw.
    pub seed: u64,
    pub out: PathBuf,
    /// Storage dtype of the pruned model (default: the source's).
    pub dtype: Option<Dtype>,
    /// Structured OBS ranking and refit of heads and FFN channels ([`PruneMethod::Obs`])
    /// instead of magnitude scores.
    #[serde(default)]
    pub obs: bool,
}

/// `OUT/importance.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportanceReport {
    pub target: TargetShape,
    pub batches: usize,
    pub tokens: usize,
    /// Wall time of the calibration and the cut, without loading and saving.
    pub seconds: f64,
    /// The magnitude scores (§15).
    pub scores: ImportanceScores,
    /// With structured OBS: the scores the cut used (heads and FFN channels ranked by greedy
    /// removal, §15.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obs: Option<ImportanceScores>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct ImportanceOutcome {
    pub model_dir: PathBuf,
    pub report: ImportanceReport,
}

/// Runs `job` (see the module documentation).
pub fn importance<B: Backend>(
    job: &ImportanceJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<ImportanceOutcome> {
    let config = LlamaConfig::from_file(&job.source)?;
    if let Err(e) = job.target.validate(&config, job.prune) {
        return invalid!("target ({}): {e}", job.target);
    }
    if job.batches == 0 || job.batch == 0 {
        return invalid!(
            "calibration: {} batches of {} sequences: both must be positive",
            job.batches,
            job.batch
        );
    }
    let source = SafetensorsSource::open(&job.source)?;
    source.check_finite()?;
    let dtype = job.dtype.unwrap_or(source.stored_dtype());
    let (feed, warning) = Feed::open(&job.data, &job.source, &config)?;
    if let Some(w) = warning {
        observer.event(Event::Message(&format!("warning: {w}")));
    }
    let spec = LoaderSpec::new(
        Split::Prune,
        job.batch,
        1,
        job.batches,
        job.seed,
        job.batches + 1,
        false,
    );
    let domains = match &feed {
        Feed::Prepared(d) => d.domains().len(),
        Feed::Stream(..) => 1,
    };
    let mut batches = feed.source::<AD<B>>(&job.data, &spec, vec![0.0; domains], device)?;
    observer.event(Event::Busy(&format!("loading {}", job.source.display())));
    let model = shear_model::load_llama::<B>(&job.source, device)
        .context(format!("cannot load model {}", job.source.display()))?;

    let start = Instant::now();
    let mut scores = match job.obs {
        true => ImportanceScores::with_grams(&config),
        false => ImportanceScores::new(&config),
    };
    for b in 0..job.batches {
        let ids = batches.batch(b, 0)?.inner();
        scores.accumulate(&model, ids);
        observer.event(Event::Busy(&format!(
            "calibration batch {}/{}",
            b + 1,
            job.batches
        )));
    }
    let (masks, model, obs) = match job.obs {
        false => {
            let masks = scores.masks::<B>(&config, &job.target, job.prune, device)?;
            (masks, model, None)
        }
        true => {
            observer.event(Event::Busy("ranking by structured OBS"));
            let ranked = scores.obs(&model, &job.target, job.prune)?;
            let masks = ranked.masks::<B>(&config, &job.target, job.prune, device)?;
            observer.event(Event::Busy("refitting the output projections"));
            let model = scores.refit(&model, &masks)?;
            (masks, model, Some(ranked))
        }
    };
    let seconds = start.elapsed().as_secs_f64();

    std::fs::create_dir_all(&job.out).map_err(shear_io::IoError::at(&job.out))?;
    masks.save(&job.out.join("masks.safetensors"))?;
    let pruned = shear_model::materialize(&model, &masks, device)?;
    let model_dir = job.out.join("model");
    save_with_tokenizer(&pruned, &model_dir, dtype, &job.source)?;
    let report = ImportanceReport {
        target: job.target,
        batches: job.batches,
        tokens: scores.tokens,
        seconds,
        scores: ImportanceScores {
            grams: None,
            ..scores
        },
        obs,
    };
    let text = serde_json::to_string_pretty(&report).expect("serialises");
    write(&job.out.join("importance.json"), &text)?;
    Ok(ImportanceOutcome { model_dir, report })
}

fn write(path: &Path, text: &str) -> Result<()> {
    shear_io::write_atomic(path, text.as_bytes())
        .context(format!("cannot write {}", path.display()))
}
