//! Throughput of the model on one backend: forward, forward+backward, and a full training step
//! (forward + backward + clip + AdamW) next to a pruning step, in tokens per second. Medians over
//! the measured steps; and greedy generation with the KV cache.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use shear_model::{generate, GenerateConfig, Llama, LlamaConfig, RandomInit, Sampling};

use crate::driver::Stepper;
use crate::prune::{PruneConfig, PruneRun};
use crate::trainer::{TrainConfig, Trainer};

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
    /// Workers per training and pruning step (workers.rs).
    pub workers: usize,
    /// Generation: a prompt of this many tokens, then `gen_new` new ones (greedy, KV cache,
    /// batch 1); 0 new tokens skips it.
    pub gen_prompt: usize,
    pub gen_new: usize,
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
    /// New tokens per second of greedy generation with the KV cache, batch 1, the prompt's
    /// prefill included (as transformers' `generate` is timed); `None` when not measured.
    pub generate_tps: Option<f64>,
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
    let model: Llama<B> = Llama::from_source(&cfg.model, &mut RandomInit::default(), device)?;
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

    // A plain training step as continued pre-training runs it (docs/algorithm.md §7): the
    // trainer's own step (global-norm clip 1.0, AdamW), at a constant learning rate.
    let tcfg = TrainConfig::new(1_000_000)
        .with_warmup(Some(0))
        .with_min_lr_ratio(1.0);
    let mut trainer = Trainer::new(model, tcfg, None).with_workers(cfg.workers);
    let batches = [ids.clone()];
    let mut train_step = || {
        trainer
            .step(&batches)
            .expect("finite loss on random weights");
        B::sync(device).expect("device sync");
    };

    // The pruning loop's own step on the same shape, towards half of every dimension.
    let c = &cfg.model;
    let half = |n: usize| (n / 2).max(1);
    let groups = c.num_attention_heads / c.num_key_value_heads;
    let target = shear_model::TargetShape {
        layers: half(c.num_hidden_layers),
        hidden: half(c.hidden_size),
        heads: half(c.num_key_value_heads) * groups,
        kv_heads: half(c.num_key_value_heads),
        intermediate: half(c.intermediate_size),
    };
    let source: Llama<B> = Llama::from_source(&cfg.model, &mut RandomInit::default(), device)?;
    let mut pruner =
        PruneRun::new(source, PruneConfig::new(target, 1_000_000)).with_workers(cfg.workers);
    let mut prune_step = || {
        pruner
            .step(&batches)
            .expect("finite loss on random weights");
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
    let generate_tps = (cfg.gen_new > 0).then(|| {
        let model = trainer.model().valid();
        let vocab = cfg.model.vocab_size as u32;
        let prompt: Vec<u32> = (0..cfg.gen_prompt.max(1) as u32)
            .map(|i| (i * 7919 + 13) % vocab)
            .collect();
        let gen = GenerateConfig {
            max_new_tokens: cfg.gen_new,
            sampling: Sampling::Greedy,
            seed: cfg.seed,
            stop_tokens: Vec::new(),
            use_cache: true,
        };
        let secs = time(cfg.warmup, cfg.steps.clamp(1, 3), || {
            generate(&model, &prompt, &gen, |_| {}).expect("prompt in the vocabulary");
        });
        cfg.gen_new as f64 / secs
    });
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
        generate_tps,
    })
}
