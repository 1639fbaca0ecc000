//! The LM head's loss under logit distillation (docs/algorithm.md §7.1), fused like the plain
//! head loss (lm_loss.rs): for student hidden states `h [n, d]` with head `W`, the teacher's
//! hidden states `g [n, d_t]` with its head `U`, targets `t [n]`, a weight `w` and a
//! temperature `T`,
//!
//! `mean_i CE(h_i W, t_i) + w · T² · mean_i KL(softmax(g_i U / T) ‖ softmax(h_i W / T))`.
//!
//! On the CPU backend (Flex) the rows go a chunk at a time: the chunk's student and teacher
//! logits (two matrix products), per row the three normalisers, the loss and the gradient with
//! respect to the student's logits,
//! `((softmax(s) − onehot) + w · T · (softmax(s/T) − softmax(u/T))) / n`,
//! and from it `dh` and `dW` right away (two more products), as the plain head loss does. The
//! `[n, vocab]` logits of neither model exist whole. The teacher takes no gradient. Every other
//! backend, and bf16 compute, use the plain composition
//! ([`lm_head_distill_loss_reference`]), which the tests compare it with.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

use crate::lm_loss::{cross_entropy, HeadLayout};
use crate::precision;

/// How the distillation term weighs in: `loss = CE + weight · T² · KL` at temperature `T`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Distillation {
    pub weight: f64,
    pub temperature: f64,
}

/// The teacher's side of one loss: its final hidden states `h [n, d_t]` (after its final norm)
/// and its head (`[d_t, vocab]` or `[vocab, d_t]`, see `layout`). No gradient flows into them.
pub struct TeacherHead<B: Backend> {
    pub h: Tensor<B, 2>,
    pub w: Tensor<B, 2>,
    pub layout: HeadLayout,
}

/// The two parts of a distilled loss, read on the host: the mean cross-entropy and the mean
/// `KL(teacher_T ‖ student_T)` (without the `T²` factor and the weight).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DistillFigures {
    pub ce: f64,
    pub kl: f64,
}

/// The distilled loss `[1]` and its parts. `h [n, d]`, `w` the student's head (see `layout`),
/// `targets [n]`; the teacher's rows are the same `n` positions.
pub fn lm_head_distill_loss<B: Backend>(
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    layout: HeadLayout,
    targets: Tensor<B, 1, Int>,
    teacher: TeacherHead<B>,
    d: Distillation,
) -> (Tensor<B, 1>, DistillFigures) {
    #[cfg(feature = "flex")]
    if precision::compute() == precision::Compute::F32 {
        match flex::fused::<B>(h, w, layout, targets, teacher, d) {
            Ok(out) => return out,
            Err((h, w, targets, teacher)) => {
                return lm_head_distill_loss_reference(h, w, layout, targets, teacher, d)
            }
        }
    }
    lm_head_distill_loss_reference(h, w, layout, targets, teacher, d)
}

/// Mean over rows of `KL(softmax(teacher/T) ‖ softmax(student/T))` for logits `[b, n, V]`
/// -> `[1]` (the gradient flows into `student` only when `teacher` is detached).
pub fn kl_divergence<B: Backend>(
    student: Tensor<B, 3>,
    teacher: Tensor<B, 3>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [b, n, _] = student.dims();
    let log_s = log_softmax(student / temperature, 2);
    let t = teacher / temperature;
    let p_t = softmax(t.clone(), 2);
    let log_t = log_softmax(t, 2);
    (p_t * (log_t - log_s)).sum_dim(2).sum() / (b * n) as f64
}

/// The plain composition: both models' full logits, the cross-entropy and [`kl_divergence`].
pub fn lm_head_distill_loss_reference<B: Backend>(
    h: Tensor<B, 2>,
    w: Tensor<B, 2>,
    layout: HeadLayout,
    targets: Tensor<B, 1, Int>,
    teacher: TeacherHead<B>,
    d: Distillation,
) -> (Tensor<B, 1>, DistillFigures) {
    let [n, _] = h.dims();
    let logits = |h: Tensor<B, 2>, w: Tensor<B, 2>, layout| {
        let w = match layout {
            HeadLayout::InOut => w,
            HeadLayout::OutIn => w.transpose(),
        };
        precision::matmul(h.unsqueeze::<3>(), w) // [1, n, V]
    };
    let s = logits(h, w, layout);
    let u = logits(teacher.h, teacher.w, teacher.layout).detach();
    let ce = cross_entropy(s.clone(), targets.reshape([1, n]));
    let kl = kl_divergence(s, u, d.temperature);
    let figures = DistillFigures {
        ce: ce.clone().detach().into_scalar().elem::<f64>(),
        kl: kl.clone().detach().into_scalar().elem::<f64>(),
    };
    let t2 = d.temperature * d.temperature;
    (ce + kl * (d.weight * t2), figures)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::ops::{Backward, OpsKind};
    use burn::backend::Flex;
    use burn::prelude::*;
    use burn::tensor::TensorPrimitive;
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use super::{DistillFigures, Distillation, TeacherHead};
    use crate::flex_ops::{cast, same, AD};
    use crate::lm_loss::flex::{
        exp_nonpositive, row_max, view, FusedLmHeadLoss, View, CHUNK, LANES,
    };
    use crate::lm_loss::HeadLayout;
    use crate::tensor_data::to_vec_i64;

    type Args<B> = (
        Tensor<B, 2>,
        Tensor<B, 2>,
        Tensor<B, 1, Int>,
        Tensor<B, 2>,
        Tensor<B, 2>,
    );
    type Back<B> = (
        Tensor<B, 2>,
        Tensor<B, 2>,
        Tensor<B, 1, Int>,
        TeacherHead<B>,
    );

    /// The fused loss when `B` is `Autodiff<Flex>` (with its backward) or `Flex`; the arguments
    /// back otherwise.
    pub(super) fn fused<B: Backend>(
        h: Tensor<B, 2>,
        w: Tensor<B, 2>,
        layout: HeadLayout,
        targets: Tensor<B, 1, Int>,
        teacher: TeacherHead<B>,
        d: Distillation,
    ) -> Result<(Tensor<B, 1>, DistillFigures), Back<B>> {
        let t_layout = teacher.layout;
        let host = to_vec_i64(targets.to_data());
        let args: Args<B> = (h, w, targets, teacher.h, teacher.w);
        let back = |(h, w, t, th, tw): Args<B>| {
            let teacher = TeacherHead {
                h: th,
                w: tw,
                layout: t_layout,
            };
            (h, w, t, teacher)
        };
        let args = match cast::<Args<B>, Args<AD>>(args) {
            Ok((h, w, _, th, tw)) => {
                let teacher = Teacher {
                    h: th.inner().into_primitive().tensor(),
                    w: tw.inner().into_primitive().tensor(),
                    layout: t_layout,
                };
                let (loss, figures) = autodiff(h, w, layout, &host, &teacher, d);
                return Ok((same::<Tensor<AD, 1>, Tensor<B, 1>>(loss), figures));
            }
            Err(args) => args,
        };
        match cast::<Args<B>, Args<Flex>>(args) {
            Ok((h, w, _, th, tw)) => {
                let teacher = Teacher {
                    h: th.into_primitive().tensor(),
                    w: tw.into_primitive().tensor(),
                    layout: t_layout,
                };
                let h = h.into_primitive().tensor();
                let w = w.into_primitive().tensor();
                let (loss, _, figures) = kernel(&h, &w, layout, &host, &teacher, d, false);
                let loss = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(loss));
                Ok((same::<Tensor<Flex, 1>, Tensor<B, 1>>(loss), figures))
            }
            Err(args) => Err(back(args)),
        }
    }

    /// The teacher's storage.
    struct Teacher {
        h: FlexTensor,
        w: FlexTensor,
        layout: HeadLayout,
    }

    fn autodiff(
        h: Tensor<AD, 2>,
        w: Tensor<AD, 2>,
        layout: HeadLayout,
        t: &[i64],
        teacher: &Teacher,
        d: Distillation,
    ) -> (Tensor<AD, 1>, DistillFigures) {
        let h = h.into_primitive().tensor();
        let w = w.into_primitive().tensor();
        // The backward only scales the gradients the forward made: the plain head loss's.
        let (out, figures) = match FusedLmHeadLoss
            .prepare::<NoCheckpointing>([h.node.clone(), w.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (loss, g, f) = kernel(&h.primitive, &w.primitive, layout, t, teacher, d, true);
                (prep.finish(g.expect("gradients were asked for"), loss), f)
            }
            OpsKind::UnTracked(prep) => {
                let (loss, _, f) = kernel(&h.primitive, &w.primitive, layout, t, teacher, d, false);
                (prep.finish(loss), f)
            }
        };
        (Tensor::from_primitive(TensorPrimitive::Float(out)), figures)
    }

    /// A plain strided matrix (made contiguous when it is not).
    fn strided(t: &FlexTensor) -> FlexTensor {
        match t.layout().has_positive_strides() {
            true => t.clone(),
            false => t.to_contiguous(),
        }
    }

    /// A head as `[d, vocab]` strides, whichever way it is stored: (vocab, row, column stride).
    fn head_strides(v: &View<'_>, layout: HeadLayout) -> (usize, isize, isize) {
        match layout {
            HeadLayout::InOut => (v.cols, v.rs, v.cs),
            HeadLayout::OutIn => (v.rows, v.cs, v.rs),
        }
    }

    /// `out [rows, vocab] = h[r0..r0 + rows] · W`.
    ///
    /// # Safety
    /// `hv` and `wv` come from [`view`] (every element their layout addresses is inside their
    /// storage), `r0 + rows ≤ hv.rows`, `wv` is a head of `hv.cols` rows and `vocab` columns as
    /// `(w_rs, w_cs)` address it, and `out` holds at least `rows · vocab` elements.
    #[allow(clippy::too_many_arguments)]
    unsafe fn logits(
        hv: &View<'_>,
        r0: usize,
        rows: usize,
        wv: &View<'_>,
        (vocab, w_rs, w_cs): (usize, isize, isize),
        out: &mut [f32],
        par: gemm::Parallelism,
    ) {
        debug_assert!(r0 + rows <= hv.rows && out.len() >= rows * vocab);
        // SAFETY: as the caller promises: row r0 of `h` starts inside its storage, the reads
        // stay within both views, and `out` is large enough and owned by the caller alone.
        unsafe {
            gemm::gemm(
                rows,
                vocab,
                hv.cols,
                out.as_mut_ptr(),
                1,
                vocab as isize,
                false,
                hv.data.as_ptr().add(hv.offset).offset(r0 as isize * hv.rs),
                hv.cs,
                hv.rs,
                wv.data.as_ptr().add(wv.offset),
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
    }

    /// `Σ f(x_i, y_i)` in [`LANES`] independent partial sums (see lm_loss.rs).
    #[inline(always)]
    fn lane_sum(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
        let mut acc = [0f32; LANES];
        let (cx, cy) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
        let (rx, ry) = (cx.remainder(), cy.remainder());
        for (a, b) in cx.zip(cy) {
            for k in 0..LANES {
                acc[k] += f(a[k], b[k]);
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for (a, b) in rx.iter().zip(ry) {
            sum += f(*a, *b);
        }
        sum
    }

    /// One row: its cross-entropy and KL, and with `scale` (`1/n`) the gradient with respect to
    /// the student's logits written over them.
    fn row(
        s: &mut [f32],
        u: &[f32],
        target: usize,
        d: Distillation,
        scale: Option<f32>,
    ) -> [f64; 2] {
        let inv_t = (1.0 / d.temperature) as f32;
        let (ms, mu) = (row_max(s), row_max(u));
        let picked = s[target];
        let zs = lane_sum(s, s, |x, _| exp_nonpositive(x - ms));
        let za = lane_sum(s, s, |x, _| exp_nonpositive((x - ms) * inv_t));
        let zb = lane_sum(u, u, |x, _| exp_nonpositive((x - mu) * inv_t));
        let (ls, la, lb) = (zs.ln(), za.ln(), zb.ln());
        // log q_t − log q_s = (u − mu)/T − ln zb − (s − ms)/T + ln za
        let kl = lane_sum(s, u, |x, y| {
            let log_b = (y - mu) * inv_t - lb;
            let log_a = (x - ms) * inv_t - la;
            exp_nonpositive(log_b) * (log_b - log_a)
        });
        let ce = ms + ls - picked;
        if let Some(k) = scale {
            let kd = k * (d.weight * d.temperature) as f32;
            for (x, &y) in s.iter_mut().zip(u) {
                let p = exp_nonpositive(*x - ms - ls);
                let q_s = exp_nonpositive((*x - ms) * inv_t - la);
                let q_t = exp_nonpositive((y - mu) * inv_t - lb);
                *x = k * p + kd * (q_s - q_t);
            }
            s[target] -= k;
        }
        [ce as f64, kl as f64]
    }

    /// Loss (`[1]`), with `grads` `(dh, dW)` of it, and the figures.
    #[allow(clippy::too_many_arguments)]
    fn kernel(
        h: &FlexTensor,
        w: &FlexTensor,
        layout: HeadLayout,
        targets: &[i64],
        teacher: &Teacher,
        d: Distillation,
        grads: bool,
    ) -> (FlexTensor, Option<(FlexTensor, FlexTensor)>, DistillFigures) {
        let (h, w) = (strided(h), strided(w));
        let (th, tw) = (strided(&teacher.h), strided(&teacher.w));
        let (hv, wv, thv, twv) = (view(&h), view(&w), view(&th), view(&tw));
        let (n, dm) = (hv.rows, hv.cols);
        let head = head_strides(&wv, layout);
        let t_head = head_strides(&twv, teacher.layout);
        let vocab = head.0;
        assert_eq!(t_head.0, vocab, "the teacher's vocabulary is the student's");
        assert_eq!(thv.rows, n, "one teacher row per student row");
        assert_eq!(targets.len(), n, "one target per row");
        assert!(
            n == 0 || (dm > 0 && thv.cols > 0),
            "hidden states of width 0"
        );
        let student_d = match layout {
            HeadLayout::InOut => wv.rows,
            HeadLayout::OutIn => wv.cols,
        };
        let teacher_d = match teacher.layout {
            HeadLayout::InOut => twv.rows,
            HeadLayout::OutIn => twv.cols,
        };
        assert_eq!(
            (student_d, teacher_d),
            (dm, thv.cols),
            "heads of the hidden width"
        );
        let inv_n = 1.0 / n.max(1) as f32;
        let (mut ce_sum, mut kl_sum) = (0f64, 0f64);
        let mut dh = if grads { vec![0f32; n * dm] } else { vec![] };
        let mut dw = if grads {
            vec![0f32; dm * vocab]
        } else {
            vec![]
        };
        let mut s_buf = vec![0f32; CHUNK.min(n.max(1)) * vocab];
        let mut u_buf = vec![0f32; CHUNK.min(n.max(1)) * vocab];
        let par = if rayon::current_num_threads() > 1 {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        for r0 in (0..n).step_by(CHUNK) {
            let rows = CHUNK.min(n - r0);
            let (s, u) = (&mut s_buf[..rows * vocab], &mut u_buf[..rows * vocab]);
            // SAFETY: all four views come from `view`; r0 + rows ≤ n rows of both hidden
            // states; each head has the width of its hidden states (asserted above) and `vocab`
            // columns; both buffers hold `rows · vocab` elements.
            unsafe {
                logits(&hv, r0, rows, &wv, head, s, par);
                logits(&thv, r0, rows, &twv, t_head, u, par);
            }
            let scale = grads.then_some(inv_n);
            let parts: Vec<[f64; 2]> = s
                .par_chunks_mut(vocab)
                .zip(u.par_chunks(vocab))
                .zip(&targets[r0..r0 + rows])
                .map(|((s, u), &t)| {
                    let t = t as usize;
                    assert!(
                        t < vocab,
                        "target token {t} outside the vocabulary ({vocab})"
                    );
                    row(s, u, t, d, scale)
                })
                .collect();
            for [ce, kl] in parts {
                ce_sum += ce;
                kl_sum += kl;
            }
            if !grads {
                continue;
            }
            // dh[r0..] [rows, d] = G [rows, V] · Wᵀ;  dW [d, V] += h[r0..]ᵀ · G
            let (_, w_rs, w_cs) = head;
            // SAFETY: `dh` holds `n · d` elements and is written from `r0 · d` below
            // `(r0 + rows) · d`; `dw` holds `d · vocab`; `s` holds `rows · vocab` and is read at
            // `i · vocab + j`; `W` and `h` are read inside their views (checked by `view`).
            // The three buffers are distinct and owned here, so no destination overlaps an
            // operand.
            unsafe {
                let h_ptr = hv.data.as_ptr().add(hv.offset).offset(r0 as isize * hv.rs);
                let w_ptr = wv.data.as_ptr().add(wv.offset);
                gemm::gemm(
                    rows,
                    dm,
                    vocab,
                    dh.as_mut_ptr().add(r0 * dm),
                    1,
                    dm as isize,
                    false,
                    s.as_ptr(),
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
                    dm,
                    vocab,
                    rows,
                    dw.as_mut_ptr(),
                    1,
                    vocab as isize,
                    r0 > 0,
                    h_ptr,
                    hv.rs,
                    hv.cs,
                    s.as_ptr(),
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
        let n1 = n.max(1) as f64;
        let figures = DistillFigures {
            ce: ce_sum / n1,
            kl: kl_sum / n1,
        };
        let t2 = d.temperature * d.temperature;
        let total = figures.ce + d.weight * t2 * figures.kl;
        let loss = FlexTensor::from_data(TensorData::new(vec![total as f32], [1]));
        if !grads {
            return (loss, None, figures);
        }
        let dh = FlexTensor::from_data(TensorData::new(dh, [n, dm]));
        let dw = match layout {
            HeadLayout::InOut => FlexTensor::from_data(TensorData::new(dw, [dm, vocab])),
            HeadLayout::OutIn => {
                let t = FlexTensor::from_data(TensorData::new(dw, [dm, vocab]));
                t.transpose(0, 1).to_contiguous()
            }
        };
        (loss, Some((dh, dw)), figures)
    }
}
