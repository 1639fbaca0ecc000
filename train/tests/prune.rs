//! Expected size, Lagrangian, gradient directions and convergence of the pruning loop.

mod common;

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::Distribution;
use common::*;
use shear_model::masks::TargetShape;
use shear_model::{load_llama, HardConcrete, L0Masks, LlamaConfig, Mask};
use shear_train::lagrangian::Lagrangian;
use shear_train::prune::{finish, prune, FnBatches, PruneConfig};

type AD = Autodiff<B>;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn mask(rows: &[Vec<f64>]) -> Mask<B> {
    let n = rows[0].len();
    let v: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Mask::from_log_alpha(
        Tensor::from_data(TensorData::new(v, [rows.len(), n]), &device()),
        HardConcrete::default(),
    )
}

fn fixture_l0_masks() -> (L0Masks<B>, serde_json::Value) {
    let f = l0_fixture()["size_model"].clone();
    let rows = |k: &str| -> Vec<Vec<f64>> { f[k].as_array().unwrap().iter().map(f64s).collect() };
    let masks = L0Masks {
        layer: mask(&[f64s(&f["log_alpha_layer"])]),
        mlp: None,
        hidden: mask(&[f64s(&f["log_alpha_hidden"])]),
        head: mask(&rows("log_alpha_head")),
        intermediate: mask(&rows("log_alpha_intermediate")),
        head_dim: f["source"]["head_dim"].as_u64().unwrap() as usize,
    };
    (masks, f)
}

/// The target of tests/fixtures/pruning (3 layers, hidden 48, 2 heads, intermediate 96).
fn fixture_target() -> TargetShape {
    TargetShape {
        layers: 3,
        hidden: 48,
        heads: 2,
        intermediate: 96,
    }
}

fn host(t: Tensor<B, 1>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec().unwrap()
}

#[test]
fn expected_size_sparsity_and_lagrangian_match_the_reference() {
    // The reference clamps log_alpha to ±ln 100 before every use; so does the pruning step.
    let (masks, f) = fixture_l0_masks();
    let masks = masks.clamp_log_alpha();
    let params = host(masks.expected_params())[0];
    assert!(
        rel(params, f["expected_prunable_params"].as_f64().unwrap()) < 1e-6,
        "{params}"
    );
    let e = masks.expected_sparsity();
    let want = &f["expected_sparsity"];
    let present = e.clone().entries();
    assert_eq!(
        present.len(),
        4,
        "the released mask set: layer, hidden, head, intermediate"
    );
    for (k, got) in present {
        let name = shear_model::masks::MASK_TYPES[k];
        let got = host(got);
        let w = match &want[name] {
            serde_json::Value::Array(_) => f64s(&want[name]),
            v => vec![v.as_f64().unwrap()],
        };
        assert_eq!(got.len(), w.len(), "{name}");
        for (g, w) in got.iter().zip(&w) {
            assert!(rel(*g, *w) < 1e-6, "{name}: {g} vs {w}");
        }
    }
    // Target sparsities from the shapes, and the Lagrangian for the given multipliers.
    let source = LlamaConfig::new(500, 64, 176, 4, 4, 4);
    let target = fixture_target();
    let t = target.sparsity(&source);
    for (k, got) in t.clone().entries().into_iter().take(4) {
        let name = shear_model::masks::MASK_TYPES[k];
        assert!(
            rel(got, f["target_sparsity"][name].as_f64().unwrap()) < 1e-12,
            "{name}"
        );
    }
    // The fixture has no mlp mask: its multipliers are 0 (and unused).
    let lam = |k: &str| -> [f64; 5] {
        shear_model::masks::MASK_TYPES.map(|n| f[k].get(n).map_or(0.0, |v| v.as_f64().unwrap()))
    };
    let lag = Lagrangian::<B>::from_values(lam("lambda_1"), lam("lambda_2"), &device());
    let value = host(lag.value(&e, &t))[0];
    assert!(
        rel(value, f["lagrangian"].as_f64().unwrap()) < 1e-6,
        "lagrangian {value}"
    );
}

#[test]
fn multipliers_ascend_while_masks_and_weights_descend() {
    let source = LlamaConfig::from_file(fixture("pruning/source")).unwrap();
    let target = fixture_target();
    let t = target.sparsity(&source);
    // The gradient of the Lagrangian in λ1 is (e − t): negative while the masks are denser
    // than the target.
    let lag = Lagrangian::<AD>::new(&device());
    let masks = L0Masks::<AD>::new(&source, HardConcrete::default(), &device()).clamp_log_alpha();
    let grads = lag.value(&masks.expected_sparsity(), &t).backward();
    let g: Vec<f32> = lag
        .lambda_1
        .val()
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert!(g[..4].iter().all(|&x| x < 0.0), "dL/dλ1 = {g:?}");
    assert_eq!(
        g[4], 0.0,
        "no mlp mask in this run: its multiplier has no gradient"
    );

    let model = load_llama::<AD>(&fixture("pruning/source"), &device()).unwrap();
    let mut cfg = PruneConfig::new(target, 8);
    cfg.lr_warmup_steps = 0;
    cfg.lagrangian_warmup_steps = 0;
    cfg.lr_weights = 1e-3;
    let ids: Tensor<AD, 2, Int> =
        Tensor::<AD, 2>::random([2, 16], Distribution::Uniform(0.0, 500.0), &device()).int();
    let mut logs = Vec::new();
    prune(model, &cfg, FnBatches(|_, _| ids.clone()), |log, _| {
        logs.push(log.clone())
    });
    // Ascent: λ1 moved along its gradient (down), which raises the Lagrangian λ1 (e − t).
    for k in 0..4 {
        assert!(
            logs[0].lambda_1[k] < 0.0,
            "λ1 after one step: {:?}",
            logs[0].lambda_1
        );
    }
    // Descent for the masks: with λ1 < 0 the constraint term falls as sparsity rises.
    let (first, last) = (
        logs[0].expected_sparsity.clone(),
        logs[logs.len() - 1].expected_sparsity.clone(),
    );
    for k in 0..4 {
        assert!(last[k] > first[k], "sparsity[{k}]: {first:?} -> {last:?}");
    }
    // Descent for the weights: the masked CE on this fixed batch falls.
    let ce: Vec<f64> = logs.iter().map(|l| l.ce_loss).collect();
    assert!(ce[ce.len() - 1] < ce[0], "{ce:?}");
}

#[test]
fn pruning_converges_to_the_target_shape() {
    let model = load_llama::<AD>(&fixture("pruning/source"), &device()).unwrap();
    let target = fixture_target();
    let steps = 300;
    let mut cfg = PruneConfig::new(target, steps);
    cfg.lr_weights = 1e-3;
    let mut last = None;
    let pruner = prune(
        model,
        &cfg,
        FnBatches(|_, _| {
            Tensor::<AD, 2>::random([4, 32], Distribution::Uniform(0.0, 500.0), &device()).int()
        }),
        |log, _| {
            if log.step % 50 == 0 || log.step + 1 == steps {
                eprintln!("{}", serde_json::to_string(log).unwrap());
            }
            last = Some(log.clone());
        },
    );
    let last = last.unwrap();
    for k in 0..4 {
        let gap = (last.expected_sparsity[k] - last.target_sparsity[k]).abs();
        assert!(
            gap <= 0.02,
            "type {k}: expected {} vs target {}",
            last.expected_sparsity[k],
            last.target_sparsity[k]
        );
    }
    let small = finish(&pruner, &target).unwrap();
    let c = &small.config;
    assert_eq!(
        (
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size
        ),
        (3, 48, 2, 96)
    );
}
