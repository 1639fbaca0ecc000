//! Throughput of the model on one backend: forward, forward+backward, and a full training step
//! (forward + backward + clip + AdamW) next to a pruning step, in tokens per second. Medians over
//! the measured steps.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use shear_model::{Llama, LlamaConfig, RandomInit};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub model: LlamaConfig,
    pub batch: usize,
    pub seq: usize,
    /// Untimed steps first (allocation, autotuning).
    pub warmup: usize,
    pub steps: usize,
    pub seed: u64,
}

/// Tokens per second of each kind of step.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub params: usize,
    pub tokens_per_step: usize,
    pub forward_tps: f64,
    pub forward_backward_tps: f64,
    /// A plain training step: forward, backward, global-norm clip 1.0, AdamW.
    pub train_step_tps: f64,
    /// A pruning step: mask sampling, masked forward, Lagrangian, backward, three optimizers.
    pub prune_step_tps: f64,
    /// Median over the alternating pairs of (pruning step time / train step time).
    pub prune_over_train: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Times `f` `warmup + steps` times and returns the median seconds of the last `steps`.
fn time(warmup: usize, steps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..steps.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Runs the benchmark on backend `B` (training on `Autodiff<B>`-style backend `B`).
pub fn run<B: AutodiffBackend>(
    cfg: &BenchConfig,
    device: &B::Device,
) -> shear_model::Result<BenchReport> {
    B::seed(device, cfg.seed);
    let mut model: Llama<B> = Llama::from_source(&cfg.model, &mut RandomInit::default(), device)?;
    let ids: Tensor<B, 2, Int> = Tensor::<B, 2>::random(
        [cfg.batch, cfg.seq],
        Distribution::Uniform(0.0, cfg.model.vocab_size as f64),
        device,
    )
    .int();
    let tokens = cfg.batch * cfg.seq;

    let inference = model.valid();
    let ids_inner = ids.clone().inner();
    let fwd = time(cfg.warmup, cfg.steps, || {
        let loss = inference.loss(ids_inner.clone());
        let _ = loss.into_scalar();
    });

    let fwd_bwd = time(cfg.warmup, cfg.steps, || {
        let loss = model.loss(ids.clone());
        let grads = loss.backward();
        drop(grads);
        B::sync(device).expect("device sync");
    });

    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init::<B, Llama<B>>();
    // A plain training step as continued pre-training runs it (SPEC §7): global-norm clip 1.0.
    let mut train_step = || {
        let loss = model.loss(ids.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let (grads, _) = crate::grads::clip_global_norm::<B, _>(grads, &model, 1.0);
        model = optim.step(1e-4, model.clone(), grads);
        B::sync(device).expect("device sync");
    };

    // A pruning step on the same shape, towards a target of half of every dimension.
    let c = &cfg.model;
    let target = shear_model::TargetShape {
        layers: (c.num_hidden_layers / 2).max(1),
        hidden: (c.hidden_size / 2).max(1),
        heads: (c.num_attention_heads / 2).max(1),
        intermediate: (c.intermediate_size / 2).max(1),
    };
    let pcfg = crate::prune::PruneConfig::new(target, 1000);
    let source: Llama<B> = Llama::from_source(&cfg.model, &mut RandomInit::default(), device)?;
    let mut pruner = Some(crate::prune::Pruner {
        l0: shear_model::L0Masks::new(c, pcfg.hard_concrete, device),
        lagrangian: crate::lagrangian::Lagrangian::new(device),
        model: source,
    });
    let mut popt = crate::prune::PruneOptimizers::new(cfg.seed);
    let batches = [ids.clone()];
    let mut step_no = 0;
    let mut prune_step = || {
        let (p, _) = crate::prune::prune_step(
            pruner.take().expect("set"),
            &mut popt,
            &pcfg,
            step_no,
            &batches,
        );
        pruner = Some(p);
        step_no += 1;
        B::sync(device).expect("device sync");
    };
    // The two steps alternate, so that both see the same machine state; medians of each.
    for _ in 0..cfg.warmup {
        train_step();
        prune_step();
    }
    let (mut t_train, mut t_prune) = (Vec::new(), Vec::new());
    for _ in 0..cfg.steps.max(1) {
        let t = Instant::now();
        train_step();
        t_train.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        prune_step();
        t_prune.push(t.elapsed().as_secs_f64());
    }
    let ratio = median(t_prune.iter().zip(&t_train).map(|(p, t)| p / t).collect());
    let (step, prune_step) = (median(t_train), median(t_prune));

    Ok(BenchReport {
        params: cfg.model.param_counts().total(),
        tokens_per_step: tokens,
        forward_tps: tokens as f64 / fwd,
        forward_backward_tps: tokens as f64 / fwd_bwd,
        train_step_tps: tokens as f64 / step,
        prune_step_tps: tokens as f64 / prune_step,
        prune_over_train: ratio,
    })
}
