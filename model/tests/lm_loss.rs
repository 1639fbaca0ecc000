//! The fused LM-head loss (lm_loss.rs) against the plain composition: loss and both gradients,
//! for a `Linear` head and a tied embedding, with more rows than one chunk and a strided input.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use shear_model::fused_kernels;
use shear_model::lm_loss::{lm_head_loss, lm_head_loss_reference, HeadLayout};
use shear_testkit::max_abs_diff;

type AD = Autodiff<Flex>;
type LossFn = fn(Tensor<AD, 2>, Tensor<AD, 2>, HeadLayout, Tensor<AD, 1, Int>) -> Tensor<AD, 1>;

fn vec(t: Tensor<Flex, 2>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// Loss, dL/dh and dL/dW of `f` at the same inputs.
fn loss_and_grads(
    f: LossFn,
    h: &Tensor<Flex, 3>,
    w: &Tensor<Flex, 2>,
    layout: HeadLayout,
    t: &Tensor<Flex, 1, Int>,
) -> (f32, Vec<f32>, Vec<f32>) {
    let h = Tensor::<AD, 3>::from_inner(h.clone()).require_grad();
    let w = Tensor::<AD, 2>::from_inner(w.clone()).require_grad();
    let [b, s, d] = h.dims();
    // A strided view, as the model passes it (the last position dropped, then flattened).
    let rows = h.clone().narrow(1, 0, s - 1).reshape([b * (s - 1), d]);
    let loss = f(rows, w.clone(), layout, Tensor::from_inner(t.clone()));
    let value: f32 = loss.clone().into_scalar();
    // A non-unit incoming gradient, so the backward pass's scaling is exercised.
    let grads = (loss * 2.5).backward();
    let dh = h.grad(&grads).unwrap();
    let [b, s, d] = dh.dims();
    (
        value,
        vec(dh.reshape([b * s, d])),
        vec(w.grad(&grads).unwrap()),
    )
}

fn check(layout: HeadLayout, vocab: usize) {
    assert!(
        fused_kernels::<AD>() && fused_kernels::<Flex>(),
        "the CPU backend takes the fused path"
    );
    let (b, s, d) = (3, 120, 24); // 3 × 119 = 357 rows: two chunks of 256
    let dev = Default::default();
    let h = Tensor::<Flex, 3>::random([b, s, d], Distribution::Normal(0.0, 1.0), &dev);
    let shape = match layout {
        HeadLayout::InOut => [d, vocab],
        HeadLayout::OutIn => [vocab, d],
    };
    let w = Tensor::<Flex, 2>::random(shape, Distribution::Normal(0.0, 0.3), &dev);
    let t = Tensor::<Flex, 1, Int>::random(
        [b * (s - 1)],
        Distribution::Uniform(0.0, vocab as f64),
        &dev,
    );
    let (l_ref, dh_ref, dw_ref) = loss_and_grads(lm_head_loss_reference, &h, &w, layout, &t);
    let (l, dh, dw) = loss_and_grads(lm_head_loss, &h, &w, layout, &t);
    let rel = (l - l_ref).abs() / l_ref.abs();
    let (gh, gw) = (max_abs_diff(&dh, &dh_ref), max_abs_diff(&dw, &dw_ref));
    let scale_h = dh_ref.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale_w = dw_ref.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!("{layout:?}: loss {l} vs {l_ref} (rel {rel:e}), |dh| {gh:e} of {scale_h:e}, |dW| {gw:e} of {scale_w:e}");
    assert!(rel <= 1e-5, "{layout:?}: loss {l} vs {l_ref}");
    // The dropped position gets no gradient in both.
    assert!(
        gh <= 1e-4 * scale_h,
        "{layout:?}: dh differs by {gh} (max {scale_h})"
    );
    assert!(
        gw <= 1e-4 * scale_w,
        "{layout:?}: dW differs by {gw} (max {scale_w})"
    );

    // Without autodiff (evaluation), the same loss.
    let rows = h.narrow(1, 0, s - 1).reshape([b * (s - 1), d]);
    let plain: f32 = lm_head_loss(rows, w, layout, t).into_scalar();
    assert!(
        (plain - l_ref).abs() / l_ref <= 1e-5,
        "{layout:?}: {plain} vs {l_ref}"
    );
}

#[test]
fn fused_loss_matches_plain_composition_for_a_linear_head() {
    check(HeadLayout::InOut, 1000);
}

#[test]
fn fused_loss_matches_plain_composition_for_a_tied_embedding() {
    check(HeadLayout::OutIn, 517);
}

/// Every gradient reaches the head's weight even for rows whose `h` needs none (frozen input).
#[test]
fn fused_loss_gradient_of_the_weight_alone() {
    let dev = Default::default();
    let h = Tensor::<AD, 2>::random([40, 8], Distribution::Normal(0.0, 1.0), &dev);
    let w0 = Tensor::<Flex, 2>::random([8, 50], Distribution::Normal(0.0, 0.5), &dev);
    let t = Tensor::<AD, 1, Int>::random([40], Distribution::Uniform(0.0, 50.0), &dev);
    let grad = |f: LossFn| {
        let w = Tensor::<AD, 2>::from_inner(w0.clone()).require_grad();
        let g = f(h.clone(), w.clone(), HeadLayout::InOut, t.clone()).backward();
        vec(w.grad(&g).unwrap())
    };
    let (fused, plain) = (grad(lm_head_loss), grad(lm_head_loss_reference));
    assert!(
        max_abs_diff(&fused, &plain) <= 1e-6,
        "{}",
        max_abs_diff(&fused, &plain)
    );
}
