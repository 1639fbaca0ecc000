//! The distilled LM-head loss (distill_loss.rs, docs/algorithm.md §7.1): fused and plain
//! composition against PyTorch's autograd in float64 (tests/fixtures/distill, made by
//! scripts/make_distill_fixture.py), and fused against plain on a case of two chunks with a
//! strided input, both head layouts and temperatures.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::Distribution;
use shear_model::distill_loss::{
    lm_head_distill_loss, lm_head_distill_loss_reference, DistillFigures, Distillation, TeacherHead,
};
use shear_model::fused_kernels;
use shear_model::lm_loss::HeadLayout;
use shear_testkit::{fixture, max_abs_diff};

type AD = Autodiff<Flex>;
type LossFn = fn(
    Tensor<AD, 2>,
    Tensor<AD, 2>,
    HeadLayout,
    Tensor<AD, 1, Int>,
    TeacherHead<AD>,
    Distillation,
) -> (Tensor<AD, 1>, DistillFigures);

fn vec<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// One evaluation: loss, figures, dL/dh and dL/dW, with a non-unit incoming gradient.
struct Out {
    loss: f32,
    figures: DistillFigures,
    dh: Vec<f32>,
    dw: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn eval(
    f: LossFn,
    h: Tensor<AD, 2>,
    leaf_h: &Tensor<AD, 2>,
    w: &Tensor<Flex, 2>,
    layout: HeadLayout,
    t: &Tensor<Flex, 1, Int>,
    teacher: (&Tensor<Flex, 2>, &Tensor<Flex, 2>, HeadLayout),
    d: Distillation,
) -> Out {
    let w = Tensor::<AD, 2>::from_inner(w.clone()).require_grad();
    let teacher = TeacherHead {
        h: Tensor::from_inner(teacher.0.clone()),
        w: Tensor::from_inner(teacher.1.clone()),
        layout: teacher.2,
    };
    let (loss, figures) = f(
        h,
        w.clone(),
        layout,
        Tensor::from_inner(t.clone()),
        teacher,
        d,
    );
    let value: f32 = loss.clone().into_scalar();
    let grads = (loss * 2.5).backward();
    let dh = leaf_h.grad(&grads).unwrap();
    let [a, b] = dh.dims();
    Out {
        loss: value,
        figures,
        dh: vec(dh.reshape([a * b])).iter().map(|x| x / 2.5).collect(),
        dw: vec(w.grad(&grads).unwrap())
            .iter()
            .map(|x| x / 2.5)
            .collect(),
    }
}

fn floats(v: &serde_json::Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn distilled_loss_and_gradients_match_pytorch_fused_and_plain() {
    assert!(
        fused_kernels::<AD>(),
        "the CPU backend takes the fused path"
    );
    let text = std::fs::read_to_string(fixture("distill/distill.json")).unwrap();
    let fx: serde_json::Value = serde_json::from_str(&text).unwrap();
    let dev = Default::default();
    for case in fx["cases"].as_array().unwrap() {
        let u = |k: &str| case[k].as_u64().unwrap() as usize;
        let (n, d, dt, vocab) = (u("n"), u("d"), u("teacher_d"), u("vocab"));
        let tied = case["tied"].as_bool().unwrap();
        let (layout, w_shape) = match tied {
            true => (HeadLayout::OutIn, [vocab, d]),
            false => (HeadLayout::InOut, [d, vocab]),
        };
        let data2 = |k: &str, shape: [usize; 2]| {
            Tensor::<Flex, 2>::from_data(TensorData::new(floats(case, k), shape), &dev)
        };
        let h0 = data2("h", [n, d]);
        let w = data2("head", w_shape);
        let th = data2("teacher_h", [n, dt]);
        let tw = data2("teacher_head", [vocab, dt]);
        let targets: Vec<i64> = case["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let t = Tensor::<Flex, 1, Int>::from_data(TensorData::new(targets, [n]), &dev);
        let dist = Distillation {
            weight: case["weight"].as_f64().unwrap(),
            temperature: case["temperature"].as_f64().unwrap(),
        };
        let name = case["name"].as_str().unwrap();
        for (which, f) in [
            ("fused", lm_head_distill_loss as LossFn),
            ("plain", lm_head_distill_loss_reference as LossFn),
        ] {
            let h = Tensor::<AD, 2>::from_inner(h0.clone()).require_grad();
            let teacher = (&th, &tw, HeadLayout::OutIn);
            let out = eval(f, h.clone(), &h, &w, layout, &t, teacher, dist);
            let want = |k: &str| case[k].as_f64().unwrap();
            let errs = [
                ("loss", (out.loss as f64 - want("loss")).abs()),
                ("ce", (out.figures.ce - want("ce")).abs()),
                ("kl", (out.figures.kl - want("kl")).abs()),
                ("dh", max_abs_diff(&out.dh, &floats(case, "dh")) as f64),
                ("dW", max_abs_diff(&out.dw, &floats(case, "dhead")) as f64),
            ];
            eprintln!("{name} {which}: {errs:?}");
            for (what, e) in errs {
                assert!(e <= 1e-5, "{name} {which}: {what} differs by {e:e}");
            }
        }
    }
}

/// Fused against plain: 3 × 119 rows (two chunks of 256) as the model passes them (a strided
/// view), teacher and student of different widths.
fn check(layout: HeadLayout, teacher_layout: HeadLayout, vocab: usize, d: Distillation) {
    let (b, s, dm, dt) = (3, 120, 24, 16);
    let dev = Default::default();
    let h = Tensor::<Flex, 3>::random([b, s, dm], Distribution::Normal(0.0, 1.0), &dev);
    let shape = |w: usize, l| match l {
        HeadLayout::InOut => [w, vocab],
        HeadLayout::OutIn => [vocab, w],
    };
    let w = Tensor::<Flex, 2>::random(shape(dm, layout), Distribution::Normal(0.0, 0.3), &dev);
    let th = Tensor::<Flex, 2>::random([b * (s - 1), dt], Distribution::Normal(0.0, 1.0), &dev);
    let tw = Tensor::<Flex, 2>::random(
        shape(dt, teacher_layout),
        Distribution::Normal(0.0, 0.4),
        &dev,
    );
    let t = Tensor::<Flex, 1, Int>::random(
        [b * (s - 1)],
        Distribution::Uniform(0.0, vocab as f64),
        &dev,
    );
    let run = |f: LossFn| {
        let leaf = Tensor::<AD, 3>::from_inner(h.clone()).require_grad();
        let rows = leaf.clone().narrow(1, 0, s - 1).reshape([b * (s - 1), dm]);
        let wv = Tensor::<AD, 2>::from_inner(w.clone()).require_grad();
        let teacher = TeacherHead {
            h: Tensor::from_inner(th.clone()),
            w: Tensor::from_inner(tw.clone()),
            layout: teacher_layout,
        };
        let (loss, figures) = f(
            rows,
            wv.clone(),
            layout,
            Tensor::from_inner(t.clone()),
            teacher,
            d,
        );
        let value: f32 = loss.clone().into_scalar();
        let grads = (loss * 2.5).backward();
        let dh = leaf.grad(&grads).unwrap().reshape([b * s * dm]);
        (value, figures, vec(dh), vec(wv.grad(&grads).unwrap()))
    };
    let (l_ref, f_ref, dh_ref, dw_ref) = run(lm_head_distill_loss_reference);
    let (l, f, dh, dw) = run(lm_head_distill_loss);
    let rel = (l - l_ref).abs() / l_ref.abs();
    let (gh, gw) = (max_abs_diff(&dh, &dh_ref), max_abs_diff(&dw, &dw_ref));
    let scale_h = dh_ref.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale_w = dw_ref.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!(
        "{layout:?}/{teacher_layout:?} T {}: loss {l} vs {l_ref} (rel {rel:e}), ce {} vs {}, kl {} vs {}, |dh| {gh:e} of {scale_h:e}, |dW| {gw:e} of {scale_w:e}",
        d.temperature, f.ce, f_ref.ce, f.kl, f_ref.kl
    );
    assert!(rel <= 1e-5, "loss {l} vs {l_ref}");
    assert!((f.ce - f_ref.ce).abs() <= 1e-5 * f_ref.ce.abs(), "ce");
    assert!(
        (f.kl - f_ref.kl).abs() <= 1e-5 * f_ref.kl.abs().max(1e-3),
        "kl"
    );
    assert!(gh <= 1e-4 * scale_h, "dh differs by {gh} (max {scale_h})");
    assert!(gw <= 1e-4 * scale_w, "dW differs by {gw} (max {scale_w})");

    // Without autodiff (evaluation), the same loss and figures.
    let rows = h.narrow(1, 0, s - 1).reshape([b * (s - 1), dm]);
    let teacher = TeacherHead {
        h: th,
        w: tw,
        layout: teacher_layout,
    };
    let (plain, fp) = lm_head_distill_loss(rows, w, layout, t, teacher, d);
    let plain: f32 = plain.into_scalar();
    assert!((plain - l_ref).abs() / l_ref <= 1e-5, "{plain} vs {l_ref}");
    assert!((fp.kl - f_ref.kl).abs() <= 1e-5 * f_ref.kl.abs().max(1e-3));
}

#[test]
fn fused_distillation_matches_plain_for_a_linear_head_at_temperature_2() {
    let d = Distillation {
        weight: 0.5,
        temperature: 2.0,
    };
    check(HeadLayout::InOut, HeadLayout::OutIn, 1000, d);
}

#[test]
fn fused_distillation_matches_plain_for_a_tied_embedding_at_temperature_1() {
    let d = Distillation {
        weight: 1.0,
        temperature: 1.0,
    };
    check(HeadLayout::OutIn, HeadLayout::InOut, 517, d);
}
