//! Per-domain evaluation (docs/algorithm.md §6.2): token-averaged next-token cross-entropy and perplexity of
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
    let sums = eval_sums_parallel(model, z, shards, batch, max_sequences, (0, 1));
    domain_losses(domains, shards, max_sequences, &sums)
}

/// [`eval_sums`] of part `(index, parts)`, on the CPU backend its batches spread over the
/// threads of the current rayon pool (one core each: an evaluation batch alone leaves cores
/// idle at small shapes; on a GPU one batch already fills the device, and several at once would
/// only multiply the memory). Each thread takes every `threads`-th batch of the part; the
/// threads' sums are added in thread order, so the result does not depend on their timing.
pub fn eval_sums_parallel<B: Backend>(
    model: &Llama<B>,
    z: Option<&ZMasks<B>>,
    shards: &[Shard],
    batch: usize,
    max_sequences: Option<usize>,
    (index, parts): (usize, usize),
) -> Vec<(f64, u64)> {
    use rayon::prelude::*;
    let threads = match shear_model::fused_kernels::<B>() {
        true => rayon::current_num_threads().max(1),
        false => 1,
    };
    let per_thread: Vec<Vec<(f64, u64)>> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let part = (index + parts * t, parts * threads);
            eval_sums(model, z, shards, batch, max_sequences, part)
        })
        .collect();
    let mut sums = vec![(0.0, 0); shards.len()];
    for part in per_thread {
        for (acc, (s, t)) in sums.iter_mut().zip(part) {
            acc.0 += s;
            acc.1 += t;
        }
    }
    sums
}

/// Sequences of `shard` an evaluation reads: the first `max_sequences` (all when `None`).
fn evaluated(shard: &Shard, max_sequences: Option<usize>) -> usize {
    max_sequences.map_or(shard.len(), |m| m.min(shard.len()))
}

/// Per domain, the sum of token losses and the number of predicted tokens over the eval batches
/// of part `(index, parts)` — batches `index`, `index + parts`, … (a data-parallel peer's
/// share; `(0, 1)`: all).
pub fn eval_sums<B: Backend>(
    model: &Llama<B>,
    z: Option<&ZMasks<B>>,
    shards: &[Shard],
    batch: usize,
    max_sequences: Option<usize>,
    (index, parts): (usize, usize),
) -> Vec<(f64, u64)> {
    let device = model.embed_tokens.weight.device();
    shards
        .iter()
        .map(|shard| {
            let n = evaluated(shard, max_sequences);
            let seq = shard.seq_len();
            let (mut sum, mut tokens) = (0.0f64, 0u64);
            let b = batch.max(1);
            let mut start = index * b;
            while start < n {
                let b = b.min(n - start);
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
                start += batch.max(1) * parts.max(1);
            }
            (sum, tokens)
        })
        .collect()
}

/// The per-domain losses from [`eval_sums`] over all batches.
pub fn domain_losses(
    domains: &[String],
    shards: &[Shard],
    max_sequences: Option<usize>,
    sums: &[(f64, u64)],
) -> Vec<DomainLoss> {
    domains
        .iter()
        .zip(shards)
        .zip(sums)
        .map(|((name, shard), &(sum, tokens))| {
            let loss = if tokens > 0 {
                sum / tokens as f64
            } else {
                f64::NAN
            };
            DomainLoss {
                domain: name.clone(),
                loss,
                perplexity: loss.exp(),
                sequences: evaluated(shard, max_sequences),
                tokens,
            }
        })
        .collect()
}

/// Sum of the log-probabilities of `continuation` after `context`, for every continuation
/// (one batch, padded at the end; causal attention keeps padding out of earlier positions).
pub fn continuation_logliks<B: Backend>(
    model: &Llama<B>,
    context: &[u32],
    continuations: &[Vec<u32>],
) -> Vec<f64> {
    let device = model.embed_tokens.weight.device();
    let len = |c: &Vec<u32>| context.len() + c.len();
    let longest = continuations.iter().map(len).max().unwrap_or(0);
    let n = continuations.len();
    let mut ids = Vec::with_capacity(n * longest);
    for c in continuations {
        ids.extend(context.iter().chain(c).map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(0, longest - len(c)));
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [n, longest]), &device);
    let logits = model.forward(ids.clone()).narrow(1, 0, longest - 1); // [n, L-1, V]
    let targets = ids.narrow(1, 1, longest - 1); // [n, L-1]
    let shift = logits.clone().max_dim(2);
    let lse = (logits.clone() - shift.clone()).exp().sum_dim(2).log() + shift;
    let picked = logits.gather(2, targets.reshape([n, longest - 1, 1]));
    let lp: Vec<f32> = (picked - lse)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data");
    continuations
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // Token t of the sequence is predicted at position t − 1.
            (context.len()..len(c))
                .map(|t| lp[i * (longest - 1) + t - 1] as f64)
                .sum()
        })
        .collect()
}

/// Accuracy of a multiple-choice task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    pub task: String,
    pub items: usize,
    /// Highest summed log-likelihood is the label.
    pub acc: f64,
    /// Highest log-likelihood per character of the choice is the label.
    pub acc_norm: f64,
    /// Per item: each choice's summed log-likelihood.
    pub logliks: Vec<Vec<f64>>,
}

fn argmax(v: impl Iterator<Item = f64>) -> usize {
    v.enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

/// Scores tokenized items (lm-evaluation-harness style zero-shot multiple choice).
pub fn score_task<B: Backend>(
    model: &Llama<B>,
    task: &str,
    items: &[shear_data::tasks::McTokens],
) -> TaskScore {
    let (mut hit, mut hit_norm) = (0usize, 0usize);
    let mut logliks = Vec::new();
    for it in items {
        let ll = continuation_logliks(model, &it.context, &it.continuations);
        hit += usize::from(argmax(ll.iter().copied()) == it.label);
        let norm = ll
            .iter()
            .zip(&it.chars)
            .map(|(l, c)| l / (*c).max(1) as f64);
        hit_norm += usize::from(argmax(norm) == it.label);
        logliks.push(ll);
    }
    let n = items.len().max(1) as f64;
    TaskScore {
        task: task.to_string(),
        items: items.len(),
        acc: hit as f64 / n,
        acc_norm: hit_norm as f64 / n,
        logliks,
    }
}
