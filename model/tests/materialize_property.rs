//! Property: for random sources — multi-head or grouped-query attention, tied or untied
//! embeddings — and random deterministic masks of any valid target, the masked forward and the
//! materialized model give the same logits (≤ 1e-4), and the materialized config is a valid
//! Hugging Face Llama of exactly the target shape (tied sources stay tied).

use burn::prelude::*;
use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shear_model::{
    materialize, DeterministicMasks, Llama, LlamaConfig, RandomInit, TargetShape, WeightSource,
};
use shear_testkit::*;

/// Random weights, with random (not zero) attention biases.
struct WithBiases(RandomInit);

impl WeightSource<B> for WithBiases {
    fn linear(
        &mut self,
        n: &str,
        i: usize,
        o: usize,
        d: &Device<B>,
    ) -> shear_model::Result<Tensor<B, 2>> {
        self.0.linear(n, i, o, d)
    }
    fn embedding(
        &mut self,
        n: &str,
        v: usize,
        e: usize,
        d: &Device<B>,
    ) -> shear_model::Result<Tensor<B, 2>> {
        self.0.embedding(n, v, e, d)
    }
    fn norm(&mut self, _: &str, n: usize, d: &Device<B>) -> shear_model::Result<Tensor<B, 1>> {
        // Norm weights around 1, not exactly 1, so that folding into them is exercised.
        Ok(Tensor::random(
            [n],
            burn::tensor::Distribution::Uniform(0.5, 1.5),
            d,
        ))
    }
    fn bias(&mut self, _: &str, n: usize, d: &Device<B>) -> shear_model::Result<Tensor<B, 1>> {
        Ok(Tensor::random(
            [n],
            burn::tensor::Distribution::Normal(0.0, 0.3),
            d,
        ))
    }
}

/// A row of length `n` keeping exactly `keep` random entries with soft values in (0.5, 1].
fn random_row(rng: &mut StdRng, n: usize, keep: usize) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let mut row = vec![0.0; n];
    for &i in &idx[..keep] {
        row[i] = rng.random_range(0.5..=1.0);
    }
    row
}

fn random_rows(rng: &mut StdRng, rows: usize, n: usize, keep: usize) -> Vec<Vec<f64>> {
    (0..rows).map(|_| random_row(rng, n, keep)).collect()
}

/// The rules transformers' `LlamaConfig` and `LlamaAttention` rely on.
fn assert_valid_llama(c: &LlamaConfig, case: u64) {
    assert!(
        c.num_attention_heads > 0 && c.num_key_value_heads > 0,
        "case {case}"
    );
    assert_eq!(
        c.num_attention_heads % c.num_key_value_heads,
        0,
        "case {case}: heads must be a multiple of kv heads"
    );
    assert_eq!(
        c.hidden_size % c.num_attention_heads,
        0,
        "case {case}: transformers refuses a hidden size the heads do not divide"
    );
    let json = c.to_hf_json(shear_model::Dtype::F32);
    // head_dim is written whenever hidden / heads would give another value.
    if c.hidden_size != c.num_attention_heads * c.head_dim {
        assert_eq!(json["head_dim"], c.head_dim, "case {case}");
    }
    assert_eq!(
        json["tie_word_embeddings"], c.tie_word_embeddings,
        "case {case}"
    );
    c.validate().unwrap();
}

#[test]
fn masked_logits_equal_materialized_logits_for_random_cases() {
    let mut rng = StdRng::seed_from_u64(2024);
    let mut seen = [[false; 2]; 2]; // [grouped][tied]
    let mut biased = false;
    for case in 0..60u64 {
        let layers = rng.random_range(1..=3);
        let kv = rng.random_range(1..=3);
        let per_group = if rng.random_bool(0.5) {
            1
        } else {
            rng.random_range(2..=3)
        };
        let heads = kv * per_group;
        let head_dim = 2 * rng.random_range(2..=4);
        // transformers' rule: the heads divide the hidden size (which need not be
        // heads × head_dim).
        let hidden = heads * rng.random_range(2..=8);
        let inter = rng.random_range(8..=40);
        let vocab = 50;
        let mut config = LlamaConfig::new(vocab, hidden, inter, layers, heads, kv);
        config.head_dim = head_dim;
        config.tie_word_embeddings = rng.random_bool(0.5);
        config.attention_bias = rng.random_bool(0.5);
        seen[usize::from(per_group > 1)][usize::from(config.tie_word_embeddings)] = true;
        biased |= config.attention_bias;
        B::seed(&device(), case);
        let model: Llama<B> =
            Llama::from_source(&config, &mut WithBiases(RandomInit { std: 0.2 }), &device())
                .unwrap();
        let t_layers = rng.random_range(1..=layers);
        let t_kv = rng.random_range(1..=kv);
        let t_per_group = rng.random_range(1..=per_group);
        let t = TargetShape {
            layers: t_layers,
            hidden: t_kv * t_per_group * rng.random_range(1..=hidden / (t_kv * t_per_group)),
            heads: t_kv * t_per_group,
            kv_heads: t_kv,
            intermediate: rng.random_range(1..=inter),
        };
        let layer = random_row(&mut rng, layers, t_layers);
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
        // Multi-head sources take one head mask; grouped ones a group mask and, inside each
        // group, a query-head mask keeping the same number in every group.
        let (head, kv_head) = if per_group == 1 {
            (random_rows(&mut rng, layers, heads, t.heads), None)
        } else {
            let head = (0..layers)
                .map(|_| {
                    (0..kv)
                        .flat_map(|_| random_row(&mut rng, per_group, t_per_group))
                        .collect()
                })
                .collect();
            (head, Some(random_rows(&mut rng, layers, kv, t_kv)))
        };
        let z = DeterministicMasks {
            hidden: random_row(&mut rng, hidden, t.hidden),
            head,
            kv_head,
            intermediate: random_rows(&mut rng, layers, inter, t.intermediate),
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
        assert_eq!(TargetShape::of(c), t, "case {case}: shape");
        assert_eq!(c.head_dim, head_dim, "case {case}: head_dim is kept");
        assert_eq!(
            c.tie_word_embeddings, config.tie_word_embeddings,
            "case {case}: tie"
        );
        assert_eq!(
            small.lm_head.is_none(),
            config.tie_word_embeddings,
            "case {case}"
        );
        assert_eq!(
            c.param_counts().total(),
            t.config(&config).param_counts().total(),
            "case {case}: parameters of the target"
        );
        assert_valid_llama(c, case);
        let dense: Vec<f32> = small.forward(ids).into_data().to_vec().unwrap();
        let diff = max_abs_diff(&masked, &dense);
        eprintln!(
            "case {case}: {t} tied {} bias {} mlp {} diff {diff:e}",
            config.tie_word_embeddings,
            config.attention_bias,
            z.mlp.is_some()
        );
        assert!(
            diff <= 1e-4,
            "case {case}: masked vs materialized logits differ by {diff}"
        );
    }
    assert_eq!(seen, [[true; 2]; 2], "every kind of source was drawn");
    assert!(biased, "sources with attention biases were drawn");
}
