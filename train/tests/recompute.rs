//! Recomputation per block (recompute.rs) computes the plain backward pass's gradients: of the
//! training loss (a tied model: the embedding's two uses add up), of the masked loss with
//! respect to the weights and, through the masks' values, to `log_alpha`; and a pruning and a
//! training step give the same figures and parameters with and without it.

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::SeedableRng;
use shear_model::{
    load_llama, HardConcrete, L0Masks, LayerMasks, Llama, PruneModules, RandomInit, TargetShape,
};
use shear_testkit::*;
use shear_train::driver::Stepper;
use shear_train::execution::Execution;
use shear_train::grads::GradSum;
use shear_train::prune::{PruneConfig, PruneHyper, PruneRun};
use shear_train::recompute;
use shear_train::trainer::{TrainConfig, Trainer};

type AD = Autodiff<B>;

fn model() -> Llama<AD> {
    load_llama(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap()
}

fn ids(rows: usize, seq: usize, salt: i64) -> Tensor<AD, 2, Int> {
    let v: Vec<i64> = (0..(rows * seq) as i64)
        .map(|i| (i * 53 + salt * 101 + 7) % 1000)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, seq]), &device())
}

#[test]
fn recomputed_gradients_of_the_training_loss_equal_the_plain_backward() {
    let model = model();
    assert!(model.lm_head.is_none(), "a tied model");
    let x = ids(3, 24, 1);
    let want = GradientsParams::from_grads(model.loss(x.clone()).backward(), &model);
    let mut sum = GradSum::new();
    let r = recompute::gradients(&model, x.clone(), None, 0.5, &mut sum, |h| {
        let loss = model.head_loss(h, x.clone());
        let v: f32 = loss.clone().into_scalar();
        Ok((loss, v))
    })
    .unwrap();
    let grads = sum.into_grads();
    let d = rel_diff(
        &param_tensors(&model, Some(&grads)),
        &param_tensors(&model, Some(&want)),
    );
    // `weight` 0.5 scales the gradients: compare with half the plain ones.
    let half: Vec<Vec<f32>> = param_tensors(&model, Some(&want))
        .into_iter()
        .map(|v| v.into_iter().map(|x| x * 0.5).collect())
        .collect();
    let d_half = rel_diff(&param_tensors(&model, Some(&grads)), &half);
    eprintln!("training loss: recomputed vs plain gradients (× 0.5) differ by {d_half:e}");
    assert!(d > 0.1, "the weight is applied");
    assert!(d_half <= 1e-5, "{d_half}");
    let plain: f32 = model.loss(x).into_scalar();
    assert!((r.head - plain).abs() <= 1e-6 * plain.abs());
}

#[test]
fn recomputed_gradients_of_the_masked_loss_reach_log_alpha() {
    let model = model();
    let l0 = L0Masks::<AD>::new(
        &model.config,
        HardConcrete::default(),
        PruneModules::default(),
        LayerMasks::Layer,
        &device(),
    );
    let z = l0.sample_from(&mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
    let x = ids(2, 20, 2);
    // Plain: one backward through the model and the masks.
    let grads = model.loss_masked(x.clone(), Some(&z)).backward();
    let want_model = GradientsParams::from_grads(grads, &model);
    let z2 = l0.sample_from(&mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
    let grads = model.loss_masked(x.clone(), Some(&z2)).backward();
    let want_l0 = GradientsParams::from_grads(grads, &l0);
    // Recomputed: the model block by block, then the masks' values into log_alpha.
    let z3 = l0.sample_from(&mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
    let mut sum = GradSum::new();
    let r = recompute::gradients(&model, x.clone(), Some(&z3), 1.0, &mut sum, |h| {
        Ok((model.head_loss(h, x.clone()), ()))
    })
    .unwrap();
    let grads = sum.into_grads();
    let got_l0 = GradientsParams::from_grads(
        recompute::z_surrogate(&z3, r.z.as_ref().unwrap()).backward(),
        &l0,
    );
    let dm = rel_diff(
        &param_tensors(&model, Some(&grads)),
        &param_tensors(&model, Some(&want_model)),
    );
    let dz = rel_diff(
        &param_tensors(&l0, Some(&got_l0)),
        &param_tensors(&l0, Some(&want_l0)),
    );
    eprintln!("masked loss: weights' gradients differ by {dm:e}, log_alpha's by {dz:e}");
    assert!(dm <= 1e-5, "{dm}");
    assert!(dz <= 1e-5, "{dz}");
}

#[test]
fn training_and_pruning_steps_are_the_same_with_recomputation() {
    let batches = [ids(2, 16, 3), ids(2, 16, 4)];
    let cfg = TrainConfig {
        steps: 10,
        lr: 1e-3,
        grad_accum: 2,
        ..TrainConfig::default()
    };
    let mut plain = Trainer::new(model(), cfg.clone(), None);
    let mut again = Trainer::new(model(), cfg, None).with_execution(Execution {
        recompute: true,
        ..Execution::default()
    });
    for step in 0..3 {
        let (a, b) = (plain.step(&batches).unwrap(), again.step(&batches).unwrap());
        assert!((a.loss - b.loss).abs() <= 1e-6 * a.loss, "step {step}");
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm,
            "step {step}"
        );
    }
    let d = rel_diff(
        &param_tensors(plain.model(), None),
        &param_tensors(again.model(), None),
    );
    assert!(
        d <= 1e-5,
        "training: parameters after 3 steps differ by {d}"
    );

    let c = model().config;
    let target = TargetShape {
        layers: c.num_hidden_layers,
        hidden: c.hidden_size / 2,
        heads: c.num_attention_heads / 2,
        kv_heads: c.num_key_value_heads / 2,
        intermediate: c.intermediate_size / 2,
    };
    let cfg = PruneConfig::new(
        target,
        PruneHyper {
            steps: 10,
            seed: 3,
            grad_accum: 2,
            ..PruneHyper::default()
        },
    );
    let mut plain = PruneRun::new(model(), cfg.clone());
    let mut again = PruneRun::new(model(), cfg).with_execution(Execution {
        recompute: true,
        ..Execution::default()
    });
    for step in 0..3 {
        let (a, b) = (plain.step(&batches).unwrap(), again.step(&batches).unwrap());
        eprintln!(
            "pruning step {step}: ce {} vs {}, grad norm {} vs {}",
            a.ce_loss, b.ce_loss, a.grad_norm, b.grad_norm
        );
        assert!(
            (a.ce_loss - b.ce_loss).abs() <= 1e-6 * a.ce_loss,
            "step {step}"
        );
        assert!((a.lagrangian - b.lagrangian).abs() <= 1e-6, "step {step}");
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm,
            "step {step}"
        );
    }
    let d = rel_diff(
        &param_tensors(&plain.pruner().model, None),
        &param_tensors(&again.pruner().model, None),
    );
    assert!(d <= 1e-5, "pruning: weights after 3 steps differ by {d}");
    let d = rel_diff(
        &param_tensors(&plain.masks(), None),
        &param_tensors(&again.masks(), None),
    );
    assert!(d <= 1e-5, "pruning: log_alpha after 3 steps differs by {d}");
}

/// With a teacher (distill.rs), a pruning and a training step give the same figures and
/// parameters with recomputation and with two workers splitting each micro-batch's rows as
/// without either.
#[test]
fn distilled_steps_are_the_same_with_recomputation_and_workers() {
    let batches = [ids(2, 16, 3), ids(2, 16, 4)];
    let teacher =
        || Some(load_llama::<B>(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap());
    let ways = [
        Execution::default(),
        Execution {
            recompute: true,
            ..Execution::default()
        },
        Execution {
            workers: 2,
            ..Execution::default()
        },
    ];
    let close = |a: f64, b: f64, rel: f64| (a - b).abs() <= rel * a.abs().max(1e-3);

    let cfg = TrainConfig {
        steps: 10,
        lr: 1e-3,
        grad_accum: 2,
        distill_temperature: 2.0,
        ..TrainConfig::default()
    };
    // A teacher other than the student: random weights of its shape, made once (the backend's
    // random stream is shared with the tests running beside this one) and cloned per run.
    let c = model().config;
    let random = Llama::<B>::from_source(&c, &mut RandomInit::default(), &device()).unwrap();
    let other = || Some(random.clone());
    let mut runs: Vec<_> = ways
        .iter()
        .map(|e| Trainer::new(model(), cfg.clone(), other()).with_execution(e.clone()))
        .collect();
    for step in 0..3 {
        let logs: Vec<_> = runs.iter_mut().map(|t| t.step(&batches).unwrap()).collect();
        let a = &logs[0];
        assert!(
            a.kl.unwrap() > 0.0 && a.loss > a.ce_loss,
            "step {step}: {a:?}"
        );
        for b in &logs[1..] {
            assert!(
                close(a.loss, b.loss, 1e-6),
                "training step {step}: {a:?} vs {b:?}"
            );
            assert!(close(a.kl.unwrap(), b.kl.unwrap(), 1e-5), "step {step}");
            assert!(close(a.grad_norm, b.grad_norm, 1e-5), "step {step}");
        }
    }
    for t in &runs[1..] {
        let d = rel_diff(
            &param_tensors(runs[0].model(), None),
            &param_tensors(t.model(), None),
        );
        // AdamW divides each update by the root of its squared gradient, so entries whose
        // gradient is near zero move by about the learning rate whatever its rounding: with
        // the teacher's term the parameters differed by up to 1.2e-4 (relative) in repeated
        // runs, while the losses, KL and gradient norms above agree to 1e-6 / 1e-5.
        assert!(
            d <= 5e-4,
            "training: parameters after 3 steps differ by {d}"
        );
    }

    let c = model().config;
    let target = TargetShape {
        layers: c.num_hidden_layers,
        hidden: c.hidden_size / 2,
        heads: c.num_attention_heads / 2,
        kv_heads: c.num_key_value_heads / 2,
        intermediate: c.intermediate_size / 2,
    };
    let cfg = PruneConfig::new(
        target,
        PruneHyper {
            steps: 10,
            seed: 3,
            grad_accum: 2,
            ..PruneHyper::default()
        },
    );
    let mut runs: Vec<_> = ways
        .iter()
        .map(|e| {
            PruneRun::new(model(), cfg.clone())
                .with_teacher(teacher())
                .with_execution(e.clone())
        })
        .collect();
    for step in 0..3 {
        let logs: Vec<_> = runs.iter_mut().map(|r| r.step(&batches).unwrap()).collect();
        let a = &logs[0];
        assert!(
            a.kl.unwrap() > 0.0,
            "step {step}: the masked student is not the teacher"
        );
        for b in &logs[1..] {
            eprintln!(
                "distilled pruning step {step}: ce {} vs {}, kl {:?} vs {:?}, grad norm {} vs {}",
                a.ce_loss, b.ce_loss, a.kl, b.kl, a.grad_norm, b.grad_norm
            );
            assert!(close(a.ce_loss, b.ce_loss, 1e-6), "step {step}");
            assert!(close(a.kl.unwrap(), b.kl.unwrap(), 1e-5), "step {step}");
            assert!(close(a.grad_norm, b.grad_norm, 1e-5), "step {step}");
        }
    }
    for r in &runs[1..] {
        let d = rel_diff(
            &param_tensors(&runs[0].pruner().model, None),
            &param_tensors(&r.pruner().model, None),
        );
        assert!(d <= 1e-5, "pruning: weights after 3 steps differ by {d}");
        let d = rel_diff(
            &param_tensors(&runs[0].masks(), None),
            &param_tensors(&r.masks(), None),
        );
        assert!(d <= 1e-5, "pruning: log_alpha after 3 steps differs by {d}");
    }
}
