//! Evaluation: per-domain token-averaged loss and perplexity on a prepared data split, and
//! zero-shot multiple-choice task scores. Inputs are read and checked before the model loads.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use shear_data::{Split, Tokenizer};
use shear_model::LlamaConfig;
use shear_train::eval::{eval_domains, score_task, DomainLoss, TaskScore};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, Result};
use crate::feed::open_prepared;

/// What to evaluate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalJob {
    pub model: PathBuf,
    /// A prepared data folder: per-domain loss and perplexity on `split`.
    pub data: Option<PathBuf>,
    pub split: Split,
    /// Multiple-choice task files (JSONL: context, choices, label).
    pub tasks: Vec<PathBuf>,
    /// Sequences per batch.
    pub batch: usize,
    /// At most this many sequences per domain.
    pub max_sequences: Option<usize>,
}

impl EvalJob {
    pub fn new(model: impl Into<PathBuf>) -> Self {
        EvalJob {
            model: model.into(),
            data: None,
            split: Split::Eval,
            tasks: vec![],
            batch: 8,
            max_sequences: None,
        }
    }
}

/// A model's evaluation, as run.json holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub params: usize,
    pub domains: Vec<DomainLoss>,
    pub tasks: Vec<TaskScore>,
}

impl ModelMetrics {
    /// Mean of the per-domain losses.
    pub fn mean_loss(&self) -> f64 {
        let n = self.domains.len().max(1) as f64;
        self.domains.iter().map(|d| d.loss).sum::<f64>() / n
    }

    pub fn losses(&self) -> Vec<f64> {
        self.domains.iter().map(|d| d.loss).collect()
    }
}

/// Runs `job`.
pub fn evaluate<B: Backend>(
    job: &EvalJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<ModelMetrics> {
    if job.batch == 0 {
        return invalid!("eval batch must be positive");
    }
    let dir = &job.model;
    let config = LlamaConfig::from_file(dir)?;
    let data = match &job.data {
        Some(d) => {
            let (data, warning) = open_prepared(d, dir, &config)?;
            if let Some(w) = warning {
                observer.event(Event::Message(&format!("warning: {w}")));
            }
            Some(data)
        }
        None => None,
    };
    let shards = match &data {
        Some(d) => d.shards(job.split)?,
        None => vec![],
    };
    if let Some((d, s)) = data.as_ref().and_then(|d| {
        d.domains()
            .into_iter()
            .zip(&shards)
            .find(|(_, s)| s.is_empty())
    }) {
        let _ = s;
        return invalid!(
            "domain `{d}` has no sequences in the {} split of {}",
            job.split.name(),
            job.data.as_deref().unwrap_or(Path::new("?")).display()
        );
    }
    let tasks = read_tasks(&job.tasks, dir, &config)?;
    observer.event(Event::Busy(&format!("loading {}", dir.display())));
    let model = shear_model::load_llama::<B>(dir, device)
        .context(format!("cannot load model {}", dir.display()))?;
    observer.event(Event::Busy("evaluating"));
    let domains = match &data {
        Some(d) => eval_domains(
            &model,
            None,
            &d.domains(),
            &shards,
            job.batch,
            job.max_sequences,
        ),
        None => vec![],
    };
    if let Some(d) = domains.iter().find(|d| !d.loss.is_finite()) {
        return invalid!(
            "{}: the eval loss of domain `{}` is {} (non-finite weights?)",
            dir.display(),
            d.domain,
            d.loss
        );
    }
    let tasks = tasks
        .iter()
        .map(|(name, items)| score_task(&model, name, items))
        .collect();
    observer.event(Event::Finished);
    Ok(ModelMetrics {
        params: config.param_counts().total(),
        domains,
        tasks,
    })
}

type Tasks = Vec<(String, Vec<shear_data::tasks::McTokens>)>;

/// Reads and tokenizes the task files, checking every id against the vocabulary.
fn read_tasks(files: &[PathBuf], model_dir: &Path, config: &LlamaConfig) -> Result<Tasks> {
    if files.is_empty() {
        return Ok(vec![]);
    }
    let tok = Tokenizer::from_file(model_dir).context(format!(
        "tasks need the tokenizer of {}",
        model_dir.display()
    ))?;
    let mut tasks = Vec::new();
    for path in files {
        let items = shear_data::tasks::read_tasks(path)?
            .iter()
            .map(|it| it.tokenize(&tok))
            .collect::<shear_data::Result<Vec<_>>>()?;
        if let Some(t) = items
            .iter()
            .flat_map(|it| it.context.iter().chain(it.continuations.iter().flatten()))
            .find(|&&t| t as usize >= config.vocab_size)
        {
            return invalid!(
                "{}: token id {t} is outside the model's vocabulary (size {})",
                path.display(),
                config.vocab_size
            );
        }
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        tasks.push((name, items));
    }
    Ok(tasks)
}
