//! Activation recomputation per block (`--recompute`, docs/algorithm.md §13.2): the gradients of
//! a loss with only the blocks' inputs kept between the forward and the backward pass, and the
//! attention computed a block of queries at a time in both passes (§13.4).
//!
//! burn's autodiff keeps every intermediate of the forward pass for the backward (at 4 096
//! tokens, mostly the attention scores). Here the forward runs without a graph and keeps the
//! input of each block. The backward then goes block by block from the last: the block's
//! forward is redone from its saved input, with a graph, and back-propagated from the gradient
//! that reached its output. Only one block's graph exists at a time, and each block's gradients
//! go straight into the running sum, so there is no second full-size copy of the gradients.
//! The arithmetic is the plain backward's, in the same order within each block; the result
//! differs only in the order of a few sums (the tied embedding's two uses, the masks' uses in
//! every block).
//!
//! The masks `z` enter every block. So that the blocks' graphs stay separate, each block sees
//! `z` as a leaf; the gradients reaching the leaves are summed and returned, and the caller
//! back-propagates them into `log_alpha` ([`z_surrogate`]).

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use shear_model::{Llama, ZMasks};

use crate::grads::GradSum;

/// What [`gradients`] returns besides the model's gradients (added to the caller's sum): the
/// gradients of the mask values `z` (inner tensors, same layout as `z`) when masks were given,
/// and what the head reported.
pub struct Recomputed<B: AutodiffBackend, T> {
    pub z: Option<ZMasks<B::InnerBackend>>,
    pub head: T,
}

/// `z` as leaves of a new graph (same values, no history).
fn leaves<B: AutodiffBackend>(z: &ZMasks<B>) -> ZMasks<B> {
    fn leaf<B: AutodiffBackend, const D: usize>(t: &Option<Tensor<B, D>>) -> Option<Tensor<B, D>> {
        t.as_ref()
            .map(|t| Tensor::from_inner(t.clone().inner()).require_grad())
    }
    ZMasks {
        hidden: leaf(&z.hidden),
        head: leaf(&z.head),
        intermediate: leaf(&z.intermediate),
        layer: leaf(&z.layer),
        mlp: leaf(&z.mlp),
    }
}

/// The gradients that reached `z`'s leaves in `grads`, added to `sum`.
fn add_z_grads<B: AutodiffBackend>(
    sum: &mut Option<ZMasks<B::InnerBackend>>,
    z: &ZMasks<B>,
    grads: &B::Gradients,
) {
    fn add<B: AutodiffBackend, const D: usize>(
        acc: &mut Option<Tensor<B::InnerBackend, D>>,
        leaf: &Option<Tensor<B, D>>,
        grads: &B::Gradients,
    ) {
        if let Some(g) = leaf.as_ref().and_then(|t| t.grad(grads)) {
            *acc = Some(match acc.take() {
                Some(a) => a + g,
                None => g,
            });
        }
    }
    let s = sum.get_or_insert(ZMasks {
        hidden: None,
        head: None,
        intermediate: None,
        layer: None,
        mlp: None,
    });
    add(&mut s.hidden, &z.hidden, grads);
    add(&mut s.head, &z.head, grads);
    add(&mut s.intermediate, &z.intermediate, grads);
    add(&mut s.layer, &z.layer, grads);
    add(&mut s.mlp, &z.mlp, grads);
}

/// The inner-backend values of `z`.
fn inner<B: AutodiffBackend>(z: &ZMasks<B>) -> ZMasks<B::InnerBackend> {
    fn i<B: AutodiffBackend, const D: usize>(
        t: &Option<Tensor<B, D>>,
    ) -> Option<Tensor<B::InnerBackend, D>> {
        t.as_ref().map(|t| t.clone().inner())
    }
    ZMasks {
        hidden: i(&z.hidden),
        head: i(&z.head),
        intermediate: i(&z.intermediate),
        layer: i(&z.layer),
        mlp: i(&z.mlp),
    }
}

/// Adds to `sum` the gradients of `weight · loss` for the model masked by `z` (plain when
/// `None`) on `input_ids [batch, seq]`, where `head(h)` is the loss of the final hidden states
/// `h [batch, seq, d]` (after the final norm) and anything it reports. Each block's gradients
/// join `sum` as soon as they are made (docs/algorithm.md §13.3: one full set per step).
pub fn gradients<B, T>(
    model: &Llama<B>,
    input_ids: Tensor<B, 2, Int>,
    z: Option<&ZMasks<B>>,
    weight: f64,
    sum: &mut GradSum<'_>,
    head: impl FnOnce(Tensor<B, 3>) -> crate::Result<(Tensor<B, 1>, T)>,
) -> crate::Result<Recomputed<B, T>>
where
    B: AutodiffBackend,
{
    gradients_blockwise(model, input_ids, z, weight, ATTENTION_BLOCK, sum, head)
}

/// Queries per block of the attention under recomputation (docs/algorithm.md §13.4): at 4 096
/// positions and 32 heads, one block's scores are 256 MiB per sequence instead of 2 GiB.
pub const ATTENTION_BLOCK: usize = 512;

/// [`gradients`] with the attention computed `block` queries at a time, forward and backward.
pub fn gradients_blockwise<B, T>(
    model: &Llama<B>,
    input_ids: Tensor<B, 2, Int>,
    z: Option<&ZMasks<B>>,
    weight: f64,
    block: usize,
    sum: &mut GradSum<'_>,
    head: impl FnOnce(Tensor<B, 3>) -> crate::Result<(Tensor<B, 1>, T)>,
) -> crate::Result<Recomputed<B, T>>
where
    B: AutodiffBackend,
{
    // Forward without a graph, keeping each block's input.
    let plain = model.valid();
    let z_inner = z.map(inner);
    let mut inputs = Vec::with_capacity(model.layers.len() + 1);
    let mut x = plain.embed_masked(input_ids.clone().inner(), z_inner.as_ref());
    for (i, layer) in plain.layers.iter().enumerate() {
        let lz = z_inner.as_ref().map(|z| z.layer_z(i));
        let next = layer.forward_blockwise(x.clone(), &plain.rope, lz.as_ref(), block);
        inputs.push(x);
        x = next;
    }
    let z_leaf = z.map(leaves);
    let mut z_grads = None;

    // The head: final norm, LM head, loss.
    let last = Tensor::<B, 3>::from_inner(x).require_grad();
    let (loss, reported) = head(model.final_norm(last.clone(), z_leaf.as_ref()))?;
    let grads = (loss * weight).backward();
    let mut g = last
        .grad(&grads)
        .expect("the loss depends on the last block");
    if let Some(zl) = &z_leaf {
        add_z_grads(&mut z_grads, zl, &grads);
    }
    sum.add(model, GradientsParams::from_grads(grads, model))?;

    // The blocks, last first, each in three graphs that never coexist: (1) after the attention,
    // from the saved input and the attention's context as leaves, back-propagating `g`; (2) the
    // attention, one query block at a time (`attention_grads`); (3) the queries, keys and values
    // from the saved input, back-propagating what (2) gave them. The input's gradient is the
    // sum of what (1) and (3) give it.
    for (i, layer) in model.layers.iter().enumerate().rev() {
        let saved = inputs.pop().expect("one per block");
        let lz_inner = z_inner.as_ref().map(|z| z.layer_z(i));
        let plain_layer = &plain.layers[i];
        let (q, k, v) = plain_layer.self_attn.qkv(
            plain_layer.attention_input(saved.clone(), lz_inner.as_ref()),
            &plain.rope,
            0,
        );
        let ctx =
            shear_model::attention_blocks::causal_attention(q.clone(), k.clone(), v.clone(), block);
        let lz = z_leaf.as_ref().map(|z| z.layer_z(i));

        // (1)
        let input = Tensor::<B, 3>::from_inner(saved.clone()).require_grad();
        let ctx = Tensor::<B, 4>::from_inner(ctx).require_grad();
        let a = layer
            .self_attn
            .output(ctx.clone(), lz.as_ref().and_then(|z| z.head.as_ref()));
        let out = layer.after_attention(input.clone(), a, lz.as_ref());
        let grads = (out * Tensor::from_inner(g)).sum().backward();
        let g_residual = input
            .grad(&grads)
            .expect("a block's output depends on its input");
        let g_ctx = ctx.grad(&grads).expect("the output depends on the context");
        if let Some(zl) = &z_leaf {
            add_z_grads(&mut z_grads, zl, &grads);
        }
        sum.add(model, GradientsParams::from_grads(grads, model))?;

        // (2)
        let [dq, dk, dv] = attention_grads::<B>(q, k, v, g_ctx, block);

        // (3)
        let input = Tensor::<B, 3>::from_inner(saved).require_grad();
        let (q, k, v) = layer.self_attn.qkv(
            layer.attention_input(input.clone(), lz.as_ref()),
            &model.rope,
            0,
        );
        let surrogate = (q * Tensor::from_inner(dq)).sum()
            + (k * Tensor::from_inner(dk)).sum()
            + (v * Tensor::from_inner(dv)).sum();
        let grads = surrogate.backward();
        let g_attention = input
            .grad(&grads)
            .expect("the queries depend on the block's input");
        if let Some(zl) = &z_leaf {
            add_z_grads(&mut z_grads, zl, &grads);
        }
        sum.add(model, GradientsParams::from_grads(grads, model))?;
        g = g_residual + g_attention;
    }
    drop(plain);

    // The embedding.
    let x0 = model.embed_masked(input_ids, z_leaf.as_ref());
    let grads = (x0 * Tensor::from_inner(g)).sum().backward();
    if let Some(zl) = &z_leaf {
        add_z_grads(&mut z_grads, zl, &grads);
    }
    sum.add(model, GradientsParams::from_grads(grads, model))?;
    Ok(Recomputed {
        z: z_grads,
        head: reported,
    })
}

/// The gradients of the block-wise causal attention's inputs `q [b, h, s, hd]`, `k, v [b,
/// kvh, s, hd]` (`[dq, dk, dv]`) given the gradient `g_ctx [b, h, s, hd]` of its context: each query block's
/// attention is redone with a graph of its own and back-propagated, its keys' and values'
/// gradients summed over the blocks that see them. One block's scores exist at a time.
pub fn attention_grads<B: AutodiffBackend>(
    q: Tensor<B::InnerBackend, 4>,
    k: Tensor<B::InnerBackend, 4>,
    v: Tensor<B::InnerBackend, 4>,
    g_ctx: Tensor<B::InnerBackend, 4>,
    block: usize,
) -> [Tensor<B::InnerBackend, 4>; 3] {
    use shear_model::attention_blocks::{block_context, blocks, visible};
    let [b, kvh, s, hd] = k.dims();
    let device = k.device();
    let pad = |g: Tensor<B::InnerBackend, 4>, t: usize| match t < s {
        true => Tensor::cat(vec![g, Tensor::zeros([b, kvh, s - t, hd], &device)], 2),
        false => g,
    };
    let mut dq = Vec::new();
    let (mut dk, mut dv) = (None, None);
    for rows in blocks(s, block) {
        let (start, n) = (rows.start, rows.len());
        let t = visible(start, n);
        let leaf = |x: Tensor<B::InnerBackend, 4>| Tensor::<B, 4>::from_inner(x).require_grad();
        let qb = leaf(q.clone().narrow(2, start, n));
        let kb = leaf(k.clone().narrow(2, 0, t));
        let vb = leaf(v.clone().narrow(2, 0, t));
        let ctx = block_context(qb.clone(), kb.clone(), vb.clone(), start);
        let g = Tensor::<B, 4>::from_inner(g_ctx.clone().narrow(2, start, n));
        let grads = (ctx * g).sum().backward();
        dq.push(qb.grad(&grads).expect("the context depends on the queries"));
        let add = |acc: Option<Tensor<B::InnerBackend, 4>>, g: Tensor<B::InnerBackend, 4>| {
            let g = pad(g, t);
            Some(match acc {
                Some(a) => a + g,
                None => g,
            })
        };
        dk = add(
            dk,
            kb.grad(&grads).expect("the context depends on the keys"),
        );
        dv = add(
            dv,
            vb.grad(&grads).expect("the context depends on the values"),
        );
    }
    [
        Tensor::cat(dq, 2),
        dk.expect("at least one block"),
        dv.expect("at least one block"),
    ]
}

/// `Σ z · g` over the mask tensors: back-propagated, it carries the gradients `g` that reached
/// the values `z` (from [`gradients`]) into what `z` was computed from (`log_alpha`).
pub fn z_surrogate<B: AutodiffBackend>(z: &ZMasks<B>, g: &ZMasks<B::InnerBackend>) -> Tensor<B, 1> {
    fn term<B: AutodiffBackend, const D: usize>(
        z: &Option<Tensor<B, D>>,
        g: &Option<Tensor<B::InnerBackend, D>>,
    ) -> Option<Tensor<B, 1>> {
        match (z, g) {
            (Some(z), Some(g)) => Some((z.clone() * Tensor::from_inner(g.clone())).sum()),
            _ => None,
        }
    }
    [
        term(&z.hidden, &g.hidden),
        term(&z.head, &g.head),
        term(&z.intermediate, &g.intermediate),
        term(&z.layer, &g.layer),
        term(&z.mlp, &g.mlp),
    ]
    .into_iter()
    .flatten()
    .reduce(|a, b| a + b)
    .unwrap_or_else(|| Tensor::zeros([1], &z_device(z)))
}

fn z_device<B: Backend>(z: &ZMasks<B>) -> B::Device {
    z.hidden
        .as_ref()
        .map(|t| t.device())
        .or_else(|| z.layer.as_ref().map(|t| t.device()))
        .or_else(|| z.mlp.as_ref().map(|t| t.device()))
        .or_else(|| z.head.as_ref().map(|t| t.device()))
        .or_else(|| z.intermediate.as_ref().map(|t| t.device()))
        .unwrap_or_default()
}
