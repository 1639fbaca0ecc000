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

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::silu;
use serde::{Deserialize, Serialize};

use crate::attention_blocks::causal_attention;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::kinds::{LayerMasks, PruneModules};
use crate::llama::Llama;
use crate::masks::{HardConcrete, L0Masks, Mask};
use crate::materialize::DeterministicMasks;
use crate::obs::{self, Gram};
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
    /// The Gram matrices of the output projections' inputs, when collected (structured OBS,
    /// [`ImportanceScores::with_grams`]); not written to `importance.json`.
    #[serde(skip)]
    pub grams: Option<Grams>,
}

/// Per layer, `Σ aᵀa` of the attention context that `o_proj` reads (`[heads·head_dim]²`) and
/// of the gated activation that `down_proj` reads (`[intermediate]²`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grams {
    pub attn: Vec<Gram>,
    pub ffn: Vec<Gram>,
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
            grams: None,
        }
    }

    /// All zero, collecting the Gram matrices as well ([`ImportanceScores::obs`],
    /// [`ImportanceScores::refit`]): `layers · ((heads·head_dim)² + intermediate²)` f64 values.
    pub fn with_grams(config: &LlamaConfig) -> Self {
        let l = config.num_hidden_layers;
        let n_attn = config.num_attention_heads * config.head_dim;
        ImportanceScores {
            grams: Some(Grams {
                attn: vec![Gram::new(n_attn); l],
                ffn: vec![Gram::new(config.intermediate_size); l],
            }),
            ..ImportanceScores::new(config)
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
            if let Some(g) = &mut self.grams {
                let n = attn.n_heads * hd;
                g.attn[i].add(ctx.clone().swap_dims(1, 2).reshape([tokens, n]));
            }
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
            if let Some(g) = &mut self.grams {
                let n = act.dims()[2];
                g.ffn[i].add(act.clone().reshape([tokens, n]));
            }
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

    /// Structured OBS scores (docs/algorithm.md §15.1, obs.rs): the heads and FFN channels of
    /// every layer ranked by greedy removal under refitting, down to `target`'s count per layer
    /// (`r`-th removed scores `r + 1`; the units greedy removal keeps score above those, in
    /// the order of their magnitude scores). Hidden channels, groups and layers keep their
    /// magnitude scores. Needs the Gram matrices ([`ImportanceScores::with_grams`]).
    pub fn obs<B: Backend>(
        &self,
        model: &Llama<B>,
        target: &TargetShape,
        modules: PruneModules,
    ) -> Result<ImportanceScores> {
        let grams = self.grams.as_ref().ok_or_else(|| {
            ModelError::Obs("the scores were collected without Gram matrices".into())
        })?;
        let mut out = self.clone();
        for (l, layer) in model.layers.iter().enumerate() {
            if modules.heads {
                let attn = &layer.self_attn;
                let (w, _, d) = weight_host(&attn.o_proj.weight);
                let remove = attn.n_heads.saturating_sub(target.heads);
                let what = format!("layer {l} attention");
                let order =
                    obs::greedy_blocks(&grams.attn[l], &w, d, attn.head_dim, remove, &what)?;
                out.head[l] = obs::order_scores(&order, attn.n_heads, &self.head[l]);
            }
            if modules.intermediate {
                let (w, n, d) = weight_host(&layer.mlp.down_proj.weight);
                let w_sq: Vec<f64> = w.chunks(d).map(|r| r.iter().map(|x| x * x).sum()).collect();
                let remove = n.saturating_sub(target.intermediate);
                let what = format!("layer {l} FFN");
                let order = obs::greedy_channels(&grams.ffn[l], &w_sq, remove, &what)?;
                out.intermediate[l] = obs::order_scores(&order, n, &self.intermediate[l]);
            }
        }
        Ok(out)
    }

    /// `model` with the output projections of every kept layer refitted onto the heads and
    /// FFN channels that `masks` keeps (obs.rs, [`obs::refit`]), so that the masked model (and
    /// the materialized one) makes up for what was cut, as far as a linear map of the kept
    /// units can on the calibration activations.
    pub fn refit<B: Backend>(
        &self,
        model: &Llama<B>,
        masks: &DeterministicMasks,
    ) -> Result<Llama<B>> {
        let grams = self.grams.as_ref().ok_or_else(|| {
            ModelError::Obs("the scores were collected without Gram matrices".into())
        })?;
        let mut out = model.clone();
        let heads = masks.effective_heads();
        for (l, layer) in out.layers.iter_mut().enumerate() {
            if masks.layer[l] == 0.0 {
                continue;
            }
            let attn = &mut layer.self_attn;
            let keep: Vec<bool> = heads[l]
                .iter()
                .flat_map(|&z| std::iter::repeat_n(z > 0.0, attn.head_dim))
                .collect();
            let (w, n, d) = weight_host(&attn.o_proj.weight);
            let what = format!("layer {l} attention");
            let w = obs::refit(&grams.attn[l], &w, d, &keep, &what)?;
            attn.o_proj.weight = weight_param(&attn.o_proj.weight, w, [n, d]);
            if masks.mlp.as_ref().is_some_and(|m| m[l] == 0.0) {
                continue;
            }
            let mlp = &mut layer.mlp;
            let keep: Vec<bool> = masks.intermediate[l].iter().map(|&z| z > 0.0).collect();
            let (w, n, d) = weight_host(&mlp.down_proj.weight);
            let what = format!("layer {l} FFN");
            let w = obs::refit(&grams.ffn[l], &w, d, &keep, &what)?;
            mlp.down_proj.weight = weight_param(&mlp.down_proj.weight, w, [n, d]);
        }
        Ok(out)
    }
}

/// A linear layer's weight `[in, out]` on the host: values row-major, rows, columns.
fn weight_host<B: Backend>(w: &Param<Tensor<B, 2>>) -> (Vec<f64>, usize, usize) {
    let t = w.val();
    let [n, d] = t.dims();
    (host(t), n, d)
}

/// A weight of `shape` holding `v`, on `like`'s device.
fn weight_param<B: Backend>(
    like: &Param<Tensor<B, 2>>,
    v: Vec<f64>,
    shape: [usize; 2],
) -> Param<Tensor<B, 2>> {
    let device = like.val().device();
    let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), &device))
}
