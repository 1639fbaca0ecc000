//! Per-domain evaluation (SPEC §6.2): token-averaged next-token cross-entropy and perplexity of
//! each domain's eval split, batched. Used by the pruning loop (masked model, deterministic
//! masks) for dynamic batch loading, and by `shear eval`.

use burn::prelude::*;
use burn::tensor::ElementConversion;
use serde::{Deserialize, Serialize};
use shear_data::shard::Shard;
use shear_model::{Llama, ZMasks};

/// The loss of one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainLoss {
    pub domain: String,
    /// Sum of token cross-entropies / number of predicted tokens.
    pub loss: f64,
    pub perplexity: f64,
    pub sequences: usize,
    /// Predicted tokens: `seq_len − 1` per sequence.
    pub tokens: u64,
}

/// Evaluates `model` (masked by `z` when given) on the first `max_sequences` (all when `None`)
/// sequences of every domain's shard, `batch` sequences at a time.
pub fn eval_domains<B: Backend>(
    model: &Llama<B>,
    z: Option<&ZMasks<B>>,
    domains: &[String],
    shards: &[Shard],
    batch: usize,
    max_sequences: Option<usize>,
) -> Vec<DomainLoss> {
    let device = model.embed_tokens.weight.device();
    domains
        .iter()
        .zip(shards)
        .map(|(name, shard)| {
            let n = max_sequences.map_or(shard.len(), |m| m.min(shard.len()));
            let seq = shard.seq_len();
            let (mut sum, mut tokens) = (0.0f64, 0u64);
            let mut start = 0;
            while start < n {
                let b = batch.max(1).min(n - start);
                let mut ids = Vec::with_capacity(b * seq);
                for i in start..start + b {
                    shard.read_into(i, &mut ids);
                }
                let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
                let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, seq]), &device);
                let mean = model.loss_masked(input, z).into_scalar().elem::<f64>();
                let count = (b * (seq - 1)) as u64;
                sum += mean * count as f64;
                tokens += count;
                start += b;
            }
            let loss = if tokens > 0 {
                sum / tokens as f64
            } else {
                f64::NAN
            };
            DomainLoss {
                domain: name.clone(),
                loss,
                perplexity: loss.exp(),
                sequences: n,
                tokens,
            }
        })
        .collect()
}
