//! Dynamic batch loading inside a loop (docs/algorithm.md §6): batches read through burn's
//! `DataLoader` API from a [`DynamicDataLoader`], and every `every` steps a per-domain evaluation
//! whose losses, against the reference losses, update the domain weights by the chosen rule
//! through the loader's handle (from the next batch on). Continued pre-training also evaluates
//! before its first step (`eval_first`, §6.2); pruning does not.

use burn::data::dataloader::DataLoader;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use shear_data::shard::Shard;
use shear_data::{DynamicDataLoader, LoaderHandle, LoaderState, UpdateRecord, UpdateRule};
use shear_model::{Llama, ZMasks};

use crate::error::{Result, TrainError};
use crate::eval::{domain_losses, eval_domains, eval_sums_parallel, DomainLoss};
use crate::peers::Peer;
use crate::source::{BatchSource, DataReport, EvalView, RowRef};

/// When and how the weights are updated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    pub rule: UpdateRule,
    /// Update after every this many optimizer steps (§6.2: 50 in pruning, 400 in continued
    /// pre-training).
    pub every: usize,
    /// Sequences per evaluation batch.
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (all when `None`).
    pub eval_sequences: Option<usize>,
    /// Also evaluate and update before the first step.
    pub eval_first: bool,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            rule: UpdateRule::Code,
            every: 50,
            eval_batch: 8,
            eval_sequences: None,
            eval_first: false,
        }
    }
}

/// The loader, the eval split and the reference losses of one run.
pub struct DynamicSource<B: Backend> {
    pub loader: DynamicDataLoader<B>,
    handle: LoaderHandle,
    pub eval: Vec<Shard>,
    pub reference: Vec<f64>,
    pub cfg: DynamicConfig,
    /// The data-parallel peer this source feeds: its rows of every batch, its share of every
    /// evaluation (peers.rs).
    peer: Peer,
    /// The rows of the current step's micro-batches.
    drawn: Vec<RowRef>,
}

impl<B: Backend> DynamicSource<B> {
    /// Refuses a configuration that cannot update: an update rule without eval data for a
    /// domain, or reference losses that are not one finite number per domain.
    pub fn new(
        loader: DynamicDataLoader<B>,
        eval: Vec<Shard>,
        reference: Vec<f64>,
        cfg: DynamicConfig,
    ) -> Result<Self> {
        let handle = loader.handle();
        let domains = handle.domains();
        if eval.len() != domains.len() || reference.len() != domains.len() {
            return Err(TrainError::Invalid(format!(
                "{} domains, {} eval shards, {} reference losses",
                domains.len(),
                eval.len(),
                reference.len()
            )));
        }
        if cfg.rule != UpdateRule::Constant {
            if let Some(i) = eval.iter().position(Shard::is_empty) {
                return Err(TrainError::Invalid(format!(
                    "domain `{}` has no eval sequences; dynamic loading with the `{}` rule needs \
                     them (use the `constant` rule, or prepare data with eval_sequences > 0)",
                    domains[i], cfg.rule
                )));
            }
            if let Some(i) = reference.iter().position(|r| !r.is_finite()) {
                return Err(TrainError::Invalid(format!(
                    "the reference loss of domain `{}` is {}",
                    domains[i], reference[i]
                )));
            }
        }
        if cfg.every == 0 || cfg.eval_batch == 0 {
            return Err(TrainError::Invalid(
                "update interval and eval batch must be positive".into(),
            ));
        }
        Ok(DynamicSource {
            loader,
            handle,
            eval,
            reference,
            cfg,
            peer: Peer::solo(),
            drawn: Vec::new(),
        })
    }

    /// This source as `peer`'s: its rows of every global batch, and its share of the eval
    /// batches, whose per-domain sums are all-reduced with the other peers'.
    pub fn with_peer(mut self, peer: Peer) -> Self {
        self.loader = self.loader.with_rows(peer.rows(self.loader.rows().len()));
        self.handle = self.loader.handle();
        self.peer = peer;
        self
    }

    /// The loader's state (weights, cursors, random stream).
    pub fn handle(&self) -> &LoaderHandle {
        &self.handle
    }

    /// Per-domain losses of `model` (masked by `z`) on the eval split (sharded over the
    /// peers, each evaluating every `count`-th batch).
    pub fn evaluate<M: Backend>(
        &self,
        model: &Llama<M>,
        z: Option<&ZMasks<M>>,
    ) -> Result<Vec<DomainLoss>> {
        let domains = self.handle.domains();
        let (batch, max) = (self.cfg.eval_batch, self.cfg.eval_sequences);
        if self.peer.count == 1 {
            return Ok(eval_domains(model, z, &domains, &self.eval, batch, max));
        }
        let part = (self.peer.rank, self.peer.count);
        let sums = eval_sums_parallel(model, z, &self.eval, batch, max, part);
        let flat: Vec<f64> = sums
            .iter()
            .flat_map(|&(sum, tokens)| [sum, tokens as f64])
            .collect();
        let device = model.embed_tokens.weight.device();
        let flat = self.peer.sum_host::<M>(&flat, &device)?;
        let sums: Vec<(f64, u64)> = flat
            .chunks(2)
            .map(|c| (c[0], c[1].round() as u64))
            .collect();
        Ok(domain_losses(&domains, &self.eval, max, &sums))
    }

    /// Evaluates, updates the loader's weights by the rule, and returns the record (its `step`
    /// is the number of steps done).
    pub fn update<M: Backend>(
        &mut self,
        step: usize,
        model: &Llama<M>,
        z: Option<&ZMasks<M>>,
    ) -> Result<UpdateRecord> {
        let losses: Vec<f64> = self.evaluate(model, z)?.iter().map(|d| d.loss).collect();
        let domains = self.handle.domains();
        if let Some(i) = losses.iter().position(|l| !l.is_finite()) {
            return Err(TrainError::Invalid(format!(
                "after step {step}: the eval loss of domain `{}` is {}",
                domains[i], losses[i]
            )));
        }
        let before = self.handle.weights();
        let weights =
            self.handle
                .without_empty(self.cfg.rule.apply(&before, &losses, &self.reference));
        self.handle.set_weights(weights.clone())?;
        Ok(UpdateRecord {
            step,
            rule: self.cfg.rule,
            domains,
            gaps: losses
                .iter()
                .zip(&self.reference)
                .map(|(l, r)| l - r)
                .collect(),
            losses,
            reference: self.reference.clone(),
            weights_before: before,
            weights,
        })
    }

    /// Whether an update is due after (0-based) optimizer step `step`.
    pub fn due(&self, step: usize) -> bool {
        self.cfg.rule != UpdateRule::Constant && (step + 1).is_multiple_of(self.cfg.every)
    }
}

impl<B: AutodiffBackend> BatchSource<B> for DynamicSource<B> {
    fn batch(&mut self, step: usize, micro: usize) -> Result<Tensor<B, 2, Int>> {
        let batch = self.loader.iter().next().ok_or_else(|| {
            TrainError::Invalid(format!(
                "step {step}: the loader's batches are used up ({} rows)",
                self.loader.num_items()
            ))
        })?;
        if micro == 0 {
            self.drawn.clear();
        }
        // The whole global batch's rows (every peer draws it and keeps its share), so that
        // a skipped step names them all, whichever peer's rows were not finite.
        let domains = self.handle.domains();
        self.drawn.extend(
            self.handle
                .last_drawn()
                .into_iter()
                .map(|(d, index)| RowRef {
                    domain: domains[d].clone(),
                    index,
                }),
        );
        Ok(batch.input_ids)
    }

    fn rows(&self) -> Vec<RowRef> {
        self.drawn.clone()
    }

    fn wants_eval(&self, after: Option<usize>) -> bool {
        match after {
            None => self.cfg.eval_first && self.cfg.rule != UpdateRule::Constant,
            Some(step) => self.due(step),
        }
    }

    fn after_step(
        &mut self,
        after: Option<usize>,
        model: Option<EvalView<B::InnerBackend>>,
    ) -> Result<DataReport> {
        let domain_update = match model {
            Some(v) => Some(self.update(after.map_or(0, |s| s + 1), &v.model, v.z.as_ref())?),
            None => None,
        };
        Ok(DataReport {
            domain_update,
            loader_events: self.handle.take_events(),
        })
    }

    fn state(&self) -> Option<LoaderState> {
        Some(self.handle.state())
    }

    fn restore(&mut self, state: LoaderState) -> Result<()> {
        Ok(self.handle.restore(state)?)
    }
}
