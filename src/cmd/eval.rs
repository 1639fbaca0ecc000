//! `shear eval`: per-domain token-averaged loss and perplexity on a prepared data split.

use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use shear_data::{PreparedData, Split, Tokenizer};
use shear_model::LlamaConfig;
use shear_train::eval::eval_domains;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id.
    pub model: String,
    /// Prepared data folder (from `shear data prepare`).
    #[arg(long)]
    pub data: PathBuf,
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
    let config = LlamaConfig::from_file(&dir)?;
    let data = open_data(&args.data, &dir, &config)?;
    let split = match args.split {
        SplitArg::Eval => Split::Eval,
        SplitArg::Prune => Split::Prune,
        SplitArg::Train => Split::Train,
    };
    let shards = data.shards(split)?;
    let bar = super::spinner(format!("loading {}", dir.display()));
    let model = shear_model::load_llama::<B>(&dir, device)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    bar.set_message("evaluating");
    let losses = eval_domains(
        &model,
        None,
        &data.domains(),
        &shards,
        args.batch,
        args.max_sequences,
    );
    bar.finish_and_clear();
    if args.json {
        for l in &losses {
            println!("{}", serde_json::to_string(l)?);
        }
        return Ok(());
    }
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
    Ok(())
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
