//! `shear plan` (train/src/memory.rs) against the bytes a step really holds: a counting global
//! allocator records the peak of live heap bytes during a pruning or training step on the CPU
//! backend, after two warm-up steps (so that the optimizer's moments exist), for shapes where
//! the weights, the activations or the running gradient sum dominate in turn.
//!
//! This counts what is allocated and not yet freed — what a GPU's memory must hold — not the
//! resident memory of the process, which also holds what its allocator keeps for reuse
//! (README "Memory" compares both). Tolerance: the measured peak within 0.8–1.2 of the plan.
//!
//! The tests of this file run one at a time (a lock), in a process of their own, so that no
//! other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::Autodiff;
use burn::prelude::*;
use shear_model::{Llama, LlamaConfig, RandomInit, TargetShape};
use shear_testkit::*;
use shear_train::driver::Stepper;
use shear_train::execution::Execution;
use shear_train::memory::{plan, PlanInput};
use shear_train::peers::{self, Peer, Topology};
use shear_train::prune::{PruneConfig, PruneHyper, PruneRun};
use shear_train::trainer::{TrainConfig, Trainer};
use shear_train::zero::ZeroStage;

type AD = Autodiff<B>;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn counted(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            counted(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            counted(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            counted(new);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(layers: usize, hidden: usize, heads: usize, inter: usize, vocab: usize) -> LlamaConfig {
    let mut c = LlamaConfig::new(vocab, hidden, inter, layers, heads, heads);
    c.max_position_embeddings = 4096;
    c
}

struct Case {
    what: &'static str,
    model: LlamaConfig,
    pruning: bool,
    batch: usize,
    seq: usize,
    grad_accum: usize,
    recompute: bool,
}

/// The peak of live bytes above the state before the model existed, during one step after two
/// warm-up steps.
fn measure(case: &Case) -> u64 {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = LIVE.load(Ordering::Relaxed);
    let device = device();
    let model: Llama<AD> =
        Llama::from_source(&case.model, &mut RandomInit::default(), &device).unwrap();
    let ids: Tensor<AD, 2, Int> = Tensor::<AD, 2>::random(
        [case.batch, case.seq],
        burn::tensor::Distribution::Uniform(0.0, case.model.vocab_size as f64),
        &device,
    )
    .int();
    let batches = vec![ids; case.grad_accum];
    let exec = Execution {
        recompute: case.recompute,
        ..Execution::default()
    };
    let mut stepper: Box<dyn FnMut()> = match case.pruning {
        false => {
            let cfg = TrainConfig {
                grad_accum: case.grad_accum,
                batch: case.batch,
                warmup: Some(0),
                ..TrainConfig::default()
            };
            let mut t = Trainer::new(model, cfg, None).with_execution(exec);
            Box::new(move || {
                t.step(&batches).unwrap();
            })
        }
        true => {
            let c = &case.model;
            let target = TargetShape {
                layers: c.num_hidden_layers / 2,
                hidden: c.hidden_size / 2,
                heads: c.num_attention_heads / 2,
                kv_heads: c.num_key_value_heads / 2,
                intermediate: c.intermediate_size / 2,
            };
            let hyper = PruneHyper {
                grad_accum: case.grad_accum,
                batch: case.batch,
                ..PruneHyper::default()
            };
            let mut p = PruneRun::new(model, PruneConfig::new(target, hyper)).with_execution(exec);
            Box::new(move || {
                p.step(&batches).unwrap();
            })
        }
    };
    stepper();
    stepper();
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    stepper();
    let peak = PEAK.load(Ordering::Relaxed);
    drop(stepper);
    (peak - before) as u64
}

#[test]
fn a_step_holds_what_the_plan_says() {
    let cases = [
        Case {
            what: "weights (16 layers)",
            model: config(16, 256, 4, 688, 1024),
            pruning: false,
            batch: 1,
            seq: 16,
            grad_accum: 1,
            recompute: false,
        },
        Case {
            what: "weights, pruning",
            model: config(16, 256, 4, 688, 1024),
            pruning: true,
            batch: 1,
            seq: 16,
            grad_accum: 1,
            recompute: false,
        },
        Case {
            what: "weights, 2 micro-batches (the running sum)",
            model: config(16, 256, 4, 688, 1024),
            pruning: false,
            batch: 1,
            seq: 16,
            grad_accum: 2,
            recompute: false,
        },
        Case {
            what: "weights, --recompute, 2 micro-batches",
            model: config(16, 256, 4, 688, 1024),
            pruning: true,
            batch: 1,
            seq: 16,
            grad_accum: 2,
            recompute: true,
        },
        Case {
            what: "activations (seq 512)",
            model: config(4, 128, 4, 344, 512),
            pruning: false,
            batch: 2,
            seq: 512,
            grad_accum: 1,
            recompute: false,
        },
        Case {
            what: "activations, pruning",
            model: config(4, 128, 4, 344, 512),
            pruning: true,
            batch: 2,
            seq: 512,
            grad_accum: 1,
            recompute: false,
        },
        Case {
            what: "activations, --recompute",
            model: config(4, 128, 4, 344, 512),
            pruning: true,
            batch: 2,
            seq: 512,
            grad_accum: 1,
            recompute: true,
        },
        Case {
            what: "scores (seq 1024), --recompute: 2 query blocks",
            model: config(2, 128, 8, 344, 512),
            pruning: true,
            batch: 1,
            seq: 1024,
            grad_accum: 1,
            recompute: true,
        },
        Case {
            what: "scores (seq 1024), plain",
            model: config(2, 128, 8, 344, 512),
            pruning: true,
            batch: 1,
            seq: 1024,
            grad_accum: 1,
            recompute: false,
        },
    ];
    let mut worst: f64 = 1.0;
    let mut failures = Vec::new();
    for case in &cases {
        let planned = plan(&PlanInput {
            model: case.model.clone(),
            pruning: case.pruning,
            micro_batch: case.batch,
            seq_len: case.seq,
            grad_accum: case.grad_accum,
            fused_loss: shear_model::fused_kernels::<B>(),
            recompute: case.recompute,
            peers: 1,
            zero: ZeroStage::Off,
            teacher: None,
        })
        .total();
        let measured = measure(case);
        let ratio = measured as f64 / planned as f64;
        eprintln!(
            "{:<45} plan {:>8.1} MiB  live peak {:>8.1} MiB  {ratio:.2}",
            case.what,
            planned as f64 / (1 << 20) as f64,
            measured as f64 / (1 << 20) as f64
        );
        if (ratio - 1.0).abs() > (worst - 1.0).abs() {
            worst = ratio;
        }
        if !(0.8..=1.2).contains(&ratio) {
            failures.push(format!("{}: {ratio:.2}", case.what));
        }
    }
    eprintln!("measured / plan furthest from 1: {worst:.2}");
    assert!(failures.is_empty(), "outside 0.8–1.2: {failures:?}");
}

/// The live peak of `peers` local data-parallel peers (threads of this process) training with
/// `zero`, each on its half of a 2-row micro-batch, two micro-batches per step: after two
/// warm-up steps, one step.
fn measure_peers(model: &LlamaConfig, peers: usize, zero: ZeroStage, seq: usize) -> u64 {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = LIVE.load(Ordering::Relaxed);
    let device = device();
    let topology = Topology {
        devices: peers,
        ..Topology::default()
    };
    let _session = peers::session::<B>();
    let barrier = std::sync::Barrier::new(peers);
    let peak = std::sync::Mutex::new(0usize);
    std::thread::scope(|s| {
        for local in 0..peers {
            let (topology, barrier, peak, device) = (&topology, &barrier, &peak, &device);
            s.spawn(move || {
                let peer = Peer::join::<B>(topology, local, device)
                    .unwrap()
                    .with_batch(peers);
                let m: Llama<AD> =
                    Llama::from_source(model, &mut RandomInit::default(), device).unwrap();
                let ids: Tensor<AD, 2, Int> = Tensor::<AD, 2>::random(
                    [1, seq],
                    burn::tensor::Distribution::Uniform(0.0, model.vocab_size as f64),
                    device,
                )
                .int();
                let batches = vec![ids; 2];
                let cfg = TrainConfig {
                    grad_accum: 2,
                    batch: peers,
                    warmup: Some(0),
                    ..TrainConfig::default()
                };
                let exec = Execution {
                    peer: peer.clone(),
                    zero,
                    ..Execution::default()
                };
                let mut t = Trainer::new(m, cfg, None).with_execution(exec);
                t.step(&batches).unwrap();
                t.step(&batches).unwrap();
                if barrier.wait().is_leader() {
                    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                barrier.wait();
                t.step(&batches).unwrap();
                barrier.wait();
                *peak.lock().unwrap() = PEAK.load(Ordering::Relaxed);
                drop(t);
                peer.leave::<B>(device).unwrap();
            });
        }
    });
    let peak = *peak.lock().unwrap();
    (peak - before) as u64
}

/// ZeRO (docs/algorithm.md §4.5): two peers of one process hold together what two planned
/// devices hold, at stages 0, 1 and 2.
#[test]
fn sharded_peers_hold_what_the_plan_says() {
    let model = config(16, 256, 4, 688, 1024);
    let mut failures = Vec::new();
    for zero in [ZeroStage::Off, ZeroStage::Optimizer, ZeroStage::Gradients] {
        let planned = 2 * plan(&PlanInput {
            model: model.clone(),
            pruning: false,
            micro_batch: 1,
            seq_len: 16,
            grad_accum: 2,
            fused_loss: shear_model::fused_kernels::<B>(),
            recompute: false,
            peers: 2,
            zero,
            teacher: None,
        })
        .total();
        let measured = measure_peers(&model, 2, zero, 16);
        let ratio = measured as f64 / planned as f64;
        eprintln!(
            "2 peers, ZeRO stage {}: plan {:.1} MiB (both)  live peak {:.1} MiB  {ratio:.2}",
            zero.level(),
            planned as f64 / (1 << 20) as f64,
            measured as f64 / (1 << 20) as f64
        );
        if !(0.8..=1.2).contains(&ratio) {
            failures.push(format!("stage {}: {ratio:.2}", zero.level()));
        }
    }
    assert!(failures.is_empty(), "outside 0.8–1.2: {failures:?}");
}
