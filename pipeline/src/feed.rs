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

/// Where a stage's batches come from and how dynamic batch loading behaves. With the `clap`
/// feature, the flags of `shear prune` / `shear train`; recorded in checkpoints (flattened).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DataOptions {
    /// Training data: a prepared data folder (`shear data prepare`; dynamic batch loading over
    /// its prune split for `prune`, its train split for `train`), or one .txt file (tokenized
    /// with the model's tokenizer) or file of token ids (random windows, one domain).
    #[cfg_attr(feature = "clap", arg(long))]
    pub data: PathBuf,
    /// Tokens per sequence (default: the prepared data's, or 512 for a single file).
    #[cfg_attr(feature = "clap", arg(long))]
    pub seq: Option<usize>,
    /// The model whose eval losses are the `source` reference (directory or hub id; default
    /// for pruning: the source being pruned; continued pre-training must name it).
    #[cfg_attr(feature = "clap", arg(long))]
    pub reference_model: Option<PathBuf>,
    #[serde(flatten)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub mixture: Mixture,
    #[serde(flatten)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub dynamic: Dynamic,
}

/// A stage's initial domain weights and how often they are updated (docs/algorithm.md §6.2,
/// §6.3): keys of a recipe's `[prune]` and `[train]` tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct Mixture {
    /// Initial domain weights: redpajama | uniform | tokens | auto | NAME=W,... (prepared data;
    /// `auto`: RedPajama's for its seven domains, else by tokens; in a recipe's continued
    /// pre-training, the pruning stage's final weights).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Mixture::default().proportions))]
    pub proportions: Proportions,
    /// Update the domain weights after every this many steps (default: 50 when pruning, 400
    /// in continued pre-training).
    #[cfg_attr(feature = "clap", arg(long))]
    pub update_every: Option<usize>,
}

/// How dynamic batch loading compares the domains (docs/algorithm.md §6): a recipe's
/// `[dynamic]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct Dynamic {
    /// Domain-weight update: code (reference code), paper, or constant (static mixture).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Dynamic::default().update_rule))]
    pub update_rule: UpdateRule,
    /// Reference losses: source (the eval losses of the source model: for `prune` the model
    /// being pruned, for `train` the one named by --reference-model), llama2 (the Llama-2
    /// scaling-law fit, RedPajama domains), NAME=LOSS,..., or a TOML file with
    /// `[reference.values]` or `[reference.scaling]` (NAME = [[params, loss], ...]).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Dynamic::default().reference))]
    pub reference: ReferenceLoss,
    /// Sequences per evaluation batch.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Dynamic::default().eval_batch))]
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (default: all).
    #[cfg_attr(feature = "clap", arg(long))]
    pub eval_sequences: Option<usize>,
}

impl Default for Dynamic {
    fn default() -> Self {
        Dynamic {
            update_rule: UpdateRule::Code,
            reference: ReferenceLoss::Source,
            eval_batch: 8,
            eval_sequences: None,
        }
    }
}

impl DataOptions {
    /// The defaults for a data folder or file.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        DataOptions {
            data: data.into(),
            seq: None,
            reference_model: None,
            mixture: Mixture::default(),
            dynamic: Dynamic::default(),
        }
    }

    /// Absolute paths, so that a resumed run compares equal wherever it is started from.
    pub fn canonical(mut self) -> Self {
        self.data = canonical(&self.data);
        self.reference_model = self.reference_model.as_deref().map(canonical);
        self
    }

    /// Refuses values that cannot work; the message names the setting.
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = self.seq.filter(|&s| s < 2) {
            return invalid!("seq {s}: need at least 2 tokens per sequence for a next-token loss");
        }
        if self.mixture.update_every == Some(0) {
            return invalid!("update_every 0: must be positive");
        }
        let d = &self.dynamic;
        if d.eval_batch == 0 {
            return invalid!("eval_batch 0: must be positive");
        }
        if d.eval_sequences == Some(0) {
            return invalid!("eval_sequences 0: must be positive (leave it out for all)");
        }
        Ok(())
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
        opts.validate()?;
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

    /// Tokens per sequence.
    pub fn seq_len(&self) -> usize {
        match self {
            Feed::Prepared(d) => d.manifest.seq_len,
            Feed::Stream(_, seq) => *seq,
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
                .dynamic
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
        plan: &LoaderSpec,
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
                    rule: opts.dynamic.update_rule,
                    every: opts.mixture.update_every.unwrap_or(plan.default_every),
                    eval_batch: opts.dynamic.eval_batch,
                    eval_sequences: opts.dynamic.eval_sequences,
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
pub struct LoaderSpec {
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

impl LoaderSpec {
    /// The loop of one peer: `split`, micro-batches of `batch`, `grad_accum` per step, `steps`
    /// steps, `seed`; domain-weight updates every `default_every` steps unless the options say
    /// otherwise, and one before the first step when `eval_first`.
    pub fn new(
        split: Split,
        batch: usize,
        grad_accum: usize,
        steps: usize,
        seed: u64,
        default_every: usize,
        eval_first: bool,
    ) -> Self {
        LoaderSpec {
            split,
            batch,
            grad_accum,
            steps,
            seed,
            default_every,
            eval_first,
            peer: Peer::solo(),
        }
    }
}

fn prepared_weights(data: &PreparedData, opts: &DataOptions, split: Split) -> Result<Vec<f64>> {
    let seq = data.manifest.seq_len;
    let tokens: Vec<u64> = data
        .shards(split)?
        .iter()
        .map(|s| (s.len() * seq) as u64)
        .collect();
    let p = &opts.mixture.proportions;
    p.resolve(&data.domains(), &tokens)
        .context(format!("proportions {p}"))
}
