//! One-shot importance pruning in the manner of NVIDIA's Minitron (docs/algorithm.md §15): a few
//! calibration batches through the unpruned model, a score per prunable unit from its
//! activations, and the target shape cut from the scores by the same selection the learned masks
//! use (§5, §11), so that the result is the same kind of mask file and model.
//!
//! The scores, summed over the calibration tokens:
//! - a query head: the L2 norm of its contribution to the attention output (its context times
//!   its rows of `o_proj`), per token;
//! - a key/value group: the sum of its query heads' scores;
//! - an FFN channel: `|silu(gate) ⊙ up|`, the activation `down_proj` reads;
//! - a hidden channel: `|x|` of the outputs of every RMSNorm (both per block and the final one),
//!   the inputs the weights read;
//! - a layer: `1 − cos(block input, block output)` per token (the block's "influence"): a block
//!   that leaves its input unchanged scores 0.

use burn::prelude::*;
use burn::tensor::activation::silu;
use serde::{Deserialize, Serialize};

use crate::attention_blocks::causal_attention;
use crate::config::LlamaConfig;
use crate::error::Result;
use crate::kinds::{LayerMasks, PruneModules};
use crate::llama::Llama;
use crate::masks::{HardConcrete, L0Masks, Mask};
use crate::materialize::DeterministicMasks;
use crate::precision;
use crate::target::TargetShape;
use crate::tensor_data::to_vec_f32;

/// Queries per block of the scoring forward's attention (no `[heads, seq, seq]` tensor).
const ATTENTION_BLOCK: usize = 512;

/// Importance scores of every prunable unit of a source, summed over the calibration tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImportanceScores {
    /// `[d]`
    pub hidden: Vec<f64>,
    /// `[layers][heads]`
    pub head: Vec<Vec<f64>>,
    /// `[layers][kv_heads]`: grouped sources only.
    pub kv_head: Option<Vec<Vec<f64>>>,
    /// `[layers][intermediate]`
    pub intermediate: Vec<Vec<f64>>,
    /// `[layers]`
    pub layer: Vec<f64>,
    /// Calibration tokens seen.
    pub tokens: usize,
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    to_vec_f32(t.into_data())
        .into_iter()
        .map(f64::from)
        .collect()
}

fn add(acc: &mut [f64], v: Vec<f64>) {
    acc.iter_mut().zip(v).for_each(|(a, x)| *a += x);
}

/// Sum over tokens of `|x|` per channel: `[b, s, n] -> n` values.
fn channel_abs<B: Backend>(x: Tensor<B, 3>) -> Vec<f64> {
    let [b, s, n] = x.dims();
    host(x.abs().reshape([b * s, n]).sum_dim(0))
}

impl ImportanceScores {
    /// All zero, for a source of `config`.
    pub fn new(config: &LlamaConfig) -> Self {
        let (l, h, g) = (
            config.num_hidden_layers,
            config.num_attention_heads,
            config.num_key_value_heads,
        );
        ImportanceScores {
            hidden: vec![0.0; config.hidden_size],
            head: vec![vec![0.0; h]; l],
            kv_head: (g != h).then(|| vec![vec![0.0; g]; l]),
            intermediate: vec![vec![0.0; config.intermediate_size]; l],
            layer: vec![0.0; l],
            tokens: 0,
        }
    }

    /// Adds the scores of one calibration batch `input_ids [batch, seq]`; returns the final
    /// hidden states `[batch, seq, d]` (the model's own, as [`Llama::hidden_masked`] without
    /// masks gives them).
    pub fn accumulate<B: Backend>(
        &mut self,
        model: &Llama<B>,
        input_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [b, s] = input_ids.dims();
        let tokens = b * s;
        let mut x = model.embed_masked(input_ids, None);
        for (i, layer) in model.layers.iter().enumerate() {
            let attn = &layer.self_attn;
            let a_in = layer.input_layernorm.forward(x.clone());
            add(&mut self.hidden, channel_abs(a_in.clone()));
            let (q, k, v) = attn.qkv(a_in, &model.rope, 0);
            let ctx = causal_attention(q, k, v, ATTENTION_BLOCK); // [b, h, s, hd]
            let hd = attn.head_dim;
            let w_o = attn.o_proj.weight.val(); // [h · hd, d]
            for j in 0..attn.n_heads {
                let c = ctx.clone().narrow(1, j, 1).reshape([1, tokens, hd]);
                let out = precision::matmul(c, w_o.clone().narrow(0, j * hd, hd)); // [1, tokens, d]
                let norm = out.powi_scalar(2).sum_dim(2).sqrt().sum();
                self.head[i][j] += host(norm)[0];
            }
            let x_mid = x.clone() + attn.output(ctx, None);
            let m_in = layer.post_attention_layernorm.forward(x_mid.clone());
            add(&mut self.hidden, channel_abs(m_in.clone()));
            let mlp = &layer.mlp;
            let act = silu(precision::linear(&mlp.gate_proj, m_in.clone()))
                * precision::linear(&mlp.up_proj, m_in);
            add(&mut self.intermediate[i], channel_abs(act.clone()));
            let out = x_mid + precision::linear(&mlp.down_proj, act);
            // 1 − cos(x, out) per token, summed.
            let dot = (x.clone() * out.clone()).sum_dim(2);
            let norms =
                x.powi_scalar(2).sum_dim(2).sqrt() * out.clone().powi_scalar(2).sum_dim(2).sqrt();
            let cos = dot / norms.clamp_min(1e-12);
            self.layer[i] += tokens as f64 - host(cos.sum())[0];
            x = out;
        }
        if let Some(kv) = &mut self.kv_head {
            // Recomputed from the heads each time: a group is the sum of its query heads.
            for (groups, heads) in kv.iter_mut().zip(&self.head) {
                let per = heads.len() / groups.len();
                for (g, chunk) in groups.iter_mut().zip(heads.chunks(per)) {
                    *g = chunk.iter().sum();
                }
            }
        }
        let h = model.final_norm(x, None);
        add(&mut self.hidden, channel_abs(h.clone()));
        self.tokens += tokens;
        h
    }

    /// The deterministic masks (0 or 1) that keep the best units at exactly `target`: each
    /// dimension in `modules` keeps its highest-scoring units (ties: the higher index kept, as
    /// §0.3 breaks them), per layer for heads and FFN channels, per group for the query heads
    /// of a grouped source, jointly for layers and hidden channels. Dimensions not in `modules`
    /// keep every unit.
    pub fn masks<B: Backend>(
        &self,
        config: &LlamaConfig,
        target: &TargetShape,
        modules: PruneModules,
        device: &B::Device,
    ) -> Result<DeterministicMasks> {
        let hc = HardConcrete::default();
        let mut l0 = L0Masks::<B>::new(config, hc, modules, LayerMasks::Layer, device);
        // Each row's ranks, in (0, 1): the selection of §5 keeps the largest (it reads them as
        // `log_alpha`, through an increasing function), so it keeps the best-scoring units.
        let ranked = |rows: &[Vec<f64>]| -> Mask<B> {
            let n = rows.first().map_or(0, Vec::len);
            let mut v = Vec::with_capacity(rows.len() * n);
            for row in rows {
                let mut rank = vec![0f32; n];
                for (r, i) in crate::masks::hard_concrete::smallest_first(row)
                    .into_iter()
                    .enumerate()
                {
                    rank[i] = (r + 1) as f32 / (n + 1) as f32;
                }
                v.extend(rank);
            }
            let t = Tensor::<B, 2>::from_data(TensorData::new(v, [rows.len(), n]), device);
            Mask::from_log_alpha(t, hc)
        };
        let set = |m: &mut Option<Mask<B>>, rows: &[Vec<f64>]| {
            if m.is_some() {
                *m = Some(ranked(rows));
            }
        };
        set(&mut l0.layer, std::slice::from_ref(&self.layer));
        set(&mut l0.hidden, std::slice::from_ref(&self.hidden));
        set(&mut l0.head, &self.head);
        if let Some(kv) = &self.kv_head {
            set(&mut l0.kv_head, kv);
        }
        set(&mut l0.intermediate, &self.intermediate);
        let soft = l0.deterministic(Some(target))?;
        // Kept units at 1: the importance path removes, it does not rescale.
        let one =
            |v: &[f64]| -> Vec<f64> { v.iter().map(|&x| f64::from(u8::from(x > 0.0))).collect() };
        let ones = |rows: &[Vec<f64>]| -> Vec<Vec<f64>> { rows.iter().map(|r| one(r)).collect() };
        Ok(DeterministicMasks {
            hidden: one(&soft.hidden),
            head: ones(&soft.head),
            kv_head: soft.kv_head.as_deref().map(ones),
            intermediate: ones(&soft.intermediate),
            layer: one(&soft.layer),
            mlp: soft.mlp.as_deref().map(one),
        })
    }
}
