//! Text generation with a KV cache: greedy decoding or sampling with temperature, top-k and
//! top-p, seeded; stops at an end-of-sequence token or after `max_new_tokens`.

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{ModelError, Result};
use crate::llama::Llama;
use crate::tensor_data::to_vec_f32;

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (the lowest id on ties, as `torch.argmax`).
    Greedy,
    /// A draw from `softmax(logits / temperature)`, restricted to the `top_k` most likely tokens
    /// and then to the smallest set whose probability reaches `top_p`.
    Sample {
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
    },
}

#[derive(Clone, Debug)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    /// Generation stops after emitting any of these (the EOS ids); empty: never stop early.
    pub stop_tokens: Vec<u32>,
    /// Reuse keys/values of earlier positions (otherwise re-run the whole sequence each step).
    pub use_cache: bool,
}

/// Chooses a token from one position's logits.
pub fn choose(logits: &[f32], sampling: &Sampling, rng: &mut impl Rng) -> u32 {
    match sampling {
        Sampling::Greedy => {
            let mut best = 0;
            for (i, &v) in logits.iter().enumerate() {
                if v > logits[best] {
                    best = i;
                }
            }
            best as u32
        }
        Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } => {
            let t = temperature.max(1e-6);
            let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let mut probs: Vec<(usize, f64)> = logits
                .iter()
                .enumerate()
                .map(|(i, &v)| (i, ((v as f64 - max) / t).exp()))
                .collect();
            // Most likely first; equal probabilities keep the lower id first.
            probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if let Some(k) = top_k {
                probs.truncate((*k).max(1));
            }
            let total: f64 = probs.iter().map(|p| p.1).sum();
            probs.iter_mut().for_each(|p| p.1 /= total);
            if let Some(p) = top_p {
                let mut acc = 0.0;
                let mut keep = probs.len();
                for (i, q) in probs.iter().enumerate() {
                    acc += q.1;
                    if acc >= *p {
                        keep = i + 1;
                        break;
                    }
                }
                probs.truncate(keep);
                let total: f64 = probs.iter().map(|p| p.1).sum();
                probs.iter_mut().for_each(|p| p.1 /= total);
            }
            let u: f64 = rng.random();
            let mut acc = 0.0;
            for (i, p) in &probs {
                acc += p;
                if u < acc {
                    return *i as u32;
                }
            }
            probs.last().map(|p| p.0 as u32).unwrap_or(0)
        }
    }
}

fn ids_tensor<B: Backend>(ids: &[u32], device: &B::Device) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

fn last_logits<B: Backend>(logits: Tensor<B, 3>) -> Vec<f32> {
    let [_, s, v] = logits.dims();
    to_vec_f32(logits.narrow(1, s - 1, 1).reshape([v]).into_data())
}

/// Generates up to `cfg.max_new_tokens` tokens after `prompt`, calling `on_token` with each as
/// soon as it is chosen. Returns the new tokens (not the prompt).
pub fn generate<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    cfg: &GenerateConfig,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ModelError::InvalidShape("the prompt has no tokens".into()));
    }
    let vocab = model.config.vocab_size as u32;
    if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
        return Err(ModelError::InvalidShape(format!(
            "prompt token id {bad} is outside the vocabulary (size {vocab})"
        )));
    }
    let device = model.embed_tokens.weight.device();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut cache = model.new_cache();
    let mut all = prompt.to_vec();
    let mut new = Vec::with_capacity(cfg.max_new_tokens);
    // With a cache, only the tokens not yet seen are fed.
    let mut pending = prompt.to_vec();
    while new.len() < cfg.max_new_tokens {
        let logits = if cfg.use_cache {
            model.forward_cached(ids_tensor(&pending, &device), &mut cache)
        } else {
            model.forward(ids_tensor(&all, &device))
        };
        let next = choose(&last_logits(logits), &cfg.sampling, &mut rng);
        new.push(next);
        all.push(next);
        pending = vec![next];
        on_token(next);
        if cfg.stop_tokens.contains(&next) {
            break;
        }
    }
    Ok(new)
}
