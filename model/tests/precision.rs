//! Mixed precision (bf16 autocast) on the CPU backend, against f32: the logits and the loss agree
//! within bf16 rounding, gradients reach the f32 weights in f32 and point the same way, and AdamW
//! steps under autocast lower the loss. (On CUDA the same code runs the products on tensor cores;
//! that path is exercised by scripts/device_check.sh on a lent GPU.)

use burn::backend::Autodiff;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::DType;
use shear_model::precision::{autocast, compute, Compute};
use shear_model::{load_llama, Llama};
use shear_testkit::*;

type AD = Autodiff<B>;

fn batch() -> Tensor<AD, 2, Int> {
    let ids: Vec<i64> = (0..32).map(|i| (i * 53 + 7) % 1000).collect();
    Tensor::from_data(TensorData::new(ids, [2, 16]), &device())
}

fn flat<X: Backend>(t: Tensor<X, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn bf16_autocast_matches_f32_within_bf16_rounding() {
    let model: Llama<AD> = load_llama(&fixture("llama-mha"), &device()).unwrap();
    let ids = batch();
    let logits32: Vec<f32> = model.forward(ids.clone()).into_data().to_vec().unwrap();
    let loss32 = model.loss(ids.clone());
    let grads32 = loss32.backward();
    let g32 = flat(
        model.layers[0]
            .self_attn
            .q_proj
            .weight
            .grad(&grads32)
            .unwrap(),
    );
    let loss32: f32 = loss32.into_scalar();

    let guard = autocast(Compute::Bf16);
    assert_eq!(compute(), Compute::Bf16);
    let logits = model.forward(ids.clone());
    assert_eq!(logits.dtype(), DType::F32, "products come back in f32");
    let logits16: Vec<f32> = logits.into_data().to_vec().unwrap();
    let loss16 = model.loss(ids);
    let grads16 = loss16.backward();
    let g16 = model.layers[0]
        .self_attn
        .q_proj
        .weight
        .grad(&grads16)
        .unwrap();
    assert_eq!(g16.dtype(), DType::F32, "gradients of f32 weights are f32");
    let g16 = flat(g16);
    let loss16: f32 = loss16.into_scalar();
    drop(guard);
    assert_eq!(compute(), Compute::F32, "the guard restores f32");

    // bf16 keeps 8 significant bits: relative error per product about 2^-8.
    let scale = logits32.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = max_abs_diff(&logits32, &logits16);
    assert!(diff > 0.0, "autocast changed nothing");
    assert!(
        diff < 0.03 * scale,
        "logits differ by {diff} (scale {scale})"
    );
    assert!(
        (loss32 - loss16).abs() < 0.01 * loss32,
        "{loss32} vs {loss16}"
    );
    let dot: f32 = g32.iter().zip(&g16).map(|(a, b)| a * b).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cos = dot / (n(&g32) * n(&g16));
    eprintln!(
        "bf16 vs f32: logits max diff {diff:.2e} (scale {scale:.2}), loss {loss16} vs {loss32}, gradient cosine {cos:.5}"
    );
    assert!(cos > 0.99, "gradient cosine {cos}");
}

#[test]
fn adamw_steps_under_bf16_autocast_lower_the_loss() {
    let _guard = autocast(Compute::Bf16);
    let mut model: Llama<AD> = load_llama(&fixture("llama-mha"), &device()).unwrap();
    let ids = batch();
    let mut optim = AdamWConfig::new().with_beta_2(0.95).init::<AD, Llama<AD>>();
    let mut losses = Vec::new();
    for _ in 0..5 {
        let loss = model.loss(ids.clone());
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    assert_eq!(
        model.layers[0].mlp.up_proj.weight.val().dtype(),
        DType::F32,
        "master weights stay f32"
    );
    assert!(losses[4] < losses[0] - 0.1, "loss did not fall: {losses:?}");
}
