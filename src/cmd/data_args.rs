//! The training-data options shared by `shear prune` and `shear train`, turned into the
//! pipeline's [`DataOptions`].

use std::path::PathBuf;

use anyhow::Context;
use shear_data::{Proportions, ReferenceLoss, UpdateRule};
use shear_pipeline::feed::DataOptions;

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
    /// Update the domain weights after every this many steps (default: 50 when pruning, 400
    /// in continued pre-training; docs/algorithm.md §6.2).
    #[arg(long)]
    pub update_every: Option<usize>,
    /// Reference losses: source (the eval losses of the source model: for `prune` the model
    /// being pruned, for `train` the one named by --reference-model), llama2 (the Llama-2
    /// scaling-law fit, RedPajama domains), NAME=LOSS,..., or a TOML file with
    /// `[reference.values]` or `[reference.scaling]` (NAME = [[params, loss], ...]).
    #[arg(long, default_value = "source")]
    pub reference: String,
    /// The model whose eval losses are the `source` reference (directory or hub id).
    #[arg(long)]
    pub reference_model: Option<String>,
    /// Sequences per evaluation batch (dynamic loading).
    #[arg(long, default_value_t = 8)]
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (default: all).
    #[arg(long)]
    pub eval_sequences: Option<usize>,
}

impl DataArgs {
    /// The options as the pipeline takes them (every string parsed into its type here).
    pub fn options(&self, offline: bool) -> anyhow::Result<DataOptions> {
        let proportions: Proportions = self
            .proportions
            .parse()
            .with_context(|| format!("--proportions {}", self.proportions))?;
        let update_rule: UpdateRule = self
            .update_rule
            .parse()
            .with_context(|| format!("--update-rule {}", self.update_rule))?;
        let reference = ReferenceLoss::parse(&self.reference)
            .with_context(|| format!("--reference {}", self.reference))?;
        let reference_model = match &self.reference_model {
            Some(m) => Some(super::resolve(m, offline)?),
            None => None,
        };
        if self.eval_batch == 0 {
            anyhow::bail!("--eval-batch must be positive");
        }
        if self.update_every == Some(0) {
            anyhow::bail!("--update-every must be positive");
        }
        if let Some(seq) = self.seq.filter(|&s| s < 2) {
            anyhow::bail!("--seq {seq}: need at least 2 tokens per sequence for a next-token loss");
        }
        if self.eval_sequences == Some(0) {
            anyhow::bail!("--eval-sequences 0: must be positive (leave it out for all)");
        }
        Ok(DataOptions {
            data: self.data.clone(),
            seq: self.seq,
            proportions,
            update_rule,
            update_every: self.update_every,
            reference,
            reference_model,
            eval_batch: self.eval_batch,
            eval_sequences: self.eval_sequences,
        })
    }
}
