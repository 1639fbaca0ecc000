//! Continued pre-training: the loss goes down, distillation pulls the student towards the
//! teacher, and a run stopped after step k and resumed from its checkpoint gives bit-identical
//! losses and domain weights at every later step.

mod common;

use burn::backend::Autodiff;
use burn::prelude::*;
use common::*;
use shear_data::{DynamicLoader, PreparedData, Split, UpdateRule};
use shear_train::dynamic::{DynamicBatches, DynamicConfig};
use shear_train::trainer::TrainData;
use shear_train::trainer::{distill_loss, latest_checkpoint, train, Distill, TrainConfig, Trainer};

type AD = Autodiff<B>;

struct Fixed(Tensor<AD, 2, Int>);
impl TrainData<AD> for Fixed {
    fn batch(&mut self, _: usize, _: usize) -> Tensor<AD, 2, Int> {
        self.0.clone()
    }
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
    let mut cfg = TrainConfig::new(30);
    cfg.lr = 3e-3;
    cfg.grad_accum = 2;
    let mut t = Trainer::new(model, cfg);
    let mut losses = Vec::new();
    train(&mut t, &mut Fixed(ids(2, 16)), None, 30, |l, _| {
        losses.push(l.loss)
    });
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
    let same: f32 = distill_loss(a.clone(), a.clone(), 2.0).into_scalar();
    assert!(same.abs() < 1e-6, "{same}");
    let kl: f32 = distill_loss(a.clone(), b.clone(), 1.0).into_scalar();
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
    let mut cfg = TrainConfig::new(3);
    cfg.distill = Some(Distill {
        weight: 0.5,
        temperature: 2.0,
    });
    let mut t = Trainer::new(student, cfg);
    let mut logs = Vec::new();
    train(&mut t, &mut Fixed(ids(2, 16)), Some(&teacher), 3, |l, _| {
        logs.push((l.loss, l.ce_loss))
    });
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

fn dynamic(data: &PreparedData, state: Option<shear_data::LoaderState>) -> DynamicBatches<AD> {
    let shards = data.shards(Split::Train).unwrap();
    let loader = match state {
        Some(s) => DynamicLoader::restore(shards, 3, s).unwrap(),
        None => DynamicLoader::new(data.domains(), shards, vec![0.5, 0.5], 3, 7).unwrap(),
    };
    let cfg = DynamicConfig {
        rule: UpdateRule::Code,
        every: 2,
        eval_batch: 2,
        eval_sequences: None,
    };
    DynamicBatches::new(
        loader,
        data.shards(Split::Eval).unwrap(),
        vec![6.0, 7.5],
        cfg,
        &device(),
    )
    .unwrap()
}

#[test]
fn a_resumed_run_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let mut cfg = TrainConfig::new(8);
    cfg.lr = 1e-3;
    cfg.warmup_steps = 2;
    let model = || shear_model::load_llama::<AD>(&fixture("llama-mha"), &device()).unwrap();

    // Uninterrupted.
    let mut whole = Vec::new();
    let mut t = Trainer::new(model(), cfg.clone());
    train(&mut t, &mut dynamic(&data, None), None, 8, |l, _| {
        whole.push((l.loss, l.domain_update.as_ref().map(|u| u.weights.clone())))
    });
    assert!(whole.iter().filter(|w| w.1.is_some()).count() == 4);

    // Stopped after step 5 (checkpoint), then resumed in a new trainer and loader.
    let ckpts = tmp.path().join("ckpt");
    let mut part = Vec::new();
    let mut t = Trainer::new(model(), cfg.clone());
    let mut d = dynamic(&data, None);
    train(&mut t, &mut d, None, 5, |l, tr| {
        part.push((l.loss, l.domain_update.as_ref().map(|u| u.weights.clone())));
        if tr.step == 5 {
            tr.save(&ckpts, l.loader_state.as_ref()).unwrap();
        }
    });
    drop((t, d));
    let ckpt = latest_checkpoint(&ckpts).unwrap();
    assert!(ckpt.ends_with("step-00000005"));
    let (mut t, state) = Trainer::<AD>::load(&ckpt, &device()).unwrap();
    assert_eq!(t.step, 5);
    train(&mut t, &mut dynamic(&data, state), None, 8, |l, _| {
        part.push((l.loss, l.domain_update.as_ref().map(|u| u.weights.clone())))
    });
    assert_eq!(part.len(), 8);
    for (i, (a, b)) in whole.iter().zip(&part).enumerate() {
        assert_eq!(
            a.0.to_bits(),
            b.0.to_bits(),
            "step {i}: loss {} vs {}",
            a.0,
            b.0
        );
        assert_eq!(a.1, b.1, "step {i}: domain weights");
    }
}
