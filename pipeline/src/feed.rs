//! The training data of a pruning or training stage: a prepared data folder (dynamic batch
//! loading over one of its splits, docs/algorithm.md §6) or a single token stream (random
//! windows), the reference losses, and the batch source a loop reads.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use shear_data::stream::TokenStream;
use shear_data::{
    DynamicDataLoader, DynamicLoader, PreparedData, Proportions, ReferenceLoss, Split,
    StreamDataLoader, Tokenizer, UpdateRule,
};
use shear_model::LlamaConfig;
use shear_train::dynamic::{DynamicConfig, DynamicSource};
use shear_train::peers::Peer;
use shear_train::source::{BatchSource, StreamSource};

use crate::error::{invalid, Context, Result};

/// Where a stage's batches come from and how dynamic batch loading behaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataOptions {
    /// A prepared data folder (`shear data prepare`), or one `.txt` file (tokenized with the
    /// model's tokenizer) / file of token ids.
    pub data: PathBuf,
    /// Tokens per sequence (default: the prepared data's, or 512 for a single file).
    pub seq: Option<usize>,
    /// Initial domain weights.
    pub proportions: Proportions,
    pub update_rule: UpdateRule,
    /// Update the weights after every this many steps (default: 50 when pruning, 400 in
    /// continued pre-training, §6.2).
    pub update_every: Option<usize>,
    /// Reference losses.
    pub reference: ReferenceLoss,
    /// The model whose eval losses are the reference when `reference` is `Source` (default for
    /// pruning: the source being pruned; continued pre-training must name it).
    pub reference_model: Option<PathBuf>,
    /// Sequences per evaluation batch.
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (default: all).
    pub eval_sequences: Option<usize>,
}

impl DataOptions {
    /// The defaults for a data folder or file.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        DataOptions {
            data: data.into(),
            seq: None,
            proportions: Proportions::default(),
            update_rule: UpdateRule::Code,
            update_every: None,
            reference: ReferenceLoss::Source,
            reference_model: None,
            eval_batch: 8,
            eval_sequences: None,
        }
    }

    pub fn with_proportions(mut self, p: Proportions) -> Self {
        self.proportions = p;
        self
    }

    pub fn with_update_rule(mut self, r: UpdateRule) -> Self {
        self.update_rule = r;
        self
    }

    pub fn with_update_every(mut self, every: usize) -> Self {
        self.update_every = Some(every);
        self
    }

    pub fn with_reference(mut self, r: ReferenceLoss) -> Self {
        self.reference = r;
        self
    }

    pub fn with_eval(mut self, batch: usize, sequences: Option<usize>) -> Self {
        self.eval_batch = batch;
        self.eval_sequences = sequences;
        self
    }

    /// Absolute paths, so that a resumed run compares equal wherever it is started from.
    pub fn canonical(mut self) -> Self {
        self.data = canonical(&self.data);
        self.reference_model = self.reference_model.as_deref().map(canonical);
        self
    }
}

/// `path` made absolute (unchanged when it does not exist).
pub fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Opened training data.
pub enum Feed {
    /// A prepared data folder: dynamic batch loading.
    Prepared(PreparedData),
    /// One token stream and the sequence length.
    Stream(std::sync::Arc<TokenStream>, usize),
}

/// Opens a prepared data folder for the model in `model_dir`: its shards must fit the model's
/// vocabulary and come from its tokenizer (when the model has one to compare with). Returns a
/// warning when the tokenizer cannot be checked.
pub fn open_prepared(
    data: &Path,
    model_dir: &Path,
    config: &LlamaConfig,
) -> Result<(PreparedData, Option<String>)> {
    let prepared = PreparedData::open(data)?;
    prepared.check_vocab(config.vocab_size)?;
    let warning = match Tokenizer::from_file(model_dir) {
        Ok(t) => {
            prepared.check_tokenizer(&t)?;
            None
        }
        Err(_) => Some(format!(
            "{} has no tokenizer.json; cannot check that {} was made with its tokenizer",
            model_dir.display(),
            data.display()
        )),
    };
    Ok((prepared, warning))
}

impl Feed {
    /// Opens `opts.data` for the model in `model_dir` and checks it against the model.
    pub fn open(
        opts: &DataOptions,
        model_dir: &Path,
        config: &LlamaConfig,
    ) -> Result<(Self, Option<String>)> {
        if let Some(s) = opts.seq.filter(|&s| s < 2) {
            return invalid!("seq {s}: need at least 2 tokens for a next-token loss");
        }
        if PreparedData::is_prepared(&opts.data) {
            let (data, warning) = open_prepared(&opts.data, model_dir, config)?;
            let seq = data.manifest.seq_len;
            if let Some(s) = opts.seq.filter(|&s| s != seq) {
                return invalid!(
                    "seq {s}: {} holds sequences of {seq} tokens (leave seq unset to use them)",
                    opts.data.display()
                );
            }
            return Ok((Feed::Prepared(data), warning));
        }
        let tokenizer = Tokenizer::from_file(model_dir).ok();
        let stream = TokenStream::from_file(&opts.data, tokenizer.as_ref())
            .context(format!("data {}", opts.data.display()))?;
        let seq = opts.seq.unwrap_or(512);
        if stream.len() < seq {
            return invalid!(
                "data {}: {} tokens, fewer than one sequence of {seq}",
                opts.data.display(),
                stream.len(),
            );
        }
        if let Some(max) = stream
            .max_token()
            .filter(|&m| m as usize >= config.vocab_size)
        {
            return invalid!(
                "data {}: token id {max} is outside the model's vocabulary (size {})",
                opts.data.display(),
                config.vocab_size
            );
        }
        Ok((Feed::Stream(std::sync::Arc::new(stream), seq), None))
    }

    pub fn seq_len(&self) -> usize {
        match self {
            Feed::Prepared(d) => d.manifest.seq_len,
            Feed::Stream(_, seq) => *seq,
        }
    }

    /// The domain names (one, `stream`, for a token stream).
    pub fn domains(&self) -> Vec<String> {
        match self {
            Feed::Prepared(d) => d.domains(),
            Feed::Stream(..) => vec!["stream".into()],
        }
    }

    /// The initial domain weights of `split`, as `opts.proportions` resolves them.
    pub fn initial_weights(&self, opts: &DataOptions, split: Split) -> Result<Vec<f64>> {
        match self {
            Feed::Prepared(data) => prepared_weights(data, opts, split),
            Feed::Stream(..) => Ok(vec![1.0]),
        }
    }

    /// The reference losses per domain when they do not need a model (`None` for `Source`).
    pub fn fixed_reference(
        &self,
        opts: &DataOptions,
        target_params: f64,
    ) -> Result<Option<Vec<f64>>> {
        match self {
            Feed::Prepared(d) => opts
                .reference
                .resolve(&d.domains(), target_params)
                .context("reference"),
            Feed::Stream(..) => Ok(None),
        }
    }

    /// The batch source of a loop (`plan`): dynamic batch loading over a prepared folder's split
    /// with `reference` losses (per domain), or seeded windows of a token stream; both read
    /// through burn's `DataLoader` API.
    pub fn source<B: AutodiffBackend>(
        &self,
        opts: &DataOptions,
        plan: &LoaderPlan,
        reference: Vec<f64>,
        device: &B::Device,
    ) -> Result<Box<dyn BatchSource<B>>> {
        if plan.batch == 0 {
            return invalid!("batch must be positive");
        }
        let batches = (plan.steps * plan.grad_accum.max(1)) as u64;
        match self {
            Feed::Stream(stream, seq) => Ok(Box::new(
                StreamSource {
                    loader: StreamDataLoader::new(
                        stream.clone(),
                        *seq,
                        plan.batch,
                        plan.grad_accum,
                        plan.seed,
                        batches,
                        device,
                    ),
                    grad_accum: plan.grad_accum,
                    drawn: Vec::new(),
                }
                .with_peer(&plan.peer),
            )),
            Feed::Prepared(data) => {
                let split = plan.split;
                let weights = prepared_weights(data, opts, split)?;
                let loader = DynamicLoader::new(
                    data.domains(),
                    data.shards(split)?,
                    weights,
                    plan.batch,
                    plan.seed,
                )
                .context(format!(
                    "data {} ({} split)",
                    opts.data.display(),
                    split.name()
                ))?;
                let cfg = DynamicConfig {
                    rule: opts.update_rule,
                    every: opts.update_every.unwrap_or(plan.default_every),
                    eval_batch: opts.eval_batch,
                    eval_sequences: opts.eval_sequences,
                    eval_first: plan.eval_first,
                };
                Ok(Box::new(
                    DynamicSource::<B>::new(
                        DynamicDataLoader::new(loader, batches, device),
                        data.shards(Split::Eval)?,
                        reference,
                        cfg,
                    )?
                    .with_peer(plan.peer.clone()),
                ))
            }
        }
    }
}

/// How a loop reads its data.
#[derive(Clone, Debug)]
pub struct LoaderPlan {
    pub split: Split,
    /// Sequences per micro-batch.
    pub batch: usize,
    pub grad_accum: usize,
    /// Steps of the run (the loader yields steps × grad_accum batches).
    pub steps: usize,
    pub seed: u64,
    /// Update interval when the options leave it unset.
    pub default_every: usize,
    /// Evaluate and update before the first step.
    pub eval_first: bool,
    /// The data-parallel peer that reads (its rows of every batch, its share of evaluations).
    pub peer: Peer,
}

fn prepared_weights(data: &PreparedData, opts: &DataOptions, split: Split) -> Result<Vec<f64>> {
    let seq = data.manifest.seq_len;
    let tokens: Vec<u64> = data
        .shards(split)?
        .iter()
        .map(|s| (s.len() * seq) as u64)
        .collect();
    opts.proportions
        .resolve(&data.domains(), &tokens)
        .context(format!("proportions {}", opts.proportions))
}
