//! Dynamic batch loading inside a training loop (SPEC §6): batches drawn by the
//! [`DynamicLoader`], and every `every` steps a per-domain evaluation whose losses, against the
//! reference losses, update the domain weights by the chosen rule.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use shear_data::shard::Shard;
use shear_data::{DynamicLoader, LoaderEvent, LoaderState, UpdateRecord, UpdateRule};
use shear_model::{Llama, ZMasks};

use crate::eval::{eval_domains, DomainLoss};
use crate::prune::{PruneData, Pruner};

/// When and how the weights are updated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    pub rule: UpdateRule,
    /// Update after every this many optimizer steps (SPEC §6.2: 50 in pruning, 400 in
    /// continued pre-training).
    pub every: usize,
    /// Sequences per evaluation batch.
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (all when `None`).
    pub eval_sequences: Option<usize>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            rule: UpdateRule::Code,
            every: 50,
            eval_batch: 8,
            eval_sequences: None,
        }
    }
}

/// What the data side did during one step (merged into the step's log line).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    /// A weight update, when one happened after this step.
    pub update: Option<UpdateRecord>,
    /// Domains that ran out and started a new pass.
    pub events: Vec<LoaderEvent>,
    /// The loader's state after this step (for checkpoints).
    pub state: Option<LoaderState>,
}

/// The loader, the eval split and the reference losses of one run.
pub struct DynamicBatches<B: Backend> {
    pub loader: DynamicLoader,
    pub eval: Vec<Shard>,
    pub reference: Vec<f64>,
    pub cfg: DynamicConfig,
    device: B::Device,
}

/// Refuses a configuration that cannot update: an update rule without eval data for a domain.
#[derive(Debug, thiserror::Error)]
#[error("domain `{domain}` has no eval sequences; dynamic loading with the `{rule}` rule needs them (use the `constant` rule, or prepare data with eval_sequences > 0)")]
pub struct NoEvalData {
    pub domain: String,
    pub rule: UpdateRule,
}

impl<B: Backend> DynamicBatches<B> {
    pub fn new(
        loader: DynamicLoader,
        eval: Vec<Shard>,
        reference: Vec<f64>,
        cfg: DynamicConfig,
        device: &B::Device,
    ) -> Result<Self, NoEvalData> {
        assert_eq!(
            eval.len(),
            loader.domains().len(),
            "one eval shard per domain"
        );
        assert_eq!(reference.len(), eval.len(), "one reference loss per domain");
        if cfg.rule != UpdateRule::Constant {
            if let Some(i) = eval.iter().position(Shard::is_empty) {
                return Err(NoEvalData {
                    domain: loader.domains()[i].clone(),
                    rule: cfg.rule,
                });
            }
        }
        Ok(DynamicBatches {
            loader,
            eval,
            reference,
            cfg,
            device: device.clone(),
        })
    }

    /// Per-domain losses of `model` (masked by `z`) on the eval split.
    pub fn evaluate<M: Backend>(&self, model: &Llama<M>, z: Option<&ZMasks<M>>) -> Vec<DomainLoss> {
        eval_domains(
            model,
            z,
            self.loader.domains(),
            &self.eval,
            self.cfg.eval_batch,
            self.cfg.eval_sequences,
        )
    }

    /// Evaluates, updates the loader's weights by the rule, and returns the record.
    pub fn update<M: Backend>(
        &mut self,
        step: usize,
        model: &Llama<M>,
        z: Option<&ZMasks<M>>,
    ) -> UpdateRecord {
        let losses: Vec<f64> = self.evaluate(model, z).iter().map(|d| d.loss).collect();
        let before = self.loader.weights().to_vec();
        let weights =
            self.loader
                .without_empty(self.cfg.rule.apply(&before, &losses, &self.reference));
        self.loader
            .set_weights(weights.clone())
            .expect("update rules keep weights normalised and zero where there is no data");
        UpdateRecord {
            step,
            rule: self.cfg.rule,
            domains: self.loader.domains().to_vec(),
            gaps: losses
                .iter()
                .zip(&self.reference)
                .map(|(l, r)| l - r)
                .collect(),
            losses,
            reference: self.reference.clone(),
            weights_before: before,
            weights,
        }
    }

    /// Whether an update is due after (0-based) optimizer step `step`.
    pub fn due(&self, step: usize) -> bool {
        self.cfg.rule != UpdateRule::Constant
            && self.cfg.every > 0
            && (step + 1).is_multiple_of(self.cfg.every)
    }
}

/// Pruning draws its micro-batches from the loader and, when due, evaluates the masked model
/// with deterministic masks (expected number of zeros, SPEC §10.8) to update the weights.
impl<B: AutodiffBackend> PruneData<B> for DynamicBatches<B> {
    fn batch(&mut self, _step: usize, _micro: usize) -> Tensor<B, 2, Int> {
        self.loader.next_batch::<B>(&self.device).input_ids
    }

    fn after_step(&mut self, step: usize, pruner: &Pruner<B>) -> DataReport {
        let update = self.due(step).then(|| {
            let model = pruner.model.valid();
            let z = pruner
                .l0
                .clone()
                .clamp_log_alpha()
                .deterministic(None)
                .to_z::<B::InnerBackend>(&model.embed_tokens.weight.device());
            self.update(step + 1, &model, Some(&z))
        });
        DataReport {
            update,
            events: self.loader.take_events(),
            state: Some(self.loader.state()),
        }
    }
}

/// Continued pre-training draws from the loader and, when due (and once before step 0),
/// evaluates the model to update the weights.
impl<B: AutodiffBackend> crate::trainer::TrainData<B> for DynamicBatches<B> {
    fn batch(&mut self, _step: usize, _micro: usize) -> Tensor<B, 2, Int> {
        self.loader.next_batch::<B>(&self.device).input_ids
    }

    fn after_step(&mut self, step: usize, model: &Llama<B>) -> DataReport {
        // `usize::MAX`: the evaluation before the first step.
        let first = step == usize::MAX;
        let update = (first && self.cfg.rule != UpdateRule::Constant || !first && self.due(step))
            .then(|| {
                let model = model.valid();
                self.update(if first { 0 } else { step + 1 }, &model, None)
            });
        DataReport {
            update,
            events: self.loader.take_events(),
            state: Some(self.loader.state()),
        }
    }
}
