//! Steps split over workers (workers.rs) compute the unsplit step: the gradients of the mean
//! loss equal those of one backward pass over all rows at once, for any number of workers and
//! uneven splits, and a pruning step and a training step give the same figures and parameters
//! with one worker and with several.

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use shear_model::{load_llama, Llama, TargetShape};
use shear_testkit::*;
use shear_train::driver::Stepper;
use shear_train::execution::Execution;
use shear_train::prune::{PruneConfig, PruneHyper, PruneRun};
use shear_train::trainer::{TrainConfig, Trainer};
use shear_train::workers::{backward, mean_gradients};

type AD = Autodiff<B>;

fn model() -> Llama<AD> {
    load_llama(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap()
}

/// Rows of token ids `[rows, seq]` (deterministic, in the vocabulary).
fn ids(rows: usize, seq: usize, salt: i64) -> Tensor<AD, 2, Int> {
    let v: Vec<i64> = (0..(rows * seq) as i64)
        .map(|i| (i * 53 + salt * 101 + 7) % 1000)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, seq]), &device())
}

#[test]
fn split_gradients_equal_one_backward_over_all_rows() {
    let model = model();
    // Two micro-batches of 5 rows: 5 rows split unevenly over 2 and 3 workers.
    let batches = [ids(5, 16, 0), ids(5, 16, 1)];
    let all = Tensor::cat(batches.to_vec(), 0);
    let want = GradientsParams::from_grads(model.loss(all.clone()).backward(), &model);
    let want_loss: f32 = model.valid().loss(all.inner()).into_scalar();
    let want = param_tensors(&model, Some(&want));
    for workers in [1, 2, 3, 5, 8] {
        let got = mean_gradients(
            &model,
            &batches,
            workers,
            None,
            |m: &Llama<AD>, _, ids, w, sum| {
                let loss = m.loss(ids);
                let v = loss.clone().into_scalar() as f64;
                sum.add(m, backward(loss, w, m))?;
                Ok([v])
            },
        )
        .unwrap();
        let d = rel_diff(&param_tensors(&model, Some(&got.grads)), &want);
        eprintln!(
            "{workers} workers: gradients differ by {d:e} (relative), loss {} vs {want_loss}",
            got.figures[0]
        );
        assert!(
            d <= 1e-5,
            "{workers} workers: gradients differ by {d} (relative)"
        );
        assert!(
            (got.figures[0] - want_loss as f64).abs() <= 1e-5 * want_loss as f64,
            "{workers} workers: mean loss {} vs {want_loss}",
            got.figures[0]
        );
    }
}

fn params(m: &Llama<AD>) -> Vec<f32> {
    let mut out = Vec::new();
    struct Collect<'a>(&'a mut Vec<f32>);
    impl ModuleVisitor<AD> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AD, D>>) {
            self.0.extend(
                p.val()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .unwrap(),
            );
        }
    }
    m.visit(&mut Collect(&mut out));
    out
}

#[test]
fn a_training_step_is_the_same_on_one_or_two_workers() {
    let batches = [ids(4, 16, 2), ids(4, 16, 3)];
    let cfg = TrainConfig {
        steps: 10,
        lr: 1e-3,
        grad_accum: 2,
        ..TrainConfig::default()
    };
    let mut one = Trainer::new(model(), cfg.clone(), None);
    let mut two = Trainer::new(model(), cfg, None).with_execution(Execution {
        workers: 2,
        ..Execution::default()
    });
    for step in 0..3 {
        let (a, b) = (one.step(&batches).unwrap(), two.step(&batches).unwrap());
        assert!(
            (a.loss - b.loss).abs() <= 1e-6 * a.loss,
            "step {step}: {a:?} vs {b:?}"
        );
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm,
            "step {step}"
        );
        assert_eq!(a.tokens, b.tokens);
    }
    let d = max_abs_diff(&params(one.model()), &params(two.model()));
    assert!(d <= 1e-5, "parameters after 3 steps differ by {d}");
}

#[test]
fn a_pruning_step_is_the_same_on_one_or_two_workers() {
    let source = model();
    let c = &source.config;
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
    let batches = [ids(3, 16, 4), ids(3, 16, 5)];
    let mut one = PruneRun::new(model(), cfg.clone());
    let mut two = PruneRun::new(model(), cfg).with_execution(Execution {
        workers: 2,
        ..Execution::default()
    });
    for step in 0..3 {
        let (a, b) = (one.step(&batches).unwrap(), two.step(&batches).unwrap());
        assert!(
            (a.ce_loss - b.ce_loss).abs() <= 1e-6 * a.ce_loss,
            "step {step}: {} vs {}",
            a.ce_loss,
            b.ce_loss
        );
        assert!((a.lagrangian - b.lagrangian).abs() <= 1e-6, "step {step}");
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm,
            "step {step}"
        );
    }
    let la = |r: &PruneRun<AD>| {
        let m = r.masks();
        let mut v = Vec::new();
        for mask in [&m.hidden, &m.head, &m.kv_head, &m.intermediate, &m.layer]
            .into_iter()
            .flatten()
        {
            v.extend(mask.log_alpha.val().into_data().to_vec::<f32>().unwrap());
        }
        v
    };
    // Adam divides each gradient by its own running scale, so the masks' rounding differences
    // show at their size (|log_alpha| ≈ 5) rather than the gradients': relative 1e-5.
    let (a, b) = (la(&one), la(&two));
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let d = max_abs_diff(&a, &b);
    eprintln!("log_alpha after 3 steps: max difference {d:e} (largest |log_alpha| {scale})");
    assert!(d <= 1e-5 * scale, "log_alpha after 3 steps differs by {d}");
    let d = max_abs_diff(&params(&one.pruner().model), &params(&two.pruner().model));
    assert!(d <= 1e-5, "weights after 3 steps differ by {d}");
}

/// Mixed precision is per thread (autocast); the workers compute in the caller's precision.
#[test]
fn workers_keep_the_callers_precision() {
    use shear_model::precision::{autocast, Compute};
    let batches = [ids(4, 16, 6)];
    let loss = |precision: Compute, workers: usize| {
        let _autocast = autocast(precision);
        let mut t = Trainer::new(
            model(),
            TrainConfig {
                steps: 10,
                grad_accum: 1,
                ..TrainConfig::default()
            },
            None,
        )
        .with_execution(Execution {
            workers,
            ..Execution::default()
        });
        t.step(&batches).unwrap().loss
    };
    let (f32_one, bf16_one, bf16_two) = (
        loss(Compute::F32, 1),
        loss(Compute::Bf16, 1),
        loss(Compute::Bf16, 2),
    );
    eprintln!("f32 {f32_one}, bf16 {bf16_one} (1 worker) / {bf16_two} (2 workers)");
    assert!(
        (f32_one - bf16_one).abs() > 1e-5,
        "bf16 products change the loss"
    );
    assert!(
        (bf16_one - bf16_two).abs() <= 1e-5 * bf16_one,
        "{bf16_one} vs {bf16_two}"
    );
}
