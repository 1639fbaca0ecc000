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
use crate::execution::Execution;
use crate::prune::{PruneConfig, PruneHyper, PruneRun};
use crate::trainer::{TrainConfig, Trainer};
use crate::Result;

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
    /// Recompute each block in the backward pass of the training and pruning steps
    /// (recompute.rs).
    pub recompute: bool,
    /// Generation: a prompt of this many tokens, then `gen_new` new ones (greedy, KV cache,
    /// batch 1); 0 new tokens skips it.
    pub gen_prompt: usize,
    pub gen_new: usize,
    pub steps_kind: Steps,
}

/// Tokens per second of each kind of step.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub params: usize,
    pub tokens_per_step: usize,
    /// `None` for the steps not timed ([`Steps`]).
    pub forward_tps: Option<f64>,
    pub forward_backward_tps: Option<f64>,
    /// A plain training step: forward, backward, global-norm clip 1.0, AdamW.
    pub train_step_tps: Option<f64>,
    /// A pruning step: mask sampling, masked forward, Lagrangian, backward, three optimizers.
    pub prune_step_tps: Option<f64>,
    /// Median over the alternating pairs of (pruning step time / train step time).
    pub prune_over_train: Option<f64>,
    /// Matrix-product FLOPs of one training token (forward + backward), PaLM's count:
    /// `6 · (attention + MLP + LM-head weights) + 12 · layers · seq · heads · head_dim`
    /// (the attention scores and their use). Times tokens/s over a device's peak is the MFU.
    pub train_flops_per_token: f64,
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

/// See [`BenchReport::train_flops_per_token`]. The LM head counts whether or not it is tied (its
/// product is computed either way).
pub fn train_flops_per_token(c: &LlamaConfig, seq: usize) -> f64 {
    let p = c.param_counts();
    let head = c.vocab_size * c.hidden_size;
    let weights = (p.attention + p.mlp + head) as f64;
    let attn = (c.num_hidden_layers * seq * c.num_attention_heads * c.head_dim) as f64;
    6.0 * weights + 12.0 * attn
}

/// Which steps to time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Steps {
    /// Forward, forward + backward, the training step and the pruning step (alternating).
    #[default]
    All,
    /// Only the training step (one model and its optimizer in memory).
    Train,
    /// Only the pruning step (one model, its masks and optimizers in memory).
    Prune,
}

/// The pruning target the benchmark's pruning step aims at: half of every dimension of `c`
/// (at least 1), the query heads per key/value head kept.
fn half_shape(c: &LlamaConfig) -> shear_model::TargetShape {
    let half = |n: usize| (n / 2).max(1);
    let groups = c.num_attention_heads / c.num_key_value_heads;
    shear_model::TargetShape {
        layers: half(c.num_hidden_layers),
        hidden: half(c.hidden_size),
        heads: half(c.num_key_value_heads) * groups,
        kv_heads: half(c.num_key_value_heads),
        intermediate: half(c.intermediate_size),
    }
}

/// Runs the benchmark on backend `B` (training on `Autodiff<B>`-style backend `B`).
pub fn run<B: AutodiffBackend>(cfg: &BenchConfig, device: &B::Device) -> Result<BenchReport> {
    B::seed(device, cfg.seed);
    let model: Llama<B> = Llama::from_source(&cfg.model, &mut RandomInit::default(), device)?;
    let ids: Tensor<B, 2, Int> = Tensor::<B, 2>::random(
        [cfg.batch, cfg.seq],
        Distribution::Uniform(0.0, cfg.model.vocab_size as f64),
        device,
    )
    .int();
    let tokens = cfg.batch * cfg.seq;
    let batches = [ids.clone()];
    let (train, prune) = (
        cfg.steps_kind != Steps::Prune,
        cfg.steps_kind != Steps::Train,
    );

    let (mut fwd, mut fwd_bwd) = (None, None);
    if cfg.steps_kind == Steps::All {
        let inference = model.valid();
        let ids_inner = ids.clone().inner();
        fwd = Some(time(cfg.warmup, cfg.steps, || {
            let loss = inference.loss(ids_inner.clone());
            let _ = loss.into_scalar();
        }));
        fwd_bwd = Some(time(cfg.warmup, cfg.steps, || {
            let loss = model.loss(ids.clone());
            let grads = loss.backward();
            drop(grads);
            B::sync(device).expect("device sync");
        }));
    }

    // The pruning loop's own step on the same shape, towards half of every dimension.
    let target = half_shape(&cfg.model);
    let steps = 1_000_000;
    let pcfg = PruneConfig::new(
        target,
        PruneHyper {
            steps,
            ..PruneHyper::default()
        },
    );
    let (mut trainer, mut pruner) = match (train, prune) {
        (true, true) => {
            let source = Llama::from_source(&cfg.model, &mut RandomInit::default(), device)?;
            (Some(model), Some(source))
        }
        (true, false) => (Some(model), None),
        _ => (None, Some(model)),
    };
    // A plain training step as continued pre-training runs it (docs/algorithm.md §7): the
    // trainer's own step (global-norm clip 1.0, AdamW), at a constant learning rate.
    let tcfg = TrainConfig {
        steps,
        warmup: Some(0),
        min_lr_ratio: 1.0,
        ..TrainConfig::default()
    };
    let exec = Execution {
        workers: cfg.workers,
        recompute: cfg.recompute,
        ..Execution::default()
    };
    let mut trainer = trainer
        .take()
        .map(|m| Trainer::new(m, tcfg, None).with_execution(exec.clone()));
    let mut pruner = pruner
        .take()
        .map(|m| PruneRun::new(m, pcfg).with_execution(exec));
    let timed = |t: &mut Vec<f64>, step: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let start = Instant::now();
        step()?;
        t.push(start.elapsed().as_secs_f64());
        Ok(())
    };
    // A non-finite loss on random weights is an error of the shape asked for (e.g. a learning
    // rate that overflows), returned as such.
    let mut train_step = || -> Result<()> {
        if let Some(t) = trainer.as_mut() {
            t.step(&batches)?;
            B::sync(device).expect("device sync");
        }
        Ok(())
    };
    let mut prune_step = || -> Result<()> {
        if let Some(p) = pruner.as_mut() {
            p.step(&batches)?;
            B::sync(device).expect("device sync");
        }
        Ok(())
    };
    // The two steps alternate, so that both see the same machine state; medians of each.
    for _ in 0..cfg.warmup {
        train_step()?;
        prune_step()?;
    }
    let (mut t_train, mut t_prune) = (Vec::new(), Vec::new());
    for _ in 0..cfg.steps.max(1) {
        timed(&mut t_train, &mut train_step)?;
        timed(&mut t_prune, &mut prune_step)?;
    }
    let generate_tps = match (&trainer, &pruner) {
        (Some(t), _) if cfg.gen_new > 0 => Some(generation(cfg, &t.model().valid())),
        _ => None,
    };
    let ratio = (train && prune)
        .then(|| median(t_prune.iter().zip(&t_train).map(|(p, t)| p / t).collect()));
    let tps = |secs: f64| tokens as f64 / secs;

    Ok(BenchReport {
        params: cfg.model.param_counts().total(),
        tokens_per_step: tokens,
        forward_tps: fwd.map(tps),
        forward_backward_tps: fwd_bwd.map(tps),
        train_step_tps: train.then(|| tps(median(t_train))),
        prune_step_tps: prune.then(|| tps(median(t_prune))),
        prune_over_train: ratio,
        train_flops_per_token: train_flops_per_token(&cfg.model, cfg.seq),
        generate_tps,
    })
}

/// New tokens per second of greedy generation with the KV cache (prefill included).
fn generation<B: Backend>(cfg: &BenchConfig, model: &Llama<B>) -> f64 {
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
        generate(model, &prompt, &gen, |_| {}).expect("prompt in the vocabulary");
    });
    cfg.gen_new as f64 / secs
}

/// The training and pruning steps (as [`run`] times them) over `peers` local data-parallel
/// peers (threads of this process, each on its share of the batch's rows, docs/algorithm.md
/// §4.4) at ZeRO stage `zero` (§4.5): what data parallelism and sharding cost against one peer.
/// Only the steps `cfg.steps_kind` names; peer 0's step times, tokens of the whole batch.
pub fn run_peers<B: AutodiffBackend>(
    cfg: &BenchConfig,
    peers: usize,
    zero: crate::zero::ZeroStage,
    device: &B::Device,
) -> Result<BenchReport> {
    use crate::peers::{self, Peer, Topology};
    let topology = Topology {
        devices: peers,
        ..Topology::default()
    };
    let (train, prune) = (
        cfg.steps_kind != Steps::Prune,
        cfg.steps_kind != Steps::Train,
    );
    let _session = peers::session::<B::InnerBackend>();
    let times = std::sync::Mutex::new((Vec::new(), Vec::new()));
    let outcome: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..peers)
            .map(|local| {
                let (topology, times) = (&topology, &times);
                s.spawn(move || -> Result<()> {
                    let peer = Peer::join::<B::InnerBackend>(topology, local, device)?
                        .with_batch(cfg.batch);
                    B::seed(device, cfg.seed);
                    let model: Llama<B> =
                        Llama::from_source(&cfg.model, &mut RandomInit::default(), device)?;
                    let rows = peer.rows(cfg.batch).len().max(1);
                    let ids: Tensor<B, 2, Int> = Tensor::<B, 2>::random(
                        [rows, cfg.seq],
                        Distribution::Uniform(0.0, cfg.model.vocab_size as f64),
                        device,
                    )
                    .int();
                    let batches = [ids];
                    let exec = Execution {
                        workers: cfg.workers,
                        recompute: cfg.recompute,
                        peer: peer.clone(),
                        zero,
                        ..Execution::default()
                    };
                    let mut trainer = train.then(|| {
                        let tcfg = TrainConfig {
                            steps: 1_000_000,
                            warmup: Some(0),
                            min_lr_ratio: 1.0,
                            batch: cfg.batch,
                            ..TrainConfig::default()
                        };
                        Trainer::new(model.clone().fork(device), tcfg, None)
                            .with_execution(exec.clone())
                    });
                    let mut pruner = prune.then(|| {
                        let target = half_shape(&cfg.model);
                        let hyper = PruneHyper {
                            steps: 1_000_000,
                            batch: cfg.batch,
                            ..PruneHyper::default()
                        };
                        PruneRun::new(model.fork(device), PruneConfig::new(target, hyper))
                            .with_execution(exec)
                    });
                    let (mut t_train, mut t_prune) = (Vec::new(), Vec::new());
                    for _ in 0..cfg.warmup + cfg.steps.max(1) {
                        if let Some(t) = trainer.as_mut() {
                            let start = Instant::now();
                            t.step(&batches)?;
                            B::sync(device).expect("device sync");
                            t_train.push(start.elapsed().as_secs_f64());
                        }
                        if let Some(p) = pruner.as_mut() {
                            let start = Instant::now();
                            p.step(&batches)?;
                            B::sync(device).expect("device sync");
                            t_prune.push(start.elapsed().as_secs_f64());
                        }
                    }
                    if peer.writes() {
                        let w = cfg.warmup;
                        *times.lock().expect("not poisoned") = (
                            t_train.split_off(w.min(t_train.len())),
                            t_prune.split_off(w.min(t_prune.len())),
                        );
                    }
                    peer.leave::<B::InnerBackend>(device)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench peer panicked"))
            .collect()
    });
    outcome.into_iter().collect::<Result<Vec<()>>>()?;
    let (t_train, t_prune) = times.into_inner().expect("not poisoned");
    let tokens = cfg.batch * cfg.seq;
    let tps = |secs: f64| tokens as f64 / secs;
    let ratio = (train && prune)
        .then(|| median(t_prune.iter().zip(&t_train).map(|(p, t)| p / t).collect()));
    Ok(BenchReport {
        params: cfg.model.param_counts().total(),
        tokens_per_step: tokens,
        forward_tps: None,
        forward_backward_tps: None,
        train_step_tps: train.then(|| tps(median(t_train))),
        prune_step_tps: prune.then(|| tps(median(t_prune))),
        prune_over_train: ratio,
        train_flops_per_token: train_flops_per_token(&cfg.model, cfg.seq),
        generate_tps: None,
    })
}
