//! `shear eval`: per-domain token-averaged loss and perplexity on a prepared data split, and
//! multiple-choice task scores (`shear_pipeline::eval::evaluate`).

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use shear_data::Split;
use shear_pipeline::eval::{evaluate, EvalJob};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id.
    pub model: String,
    /// Prepared data folder (from `shear data prepare`): per-domain loss and perplexity.
    #[arg(long, required_unless_present_any = ["tasks", "text"])]
    pub data: Option<PathBuf>,
    /// Files scored as one sequence each, loss and perplexity: a .txt file is tokenized with
    /// the model's tokenizer.json (BOS as it says), any other file holds token ids.
    #[arg(long)]
    pub text: Vec<PathBuf>,
    /// Write the logits of the first --text file here (safetensors: input_ids, logits).
    #[arg(long, requires = "text")]
    pub logits_out: Option<PathBuf>,
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
    let job = EvalJob {
        model: super::resolve(&args.model, offline)?,
        data: args.data,
        split: match args.split {
            SplitArg::Eval => Split::Eval,
            SplitArg::Prune => Split::Prune,
            SplitArg::Train => Split::Train,
        },
        tasks: args.tasks,
        batch: args.batch,
        max_sequences: args.max_sequences,
        texts: args.text,
        logits_out: args.logits_out,
    };
    let mut progress = crate::progress::Progress::default();
    let m = evaluate::<B>(&job, device, &mut progress)?;
    drop(progress);
    if args.json {
        for l in &m.domains {
            println!("{}", serde_json::to_string(l)?);
        }
        for t in &m.tasks {
            println!("{}", serde_json::to_string(t)?);
        }
        for t in &m.texts {
            println!("{}", serde_json::to_string(t)?);
        }
        return Ok(());
    }
    for t in &m.texts {
        println!(
            "{}: {} tokens, loss {:.4}, perplexity {:.3}",
            t.file.display(),
            t.tokens,
            t.loss,
            t.perplexity
        );
    }
    if !m.domains.is_empty() {
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>12}",
            "domain", "loss", "ppl", "sequences", "tokens"
        );
        for l in &m.domains {
            println!(
                "{:<16} {:>10.4} {:>10.3} {:>10} {:>12}",
                l.domain, l.loss, l.perplexity, l.sequences, l.tokens
            );
        }
    }
    if !m.tasks.is_empty() {
        println!(
            "{:<16} {:>8} {:>8} {:>8}",
            "task", "items", "acc", "acc_norm"
        );
        for t in &m.tasks {
            println!(
                "{:<16} {:>8} {:>8.3} {:>8.3}",
                t.task, t.items, t.acc, t.acc_norm
            );
        }
    }
    Ok(())
}
