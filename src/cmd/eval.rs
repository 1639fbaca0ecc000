//! `shear eval`: per-domain token-averaged loss and perplexity on a prepared data split.

use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use shear_data::{PreparedData, Split, Tokenizer};
use shear_model::LlamaConfig;
use shear_train::eval::{eval_domains, score_task, DomainLoss, TaskScore};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id.
    pub model: String,
    /// Prepared data folder (from `shear data prepare`): per-domain loss and perplexity.
    #[arg(long, required_unless_present = "tasks")]
    pub data: Option<PathBuf>,
    /// Multiple-choice task files (JSONL: context, choices, label), scored zero-shot; needs
    /// the model's tokenizer.json.
    #[arg(long)]
    pub tasks: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = SplitArg::Eval)]
    pub split: SplitArg,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// At most this many sequences per domain.
    #[arg(long)]
    pub max_sequences: Option<usize>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Eval,
    Prune,
    Train,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    let dir = super::resolve(&args.model, offline)?;
    let split = match args.split {
        SplitArg::Eval => Split::Eval,
        SplitArg::Prune => Split::Prune,
        SplitArg::Train => Split::Train,
    };
    let (losses, scores) = evaluate::<B>(
        &dir,
        args.data.as_deref(),
        split,
        &args.tasks,
        args.batch,
        args.max_sequences,
        device,
    )?;
    if args.json {
        for l in &losses {
            println!("{}", serde_json::to_string(l)?);
        }
        for t in &scores {
            println!("{}", serde_json::to_string(t)?);
        }
        return Ok(());
    }
    if !losses.is_empty() {
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>12}",
            "domain", "loss", "ppl", "sequences", "tokens"
        );
        for l in &losses {
            println!(
                "{:<16} {:>10.4} {:>10.3} {:>10} {:>12}",
                l.domain, l.loss, l.perplexity, l.sequences, l.tokens
            );
        }
    }
    if !scores.is_empty() {
        println!(
            "{:<16} {:>8} {:>8} {:>8}",
            "task", "items", "acc", "acc_norm"
        );
        for t in &scores {
            println!(
                "{:<16} {:>8} {:>8.3} {:>8.3}",
                t.task, t.items, t.acc, t.acc_norm
            );
        }
    }
    Ok(())
}

/// Per-domain losses of the model in `dir` on `split` of `data` (when given) and its scores on
/// the multiple-choice `tasks`. Inputs are read and checked before the model is loaded.
pub fn evaluate<B: Backend>(
    dir: &std::path::Path,
    data: Option<&std::path::Path>,
    split: Split,
    task_files: &[PathBuf],
    batch: usize,
    max_sequences: Option<usize>,
    device: &B::Device,
) -> anyhow::Result<(Vec<DomainLoss>, Vec<TaskScore>)> {
    let config = LlamaConfig::from_file(dir)?;
    let data = match data {
        Some(d) => Some(open_data(d, dir, &config)?),
        None => None,
    };
    let shards = match &data {
        Some(d) => d.shards(split)?,
        None => vec![],
    };
    let mut tasks = Vec::new();
    if !task_files.is_empty() {
        let tok = Tokenizer::from_file(dir)
            .with_context(|| format!("--tasks needs the tokenizer of {}", dir.display()))?;
        for path in task_files {
            let items = shear_data::tasks::read_tasks(path)?
                .iter()
                .map(|it| it.tokenize(&tok))
                .collect::<shear_data::Result<Vec<_>>>()?;
            if let Some(t) = items
                .iter()
                .flat_map(|it| it.context.iter().chain(it.continuations.iter().flatten()))
                .find(|&&t| t as usize >= config.vocab_size)
            {
                bail!(
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
    }
    let bar = super::spinner(format!("loading {}", dir.display()));
    let model = shear_model::load_llama::<B>(dir, device)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    bar.set_message("evaluating");
    let losses = match &data {
        Some(d) => eval_domains(&model, None, &d.domains(), &shards, batch, max_sequences),
        None => vec![],
    };
    let scores = tasks
        .iter()
        .map(|(name, items)| score_task(&model, name, items))
        .collect();
    bar.finish_and_clear();
    Ok((losses, scores))
}

/// Opens a prepared data folder for a model: its shards must use the model's tokenizer (when
/// the model has a tokenizer.json to compare with) and fit its vocabulary.
pub fn open_data(
    data: &std::path::Path,
    model_dir: &std::path::Path,
    config: &LlamaConfig,
) -> anyhow::Result<PreparedData> {
    let prepared = PreparedData::open(data)?;
    prepared.check_vocab(config.vocab_size)?;
    match Tokenizer::from_file(model_dir) {
        Ok(t) => prepared.check_tokenizer(&t)?,
        Err(_) => eprintln!(
            "warning: {} has no tokenizer.json; cannot check that {} was made with its tokenizer",
            model_dir.display(),
            data.display()
        ),
    }
    Ok(prepared)
}
