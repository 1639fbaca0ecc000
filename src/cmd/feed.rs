//! The training-data options shared by `shear prune` and `shear train`: a prepared data folder
//! (dynamic batch loading) or a single token stream, and how its progress is printed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use shear_data::stream::TokenStream;
use shear_data::{
    DynamicLoader, LoaderEvent, LoaderState, PreparedData, Proportions, ReferenceLoss, Split,
    Tokenizer, UpdateRecord, UpdateRule,
};
use shear_model::{Llama, LlamaConfig};
use shear_train::dynamic::{DynamicBatches, DynamicConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Training data: a prepared data folder (`shear data prepare`; dynamic batch loading over
    /// its prune split for `prune`, its train split for `train`), or one .txt file (tokenized
    /// with the model's tokenizer) or file of token ids (random windows, one domain).
    #[arg(long)]
    pub data: PathBuf,
    /// Tokens per sequence (default: the prepared data's, or 512 for a single file).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Initial domain weights: redpajama | uniform | tokens | auto | NAME=W,... (prepared data).
    #[arg(long, default_value = "auto")]
    pub proportions: String,
    /// Domain-weight update: code (reference code), paper, or constant (static mixture).
    #[arg(long, default_value = "code")]
    pub update_rule: String,
    /// Update the domain weights after every this many steps (SPEC §6.2: 50 when pruning, 400
    /// in continued pre-training).
    #[arg(long)]
    pub update_every: Option<usize>,
    /// Reference losses: source (the source model's eval losses), llama2 (the Llama-2
    /// scaling-law fit of SPEC §6.4, RedPajama domains), NAME=LOSS,..., or a TOML file with
    /// `[reference.values]` or `[reference.scaling]` (NAME = [[params, loss], ...]).
    #[arg(long, default_value = "source")]
    pub reference: String,
    /// Sequences per evaluation batch (dynamic loading).
    #[arg(long, default_value_t = 8)]
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (default: all).
    #[arg(long)]
    pub eval_sequences: Option<usize>,
}

/// Where the batches come from.
pub enum Source {
    /// A prepared data folder: dynamic batch loading.
    Prepared(PreparedData),
    /// One token stream and the sequence length.
    Stream(TokenStream, usize),
}

impl DataArgs {
    /// Opens `--data` for the model in `model_dir` and checks it against the model.
    pub fn open(&self, model_dir: &Path, config: &LlamaConfig) -> anyhow::Result<Source> {
        if self.seq.is_some_and(|s| s < 2) {
            bail!(
                "--seq {}: need at least 2 tokens for a next-token loss",
                self.seq.unwrap_or(0)
            );
        }
        if PreparedData::is_prepared(&self.data) {
            let data = super::eval::open_data(&self.data, model_dir, config)?;
            let seq = data.manifest.seq_len;
            if let Some(s) = self.seq.filter(|&s| s != seq) {
                bail!(
                    "--seq {s}: {} holds sequences of {seq} tokens (omit --seq to use them)",
                    self.data.display()
                );
            }
            return Ok(Source::Prepared(data));
        }
        let tokenizer = Tokenizer::from_file(model_dir).ok();
        let stream = TokenStream::from_file(&self.data, tokenizer.as_ref())
            .with_context(|| format!("--data {}", self.data.display()))?;
        let seq = self.seq.unwrap_or(512);
        if stream.len() < seq {
            bail!(
                "--data {}: {} tokens, fewer than one sequence of --seq {seq}",
                self.data.display(),
                stream.len(),
            );
        }
        if let Some(max) = stream
            .max_token()
            .filter(|&m| m as usize >= config.vocab_size)
        {
            bail!(
                "--data {}: token id {max} is outside the model's vocabulary (size {})",
                self.data.display(),
                config.vocab_size
            );
        }
        Ok(Source::Stream(stream, seq))
    }

    /// Dynamic batch loading over `split` of a prepared folder: initial weights, update rule,
    /// reference losses (for `source`, NaN until [`DataArgs::fill_source_reference`]); every
    /// refusal happens here, before a model is loaded. `n_params` is the total parameter count
    /// the scaling-law reference is evaluated at.
    #[allow(clippy::too_many_arguments)]
    pub fn dynamic<B: AutodiffBackend>(
        &self,
        data: &PreparedData,
        split: Split,
        n_params: f64,
        batch: usize,
        seed: u64,
        default_every: usize,
        device: &B::Device,
    ) -> anyhow::Result<DynamicBatches<B>> {
        let seq = data.manifest.seq_len;
        let domains = data.domains();
        let shards = data.shards(split)?;
        let tokens: Vec<u64> = shards.iter().map(|s| (s.len() * seq) as u64).collect();
        let proportions: Proportions = self.proportions.parse().context("--proportions")?;
        let weights = proportions
            .resolve(&domains, &tokens)
            .with_context(|| format!("--proportions {}", self.proportions))?;
        let rule: UpdateRule = self.update_rule.parse().context("--update-rule")?;
        let reference = ReferenceLoss::parse(&self.reference)
            .and_then(|r| r.resolve(&domains, n_params))
            .with_context(|| format!("--reference {}", self.reference))?
            .unwrap_or_else(|| vec![f64::NAN; domains.len()]);
        let loader = DynamicLoader::new(domains, shards, weights, batch, seed)
            .with_context(|| format!("--data {} ({} split)", self.data.display(), split.name()))?;
        let cfg = DynamicConfig {
            rule,
            every: self.update_every.unwrap_or(default_every),
            eval_batch: self.eval_batch.max(1),
            eval_sequences: self.eval_sequences,
        };
        Ok(DynamicBatches::new(
            loader,
            data.shards(Split::Eval)?,
            reference,
            cfg,
            device,
        )?)
    }

    /// With `--reference source`, evaluates `source` on the eval split for the reference
    /// losses; then prints the starting weights and the references.
    pub fn fill_source_reference<B: AutodiffBackend, M: Backend>(
        &self,
        d: &mut DynamicBatches<B>,
        source: &Llama<M>,
    ) {
        if matches!(
            ReferenceLoss::parse(&self.reference),
            Ok(ReferenceLoss::Source)
        ) {
            let bar = super::spinner("reference losses: evaluating the source model".into());
            let losses = d.evaluate(source, None);
            bar.finish_and_clear();
            d.reference = losses.iter().map(|l| l.loss).collect();
        }
        let names = d.loader.domains().to_vec();
        let show = |v: &[f64]| -> String {
            names
                .iter()
                .zip(v)
                .map(|(n, x)| format!("{n} {x:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!("domain weights: {}", show(d.loader.weights()));
        // A name or a file is worth showing; explicit values are shown below anyway.
        let how = if self.reference.contains('=') {
            String::new()
        } else {
            format!(" ({})", self.reference)
        };
        eprintln!("reference losses{how}: {}", show(&d.reference));
    }
}

/// `batch` random windows of a token stream as a tensor.
pub fn stream_batch<B: Backend>(
    stream: &TokenStream,
    seq: usize,
    rng: &mut impl rand::Rng,
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = stream
        .sample(rng, batch, seq)
        .into_iter()
        .map(i64::from)
        .collect();
    Tensor::from_data(TensorData::new(ids, [batch, seq]), device)
}

/// `batch` random windows for micro-batch `micro` of step `step`, drawn with an RNG seeded by
/// (seed, step, micro): a resumed run draws what the uninterrupted one would have.
pub fn stream_batch_at<B: Backend>(
    stream: &TokenStream,
    seq: usize,
    seed: u64,
    step: usize,
    micro: usize,
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    use rand::SeedableRng;
    let key = seed ^ (((step as u64) << 20) | micro as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = rand::rngs::StdRng::seed_from_u64(key);
    stream_batch(stream, seq, &mut rng, batch, device)
}

/// Prints a weight update and the loader's events above the progress bar.
pub fn report(
    bar: &indicatif::ProgressBar,
    step: usize,
    update: Option<&UpdateRecord>,
    events: &[LoaderEvent],
) {
    if let Some(u) = update {
        let w: Vec<String> = u
            .domains
            .iter()
            .zip(&u.weights)
            .map(|(d, w)| format!("{d} {w:.3}"))
            .collect();
        super::say(
            bar,
            format!("step {}: domain weights {}", u.step, w.join(", ")),
        );
    }
    for e in events {
        let LoaderEvent::NewPass { domain, pass } = e;
        super::say(
            bar,
            format!(
                "step {}: domain `{domain}` used up, starting pass {} in a new order",
                step + 1,
                pass + 1
            ),
        );
    }
}

/// Writes the loader state (weights, cursors, RNG position) as JSON, atomically.
pub fn save_loader_state(path: &Path, state: &LoaderState) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    shear_model::checkpoint::write_atomic(path, &json)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The JSONL log of a run: appended to when resuming, else started afresh.
pub fn open_log(path: &Path, resuming: bool) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resuming)
        .truncate(!resuming)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

/// Appends one JSON line.
pub fn write_jsonl(
    w: &mut impl std::io::Write,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *w, value)?;
    writeln!(w)?;
    // One line per step: flushed, so the log can be followed while the run goes on.
    w.flush()?;
    Ok(())
}
