//! Where a loop's batches come from, one trait for pruning and training: micro-batches by
//! (step, micro-batch), an optional evaluation after a step (dynamic batch loading updates its
//! domain weights there, docs/algorithm.md §6.2), and the state a checkpoint keeps.
//!
//! Two sources: [`crate::dynamic::DynamicSource`] (a prepared data folder, dynamic batch
//! loading) and [`StreamSource`] (one token stream, random windows).

use burn::data::dataloader::DataLoader;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use shear_data::{LoaderEvent, LoaderState, StreamDataLoader, UpdateRecord};
use shear_model::{Llama, ZMasks};

use crate::error::Result;

/// The model a source evaluates: the plain model, or the full-size model with deterministic
/// masks while pruning.
pub struct EvalView<B: Backend> {
    pub model: Llama<B>,
    pub z: Option<ZMasks<B>>,
}

/// What the data side did during one step (part of the step's log line).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    /// A weight update after this step, if one happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_update: Option<UpdateRecord>,
    /// Domains that ran out during this step and started a new pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loader_events: Vec<LoaderEvent>,
}

/// Where a row of a batch came from: its domain and its sequence's number there (a token
/// stream: the window's number in the run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRef {
    pub domain: String,
    pub index: u64,
}

/// A loop's supply of token ids.
pub trait BatchSource<B: AutodiffBackend>: Send {
    /// Micro-batch `micro` of optimizer step `step`: token ids `[batch, seq]`.
    fn batch(&mut self, step: usize, micro: usize) -> Result<Tensor<B, 2, Int>>;

    /// The rows of the micro-batches drawn for the current step (since the last micro-batch
    /// 0), in order: what a skipped step names.
    fn rows(&self) -> Vec<RowRef> {
        Vec::new()
    }

    /// Whether [`BatchSource::after_step`] wants the model after step `after` (`None`: before
    /// the first step of a run that starts at 0).
    fn wants_eval(&self, _after: Option<usize>) -> bool {
        false
    }

    /// Called after every step, and once before step 0 when [`BatchSource::wants_eval`] says
    /// so, with the model to evaluate when it was wanted.
    fn after_step(
        &mut self,
        _after: Option<usize>,
        _model: Option<EvalView<B::InnerBackend>>,
    ) -> Result<DataReport> {
        Ok(DataReport::default())
    }

    /// The state a checkpoint keeps to continue exactly (`None`: the batches are a function of
    /// the step alone).
    fn state(&self) -> Option<LoaderState> {
        None
    }

    /// Continues from a state saved by [`BatchSource::state`].
    fn restore(&mut self, _state: LoaderState) -> Result<()> {
        Ok(())
    }
}

/// Random windows of one token stream (a [`StreamDataLoader`] read through burn's `DataLoader`
/// API): the batch of (step, micro-batch) is regenerated from the seed, so a resumed run draws
/// what the uninterrupted one would have (docs/algorithm.md §9).
pub struct StreamSource<B: Backend> {
    pub loader: StreamDataLoader<B>,
    pub grad_accum: usize,
    /// The rows of the current step's micro-batches.
    pub drawn: Vec<RowRef>,
}

impl<B: Backend> StreamSource<B> {
    /// This source as a data-parallel peer's: its rows of every batch.
    pub fn with_peer(mut self, peer: &crate::peers::Peer) -> Self {
        self.loader = self.loader.with_rows(peer.rows(self.loader.batch_size()));
        self
    }
}

impl<B: AutodiffBackend> BatchSource<B> for StreamSource<B> {
    fn batch(&mut self, step: usize, micro: usize) -> Result<Tensor<B, 2, Int>> {
        self.loader
            .seek((step * self.grad_accum.max(1) + micro) as u64);
        let batch = self.loader.iter().next().ok_or_else(|| {
            crate::TrainError::Invalid(format!("step {step}: past the run's batches"))
        })?;
        if micro == 0 {
            self.drawn.clear();
        }
        self.drawn.extend(batch.indices.iter().map(|&index| RowRef {
            domain: "stream".into(),
            index,
        }));
        Ok(batch.input_ids)
    }

    fn rows(&self) -> Vec<RowRef> {
        self.drawn.clone()
    }
}
