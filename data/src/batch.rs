//! Batches for training: token ids plus the domain of every row (burn `Batcher`).

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;

/// One training sequence and the domain it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    pub domain: usize,
    /// Where it came from in its domain: the sequence's number in the shard (a token stream:
    /// the window's number in the run).
    pub index: u64,
}

/// A batch on a device: `input_ids [batch, seq]`, `domains [batch]`.
#[derive(Clone, Debug)]
pub struct TokenBatch<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub domains: Tensor<B, 1, Int>,
    /// The same domain ids, on the host (for per-domain bookkeeping).
    pub domain_ids: Vec<usize>,
    /// Every row's [`Sequence::index`].
    pub indices: Vec<u64>,
}

/// Stacks equal-length sequences into a [`TokenBatch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenBatcher;

impl<B: Backend> Batcher<B, Sequence, TokenBatch<B>> for TokenBatcher {
    fn batch(&self, items: Vec<Sequence>, device: &B::Device) -> TokenBatch<B> {
        let (b, s) = (items.len(), items.first().map_or(0, |x| x.tokens.len()));
        let ids: Vec<i64> = items
            .iter()
            .flat_map(|x| {
                assert_eq!(x.tokens.len(), s, "sequences of one batch have one length");
                x.tokens.iter().map(|&t| t as i64)
            })
            .collect();
        let domain_ids: Vec<usize> = items.iter().map(|x| x.domain).collect();
        let indices: Vec<u64> = items.iter().map(|x| x.index).collect();
        let d: Vec<i64> = domain_ids.iter().map(|&d| d as i64).collect();
        TokenBatch {
            input_ids: Tensor::from_data(TensorData::new(ids, [b, s]), device),
            domains: Tensor::from_data(TensorData::new(d, [b]), device),
            domain_ids,
            indices,
        }
    }
}
