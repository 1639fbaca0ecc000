//! `shear data prepare`: corpus → token shards; `shear data bench`: tokenization and loader
//! throughput.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use shear_data::prepare::{prepare, DomainSpec, PrepareRecipe};
use shear_data::{DynamicLoader, PreparedData, Proportions, Split, Tokenizer};

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Tokenize, pack and split corpus files into per-domain token shards with a manifest.
    Prepare(PrepareArgs),
    /// Measure tokenization and dynamic-loader throughput.
    Bench(BenchArgs),
    /// Train a byte-level BPE tokenizer on corpus files (writes tokenizer.json and
    /// tokenizer_config.json).
    Tokenizer(TokenizerArgs),
}

#[derive(clap::Args, Debug)]
pub struct TokenizerArgs {
    /// Corpus files or folders (as `data prepare` reads them).
    #[arg(required = true)]
    pub corpus: Vec<PathBuf>,
    /// Vocabulary size, special tokens and the 256 byte symbols included.
    #[arg(long, default_value_t = 4096)]
    pub vocab: usize,
    /// A merge needs at least this many occurrences.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// JSONL field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PrepareArgs {
    /// TOML recipe whose `[data]` table (or the whole file) names domains and split settings.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// A domain: NAME=PATH[,PATH...] (files or folders; repeatable). Adds to the recipe's.
    #[arg(long = "domain", value_name = "NAME=PATHS")]
    pub domains: Vec<String>,
    /// tokenizer.json, or a model directory / hub id holding one.
    #[arg(long)]
    pub tokenizer: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Eval sequences per domain.
    #[arg(long)]
    pub eval_sequences: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// JSONL field holding the text.
    #[arg(long)]
    pub text_field: Option<String>,
    /// Total prune-split tokens, shared by --proportions.
    #[arg(long)]
    pub prune_tokens: Option<u64>,
    /// Total train-split tokens, shared by --proportions.
    #[arg(long)]
    pub train_tokens: Option<u64>,
    /// Without --prune-tokens: the fraction of each domain's non-eval tokens for pruning.
    #[arg(long)]
    pub prune_fraction: Option<f64>,
    /// redpajama | uniform | tokens | auto | NAME=W,NAME=W,...
    #[arg(long)]
    pub proportions: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Prepared data folder (from `data prepare`) for the loader benchmark.
    #[arg(long)]
    pub data: PathBuf,
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Batches to draw (the loader runs this many times per measurement).
    #[arg(long, default_value_t = 2000)]
    pub batches: usize,
    /// Corpus files to tokenize for the tokenization figure (JSONL/TXT, as `data prepare`
    /// reads them), with the tokenizer given by --tokenizer.
    #[arg(long)]
    pub corpus: Vec<PathBuf>,
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Repeat each measurement this many times and report the median.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

pub fn run<B: Backend>(cmd: Command, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    match cmd {
        Command::Prepare(a) => run_prepare(a, offline),
        Command::Bench(a) => run_bench::<B>(a, offline, device),
        Command::Tokenizer(a) => run_tokenizer(a),
    }
}

fn run_tokenizer(a: TokenizerArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut docs = Vec::new();
    for file in shear_data::corpus::collect_files(&a.corpus)? {
        docs.extend(shear_data::corpus::read_documents(
            &file.path,
            &a.text_field,
        )?);
    }
    if docs.iter().all(|d| d.trim().is_empty()) {
        anyhow::bail!(
            "{}: no text to train a tokenizer on",
            a.corpus
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if a.min_frequency == 0 {
        anyhow::bail!("--min-frequency 0: must be positive");
    }
    let tokenizer = shear_data::bpe::train_bpe(&docs, a.vocab, a.min_frequency)?;
    shear_data::bpe::save_tokenizer(&tokenizer, &a.out)?;
    println!(
        "trained a {}-token byte-level BPE on {} documents in {:.1} s -> {}",
        tokenizer.get_vocab_size(true),
        docs.len(),
        started.elapsed().as_secs_f64(),
        a.out.join("tokenizer.json").display()
    );
    Ok(())
}

/// `--tokenizer`: a tokenizer.json file, a directory holding one, or a hub id.
fn load_tokenizer(arg: &str, offline: bool) -> anyhow::Result<Tokenizer> {
    let path = Path::new(arg);
    let path = if path.exists() {
        path.to_path_buf()
    } else {
        super::resolve(arg, offline)?
    };
    Ok(Tokenizer::from_file(&path)?)
}

fn run_prepare(a: PrepareArgs, offline: bool) -> anyhow::Result<()> {
    let mut recipe = match &a.recipe {
        Some(p) => PrepareRecipe::from_toml_file(p)?,
        None => PrepareRecipe::new(vec![]),
    };
    for d in &a.domains {
        let (name, paths) = d
            .split_once('=')
            .with_context(|| format!("--domain {d}: expected NAME=PATH[,PATH...]"))?;
        recipe.domains.push(DomainSpec {
            name: name.to_string(),
            paths: paths.split(',').map(PathBuf::from).collect(),
        });
    }
    if recipe.domains.is_empty() {
        bail!("no domains: give --recipe or --domain NAME=PATHS");
    }
    if let Some(v) = a.seq_len {
        recipe.seq_len = v;
    }
    if let Some(v) = a.eval_sequences {
        recipe.eval_sequences = v;
    }
    if let Some(v) = a.seed {
        recipe.seed = v;
    }
    if let Some(v) = a.text_field {
        recipe.text_field = v;
    }
    if a.prune_tokens.is_some() {
        recipe.prune_tokens = a.prune_tokens;
    }
    if a.train_tokens.is_some() {
        recipe.train_tokens = a.train_tokens;
    }
    if let Some(v) = a.prune_fraction {
        recipe.prune_fraction = v;
    }
    if let Some(p) = &a.proportions {
        recipe.proportions = p.parse::<Proportions>()?;
    }
    let tokenizer = load_tokenizer(&a.tokenizer, offline)?;
    recipe.validate()?;
    let _lock = shear_pipeline::out::create_locked(&a.out)?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {pos} tokens ({per_sec})")
            .expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let report = prepare(&recipe, &tokenizer, &a.out, &mut |p| {
        bar.set_message(format!("tokenizing {}", p.domain));
        bar.set_position(p.tokens);
    })?;
    bar.finish_and_clear();
    if report.up_to_date {
        println!(
            "{}: up to date (same inputs, tokenizer and settings)",
            a.out.display()
        );
        return Ok(());
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let m = &report.manifest;
    println!(
        "{:<16} {:>10} {:>14} {:>8} {:>8} {:>8}",
        "domain", "documents", "tokens", "eval", "prune", "train"
    );
    for d in &m.domains {
        let n = |s: Split| d.splits.get(&s).map_or(0, |i| i.sequences);
        println!(
            "{:<16} {:>10} {:>14} {:>8} {:>8} {:>8}",
            d.name,
            d.documents,
            d.tokens,
            n(Split::Eval),
            n(Split::Prune),
            n(Split::Train)
        );
    }
    println!(
        "{} tokens in {:.2} s: {:.0} tokens/s on {} threads; sequences of {} tokens ({:?}) -> {}",
        report.tokens,
        report.tokenize_seconds,
        report.tokens_per_second(),
        rayon::current_num_threads(),
        m.seq_len,
        m.token_width,
        a.out.display()
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run_bench<B: Backend>(a: BenchArgs, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    for (name, v) in [
        ("--batch", a.batch),
        ("--batches", a.batches),
        ("--repeats", a.repeats),
    ] {
        if v == 0 {
            bail!("{name} 0: must be positive");
        }
    }
    if !a.corpus.is_empty() {
        let tok = a
            .tokenizer
            .as_deref()
            .context("--corpus needs --tokenizer")?;
        let tokenizer = load_tokenizer(tok, offline)?;
        let eos = tokenizer.eos_id();
        let mut docs = Vec::new();
        for f in &a.corpus {
            docs.extend(shear_data::corpus::read_documents(f, "text")?);
        }
        let mut rates = Vec::new();
        let mut tokens = 0;
        for _ in 0..a.repeats {
            let t = Instant::now();
            let ids = tokenizer.encode_documents(&docs, eos)?;
            tokens = ids.iter().map(Vec::len).sum::<usize>();
            rates.push(tokens as f64 / t.elapsed().as_secs_f64());
        }
        println!(
            "tokenization: {:.0} tokens/s (median of {}; {} documents, {} tokens, {} threads)",
            median(rates),
            a.repeats,
            docs.len(),
            tokens,
            rayon::current_num_threads()
        );
    }
    let data = PreparedData::open(&a.data)?;
    let domains = data.domains();
    let shards = data.shards(Split::Prune)?;
    let sizes: Vec<u64> = shards.iter().map(|s| s.len() as u64).collect();
    let weights = Proportions::Tokens.resolve(&domains, &sizes)?;
    let seq = data.manifest.seq_len;
    let mut rates = Vec::new();
    for r in 0..a.repeats {
        let mut loader = DynamicLoader::new(
            domains.clone(),
            data.shards(Split::Prune)?,
            weights.clone(),
            a.batch,
            r as u64,
        )?;
        let t = Instant::now();
        for _ in 0..a.batches {
            let b = loader.next_batch::<B>(device);
            std::hint::black_box(b);
        }
        rates.push((a.batches * a.batch * seq) as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "loader: {:.0} tokens/s (median of {}; batches of {} x {} tokens, as tensors on the device)",
        median(rates),
        a.repeats,
        a.batch,
        seq
    );
    Ok(())
}
