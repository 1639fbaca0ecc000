//! Evaluation: per-domain token-averaged loss and perplexity on a prepared data split, and
//! zero-shot multiple-choice task scores. Inputs are read and checked before the model loads.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::ElementConversion;
use serde::{Deserialize, Serialize};
use shear_data::{Split, Tokenizer};
use shear_model::{next_token_loss, LlamaConfig};
use shear_train::eval::{eval_domains, score_task, TaskScore};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, Result};
use crate::feed::open_prepared;
use crate::summary::{ModelMetrics, TextLoss};

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
    /// Text files, each scored as one sequence: `.txt` tokenized with the model's tokenizer (BOS
    /// as it says), other files token ids.
    #[serde(default)]
    pub texts: Vec<PathBuf>,
    /// Writes the logits of the first text here (safetensors: `input_ids`, `logits`), to
    /// compare with another implementation.
    #[serde(default)]
    pub logits_out: Option<PathBuf>,
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
            texts: vec![],
            logits_out: None,
        }
    }
}

/// Runs `job`.
pub fn evaluate<B: Backend>(
    job: &EvalJob,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<ModelMetrics> {
    if job.batch == 0 {
        return invalid!("--batch 0: the eval batch must be positive");
    }
    if job.max_sequences == Some(0) {
        return invalid!("--max-sequences 0: must be positive (leave it out for all)");
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
    let texts = read_texts(&job.texts, dir, &config)?;
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
    let tasks: Vec<TaskScore> = tasks
        .iter()
        .map(|(name, items)| score_task(&model, name, items))
        .collect();
    if let Some(t) = tasks
        .iter()
        .find(|t| t.logliks.iter().flatten().any(|l| !l.is_finite()))
    {
        return invalid!(
            "{}: a log-likelihood of task `{}` is not finite (non-finite weights?)",
            dir.display(),
            t.task
        );
    }
    let mut text_losses = Vec::new();
    for (i, (file, ids)) in texts.iter().enumerate() {
        let n = ids.len();
        let input = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [1, n]),
            device,
        );
        let logits = model.forward(input.clone());
        let loss: f64 = next_token_loss(logits.clone(), input.clone())
            .into_scalar()
            .elem::<f64>();
        if !loss.is_finite() {
            return invalid!(
                "{}: the loss of {} is {loss} (non-finite weights?)",
                dir.display(),
                file.display()
            );
        }
        if let (0, Some(out)) = (i, &job.logits_out) {
            write_logits(out, ids, logits)?;
        }
        text_losses.push(TextLoss {
            file: file.clone(),
            tokens: n - 1,
            loss,
            perplexity: loss.exp(),
        });
    }
    observer.event(Event::Finished);
    Ok(ModelMetrics {
        params: config.param_counts().total(),
        domains,
        tasks,
        texts: text_losses,
    })
}

/// Reads the text files: a `.txt` file is tokenized with the model's tokenizer (BOS as it says,
/// no EOS appended), any other file holds token ids (whitespace or comma separated). At least
/// two tokens each, every id in the vocabulary.
fn read_texts(
    files: &[PathBuf],
    model_dir: &Path,
    config: &LlamaConfig,
) -> Result<Vec<(PathBuf, Vec<u32>)>> {
    let mut out = Vec::new();
    for path in files {
        let ids = if path.extension().is_some_and(|e| e == "txt") {
            let tok = Tokenizer::from_file(model_dir).context(format!(
                "{} needs the tokenizer of {}",
                path.display(),
                model_dir.display()
            ))?;
            let text = std::fs::read_to_string(path).map_err(shear_io::IoError::at(path))?;
            tok.encode(&text, true)?
        } else {
            shear_data::stream::TokenStream::from_file(path, None)?.into_tokens()
        };
        if ids.len() < 2 {
            return invalid!("{}: fewer than 2 tokens", path.display());
        }
        if let Some(t) = ids.iter().find(|&&t| t as usize >= config.vocab_size) {
            return invalid!(
                "{}: token id {t} is outside the model's vocabulary (size {})",
                path.display(),
                config.vocab_size
            );
        }
        out.push((path.clone(), ids));
    }
    Ok(out)
}

/// `input_ids` `[1, n]` and `logits` `[1, n, V]` (f32) as a safetensors file.
fn write_logits<B: Backend>(path: &Path, ids: &[u32], logits: Tensor<B, 3>) -> Result<()> {
    let dims = logits.dims();
    let values: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data after convert");
    let ids: Vec<u8> = ids.iter().flat_map(|&t| (t as i64).to_le_bytes()).collect();
    let logits: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    use safetensors::tensor::TensorView;
    let tensors = [
        (
            "input_ids",
            TensorView::new(safetensors::Dtype::I64, vec![1, ids.len() / 8], &ids),
        ),
        (
            "logits",
            TensorView::new(safetensors::Dtype::F32, dims.to_vec(), &logits),
        ),
    ]
    .map(|(n, v)| (n, v.expect("shape matches data")));
    let bytes = safetensors::serialize(tensors, None)
        .map_err(|e| crate::PipelineError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(shear_io::write_atomic(path, &bytes)?)
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
