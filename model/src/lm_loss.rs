//! The LM head and its cross-entropy, fused (docs/algorithm.md §12):
//! `mean_i(logsumexp(h_i W) − (h_i W)[t_i])` for hidden states `h [n, d]`, the head `W` and
//! targets `t [n]`, without the `[n, vocab]` logits ever
//! existing whole (the idea of Liger's fused linear cross-entropy and Apple's "cut
//! cross-entropy"). At a 32 000-word vocabulary the logits and their gradient are most of a small
//! model's step — in allocations, exponentials and memory traffic — and at 128 k (Llama-3) most of
//! its memory.
//!
//! On the CPU backend (Flex) the forward pass goes through the rows a chunk at a time: the chunk's
//! logits (one matrix product), their softmax (one exponential per logit), the loss, and — since
//! the loss is the end of the graph — the gradients right away: `dh = (softmax − onehot) Wᵀ / n`
//! and `dW += hᵀ (softmax − onehot) / n`, into buffers that are reused from chunk to chunk. The
//! backward pass only scales those by the incoming gradient. Three matrix products, as the plain
//! composition has, one exponential pass instead of two, and no vocabulary-sized tensor. It is a
//! custom operation of burn's autodiff backend (its `Backward` trait) on `Autodiff<Flex>`, chosen
//! at run time; every other backend, and bf16 compute, use the plain composition
//! ([`lm_head_loss_reference`]), which the tests compare it with.
//!
//! The cross-entropy of full logits ([`cross_entropy`], and [`next_token_loss`] for evaluation
//! and the plain forward) lives here too, so that this file needs nothing from the model
//! (llama.rs calls into it, never the other way).

use burn::prelude::*;

use crate::precision;

/// Which side of the head's weight the vocabulary is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadLayout {
    /// `W [d, vocab]` (a `Linear`'s `[in, out]`).
    InOut,
    /// `W [vocab, d]` (a tied embedding).
    OutIn,
}

/// Mean cross-entropy of the logits `h W` against `targets` -> `[1]`.
/// `h [n, d]`, `w [d, vocab]` or `[vocab, d]` (see `layout`), `targets [n]`.
pub fn lm_head_loss<B: Backend>(
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    layout: HeadLayout,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    #[cfg(feature = "flex")]
    if precision::compute() == precision::Compute::F32 {
        match flex::fused::<B>(h, w, layout, targets) {
            Ok(loss) => return loss,
            Err((h, w, targets)) => return lm_head_loss_reference(h, w, layout, targets),
        }
    }
    lm_head_loss_reference(h, w, layout, targets)
}

/// The plain composition: logits, then `mean(logsumexp − logit[target])`.
pub fn lm_head_loss_reference<B: Backend>(
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    layout: HeadLayout,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [n, _] = h.dims();
    let w = match layout {
        HeadLayout::InOut => w,
        HeadLayout::OutIn => w.transpose(),
    };
    let logits = precision::matmul(h.unsqueeze::<3>(), w); // [1, n, V]
    cross_entropy(logits, targets.reshape([1, n]))
}

/// Mean cross-entropy of `logits [b, n, V]` against `targets [b, n]` -> scalar `[1]`.
///
/// Computed as `mean(logsumexp(logits) - logits[target])` rather than through a full
/// `log_softmax`: the vocabulary-sized tensor is touched by fewer element-wise passes, which is
/// where a small model spends most of its step.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, n, _] = logits.dims();
    let picked = logits.clone().gather(2, targets.reshape([b, n, 1])); // [b, n, 1]
    let shift = logits.clone().detach().max_dim(2); // [b, n, 1], no gradient needed
    let lse = (logits - shift.clone()).exp().sum_dim(2).log() + shift; // [b, n, 1]
    (lse - picked).mean()
}

/// Mean next-token cross-entropy (Hugging Face's causal-LM loss) from full logits: position t
/// predicts token t+1. `logits [b, s, V]`, `input_ids [b, s]` -> scalar `[1]`.
pub fn next_token_loss<B: Backend>(
    logits: Tensor<B, 3>,
    input_ids: Tensor<B, 2, Int>,
) -> Tensor<B, 1> {
    let s = logits.dims()[1];
    cross_entropy(logits.narrow(1, 0, s - 1), input_ids.narrow(1, 1, s - 1))
}

#[cfg(feature = "flex")]
pub(crate) mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{binary, Backward, Ops, OpsKind};
    use burn::backend::Flex;
    use burn::prelude::*;
    use burn::tensor::ops::FloatTensorOps;
    use burn::tensor::TensorPrimitive;
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use super::HeadLayout;
    use crate::flex_ops::{cast, same, AD};
    use crate::tensor_data::{to_vec_f32, to_vec_i64};

    type Args<B> = (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1, Int>);

    /// The fused loss when `B` is `Autodiff<Flex>` (with its backward) or `Flex`; the arguments
    /// back otherwise.
    pub(super) fn fused<B: Backend>(
        h: Tensor<B, 2>,
        w: Tensor<B, 2>,
        layout: HeadLayout,
        targets: Tensor<B, 1, Int>,
    ) -> Result<Tensor<B, 1>, Args<B>> {
        let host_targets = || -> Vec<i64> { to_vec_i64(targets.to_data()) };
        let args = match cast::<Args<B>, Args<AD>>((h, w, targets.clone())) {
            Ok((h, w, _)) => {
                let loss = autodiff(h, w, layout, &host_targets());
                return Ok(same::<Tensor<AD, 1>, Tensor<B, 1>>(loss));
            }
            Err(args) => args,
        };
        match cast::<Args<B>, Args<Flex>>(args) {
            Ok((h, w, _)) => {
                let h = h.into_primitive().tensor();
                let w = w.into_primitive().tensor();
                let (loss, _) = kernel(&h, &w, layout, &host_targets(), false);
                let loss = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(loss));
                Ok(same::<Tensor<Flex, 1>, Tensor<B, 1>>(loss))
            }
            Err(args) => Err(args),
        }
    }

    /// The gradients the forward pass already computed, scaled in the backward pass.
    #[derive(Debug)]
    pub(crate) struct FusedLmHeadLoss;

    impl Backward<Flex, 2> for FusedLmHeadLoss {
        /// `dh [n, d]` and `dW` (the weight's shape) of the mean loss.
        type State = (FlexTensor, FlexTensor);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let (dh, dw) = ops.state;
            let scale = |grad: FlexTensor| -> f32 { to_vec_f32(grad.into_data())[0] };
            // The loss is a scalar: its gradient is one number, read once.
            let g = std::cell::Cell::new(None::<f32>);
            binary::<Flex, _, _>(
                ops.parents,
                ops.node,
                grads,
                |grad| {
                    let s = *g.get().get_or_insert_with(|| scale(grad));
                    g.set(Some(s));
                    Flex::float_mul_scalar(dh, s.into())
                },
                |grad| {
                    let s = match g.get() {
                        Some(s) => s,
                        None => scale(grad),
                    };
                    Flex::float_mul_scalar(dw, s.into())
                },
            );
        }
    }

    fn autodiff(
        h: Tensor<AD, 2>,
        w: Tensor<AD, 2>,
        layout: HeadLayout,
        t: &[i64],
    ) -> Tensor<AD, 1> {
        let h = h.into_primitive().tensor();
        let w = w.into_primitive().tensor();
        let out = match FusedLmHeadLoss
            .prepare::<NoCheckpointing>([h.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, g) = kernel(&h.primitive, &w.primitive, layout, t, true);
                prep.finish(g.expect("gradients were asked for"), loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(kernel(&h.primitive, &w.primitive, layout, t, false).0)
            }
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// A row-major view of a 2-D Flex tensor's storage: pointer, row stride, column stride.
    pub(crate) struct View<'a> {
        pub(crate) data: &'a [f32],
        pub(crate) offset: usize,
        pub(crate) rs: isize,
        pub(crate) cs: isize,
        pub(crate) rows: usize,
        pub(crate) cols: usize,
    }

    /// The view of `t`, which must have non-negative strides. Panics unless every element its
    /// layout addresses lies inside its storage: `offset + (rows − 1)·rs + (cols − 1)·cs <
    /// data.len()` for a non-empty view, `offset ≤ data.len()` for an empty one. The pointer
    /// arithmetic in [`kernel`] relies on this.
    pub(crate) fn view(t: &FlexTensor) -> View<'_> {
        let l = t.layout();
        let s = l.shape();
        let st = l.strides();
        let v = View {
            data: t.storage::<f32>(),
            offset: l.start_offset(),
            rs: st[0],
            cs: st[1],
            rows: s[0],
            cols: s[1],
        };
        // One past the last element addressed.
        let end = if v.rows == 0 || v.cols == 0 {
            Some(v.offset)
        } else {
            let (rs, cs) = (usize::try_from(v.rs).ok(), usize::try_from(v.cs).ok());
            rs.zip(cs).and_then(|(rs, cs)| {
                let far = (v.rows - 1)
                    .checked_mul(rs)?
                    .checked_add((v.cols - 1).checked_mul(cs)?)?;
                v.offset.checked_add(far)?.checked_add(1)
            })
        };
        assert!(
            end.is_some_and(|end| end <= v.data.len()),
            "a [{}, {}] view with strides ({}, {}) at offset {} overruns its storage of {} elements",
            v.rows,
            v.cols,
            v.rs,
            v.cs,
            v.offset,
            v.data.len()
        );
        v
    }

    /// Rows per chunk: enough for the matrix products to run at full speed, few enough that a
    /// chunk's logits stay small (256 × 32 000 × 4 bytes = 32 MB at most).
    pub(crate) const CHUNK: usize = 256;

    /// Lanes of the hand-split reductions below: eight independent partial results, so that
    /// the compiler can keep them in one vector register (a single running value is a serial
    /// dependency it may not reorder).
    pub(crate) const LANES: usize = 8;

    pub(crate) fn row_max(row: &[f32]) -> f32 {
        let mut m = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for (m, &x) in m.iter_mut().zip(c) {
                *m = if x > *m { x } else { *m };
            }
        }
        rest.iter()
            .chain(&m)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// `row[i] = exp(row[i] − max)` in place; returns their sum.
    fn exp_shifted_sum(row: &mut [f32], max: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
                *x = exp_nonpositive(*x - max);
                *a += *x;
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for x in chunks.into_remainder() {
            *x = exp_nonpositive(*x - max);
            sum += *x;
        }
        sum
    }

    /// `e^x` for `x ≤ 0`, to about 2 ulp, in plain arithmetic the compiler vectorises (the libm
    /// call it replaces is one scalar call per logit, most of the softmax's time at a 32 000-word
    /// vocabulary): `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2` (ln 2 split in two parts, so `r` is
    /// exact), `e^r` by its degree-6 Taylor polynomial (truncation below 2e-8 on that interval),
    /// and `2^n` put into the exponent bits. Below −87 the result underflows to 0 (as `e^x` does
    /// in f32 at about −103.97; the difference is below 1e-38 and irrelevant to a softmax).
    #[inline(always)]
    pub(crate) fn exp_nonpositive(x: f32) -> f32 {
        const LN2_HI: f32 = 0.693_145_75;
        const LN2_LO: f32 = 1.428_606_8e-6;
        let x = x.max(-87.0);
        // Round to nearest by adding and subtracting 1.5·2²³ (the baseline x86-64 target has no
        // vector rounding instruction, and a `round` call would stop the vectorisation).
        const SHIFT: f32 = 12_582_912.0;
        let n = (x * std::f32::consts::LOG2_E + SHIFT) - SHIFT;
        let r = (x - n * LN2_HI) - n * LN2_LO;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        // n ∈ [−126, 0]: a normal power of two.
        p * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// Loss (`[1]`) and, when `grads`, `(dh, dW)` of the mean loss.
    fn kernel(
        h: &FlexTensor,
        w: &FlexTensor,
        layout: HeadLayout,
        targets: &[i64],
        grads: bool,
    ) -> (FlexTensor, Option<(FlexTensor, FlexTensor)>) {
        // Views that are not plain strided 2-D matrices of f32 are made contiguous first.
        let h = if h.layout().has_positive_strides() {
            h.clone()
        } else {
            h.to_contiguous()
        };
        let w = if w.layout().has_positive_strides() {
            w.clone()
        } else {
            w.to_contiguous()
        };
        let (hv, wv) = (view(&h), view(&w));
        let (n, d) = (hv.rows, hv.cols);
        // The head as `[d, vocab]` strides, whichever way it is stored.
        let (vocab, w_rs, w_cs) = match layout {
            HeadLayout::InOut => (wv.cols, wv.rs, wv.cs),
            HeadLayout::OutIn => (wv.rows, wv.cs, wv.rs),
        };
        assert_eq!(targets.len(), n, "one target per row");
        let inv_n = 1.0 / n.max(1) as f32;
        let mut total = 0f64;
        let mut dh = if grads { vec![0f32; n * d] } else { vec![] };
        let mut dw = if grads { vec![0f32; d * vocab] } else { vec![] };
        let mut logits = vec![0f32; CHUNK.min(n.max(1)) * vocab];
        let par = if rayon::current_num_threads() > 1 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // A row of `h` has at least one element, so that `h_ptr.offset(r0 · rs)` below stays in
        // the view (a width-0 model does not pass config validation anyway).
        assert!(n == 0 || d > 0, "hidden states of width 0");
        // SAFETY: `view` checked `offset ≤ data.len()` for both views (inside the storage for a
        // non-empty view, at most one past its end for an empty one), so both pointers stay
        // within, or one past the end of, the slice they come from.
        let h_ptr = unsafe { hv.data.as_ptr().add(hv.offset) };
        let w_ptr = unsafe { wv.data.as_ptr().add(wv.offset) };
        for r0 in (0..n).step_by(CHUNK) {
            let rows = CHUNK.min(n - r0);
            let lg = &mut logits[..rows * vocab];
            // logits [rows, V] = h[r0..] [rows, d] · W [d, V]
            // SAFETY: the destination `lg` holds `rows · vocab` elements and is written at
            // `i · vocab + j` (i < rows, j < vocab). The left operand reads `h` at
            // `offset + (r0 + i)·rs + k·cs` (r0 + i < n, k < d) and the right one `W` at
            // `offset + k·w_rs + j·w_cs`, i.e. element (k, j) or (j, k) of its [rows, cols]
            // view: all inside the storage, as `view` checked for these (non-empty) views;
            // `h_ptr.offset(r0 · rs)` is the start of row r0 < n, inside it too.
            unsafe {
                gemm::gemm(
                    rows,
                    vocab,
                    d,
                    lg.as_mut_ptr(),
                    1,
                    vocab as isize,
                    false,
                    h_ptr.offset(r0 as isize * hv.rs),
                    hv.cs,
                    hv.rs,
                    w_ptr,
                    w_cs,
                    w_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
            // Per row: logsumexp, the loss, and (softmax − onehot) / n in place.
            let losses: Vec<f64> = lg
                .par_chunks_mut(vocab)
                .zip(&targets[r0..r0 + rows])
                .map(|(row, &t)| {
                    let t = t as usize;
                    assert!(
                        t < vocab,
                        "target token {t} outside the vocabulary ({vocab})"
                    );
                    let max = row_max(row);
                    let picked = row[t];
                    let sum = exp_shifted_sum(row, max);
                    if grads {
                        let k = inv_n / sum;
                        row.iter_mut().for_each(|x| *x *= k);
                        row[t] -= inv_n;
                    }
                    (max + sum.ln() - picked) as f64
                })
                .collect();
            total += losses.iter().sum::<f64>();
            if !grads {
                continue;
            }
            // dh[r0..] [rows, d] = G [rows, V] · Wᵀ [V, d];  dW [d, V] += h[r0..]ᵀ [d, rows] · G
            // SAFETY: with `grads`, `dh` holds `n · d` and `dw` `d · vocab` elements. `dh` is
            // written from `r0 · d` at `(r0 + i)·d + k` (i < rows, k < d), below
            // `(r0 + rows)·d ≤ n · d` as `rows ≤ n − r0`; `dw` at `k · vocab + j` (k < d,
            // j < vocab). `lg` (`rows · vocab` elements) is read at `i · vocab + j`. `W` is read
            // at `offset + k·w_rs + j·w_cs` (k < d, j < vocab) and `h` at
            // `offset + (r0 + i)·rs + k·cs` (i < rows, k < d): elements of their views, inside
            // the storage as `view` checked. `dh`, `dw` and `lg` are distinct owned buffers, so
            // no destination overlaps an operand.
            unsafe {
                gemm::gemm(
                    rows,
                    d,
                    vocab,
                    dh.as_mut_ptr().add(r0 * d),
                    1,
                    d as isize,
                    false,
                    lg.as_ptr(),
                    1,
                    vocab as isize,
                    w_ptr,
                    w_rs,
                    w_cs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
                gemm::gemm(
                    d,
                    vocab,
                    rows,
                    dw.as_mut_ptr(),
                    1,
                    vocab as isize,
                    r0 > 0,
                    h_ptr.offset(r0 as isize * hv.rs),
                    hv.rs,
                    hv.cs,
                    lg.as_ptr(),
                    1,
                    vocab as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
        let loss =
            FlexTensor::from_data(TensorData::new(vec![(total / n.max(1) as f64) as f32], [1]));
        if !grads {
            return (loss, None);
        }
        let dh = FlexTensor::from_data(TensorData::new(dh, [n, d]));
        // dW in the weight's own layout.
        let dw = match layout {
            HeadLayout::InOut => FlexTensor::from_data(TensorData::new(dw, [d, vocab])),
            HeadLayout::OutIn => {
                let t = FlexTensor::from_data(TensorData::new(dw, [d, vocab]));
                t.transpose(0, 1).to_contiguous()
            }
        };
        (loss, Some((dh, dw)))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn exp_matches_libm_to_a_few_ulp() {
            let mut worst = 0f32;
            for i in 0..=200_000 {
                let x = -87.0 * i as f32 / 200_000.0;
                let (got, want) = (super::exp_nonpositive(x), x.exp());
                worst = worst.max(((got - want) / want).abs());
            }
            eprintln!("exp: largest relative error {worst:e} on [-87, 0]");
            assert!(worst <= 5e-7, "largest relative error {worst:e}");
            let row = [3.0f32, -1.0, 0.5, 2.0, 7.5, -3.0, 1.0, 0.0, 4.0, -2.5, 6.0];
            assert_eq!(super::row_max(&row), 7.5);
        }
    }
}
