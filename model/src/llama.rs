//! LLaMA as burn modules, generic over the backend. Field names follow the Hugging Face tensor
//! names (`model.layers.{i}.self_attn.q_proj.weight` is `layers[i].self_attn.q_proj.weight`).
//! Linear weights are stored in burn's `[in, out]` layout; checkpoint I/O transposes.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::cache::{KvCache, LayerCache};
use crate::config::LlamaConfig;
use crate::distill_loss::{lm_head_distill_loss, DistillFigures, Distillation, TeacherHead};
use crate::error::Result;
use crate::lm_loss::{lm_head_loss, HeadLayout};
use crate::names::{self, LayerTensor};
use crate::precision::{self, matmul};
use crate::rope::Rotary;
use crate::weights::WeightSource;

/// RMSNorm as in Hugging Face LLaMA: `w ⊙ x · rsqrt(mean(x²) + eps)`.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// `[batch, seq, d] -> [batch, seq, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let var = x.clone().powi_scalar(2).mean_dim(2); // [b, s, 1]
        let inv = (var + self.eps).sqrt().recip();
        x * inv * self.weight.val().unsqueeze::<3>()
    }

    /// Masked RMSNorm (docs/algorithm.md §1.2): the variance is taken over the kept dimensions
    /// (`z_hidden ≠ 0`) only, and the output is multiplied by `z_hidden [d]`.
    /// `[batch, seq, d] -> [batch, seq, d]`
    pub fn forward_masked(&self, x: Tensor<B, 3>, z_hidden: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
        let Some(z) = z_hidden else {
            return self.forward(x);
        };
        let keep = z.clone().not_equal_elem(0.0).float(); // [d]
        let count = keep.clone().sum().reshape([1, 1, 1]);
        let var = (x.clone().powi_scalar(2) * keep.unsqueeze::<3>()).sum_dim(2) / count; // [b, s, 1]
        let inv = (var + self.eps).sqrt().recip();
        x * inv * (self.weight.val() * z.clone()).unsqueeze::<3>()
    }
}

/// Mask values of one layer for the masked forward (docs/algorithm.md §1.2); `None` leaves that part unmasked.
#[derive(Clone, Debug, Default)]
pub struct LayerZ<B: Backend> {
    /// `[d]`, shared by all layers.
    pub hidden: Option<Tensor<B, 1>>,
    /// `[heads]`: multiplies each head's context before `o_proj`.
    pub head: Option<Tensor<B, 1>>,
    /// `[intermediate]`: multiplies the up-projection output.
    pub intermediate: Option<Tensor<B, 1>>,
    /// `[1]`: multiplies both sub-block outputs (only the attention output when `mlp` is set).
    pub layer: Option<Tensor<B, 1>>,
    /// `[1]`: multiplies the FFN output.
    pub mlp: Option<Tensor<B, 1>>,
}

/// Mask values for the whole model, as sampled during pruning or deterministic (docs/algorithm.md §1.2, §0.2).
#[derive(Clone, Debug, Default)]
pub struct ZMasks<B: Backend> {
    /// `[d]`
    pub hidden: Option<Tensor<B, 1>>,
    /// `[layers, heads]`
    pub head: Option<Tensor<B, 2>>,
    /// `[layers, intermediate]`
    pub intermediate: Option<Tensor<B, 2>>,
    /// `[layers]`: both sub-blocks, or only attention (`head_layer`) when `mlp` is set.
    pub layer: Option<Tensor<B, 1>>,
    /// `[layers]`: the FFN sub-block (`mlp` mask).
    pub mlp: Option<Tensor<B, 1>>,
}

impl<B: Backend> ZMasks<B> {
    /// The masks of layer `l`.
    pub fn layer_z(&self, l: usize) -> LayerZ<B> {
        let row = |t: &Tensor<B, 2>| {
            let n = t.dims()[1];
            t.clone().narrow(0, l, 1).reshape([n])
        };
        LayerZ {
            hidden: self.hidden.clone(),
            head: self.head.as_ref().map(row),
            intermediate: self.intermediate.as_ref().map(row),
            layer: self.layer.as_ref().map(|t| t.clone().narrow(0, l, 1)),
            mlp: self.mlp.as_ref().map(|t| t.clone().narrow(0, l, 1)),
        }
    }
}

/// Multiplies a sub-block output `[b, s, d]` by its per-layer mask (scalar) and the hidden mask.
fn scale_output<B: Backend>(x: Tensor<B, 3>, z: &LayerZ<B>, ffn: bool) -> Tensor<B, 3> {
    let scalar = if ffn {
        z.mlp.as_ref().or(z.layer.as_ref())
    } else {
        z.layer.as_ref()
    };
    let x = match scalar {
        Some(l) => x * l.clone().reshape([1, 1, 1]),
        None => x,
    };
    match &z.hidden {
        Some(h) => x * h.clone().unsqueeze::<3>(),
        None => x,
    }
}

/// Causal self-attention with grouped-query attention (`n_kv_heads` divides `n_heads`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// `x [batch, seq, d]`, first position `start` -> `[batch, seq, d]`.
    /// With a cache, this layer's keys and values are appended to `cache` and attention covers
    /// every cached position.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rotary<B>,
        start: usize,
        cache: Option<&mut LayerCache<B>>,
        z_head: Option<&Tensor<B, 1>>,
    ) -> Tensor<B, 3> {
        let s = x.dims()[1];
        let (q, k, v) = self.qkv(x, rope, start);
        let (k, v) = match cache {
            Some(layer) => layer.append(k, v),
            None => (k, v),
        };
        let t = k.dims()[2]; // total key positions
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v)); // [b, h, t, hd]
                                                             // Query i sits at position start+i and may see keys 0..=start+i.
        let (mask, is_causal) = if s == 1 {
            (None, false)
        } else if t == s {
            (None, true)
        } else {
            // True above the diagonal shifted by the cached positions: key j is hidden from
            // query i when j > (t − s) + i.
            let mask = Tensor::<B, 2, Bool>::tril_mask([s, t], (t - s) as i64, &q.device());
            (Some(mask.unsqueeze::<4>()), false)
        };
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal,
        };
        let ctx = attention(q, k, v, mask, None, options); // [b, h, s, hd]
        self.output(ctx, z_head)
    }

    /// The rotated queries `[b, h, s, hd]` and keys, and the values `[b, kvh, s, hd]` (not
    /// repeated to the query heads) of `x [b, s, d]` at first position `start`.
    pub fn qkv(
        &self,
        x: Tensor<B, 3>,
        rope: &Rotary<B>,
        start: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        // Heads split as [b, s, heads, hd], rotated in that layout, then [b, heads, s, hd].
        let heads = |t: Tensor<B, 3>, n: usize| t.reshape([b, s, n, hd]);
        let q = rope
            .apply(heads(precision::linear(&self.q_proj, x.clone()), h), start)
            .swap_dims(1, 2); // [b, h, s, hd]
        let k = rope
            .apply(
                heads(precision::linear(&self.k_proj, x.clone()), kvh),
                start,
            )
            .swap_dims(1, 2); // [b, kvh, s, hd]
        let v = heads(precision::linear(&self.v_proj, x), kvh).swap_dims(1, 2); // [b, kvh, s, hd]
        (q, k, v)
    }

    /// The attention's output `[b, s, d]` from the context `ctx [b, h, s, hd]`: each head's
    /// context times its mask value `z_head`, then `o_proj`.
    pub fn output(&self, ctx: Tensor<B, 4>, z_head: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
        let [b, h, s, hd] = ctx.dims();
        let ctx = ctx.swap_dims(1, 2).reshape([b, s, h * hd]);
        // Each head's context times its mask value, as one value per channel `[1, 1, h·hd]`:
        // a broadcast row, which the CPU backend multiplies on its vectorised path (a
        // `[1, h, 1, 1]` factor on `[b, h, s, hd]` is not).
        let ctx = match z_head {
            Some(z) => {
                let per_channel = z
                    .clone()
                    .reshape([h, 1])
                    .expand([h, hd])
                    .reshape([1, 1, h * hd]);
                ctx * per_channel
            }
            None => ctx,
        };
        precision::linear(&self.o_proj, ctx)
    }

    /// `[b, kvh, t, hd] -> [b, h, t, hd]`: query head i reads key/value head i / (h / kvh).
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let groups = self.n_heads / self.n_kv_heads;
        if groups == 1 {
            return x;
        }
        let [b, kvh, t, hd] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, kvh, groups, t, hd])
            .reshape([b, kvh * groups, t, hd])
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// `[batch, seq, d] -> [batch, seq, d]`
    pub fn forward(&self, x: Tensor<B, 3>, z_intermediate: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
        let g = silu(precision::linear(&self.gate_proj, x.clone()));
        let p = precision::linear(&self.up_proj, x);
        let p = match z_intermediate {
            Some(z) => p * z.clone().unsqueeze::<3>(),
            None => p,
        };
        precision::linear(&self.down_proj, g * p)
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    /// `[batch, seq, d] -> [batch, seq, d]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rotary<B>,
        start: usize,
        cache: Option<&mut LayerCache<B>>,
        z: Option<&LayerZ<B>>,
    ) -> Tensor<B, 3> {
        let a = self.self_attn.forward(
            self.attention_input(x.clone(), z),
            rope,
            start,
            cache,
            z.and_then(|z| z.head.as_ref()),
        );
        self.after_attention(x, a, z)
    }

    /// The block with block-wise causal attention (attention_blocks.rs, queries `block` at a
    /// time): the same function as [`Block::forward`] at position 0 without a cache, without a
    /// `[heads, seq, seq]` tensor.
    pub fn forward_blockwise(
        &self,
        x: Tensor<B, 3>,
        rope: &Rotary<B>,
        z: Option<&LayerZ<B>>,
        block: usize,
    ) -> Tensor<B, 3> {
        let (q, k, v) = self
            .self_attn
            .qkv(self.attention_input(x.clone(), z), rope, 0);
        let ctx = crate::attention_blocks::causal_attention(q, k, v, block);
        let a = self.self_attn.output(ctx, z.and_then(|z| z.head.as_ref()));
        self.after_attention(x, a, z)
    }

    /// The attention's input: the first norm of `x`, hidden-masked under `z`.
    pub fn attention_input(&self, x: Tensor<B, 3>, z: Option<&LayerZ<B>>) -> Tensor<B, 3> {
        match z {
            None => self.input_layernorm.forward(x),
            Some(z) => self.input_layernorm.forward_masked(x, z.hidden.as_ref()),
        }
    }

    /// The rest of the block after the attention: `x + a` (layer-masked), then the FFN
    /// sub-block.
    pub fn after_attention(
        &self,
        x: Tensor<B, 3>,
        a: Tensor<B, 3>,
        z: Option<&LayerZ<B>>,
    ) -> Tensor<B, 3> {
        let Some(z) = z else {
            let x = x + a;
            let f = self
                .mlp
                .forward(self.post_attention_layernorm.forward(x.clone()), None);
            return x + f;
        };
        let zh = z.hidden.as_ref();
        let x = x + scale_output(a, z, false);
        let f = self.mlp.forward(
            self.post_attention_layernorm.forward_masked(x.clone(), zh),
            z.intermediate.as_ref(),
        );
        x + scale_output(f, z, true)
    }
}

/// `LlamaForCausalLM`.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the LM head is tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    pub rope: Rotary<B>,
    #[module(skip)]
    pub config: LlamaConfig,
}

fn linear<B: Backend>(weight: Tensor<B, 2>) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(weight),
        bias: None,
    }
}

impl<B: Backend> Llama<B> {
    /// Builds the model with every weight taken from `source` (a checkpoint, or an initializer).
    /// Tensor names are the Hugging Face ones.
    pub fn from_source(
        config: &LlamaConfig,
        source: &mut impl WeightSource<B>,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let (d, q, kv, m) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        let rms = |w: Tensor<B, 1>| RmsNorm {
            weight: Param::from_tensor(w),
            eps: c.rms_norm_eps,
        };
        let embed = source.embedding(names::EMBED, c.vocab_size, d, device)?;
        let embed_tokens = Embedding {
            weight: Param::from_tensor(embed),
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let mut lin = |t: LayerTensor, d_in: usize, d_out: usize| -> Result<Linear<B>> {
                let weight = source.linear(&names::layer(i, t), d_in, d_out, device)?;
                let bias = match c.attention_bias && t.is_attention() {
                    true => Some(source.bias(&names::layer_bias(i, t), d_out, device)?),
                    false => None,
                };
                Ok(Linear {
                    weight: Param::from_tensor(weight),
                    bias: bias.map(Param::from_tensor),
                })
            };
            let self_attn = Attention {
                q_proj: lin(LayerTensor::QProj, d, q)?,
                k_proj: lin(LayerTensor::KProj, d, kv)?,
                v_proj: lin(LayerTensor::VProj, d, kv)?,
                o_proj: lin(LayerTensor::OProj, q, d)?,
                n_heads: c.num_attention_heads,
                n_kv_heads: c.num_key_value_heads,
                head_dim: c.head_dim,
            };
            let mlp = Mlp {
                gate_proj: lin(LayerTensor::GateProj, d, m)?,
                up_proj: lin(LayerTensor::UpProj, d, m)?,
                down_proj: lin(LayerTensor::DownProj, m, d)?,
            };
            let ln1 = source.norm(&names::layer(i, LayerTensor::InputNorm), d, device)?;
            let ln2 = source.norm(&names::layer(i, LayerTensor::PostNorm), d, device)?;
            layers.push(Block {
                input_layernorm: rms(ln1),
                self_attn,
                post_attention_layernorm: rms(ln2),
                mlp,
            });
        }
        let norm = rms(source.norm(names::NORM, d, device)?);
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(linear(source.linear(
                names::LM_HEAD,
                d,
                c.vocab_size,
                device,
            )?))
        };
        Ok(Llama {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: Rotary::new(c.head_dim, &c.rope, c.max_position_embeddings, device),
            config: config.clone(),
        })
    }

    /// Final hidden states `[batch, seq] -> [batch, seq, d]` (after the final norm).
    fn hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        mut cache: Option<&mut KvCache<B>>,
        z: Option<&ZMasks<B>>,
    ) -> Tensor<B, 3> {
        let start = cache.as_ref().map_or(0, |c| c.len());
        let seq = input_ids.dims()[1];
        let mut x = self.embed_masked(input_ids, z);
        for (i, layer) in self.layers.iter().enumerate() {
            let entry = cache.as_mut().map(|c| c.layer_mut(i));
            let lz = z.map(|z| z.layer_z(i));
            x = layer.forward(x, &self.rope, start, entry, lz.as_ref());
        }
        if let Some(c) = cache {
            c.advance(seq);
        }
        self.final_norm(x, z)
    }

    /// The embedding of `input_ids`, masked: `[batch, seq] -> [batch, seq, d]`, the input of
    /// block 0.
    pub fn embed_masked(
        &self,
        input_ids: Tensor<B, 2, Int>,
        z: Option<&ZMasks<B>>,
    ) -> Tensor<B, 3> {
        let x = self.embed_tokens.forward(input_ids);
        // docs/algorithm.md §0.2: with an untied head the embedding output is masked too, so that
        // the masked model and the materialized one agree exactly; a tied embedding stays
        // unmasked (it is also the head) and is only sliced at materialization.
        match (z.and_then(|z| z.hidden.as_ref()), &self.lm_head) {
            (Some(h), Some(_)) => x * h.clone().unsqueeze::<3>(),
            _ => x,
        }
    }

    /// The final norm of the last block's output: `[batch, seq, d] -> [batch, seq, d]`.
    pub fn final_norm(&self, x: Tensor<B, 3>, z: Option<&ZMasks<B>>) -> Tensor<B, 3> {
        self.norm
            .forward_masked(x, z.and_then(|z| z.hidden.as_ref()))
    }

    /// The mean next-token cross-entropy from final hidden states `h [batch, seq, d]` (after
    /// the final norm) of `input_ids [batch, seq]` -> `[1]`: the LM head and its loss in one
    /// operation (lm_loss.rs), without `[b, n, vocab]` logits; the last position predicts
    /// nothing and is left out.
    pub fn head_loss(&self, h: Tensor<B, 3>, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let (h, targets) = predicting_rows(h, input_ids);
        let (w, layout) = self.head_weight();
        lm_head_loss(h, w, layout, targets)
    }

    /// The LM head's weight and which side of it the vocabulary is on: the `lm_head` `[d,
    /// vocab]`, or the tied embedding `[vocab, d]`.
    pub fn head_weight(&self) -> (Tensor<B, 2>, HeadLayout) {
        match &self.lm_head {
            Some(head) => (head.weight.val(), HeadLayout::InOut),
            None => (self.embed_tokens.weight.val(), HeadLayout::OutIn),
        }
    }

    /// [`Llama::head_loss`] under logit distillation (distill_loss.rs, docs/algorithm.md §7.1):
    /// `CE + weight · T² · KL(teacher_T ‖ student_T)` over the positions that predict a token,
    /// from this model's final hidden states `h [batch, seq, d]` and the teacher's
    /// `teacher_h [batch, seq, d_t]` with its head `teacher_head` (no gradient) -> `[1]` and
    /// its parts.
    pub fn head_distill_loss(
        &self,
        h: Tensor<B, 3>,
        input_ids: Tensor<B, 2, Int>,
        teacher_h: Tensor<B, 3>,
        teacher_head: (Tensor<B, 2>, HeadLayout),
        d: Distillation,
    ) -> (Tensor<B, 1>, DistillFigures) {
        let (h, targets) = predicting_rows(h, input_ids.clone());
        let (teacher_h, _) = predicting_rows(teacher_h, input_ids);
        let (w, layout) = self.head_weight();
        let teacher = TeacherHead {
            h: teacher_h,
            w: teacher_head.0,
            layout: teacher_head.1,
        };
        lm_head_distill_loss(h, w, layout, targets, teacher, d)
    }

    /// Hidden states to logits: `[batch, seq, d] -> [batch, seq, vocab]`.
    pub fn lm_logits(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => precision::linear(head, h),
            None => matmul(h, self.embed_tokens.weight.val().transpose()),
        }
    }

    /// `[batch, seq] -> [batch, seq, vocab]`
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.lm_logits(self.hidden(input_ids, None, None))
    }

    /// Forward for new tokens `[batch, new]` after those already in `cache`; returns their
    /// logits `[batch, new, vocab]` and appends their keys/values to the cache.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        self.lm_logits(self.hidden(input_ids, Some(cache), None))
    }

    /// Final hidden states of the masked model (plain with `z = None`), after the final norm:
    /// `[batch, seq] -> [batch, seq, d]`.
    pub fn hidden_masked(
        &self,
        input_ids: Tensor<B, 2, Int>,
        z: Option<&ZMasks<B>>,
    ) -> Tensor<B, 3> {
        self.hidden(input_ids, None, z)
    }

    /// Training loss: mean next-token cross-entropy of `input_ids [batch, seq]` -> `[1]`.
    /// Equals `next_token_loss(self.forward(ids), ids)`, but the last position's logits (which
    /// predict nothing) are never computed.
    pub fn loss(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        self.loss_masked(input_ids, None)
    }

    /// Masked forward (docs/algorithm.md §1.2 with §0.2): `[batch, seq] -> [batch, seq, vocab]`.
    pub fn forward_masked(&self, input_ids: Tensor<B, 2, Int>, z: &ZMasks<B>) -> Tensor<B, 3> {
        self.lm_logits(self.hidden(input_ids, None, Some(z)))
    }

    /// Training loss of the masked model (or of the plain one with `z = None`).
    pub fn loss_masked(&self, input_ids: Tensor<B, 2, Int>, z: Option<&ZMasks<B>>) -> Tensor<B, 1> {
        self.head_loss(self.hidden(input_ids.clone(), None, z), input_ids)
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.layers.len())
    }
}

/// The rows of `h [batch, seq, d]` that predict a token, flattened, and their targets (the
/// next tokens of `input_ids [batch, seq]`): `([batch · (seq − 1), d], [batch · (seq − 1)])`.
fn predicting_rows<B: Backend>(
    h: Tensor<B, 3>,
    input_ids: Tensor<B, 2, Int>,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let s = input_ids.dims()[1];
    let h = h.narrow(1, 0, s - 1); // [b, s-1, d]
    let [b, n, d] = h.dims();
    let targets = input_ids.narrow(1, 1, s - 1).reshape([b * n]);
    (h.reshape([b * n, d]), targets)
}
