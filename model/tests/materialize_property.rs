//! Property: for random sources and random deterministic masks of any valid target, the masked
//! forward and the materialized model give the same logits.

mod common;

use burn::prelude::*;
use common::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shear_model::{materialize, DeterministicMasks, Llama, LlamaConfig, RandomInit};

/// `rows` rows of length `n`, each keeping exactly `keep` random entries with soft values in
/// (0.5, 1] (`keep_all` rows keep everything, for masks that must not remove a unit).
fn random_rows(rng: &mut StdRng, rows: usize, n: usize, keep: usize) -> Vec<Vec<f64>> {
    (0..rows)
        .map(|_| {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(rng);
            let mut row = vec![0.0; n];
            for &i in &idx[..keep] {
                row[i] = rng.random_range(0.5..=1.0);
            }
            row
        })
        .collect()
}

#[test]
fn masked_logits_equal_materialized_logits_for_random_cases() {
    let mut rng = StdRng::seed_from_u64(2024);
    for case in 0..10 {
        let layers = rng.random_range(1..=4);
        let heads = rng.random_range(1..=4);
        let head_dim = 2 * rng.random_range(2..=4);
        let hidden = rng.random_range(8..=24);
        let inter = rng.random_range(8..=40);
        let vocab = 50;
        let mut config = LlamaConfig::new(vocab, hidden, inter, layers, heads, heads);
        config.head_dim = head_dim;
        config.tie_word_embeddings = rng.random_bool(0.5);
        B::seed(&device(), case);
        let model: Llama<B> =
            Llama::from_source(&config, &mut RandomInit { std: 0.2 }, &device()).unwrap();
        let t_layers = rng.random_range(1..=layers);
        let t_heads = rng.random_range(1..=heads);
        let t_hidden = rng.random_range(1..=hidden);
        let t_inter = rng.random_range(1..=inter);
        let layer = random_rows(&mut rng, 1, layers, t_layers).remove(0);
        // Half of the cases use separate head_layer / mlp masks (same layers removed, other
        // soft values for the FFN).
        let mlp = rng.random_bool(0.5).then(|| {
            layer
                .iter()
                .map(|&v| {
                    if v == 0.0 {
                        0.0
                    } else {
                        rng.random_range(0.5..=1.0)
                    }
                })
                .collect()
        });
        let z = DeterministicMasks {
            hidden: random_rows(&mut rng, 1, hidden, t_hidden).remove(0),
            head: random_rows(&mut rng, layers, heads, t_heads),
            intermediate: random_rows(&mut rng, layers, inter, t_inter),
            layer,
            mlp,
        };
        let ids: Vec<i64> = (0..20).map(|_| rng.random_range(0..vocab as i64)).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 10]), &device());
        let masked: Vec<f32> = model
            .forward_masked(ids.clone(), &z.to_z(&device()))
            .into_data()
            .to_vec()
            .unwrap();
        let small = materialize(&model, &z, &device()).unwrap();
        let c = &small.config;
        assert_eq!(
            (
                c.num_hidden_layers,
                c.hidden_size,
                c.num_attention_heads,
                c.intermediate_size,
                c.head_dim
            ),
            (t_layers, t_hidden, t_heads, t_inter, head_dim),
            "case {case}: shape"
        );
        let dense: Vec<f32> = small.forward(ids).into_data().to_vec().unwrap();
        let diff = max_abs_diff(&masked, &dense);
        let scale = masked.iter().fold(0f32, |m, x| m.max(x.abs()));
        eprintln!(
            "case {case}: mlp {} diff {diff:e} max |logit| {scale}",
            z.mlp.is_some()
        );
        assert!(
            diff <= 1e-4,
            "case {case}: masked vs materialized logits differ by {diff}"
        );
    }
}
