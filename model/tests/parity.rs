//! Logits, loss and greedy generation against Hugging Face transformers' outputs
//! (tests/fixtures/*/expected.safetensors and generate.json).

use burn::prelude::*;
use shear_model::{generate, load_llama, next_token_loss, GenerateConfig, Sampling};
use shear_testkit::*;

fn check_logits(rel: &str, logits_tol: f32) {
    let dir = fixture(rel);
    let model = load_llama::<B>(&dir, &device()).unwrap();
    let expected = dir.join("expected.safetensors");
    let (ids_shape, ids) = read_tensor(&expected, "input_ids");
    let (logits_shape, want_logits) = read_tensor(&expected, "logits");
    let (_, want_loss) = read_tensor(&expected, "loss");
    let ids: Vec<i64> = ids.iter().map(|&x| x as i64).collect();
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [ids_shape[0], ids_shape[1]]),
        &device(),
    );
    let logits = model.forward(ids.clone());
    assert_eq!(logits.dims().to_vec(), logits_shape);
    let got: Vec<f32> = logits.to_data().to_vec().unwrap();
    let diff = max_abs_diff(&got, &want_logits);
    eprintln!("{rel}: max |logits diff| = {diff:e}");
    assert!(
        diff <= logits_tol,
        "{rel}: max |logits diff| {diff} > {logits_tol}"
    );
    // The training path (last position's logits never computed) gives the same loss.
    let train_loss: f32 = model.loss(ids.clone()).into_scalar();
    assert!(
        (train_loss - want_loss[0]).abs() <= 1e-4,
        "{rel}: Llama::loss {train_loss}"
    );
    let loss: f32 = next_token_loss(logits, ids).into_scalar();
    let loss_diff = (loss - want_loss[0]).abs();
    eprintln!("{rel}: |loss diff| = {loss_diff:e}");
    assert!(
        loss_diff <= 1e-4,
        "{rel}: loss {loss} vs {} (diff {loss_diff})",
        want_loss[0]
    );
}

#[test]
fn mha_f32_logits_and_loss_match_transformers() {
    check_logits("llama-mha", 1e-4);
}

#[test]
fn gqa_tied_bf16_sharded_logits_and_loss_match_transformers() {
    check_logits("llama-gqa-tied-bf16-sharded", 1e-3);
}

/// Llama-3 details: `llama3` RoPE scaling (96 positions reach the scaled band of a model whose
/// original context is 64), grouped-query attention, head_dim 16 ≠ hidden 48 / 4 heads, and q/k/v/o
/// biases (scripts/make_llama3_fixture.py).
#[test]
fn llama3_rope_head_dim_and_attention_bias_match_transformers() {
    check_logits("llama3-bias", 1e-4);
    let c = shear_model::LlamaConfig::from_file(fixture("llama3-bias")).unwrap();
    assert!(c.attention_bias && c.head_dim * c.num_attention_heads != c.hidden_size);
}

/// A saved model keeps its biases (a round trip gives the same tensors, bit for bit).
#[test]
fn attention_biases_round_trip() {
    let model = load_llama::<B>(&fixture("llama3-bias"), &device()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    shear_model::save_llama(&model, tmp.path(), shear_model::Dtype::F32).unwrap();
    assert_eq!(
        raw_tensors(&fixture("llama3-bias/model.safetensors")),
        raw_tensors(&tmp.path().join("model.safetensors"))
    );
}

fn check_greedy(rel: &str) {
    let dir = fixture(rel);
    let model = load_llama::<B>(&dir, &device()).unwrap();
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generate.json")).unwrap()).unwrap();
    let ids = |k: &str| -> Vec<u32> {
        g[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let (prompt, want) = (ids("prompt_ids"), ids("greedy_continuation"));
    for use_cache in [true, false] {
        let cfg = GenerateConfig {
            max_new_tokens: want.len(),
            sampling: Sampling::Greedy,
            seed: 0,
            stop_tokens: vec![],
            use_cache,
        };
        let mut streamed = Vec::new();
        let got = generate(&model, &prompt, &cfg, |t| streamed.push(t)).unwrap();
        assert_eq!(got, want, "{rel}, use_cache={use_cache}");
        assert_eq!(streamed, want, "{rel}: every token is streamed");
    }
}

#[test]
fn mha_greedy_generation_matches_with_and_without_cache() {
    check_greedy("llama-mha");
}

#[test]
fn gqa_greedy_generation_matches_with_and_without_cache() {
    check_greedy("llama-gqa-tied-bf16-sharded");
}

#[test]
fn sampling_is_seeded_and_respects_top_k() {
    let model = load_llama::<B>(&fixture("llama-mha"), &device()).unwrap();
    let sample = |seed, top_k| GenerateConfig {
        max_new_tokens: 12,
        sampling: Sampling::Sample {
            temperature: 1.0,
            top_k,
            top_p: None,
        },
        seed,
        stop_tokens: vec![],
        use_cache: true,
    };
    let prompt = [714, 628, 384];
    let a = generate(&model, &prompt, &sample(7, None), |_| {}).unwrap();
    let b = generate(&model, &prompt, &sample(7, None), |_| {}).unwrap();
    let c = generate(&model, &prompt, &sample(8, None), |_| {}).unwrap();
    assert_eq!(a, b, "same seed, same tokens");
    assert_ne!(a, c, "another seed gives other tokens");
    // top_k = 1 is greedy whatever the seed.
    let greedy = GenerateConfig {
        sampling: Sampling::Greedy,
        ..sample(0, None)
    };
    let g = generate(&model, &prompt, &greedy, |_| {}).unwrap();
    assert_eq!(
        generate(&model, &prompt, &sample(3, Some(1)), |_| {}).unwrap(),
        g
    );
}

#[test]
fn chunked_prefill_with_cache_equals_full_forward() {
    // Feeding a sequence in chunks through the KV cache (explicit causal mask with an offset)
    // gives the logits of one full forward.
    let model = load_llama::<B>(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap();
    let ids: Vec<i64> = (0..10).map(|i| (i * 37 + 11) % 1000).collect();
    let full = model.forward(Tensor::from_data(
        TensorData::new(ids.clone(), [1, 10]),
        &device(),
    ));
    let mut cache = model.new_cache();
    let mut parts = Vec::new();
    for (start, len) in [(0, 4), (4, 1), (5, 5)] {
        let chunk = ids[start..start + len].to_vec();
        parts.push(model.forward_cached(
            Tensor::from_data(TensorData::new(chunk, [1, len]), &device()),
            &mut cache,
        ));
    }
    assert_eq!(cache.len(), 10);
    let chunked: Vec<f32> = Tensor::cat(parts, 1).to_data().to_vec().unwrap();
    let full: Vec<f32> = full.to_data().to_vec().unwrap();
    let diff = max_abs_diff(&chunked, &full);
    assert!(diff <= 1e-5, "chunked vs full: {diff}");
}
