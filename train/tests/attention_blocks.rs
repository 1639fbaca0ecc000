//! Block-wise causal attention (model/src/attention_blocks.rs) and its block-wise backward
//! (recompute.rs `attention_grads`) against burn's attention with the keys and values repeated
//! to every query head: the context and the gradients of the queries, keys and values within
//! 1e-5 (relative to the largest magnitude), for multi-head and grouped-query attention, with
//! sequence lengths that are not a multiple of the block; then the whole recomputing backward
//! with block-wise attention against the plain backward of the masked loss, some heads masked
//! to zero, for a grouped-query and a multi-head model.

use burn::backend::Autodiff;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Distribution;
use rand::SeedableRng;
use shear_model::attention_blocks::causal_attention;
use shear_model::{
    load_llama, HardConcrete, L0Masks, LayerMasks, Llama, LlamaConfig, PruneModules, RandomInit,
};
use shear_testkit::*;
use shear_train::grads::GradSum;
use shear_train::recompute;

type AD = Autodiff<B>;

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Largest absolute difference over the largest magnitude of `want`.
fn rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    max_abs_diff(got, want) / scale
}

/// `[b, kvh, s, hd] -> [b, h, s, hd]`, query head i reading key/value head i / (h / kvh).
fn repeat(x: Tensor<AD, 4>, h: usize) -> Tensor<AD, 4> {
    let [b, kvh, s, hd] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kvh, h / kvh, s, hd])
        .reshape([b, h, s, hd])
}

#[test]
fn blockwise_attention_and_its_backward_match_burns_attention() {
    let device = device();
    let mut worst: f32 = 0.0;
    for (h, kvh) in [(4, 4), (4, 2), (6, 2), (4, 1)] {
        for (seq, block) in [(21, 8), (16, 5), (13, 32), (9, 1)] {
            let (b, hd) = (2, 8);
            let rand = |heads: usize| {
                Tensor::<B, 4>::random([b, heads, seq, hd], Distribution::Normal(0.0, 1.0), &device)
            };
            let (q, k, v, w) = (rand(h), rand(kvh), rand(kvh), rand(h));
            let leaf = |t: &Tensor<B, 4>| Tensor::<AD, 4>::from_inner(t.clone()).require_grad();

            // burn's attention, keys and values repeated.
            let (q1, k1, v1) = (leaf(&q), leaf(&k), leaf(&v));
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: true,
            };
            let want = attention(
                q1.clone(),
                repeat(k1.clone(), h),
                repeat(v1.clone(), h),
                None,
                None,
                options,
            );
            let grads = (want.clone() * Tensor::from_inner(w.clone()))
                .sum()
                .backward();
            let want_grads = [&q1, &k1, &v1].map(|t| values(t.grad(&grads).unwrap()));
            let want = values(want.inner());

            // Block-wise forward; block-wise backward (recompute.rs).
            let got = causal_attention(q.clone(), k.clone(), v.clone(), block);
            let [dq, dk, dv] =
                recompute::attention_grads::<AD>(q.clone(), k.clone(), v.clone(), w, block);
            let at = format!("heads {h}/{kvh}, seq {seq}, block {block}");
            let d = rel(&values(got), &want);
            assert!(d <= 1e-5, "{at}: context {d:e}");
            worst = worst.max(d);
            for (name, g, want) in [
                ("q", dq, &want_grads[0]),
                ("k", dk, &want_grads[1]),
                ("v", dv, &want_grads[2]),
            ] {
                let d = rel(&values(g), want);
                assert!(d <= 1e-5, "{at}: d{name} {d:e}");
                worst = worst.max(d);
            }
        }
    }
    eprintln!("block-wise attention: context and gradients within {worst:.2e}");
}

fn mha_model() -> Llama<AD> {
    let mut c = LlamaConfig::new(300, 32, 48, 2, 4, 4);
    c.max_position_embeddings = 64;
    c.tie_word_embeddings = false;
    Llama::from_source(&c, &mut RandomInit::default(), &device()).unwrap()
}

fn ids(rows: usize, seq: usize, vocab: usize) -> Tensor<AD, 2, Int> {
    let v: Vec<i64> = (0..(rows * seq) as i64)
        .map(|i| (i * 53 + 7) % vocab as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, seq]), &device())
}

#[test]
fn blockwise_recomputation_matches_the_plain_backward_with_masked_heads() {
    let gqa = load_llama::<AD>(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap();
    for (what, model) in [
        ("grouped-query, tied", gqa),
        ("multi-head, untied", mha_model()),
    ] {
        let c = model.config.clone();
        assert_eq!(
            what.starts_with("multi"),
            c.num_attention_heads == c.num_key_value_heads
        );
        let l0 = L0Masks::<AD>::new(
            &c,
            HardConcrete::default(),
            PruneModules::default(),
            LayerMasks::Layer,
            &device(),
        );
        // Some heads masked to zero in every layer: head 1 of each.
        let sample = || {
            let mut z = l0.sample_from(&mut rand_chacha::ChaCha8Rng::seed_from_u64(5));
            let h = c.num_attention_heads;
            let keep: Vec<f32> = (0..c.num_hidden_layers * h)
                .map(|i| if i % h == 1 { 0.0 } else { 1.0 })
                .collect();
            let keep = Tensor::<AD, 1>::from_floats(keep.as_slice(), &device());
            z.head = z.head.map(|head| {
                let shape = head.dims();
                head * keep.reshape(shape)
            });
            z
        };
        let x = ids(2, 21, c.vocab_size);
        let z = sample();
        let grads = model.loss_masked(x.clone(), Some(&z)).backward();
        let want_model = GradientsParams::from_grads(grads, &model);
        let z2 = sample();
        let grads = model.loss_masked(x.clone(), Some(&z2)).backward();
        let want_l0 = GradientsParams::from_grads(grads, &l0);

        let z3 = sample();
        let mut sum = GradSum::new();
        let r =
            recompute::gradients_blockwise(&model, x.clone(), Some(&z3), 1.0, 8, &mut sum, |h| {
                Ok((model.head_loss(h, x.clone()), ()))
            })
            .unwrap();
        let grads = sum.into_grads();
        let got_l0 = GradientsParams::from_grads(
            recompute::z_surrogate(&z3, r.z.as_ref().unwrap()).backward(),
            &l0,
        );
        let dm = rel_diff(
            &param_tensors(&model, Some(&grads)),
            &param_tensors(&model, Some(&want_model)),
        );
        let dz = rel_diff(
            &param_tensors(&l0, Some(&got_l0)),
            &param_tensors(&l0, Some(&want_l0)),
        );
        eprintln!(
            "{what}, seq 21, blocks of 8: weights' gradients within {dm:e}, log_alpha's {dz:e}"
        );
        assert!(dm <= 1e-5, "{what}: {dm}");
        assert!(dz <= 1e-5, "{what}: {dz}");
    }
}
