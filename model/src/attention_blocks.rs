//! Causal self-attention a block of queries at a time (docs/algorithm.md §13.4), so that the
//! `[heads, seq, seq]` scores never exist at once: each block of `n` queries has scores
//! `[batch, kv_heads, groups · n, visible keys]`, softmaxed, applied to the values and
//! dropped before the next block.
//!
//! Grouped-query attention reads the keys and values as they are, `[batch, kv_heads, seq, hd]`:
//! the query heads of one group are stacked along the query axis of the same product, so no
//! repeated copy of the keys and values is made. Each row's softmax is the plain attention's
//! row over the same keys, so the result is the same function; only the order of a few sums
//! changes (`train/tests/recompute.rs` compares both within 1e-5, outputs and gradients).
//!
//! Written here with burn's tensor operations, which every backend has: burn 0.21's fused
//! attention has no backward pass, and its decomposed fallback keeps every score for it. Under
//! `--recompute` the backward pass goes block by block as well (train/src/recompute.rs).

use burn::prelude::*;
use burn::tensor::activation::softmax;

/// The key positions query block `[start, start + n)` sees: `0 .. start + n`.
pub fn visible(start: usize, n: usize) -> usize {
    start + n
}

/// The query blocks of a sequence of `seq` positions, `block` at a time (the last one shorter
/// when `block` does not divide `seq`).
pub fn blocks(seq: usize, block: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let block = block.max(1);
    (0..seq.div_ceil(block)).map(move |i| i * block..((i + 1) * block).min(seq))
}

/// The context of query block `rows` (`q_block [b, h, n, hd]`, the queries at positions
/// `rows`) over the keys and values before and at those positions (`k, v [b, kvh, visible,
/// hd]`): `[b, h, n, hd]`.
pub fn block_context<B: Backend>(
    q_block: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    start: usize,
) -> Tensor<B, 4> {
    let [b, h, n, hd] = q_block.dims();
    let [_, kvh, t, _] = k.dims();
    let groups = h / kvh;
    // [b, kvh, groups · n, hd]: query head kvh·g + i is row i·n.. of group kvh's stack.
    let q = q_block.reshape([b, kvh, groups * n, hd]);
    let scale = (hd as f64).sqrt().recip();
    let scores = q.matmul(k.swap_dims(2, 3)) * scale; // [b, kvh, groups · n, t]
                                                      // Query start + r may see keys 0..=start + r: hidden above the diagonal shifted by start.
    let hidden = Tensor::<B, 2, Bool>::tril_mask([n, t], start as i64, &scores.device())
        .unsqueeze_dim::<3>(0)
        .expand([groups, n, t])
        .reshape([1, 1, groups * n, t]);
    let scores = scores.mask_fill(hidden, f32::NEG_INFINITY);
    let probs = softmax(scores, 3);
    probs.matmul(v).reshape([b, h, n, hd])
}

/// Causal attention of `q [b, h, s, hd]` over `k, v [b, kvh, s, hd]` (`kvh` divides `h`),
/// `block` queries at a time: `[b, h, s, hd]`, as `burn::tensor::module::attention` with
/// `is_causal` and the keys and values repeated to every query head.
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    block: usize,
) -> Tensor<B, 4> {
    let s = q.dims()[2];
    let parts: Vec<_> = blocks(s, block)
        .map(|rows| {
            let t = visible(rows.start, rows.len());
            block_context(
                q.clone().narrow(2, rows.start, rows.len()),
                k.clone().narrow(2, 0, t),
                v.clone().narrow(2, 0, t),
                rows.start,
            )
        })
        .collect();
    Tensor::cat(parts, 2)
}
