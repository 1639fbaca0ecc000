//! The non-finite guard: a step whose loss is NaN (made so by the test hook) changes no
//! parameter, is recorded with its rows in the skip log, and the run goes on; once more steps
//! than allowed were skipped, the run stops with a message naming the step and its rows.

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::*;
use shear_io::JsonlLog;
use shear_model::{load_llama, Llama, TargetShape};
use shear_testkit::*;
use shear_train::checkpoint::Checkpoints;
use shear_train::driver::{drive, LoopControl, Skip, Stepper};
use shear_train::execution::Execution;
use shear_train::prune::{PruneConfig, PruneHyper, PruneRun};
use shear_train::source::{BatchSource, DataReport, EvalView, RowRef};
use shear_train::trainer::{TrainConfig, TrainLog, Trainer};
use shear_train::{Result, Silent, TrainError};

type AD = Autodiff<B>;

/// A different batch at every step, its rows named `web#(step·10 + row)`.
struct Counting;
impl BatchSource<AD> for Counting {
    fn batch(&mut self, step: usize, _: usize) -> Result<Tensor<AD, 2, Int>> {
        let v: Vec<i64> = (0..2 * 12)
            .map(|i| ((i as usize * 37 + step * 11) % 1000) as i64)
            .collect();
        Ok(Tensor::from_data(TensorData::new(v, [2, 12]), &device()))
    }
    fn rows(&self) -> Vec<RowRef> {
        Vec::new()
    }
}

/// Remembers the step of its last batch so that it can name the rows.
struct Named(usize);
impl BatchSource<AD> for Named {
    fn batch(&mut self, step: usize, m: usize) -> Result<Tensor<AD, 2, Int>> {
        self.0 = step;
        Counting.batch(step, m)
    }
    fn rows(&self) -> Vec<RowRef> {
        (0..2)
            .map(|r| RowRef {
                domain: "web".into(),
                index: (self.0 * 10 + r) as u64,
            })
            .collect()
    }
}

fn model() -> Llama<AD> {
    load_llama(&fixture("llama-mha"), &device()).unwrap()
}

fn values(m: &Llama<AD>) -> Vec<Vec<f32>> {
    param_tensors(m, None)
}

/// Drives `t` for `steps` steps in `dir` with at most `max` skipped; returns the result, the
/// step log and the skip log.
fn run<S: Stepper<AD>>(
    t: &mut S,
    dir: &std::path::Path,
    max: usize,
) -> (Result<bool>, Vec<serde_json::Value>, Vec<Skip>) {
    std::fs::create_dir_all(dir).unwrap();
    let (log_path, skips_path) = (dir.join("log.jsonl"), dir.join("skipped.jsonl"));
    let mut log = JsonlLog::<S::Log>::create(&log_path).unwrap();
    let mut skips = JsonlLog::<Skip>::create(&skips_path).unwrap();
    let checkpoints = Checkpoints::new(dir.join("checkpoints"));
    let plan = LoopControl {
        checkpoints: Some(&checkpoints),
        checkpoint_dir: Some(checkpoints.dir()),
        settings: &(),
        save_every: 0,
        until: t.total(),
        stop: None,
        skips: Some(&mut skips),
        max_skipped: max,
        skips_path: &skips_path,
    };
    let r = drive(t, &mut Named(0), Some(&mut log), plan, "test", &mut Silent);
    drop(skips);
    let lines = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (r, lines, shear_io::read_jsonl(&skips_path).unwrap())
}

#[test]
fn a_nan_training_step_is_skipped_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    // Step 2 alone, to see that it changes nothing.
    let mut probe = Trainer::new(
        model(),
        TrainConfig {
            steps: 3,
            lr: 1e-3,
            grad_accum: 1,
            ..TrainConfig::default()
        },
        None,
    )
    .with_execution(Execution {
        poisoned: vec![2],
        ..Execution::default()
    });
    let batches: Vec<_> = (0..3).map(|s| Counting.batch(s, 0).unwrap()).collect();
    probe.step(&batches[0..1]).unwrap();
    probe.step(&batches[1..2]).unwrap();
    let before = values(probe.model());
    match probe.step(&batches[2..3]) {
        Err(TrainError::NonFinite { step: 2, what }) => assert!(what.contains("NaN"), "{what}"),
        other => panic!("expected a skipped step 2, got {other:?}"),
    }
    assert_eq!(
        values(probe.model()),
        before,
        "a skipped step changes no parameter"
    );
    assert_eq!((probe.done(), probe.skipped()), (3, 1));

    // Through the loop: steps 2 and 4 skipped, the others logged, the rows recorded.
    let mut t = Trainer::new(
        model(),
        TrainConfig {
            steps: 6,
            lr: 1e-3,
            grad_accum: 1,
            ..TrainConfig::default()
        },
        None,
    )
    .with_execution(Execution {
        poisoned: vec![2, 4],
        ..Execution::default()
    });
    let (r, lines, skips) = run(&mut t, tmp.path(), 10);
    assert!(!r.unwrap());
    let logged: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(logged, [0, 1, 3, 5]);
    assert!(lines
        .iter()
        .all(|l| serde_json::from_value::<TrainLog>(l.clone())
            .unwrap()
            .loss
            .is_finite()));
    assert_eq!(skips.iter().map(|s| s.step).collect::<Vec<_>>(), [2, 4]);
    assert_eq!(
        skips[1].rows,
        [40, 41].map(|index| RowRef {
            domain: "web".into(),
            index
        })
    );
    assert!(skips[0].reason.contains("loss NaN"), "{}", skips[0].reason);
    assert_eq!(t.done(), 6);
    assert!(values(t.model()).iter().flatten().all(|x| x.is_finite()));
}

#[test]
fn too_many_skipped_steps_stop_the_run_with_a_message_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let source = model();
    let c = &source.config;
    let target = TargetShape {
        layers: c.num_hidden_layers,
        hidden: c.hidden_size / 2,
        heads: c.num_attention_heads / 2,
        kv_heads: c.num_key_value_heads / 2,
        intermediate: c.intermediate_size / 2,
    };
    let mut p = PruneRun::new(
        model(),
        PruneConfig::new(
            target,
            PruneHyper {
                steps: 8,
                grad_accum: 1,
                ..PruneHyper::default()
            },
        ),
    )
    .with_execution(Execution {
        poisoned: vec![1, 3],
        ..Execution::default()
    });
    let (r, lines, skips) = run(&mut p, tmp.path(), 1);
    let message = match r {
        Err(e @ TrainError::TooManySkipped { .. }) => e.to_string(),
        other => panic!("expected the run to stop, got {other:?}"),
    };
    eprintln!("{message}");
    for needle in [
        "step 3",
        "web#30, web#31",
        "2 steps skipped",
        "1 allowed",
        "skipped.jsonl",
    ] {
        assert!(message.contains(needle), "`{needle}` not in: {message}");
    }
    // Steps 0 and 2 logged; both skipped steps recorded; nothing after step 3.
    let logged: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(logged, [0, 2]);
    assert_eq!(skips.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 3]);
    assert!(p.pruner().model.valid().config.hidden_size > 0);
}

/// Wants the model after every step (as dynamic batch loading does at its update steps) and
/// records the steps it was given it after.
struct Reweighting(Vec<usize>);
impl BatchSource<AD> for Reweighting {
    fn batch(&mut self, step: usize, m: usize) -> Result<Tensor<AD, 2, Int>> {
        Counting.batch(step, m)
    }
    fn rows(&self) -> Vec<RowRef> {
        Vec::new()
    }
    fn wants_eval(&self, after: Option<usize>) -> bool {
        after.is_some()
    }
    fn after_step(
        &mut self,
        after: Option<usize>,
        model: Option<EvalView<B>>,
    ) -> Result<DataReport> {
        if model.is_some() {
            self.0.push(after.expect("after a step"));
        }
        Ok(DataReport::default())
    }
}

/// Defect fixed: a skipped step that was also a reweighting step had the domain weights
/// updated with no log line to show it. A skipped step changes nothing: the source is not
/// given the model after it, so no update is made; the steps before and after are reweighted.
#[test]
fn a_skipped_step_makes_no_reweighting() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        model(),
        TrainConfig {
            steps: 5,
            lr: 1e-3,
            grad_accum: 1,
            ..TrainConfig::default()
        },
        None,
    )
    .with_execution(Execution {
        poisoned: vec![2],
        ..Execution::default()
    });
    let log_path = tmp.path().join("log.jsonl");
    let skips_path = tmp.path().join("skipped.jsonl");
    let mut log = JsonlLog::<TrainLog>::create(&log_path).unwrap();
    let mut skips = JsonlLog::<Skip>::create(&skips_path).unwrap();
    let plan = LoopControl {
        checkpoints: None,
        checkpoint_dir: None,
        settings: &(),
        save_every: 0,
        until: 5,
        stop: None,
        skips: Some(&mut skips),
        max_skipped: 10,
        skips_path: &skips_path,
    };
    let mut source = Reweighting(Vec::new());
    assert!(!drive(
        &mut t,
        &mut source,
        Some(&mut log),
        plan,
        "test",
        &mut Silent
    )
    .unwrap());
    assert_eq!(
        source.0,
        [0, 1, 3, 4],
        "no reweighting after the skipped step 2"
    );
    assert_eq!(t.skipped(), 1);
}
