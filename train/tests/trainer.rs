//! Continued pre-training: the loss goes down, distillation pulls the student towards the
//! teacher, and a run stopped after step k and resumed from its checkpoint gives bit-identical
//! losses and domain weights at every later step.

use burn::backend::Autodiff;
use burn::prelude::*;
use shear_data::{DynamicDataLoader, DynamicLoader, PreparedData, Split, UpdateRule};
use shear_io::JsonlLog;
use shear_model::distill_loss::kl_divergence;
use shear_testkit::*;
use shear_train::checkpoint::{read_state, Checkpoints};
use shear_train::driver::{drive, LoopControl, Stepper};
use shear_train::dynamic::{DynamicConfig, DynamicSource};
use shear_train::source::BatchSource;
use shear_train::trainer::{TrainConfig, TrainLog, Trainer};
use shear_train::{Result, Silent};

type AD = Autodiff<B>;

/// The same batch at every step.
struct Fixed(Tensor<AD, 2, Int>);
impl BatchSource<AD> for Fixed {
    fn batch(&mut self, _: usize, _: usize) -> Result<Tensor<AD, 2, Int>> {
        Ok(self.0.clone())
    }
}

/// Drives `t` up to `until` steps over `source` in `dir` (checkpoint when stopping early);
/// returns the log lines written.
fn run(
    t: &mut Trainer<AD>,
    source: &mut dyn BatchSource<AD>,
    dir: &std::path::Path,
    until: usize,
) -> Vec<TrainLog> {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("log.jsonl");
    let mut log = match t.done() {
        0 => JsonlLog::create(&path).unwrap(),
        k => JsonlLog::resume(&path, k).unwrap().0,
    };
    let checkpoints = Checkpoints::new(dir.join("checkpoints"));
    let plan = LoopControl {
        checkpoints: Some(&checkpoints),
        checkpoint_dir: Some(checkpoints.dir()),
        settings: &t.cfg.clone(),
        save_every: 0,
        until,
        stop: None,
        skips: None,
        max_skipped: 0,
        skips_path: std::path::Path::new("skipped.jsonl"),
    };
    drive(t, source, Some(&mut log), plan, "test", &mut Silent).unwrap();
    shear_io::read_jsonl(&path).unwrap()
}

fn ids(n: usize, seq: usize) -> Tensor<AD, 2, Int> {
    let v: Vec<i64> = (0..n * seq)
        .map(|i| ((i * 37 + 11) % 1000) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [n, seq]), &device())
}

#[test]
fn loss_decreases_and_distillation_is_a_kl() {
    let model = shear_model::load_llama::<AD>(&fixture("llama-mha"), &device()).unwrap();
    let cfg = TrainConfig {
        steps: 30,
        lr: 3e-3,
        grad_accum: 2,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(model, cfg, None);
    let tmp = tempfile::tempdir().unwrap();
    let losses: Vec<f64> = run(&mut t, &mut Fixed(ids(2, 16)), tmp.path(), 30)
        .iter()
        .map(|l| l.loss)
        .collect();
    assert_eq!(losses.len(), 30);
    assert!(
        losses[29] < losses[0] - 1.0,
        "loss {} -> {}",
        losses[0],
        losses[29]
    );
    // KL of a distribution with itself is 0; otherwise positive, and T² scales the gradient.
    let a = Tensor::<B, 3>::random(
        [1, 3, 5],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device(),
    );
    let b = Tensor::<B, 3>::random(
        [1, 3, 5],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device(),
    );
    let same: f32 = kl_divergence(a.clone(), a.clone(), 2.0).into_scalar();
    assert!(same.abs() < 1e-6, "{same}");
    let kl: f32 = kl_divergence(a.clone(), b.clone(), 1.0).into_scalar();
    // Hand-computed KL(softmax(b) ‖ softmax(a)) mean over the 3 positions.
    let (av, bv): (Vec<f32>, Vec<f32>) =
        (a.to_data().to_vec().unwrap(), b.to_data().to_vec().unwrap());
    let mut want = 0.0f64;
    for r in 0..3 {
        let lse = |x: &[f32]| x.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
        let (ar, br) = (&av[r * 5..r * 5 + 5], &bv[r * 5..r * 5 + 5]);
        let (la, lb) = (lse(ar), lse(br));
        for i in 0..5 {
            let (lpa, lpb) = (ar[i] as f64 - la, br[i] as f64 - lb);
            want += lpb.exp() * (lpb - lpa);
        }
    }
    want /= 3.0;
    assert!((kl as f64 - want).abs() < 1e-5, "{kl} vs {want}");

    // With distillation from the untrained model, the student's loss still falls and the
    // reported CE is separate from the total.
    let teacher = shear_model::load_llama::<B>(&fixture("llama-mha"), &device()).unwrap();
    let student = shear_model::load_llama::<AD>(&fixture("llama-mha"), &device()).unwrap();
    let cfg = TrainConfig {
        steps: 3,
        distill_weight: 0.5,
        distill_temperature: 2.0,
        grad_accum: 1,
        ..TrainConfig::default()
    };
    let mut t = Trainer::new(student, cfg, Some(teacher));
    let tmp = tempfile::tempdir().unwrap();
    let logs: Vec<(f64, f64)> = run(&mut t, &mut Fixed(ids(2, 16)), tmp.path(), 3)
        .iter()
        .map(|l| (l.loss, l.ce_loss))
        .collect();
    assert!(
        (logs[0].0 - logs[0].1).abs() < 1e-6,
        "student = teacher at step 0: KL 0"
    );
    assert!(logs[2].0 > logs[2].1, "KL > 0 once the student moved");
}

const SEQ: usize = 16;

fn data(dir: &std::path::Path) -> PreparedData {
    write_prepared(
        dir,
        SEQ,
        1000,
        &[("x", [2, 1, 9]), ("y", [2, 1, 5])],
        |d, s, i| {
            (0..SEQ as u32)
                .map(|t| (t * 13 + i as u32 * 101 + d as u32 * 307 + s as u32) % 1000)
                .collect()
        },
    );
    PreparedData::open(dir).unwrap()
}

fn dynamic(data: &PreparedData) -> DynamicSource<AD> {
    let shards = data.shards(Split::Train).unwrap();
    let loader = DynamicLoader::new(data.domains(), shards, vec![0.5, 0.5], 3, 7).unwrap();
    let loader = DynamicDataLoader::new(loader, 8, &device());
    let cfg = DynamicConfig {
        rule: UpdateRule::Code,
        every: 2,
        eval_batch: 2,
        eval_sequences: None,
        eval_first: true,
    };
    DynamicSource::new(
        loader,
        data.shards(Split::Eval).unwrap(),
        vec![6.0, 7.5],
        cfg,
    )
    .unwrap()
}

/// (loss bits, domain weights after the step, weights of the evaluation before step 0).
type Trace = Vec<(u64, Option<Vec<f64>>, Option<Vec<f64>>)>;

fn trace(logs: &[TrainLog]) -> Trace {
    logs.iter()
        .map(|l| {
            (
                l.loss.to_bits(),
                l.data.domain_update.as_ref().map(|u| u.weights.clone()),
                l.eval_first_update.as_ref().map(|u| u.weights.clone()),
            )
        })
        .collect()
}

#[test]
fn a_resumed_run_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(&tmp.path().join("data"));
    let cfg = TrainConfig {
        steps: 8,
        lr: 1e-3,
        warmup: Some(2),
        grad_accum: 1,
        ..TrainConfig::default()
    };
    let model = || shear_model::load_llama::<AD>(&fixture("llama-mha"), &device()).unwrap();

    // Uninterrupted.
    let whole_dir = tmp.path().join("whole");
    let mut t = Trainer::new(model(), cfg.clone(), None);
    let whole = trace(&run(&mut t, &mut dynamic(&data), &whole_dir, 8));
    assert_eq!(whole.iter().filter(|w| w.1.is_some()).count(), 4);
    assert!(whole[0].2.is_some(), "an evaluation before the first step");

    // Stopped after step 5 (checkpoint), then resumed in a new trainer and loader.
    let dir = tmp.path().join("part");
    let mut t = Trainer::new(model(), cfg.clone(), None);
    run(&mut t, &mut dynamic(&data), &dir, 5);
    let ckpt = Checkpoints::new(dir.join("checkpoints")).newest().unwrap();
    assert!(ckpt.ends_with("step-00000005"));
    let state = read_state::<TrainConfig>(&ckpt).unwrap();
    assert_eq!(state.settings, cfg);
    let mut t = Trainer::<AD>::load(
        &ckpt,
        state.settings,
        state.step,
        state.loop_state,
        None,
        &device(),
    )
    .unwrap();
    assert_eq!(t.step, 5);
    let mut d = dynamic(&data);
    d.restore(state.loader.unwrap()).unwrap();
    let part = trace(&run(&mut t, &mut d, &dir, 8));
    assert_eq!(part.len(), 8, "the log holds every step once");
    assert_eq!(whole, part, "losses and domain weights, bit for bit");
}
