//! The masks of one pruning run, an `L0Module` in the reference's terms (docs/algorithm.md
//! §1.1): one optional [`Mask`] per [`MaskType`], their samples for the masked forward, their
//! deterministic values, and the expected size of the model they describe (§3.2).

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::hard_concrete::{deterministic_row, HardConcrete, Mask};
use crate::config::LlamaConfig;
use crate::error::Result;
use crate::kinds::{LayerMasks, MaskType, PerType, PruneModules};
use crate::llama::ZMasks;
use crate::materialize::DeterministicMasks;
use crate::target::TargetShape;
use crate::tensor_data::to_vec_f64;

/// `log_alpha ~ Normal(5, 0.01)` at the start (docs/algorithm.md §2.2).
const INIT_MEAN: f64 = 5.0;
const INIT_STD: f64 = 0.01;

/// The masks of one run. A type that is not pruned has no mask: its `z` is 1 in the forward, it
/// has no Lagrangian term, and it keeps its source size.
#[derive(Module, Debug)]
pub struct L0Masks<B: Backend> {
    /// `[1, L]`: both sub-blocks of a layer, or only attention (`head_layer`) when `mlp` exists.
    pub layer: Option<Mask<B>>,
    /// `[1, L]`: the FFN sub-block (`LayerMasks::HeadLayerMlp`).
    pub mlp: Option<Mask<B>>,
    /// `[1, d]`
    pub hidden: Option<Mask<B>>,
    /// `[L, H]`: query heads.
    pub head: Option<Mask<B>>,
    /// `[L, G]`: key/value groups (grouped-query sources only, §11).
    pub kv_head: Option<Mask<B>>,
    /// `[L, m]`
    pub intermediate: Option<Mask<B>>,
    /// The source's prunable shape.
    #[module(skip)]
    pub source: TargetShape,
    /// The source's head dimension (kept by pruning).
    pub head_dim: usize,
}

/// The uniform draws of one sample of every mask (host side), per mask type.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskNoise {
    pub hidden: Option<Vec<f32>>,
    pub head: Option<Vec<f32>>,
    pub kv_head: Option<Vec<f32>>,
    pub intermediate: Option<Vec<f32>>,
    pub layer: Option<Vec<f32>>,
    pub mlp: Option<Vec<f32>>,
}

/// The expected shape under the masks, as real numbers (per layer for heads, groups and
/// channels; a type that is not pruned counts at its source size).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectedShape {
    pub layers: f64,
    pub hidden: f64,
    pub heads: f64,
    pub kv_heads: f64,
    pub intermediate: f64,
}

impl<B: Backend> L0Masks<B> {
    /// Masks for a source of this shape, every `log_alpha ~ Normal(5, 0.01)` (§2.2), for the
    /// dimensions in `modules`.
    pub fn new(
        config: &LlamaConfig,
        hc: HardConcrete,
        modules: PruneModules,
        layer_masks: LayerMasks,
        device: &B::Device,
    ) -> Self {
        let s = TargetShape::of(config);
        let mask = |on: bool, rows: usize, n: usize| {
            on.then(|| Mask::init(rows, n, INIT_MEAN, INIT_STD, hc, device))
        };
        let grouped = s.kv_heads != s.heads;
        L0Masks {
            layer: mask(modules.layers, 1, s.layers),
            mlp: mask(
                modules.layers && layer_masks == LayerMasks::HeadLayerMlp,
                1,
                s.layers,
            ),
            hidden: mask(modules.hidden, 1, s.hidden),
            head: mask(modules.heads, s.layers, s.heads),
            kv_head: mask(modules.heads && grouped, s.layers, s.kv_heads),
            intermediate: mask(modules.intermediate, s.layers, s.intermediate),
            source: s,
            head_dim: config.head_dim,
        }
    }

    /// The mask of type `k`, if this run has one.
    pub fn get(&self, k: MaskType) -> Option<&Mask<B>> {
        match k {
            MaskType::Layer => self.layer.as_ref(),
            MaskType::Hidden => self.hidden.as_ref(),
            MaskType::Head => self.head.as_ref(),
            MaskType::KvHead => self.kv_head.as_ref(),
            MaskType::Intermediate => self.intermediate.as_ref(),
            MaskType::Mlp => self.mlp.as_ref(),
        }
    }

    /// The mask types of this run, in order.
    pub fn types(&self) -> Vec<MaskType> {
        MaskType::ALL
            .into_iter()
            .filter(|k| self.get(*k).is_some())
            .collect()
    }

    /// What this run prunes.
    pub fn modules(&self) -> PruneModules {
        PruneModules {
            hidden: self.hidden.is_some(),
            heads: self.head.is_some(),
            intermediate: self.intermediate.is_some(),
            layers: self.layer.is_some(),
        }
    }

    /// One `layer` mask or separate `head_layer` + `mlp` masks.
    pub fn layer_masks(&self) -> LayerMasks {
        if self.mlp.is_some() {
            LayerMasks::HeadLayerMlp
        } else {
            LayerMasks::Layer
        }
    }

    /// The distribution's constants (every mask of a run has the same).
    pub fn hard_concrete(&self) -> HardConcrete {
        MaskType::ALL
            .into_iter()
            .find_map(|k| self.get(k).map(|m| m.hc))
            .unwrap_or_default()
    }

    fn device(&self) -> B::Device {
        MaskType::ALL
            .into_iter()
            .find_map(|k| self.get(k).map(|m| m.log_alpha.val().device()))
            .expect("a run prunes at least one dimension")
    }

    /// Clamps every `log_alpha` (done before each use, §2.2).
    pub fn clamp_log_alpha(self) -> Self {
        let c = |m: Option<Mask<B>>| m.map(Mask::clamp_log_alpha);
        L0Masks {
            layer: c(self.layer),
            mlp: c(self.mlp),
            hidden: c(self.hidden),
            head: c(self.head),
            kv_head: c(self.kv_head),
            intermediate: c(self.intermediate),
            source: self.source,
            head_dim: self.head_dim,
        }
    }

    /// A fresh sample of every mask for one forward pass (§2.3), with the uniform draws taken
    /// from `rng` in the order hidden, head, kv_head, intermediate, layer, mlp.
    pub fn sample_from(&self, rng: &mut impl rand::Rng) -> ZMasks<B> {
        self.sample_noise(&self.noise_from(rng))
    }

    /// The uniform draws of one sample of every mask (as [`L0Masks::sample_from`] takes them),
    /// so that the same sample can be made on several copies of the masks: the workers of one
    /// step (docs/algorithm.md §4.2) share their micro-batch's `z`.
    pub fn noise_from(&self, rng: &mut impl rand::Rng) -> MaskNoise {
        let mut draw = |m: &Option<Mask<B>>| m.as_ref().map(|m| m.noise_from(rng));
        let hidden = draw(&self.hidden);
        let head = draw(&self.head);
        let kv_head = draw(&self.kv_head);
        let intermediate = draw(&self.intermediate);
        let layer = draw(&self.layer);
        let mlp = draw(&self.mlp);
        MaskNoise {
            hidden,
            head,
            kv_head,
            intermediate,
            layer,
            mlp,
        }
    }

    /// The sample of every mask for these draws, differentiable in `log_alpha`.
    pub fn sample_noise(&self, noise: &MaskNoise) -> ZMasks<B> {
        let draw = |m: &Option<Mask<B>>, u: &Option<Vec<f32>>| match (m, u) {
            (Some(m), Some(u)) => Some(m.sample_noise(u)),
            (None, None) => None,
            _ => panic!("mask noise drawn for other masks"),
        };
        let flat = |t: Tensor<B, 2>| {
            let n = t.dims()[1];
            t.reshape([n])
        };
        let hidden = draw(&self.hidden, &noise.hidden).map(flat);
        let head = draw(&self.head, &noise.head);
        let kv = draw(&self.kv_head, &noise.kv_head);
        let intermediate = draw(&self.intermediate, &noise.intermediate);
        let layer = draw(&self.layer, &noise.layer).map(flat);
        let mlp = draw(&self.mlp, &noise.mlp).map(flat);
        ZMasks {
            hidden,
            head: head.map(|h| self.with_groups(h, kv)),
            intermediate,
            layer,
            mlp,
        }
    }

    /// Query-head values `[L, H]` times their group's value `[L, G]` (each group repeated for
    /// its `H / G` query heads): the factor each head's context is multiplied by (§11).
    fn with_groups(&self, head: Tensor<B, 2>, kv: Option<Tensor<B, 2>>) -> Tensor<B, 2> {
        match kv {
            None => head,
            Some(g) => {
                let [l, groups] = g.dims();
                let per = self.source.heads / groups;
                head * g
                    .unsqueeze_dim::<3>(2)
                    .expand([l, groups, per])
                    .reshape([l, groups * per])
            }
        }
    }

    /// Deterministic masks: at exactly the `target` counts when given (materialization), else
    /// with the expected number of zeros (evaluation during pruning), §2.5. A type without a mask
    /// is all ones. With separate `head_layer` and `mlp` masks and a target, the removed layers
    /// are chosen jointly (lowest product of the two soft values, ties: lower index first) so a
    /// layer is kept or removed whole. A non-finite `log_alpha` is an error.
    pub fn deterministic(&self, target: Option<&TargetShape>) -> Result<DeterministicMasks> {
        let s = self.source;
        let ones = |n: usize| vec![1.0; n];
        let row = |m: Option<&Mask<B>>, what: &str, n: usize, keep: Option<usize>| {
            m.map(|m| m.deterministic(what, keep).map(|mut r| r.remove(0)))
                .unwrap_or_else(|| Ok(ones(n)))
        };
        let rows = |m: Option<&Mask<B>>, what: &str, r: usize, n: usize, keep: Option<usize>| {
            m.map(|m| m.deterministic(what, keep))
                .unwrap_or_else(|| Ok(vec![ones(n); r]))
        };
        let layer_mask = self.layer.as_ref();
        let (layer, mlp) = match (&self.mlp, target) {
            (Some(mlp), Some(t)) => {
                let n = s.layers;
                // Soft values of every layer (keep all), then drop jointly.
                let mut a = row(layer_mask, "head_layer", n, Some(n))?;
                let mut b = row(Some(mlp), "mlp", n, Some(n))?;
                let joint: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
                for i in super::hard_concrete::smallest_first(&joint)
                    .into_iter()
                    .take(n.saturating_sub(t.layers))
                {
                    a[i] = 0.0;
                    b[i] = 0.0;
                }
                (a, Some(b))
            }
            (Some(mlp), None) => (
                row(layer_mask, "head_layer", s.layers, None)?,
                Some(row(Some(mlp), "mlp", s.layers, None)?),
            ),
            (None, t) => (
                row(layer_mask, "layer", s.layers, t.map(|t| t.layers))?,
                None,
            ),
        };
        let (head, kv_head) = match &self.kv_head {
            None => (
                rows(
                    self.head.as_ref(),
                    "head",
                    s.layers,
                    s.heads,
                    target.map(|t| t.heads),
                )?,
                None,
            ),
            Some(kv) => {
                let groups = kv.deterministic("kv_head", target.map(|t| t.kv_heads))?;
                (self.grouped_heads(target)?, Some(groups))
            }
        };
        Ok(DeterministicMasks {
            hidden: row(
                self.hidden.as_ref(),
                "hidden",
                s.hidden,
                target.map(|t| t.hidden),
            )?,
            head,
            kv_head,
            intermediate: rows(
                self.intermediate.as_ref(),
                "intermediate",
                s.layers,
                s.intermediate,
                target.map(|t| t.intermediate),
            )?,
            layer,
            mlp,
        })
    }

    /// Deterministic query-head masks of a grouped source (§11): with a target, each group keeps
    /// its `heads / kv_heads` best query heads; without one, its expected count.
    fn grouped_heads(&self, target: Option<&TargetShape>) -> Result<Vec<Vec<f64>>> {
        let Some(head) = &self.head else {
            return Ok(vec![vec![1.0; self.source.heads]; self.source.layers]);
        };
        let [rows, n] = head.dims();
        let la = head.host_log_alpha("head")?;
        let per = self.source.heads / self.source.kv_heads;
        // With a target, `heads / kv_heads` in every group; without one, each group's expected
        // number of zeros (as its Lagrangian term constrains it, §11).
        let keep = target.map(|t| t.heads / t.kv_heads);
        Ok((0..rows)
            .map(|r| {
                la[r * n..(r + 1) * n]
                    .chunks(per)
                    .flat_map(|g| deterministic_row(g, keep, &head.hc))
                    .collect()
            })
            .collect())
    }

    /// Expected sparsity of every mask type present (§2.4): `[1]` for layer, hidden and mlp, `[L]`
    /// for kv_head and intermediate, and for head `[L]` (multi-head) or `[L·G]`, one entry per
    /// key/value group, for a grouped source (§11): materialization keeps the same number of
    /// query heads in every group, so each group is constrained to it, not only the layer's sum.
    pub fn expected_sparsity(&self) -> PerType<Tensor<B, 1>> {
        self.types()
            .into_iter()
            .map(|k| {
                let m = self.get(k).expect("present");
                let e = match (k, &self.kv_head) {
                    // Each group's heads are consecutive (§11).
                    (MaskType::Head, Some(_)) => {
                        m.expected_sparsity_per(self.source.heads / self.source.kv_heads)
                    }
                    _ => m.expected_sparsity(),
                };
                (k, e)
            })
            .collect()
    }

    /// Expected scores `[rows, n]` of mask `m`, or ones when the run has no such mask.
    fn score_or_ones(&self, m: &Option<Mask<B>>, rows: usize, n: usize) -> Tensor<B, 2> {
        match m {
            Some(m) => m.score(),
            None => Tensor::ones([rows, n], &self.device()),
        }
    }

    /// Differentiable expected number of prunable parameters (§3.2, §11):
    /// `Σ s_D · (d_h (2 Σ s_L s_H s_G + 2 Σ s_L s_G) + 3 Σ s_M s_I)` with `s_G = s_H` and the two
    /// attention terms merged to `4 d_h Σ s_L s_H` when heads are not grouped. A type without a
    /// mask scores 1 (a grouped source without head masks: `s_G = 1` for each of its `G` groups).
    pub fn expected_params(&self) -> Tensor<B, 1> {
        let s = self.source;
        let l = s.layers;
        let s_layer = self.score_or_ones(&self.layer, 1, l).reshape([l, 1]); // [L, 1]
        let s_mlp = match &self.mlp {
            Some(m) => m.score().reshape([l, 1]),
            None => s_layer.clone(),
        };
        let s_head = self.score_or_ones(&self.head, l, s.heads); // [L, H]
        let attention = match &self.kv_head {
            // Multi-head: each head owns its q/o and k/v parts.
            None if s.kv_heads == s.heads => {
                (s_head * s_layer.clone()).sum() * (4 * self.head_dim) as f64
            }
            // A grouped source whose heads are not pruned: q/o per query head, k/v per group
            // (counting k/v per query head overcounted SmolLM2-135M's attention by 50 %).
            None => {
                let q = (s_head * s_layer.clone()).sum();
                let k = s_layer.clone().sum() * s.kv_heads as f64;
                (q + k) * (2 * self.head_dim) as f64
            }
            Some(kv) => {
                let s_kv = kv.score(); // [L, G]
                let q = self.with_groups(s_head, Some(s_kv.clone())) * s_layer.clone();
                let k = s_kv * s_layer;
                (q.sum() + k.sum()) * (2 * self.head_dim) as f64
            }
        };
        let inter = (self.score_or_ones(&self.intermediate, l, s.intermediate) * s_mlp).sum();
        let hidden = self.score_or_ones(&self.hidden, 1, s.hidden).sum();
        hidden * (attention + inter * 3.0)
    }

    /// The expected shape as real numbers (a type that is not pruned counts at its source size).
    pub fn expected_shape(&self) -> ExpectedShape {
        let s = self.source;
        let v = |t: Tensor<B, 1>| -> f64 { to_vec_f64(t.into_data())[0] };
        let per_layer = |m: &Option<Mask<B>>, n: usize| match m {
            Some(m) => v(m.score().sum()) / m.dims()[0] as f64,
            None => n as f64,
        };
        let heads = match (&self.head, &self.kv_head) {
            (Some(h), Some(kv)) => {
                v(self.with_groups(h.score(), Some(kv.score())).sum()) / s.layers as f64
            }
            _ => per_layer(&self.head, s.heads),
        };
        let kv_heads = match &self.kv_head {
            Some(_) => per_layer(&self.kv_head, s.kv_heads),
            // Multi-head attention: every query head has its own key/value head.
            None if s.kv_heads == s.heads => heads,
            None => s.kv_heads as f64,
        };
        ExpectedShape {
            layers: self
                .layer
                .as_ref()
                .map_or(s.layers as f64, |m| v(m.score().sum())),
            hidden: self
                .hidden
                .as_ref()
                .map_or(s.hidden as f64, |m| v(m.score().sum())),
            heads,
            kv_heads,
            intermediate: per_layer(&self.intermediate, s.intermediate),
        }
    }
}
