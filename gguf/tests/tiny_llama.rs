//! Conversion of two tiny LLaMA GGUFs (written by fixtures/make_fixtures.py the way llama.cpp's
//! converter writes models) against what transformers' GGUF loader makes of the same files:
//! its state dict, config and token ids; and against the tokenizers they were made from
//! (a SentencePiece model and a `tokenizers` byte-level BPE).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value as Json;
use shear_gguf::{convert, Gguf, Source};
use tokenizers::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn reference(prefix: &str) -> Json {
    serde_json::from_slice(&std::fs::read(fixture(&format!("{prefix}.reference.json"))).unwrap())
        .unwrap()
}

/// Every converted tensor equals transformers' (`AutoModelForCausalLM.from_pretrained(...,
/// gguf_file=...)`, which dequantizes with gguf-py and un-permutes q/k itself) bit for bit.
fn tensors_match_transformers(prefix: &str) {
    let g = Gguf::open(fixture(&format!("{prefix}.gguf"))).unwrap();
    let c = convert(&g).unwrap();
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    let bytes = std::fs::read(fixture(&format!("{prefix}.transformers.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ours: BTreeSet<String> = c.tensors.iter().map(|t| t.hf_name.clone()).collect();
    let theirs: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    assert_eq!(ours, theirs);
    let mut permuted = 0;
    for item in c.iter() {
        let (name, shape, values) = item.unwrap();
        let view = st.tensor(&name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        assert_eq!(view.shape(), shape.as_slice(), "{name}");
        let expected: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values.len(), expected.len(), "{name}");
        let diff = values
            .iter()
            .zip(&expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(diff, 0, "{name}: {diff} values differ from transformers'");
        if name.contains("q_proj") || name.contains("k_proj") {
            permuted += 1;
        }
    }
    assert_eq!(permuted, 4);
    // The planned q/k tensors are the ones un-permuted, over heads and kv heads.
    let heads: Vec<Option<usize>> = c
        .tensors
        .iter()
        .filter(|t| t.hf_name.contains("layers.0.self_attn"))
        .map(|t| match &t.source {
            Source::Gguf {
                unpermute_heads, ..
            } => *unpermute_heads,
            Source::Zeros => panic!(),
        })
        .collect();
    let kv = c.params.num_key_value_heads;
    assert_eq!(heads, vec![Some(4), Some(kv), None, None]);
}

fn config_matches_transformers(prefix: &str) -> Json {
    let g = Gguf::open(fixture(&format!("{prefix}.gguf"))).unwrap();
    let c = convert(&g).unwrap();
    let r = reference(prefix)["config"].clone();
    let cfg = &c.config;
    for key in [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
    ] {
        assert_eq!(cfg[key], r[key], "{key}");
    }
    // transformers keeps the f32-stored epsilon as its f64 widening; we print the shortest
    // decimal that reads back as the same f32. Equal as f32.
    assert_eq!(
        cfg["rms_norm_eps"].as_f64().unwrap() as f32,
        r["rms_norm_eps"].as_f64().unwrap() as f32
    );
    assert_eq!(cfg["rms_norm_eps"], serde_json::json!(1e-6));
    assert_eq!(cfg["rope_theta"], r["rope_parameters"]["rope_theta"]);
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["LlamaForCausalLM"])
    );
    assert_eq!(cfg["hidden_act"], "silu");
    assert_eq!(cfg["torch_dtype"], "float32");
    assert!(cfg.get("rope_scaling").is_none());
    c.config.clone()
}

fn our_tokenizer(prefix: &str) -> (Tokenizer, Json) {
    let g = Gguf::open(fixture(&format!("{prefix}.gguf"))).unwrap();
    let c = convert(&g).unwrap();
    let json = c.tokenizer.unwrap().to_string();
    (
        Tokenizer::from_bytes(json.as_bytes()).expect("tokenizers loads our tokenizer.json"),
        c.tokenizer_config.unwrap(),
    )
}

fn ids_of(r: &Json) -> Vec<(String, Vec<u32>)> {
    r.as_object()
        .unwrap()
        .iter()
        .map(|(s, ids)| {
            (
                s.clone(),
                ids.as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as u32)
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn spm_tensors_match_transformers() {
    tensors_match_transformers("tiny_llama_spm");
}

#[test]
fn bpe_tied_tensors_match_transformers() {
    tensors_match_transformers("tiny_llama_bpe");
}

#[test]
fn spm_config() {
    let cfg = config_matches_transformers("tiny_llama_spm");
    assert_eq!(cfg["tie_word_embeddings"], false);
    assert_eq!(cfg["num_key_value_heads"], 2);
}

#[test]
fn bpe_config() {
    let cfg = config_matches_transformers("tiny_llama_bpe");
    assert_eq!(cfg["tie_word_embeddings"], true);
    assert_eq!(cfg["pad_token_id"], 2);
}

/// SentencePiece vocabulary: our ids equal SentencePiece's own (plus BOS) on every test string.
/// transformers' GGUF tokenizer agrees except on text that starts with a space, where its
/// `Metaspace(prepend_scheme="first")` adds no `▁` to one already there while SentencePiece
/// (and llama.cpp, and Llama-2's own tokenizer.json) always add one.
#[test]
fn spm_tokenizer_matches_sentencepiece() {
    let (tok, cfg) = our_tokenizer("tiny_llama_spm");
    let r = reference("tiny_llama_spm");
    let transformers = ids_of(&r["transformers_ids"]);
    let sp = ids_of(&r["sentencepiece_ids"]);
    for ((s, sp_ids), (_, hf_ids)) in sp.iter().zip(&transformers) {
        let enc = tok.encode(s.as_str(), true).unwrap();
        let mut expected = vec![1u32];
        expected.extend(sp_ids);
        assert_eq!(enc.get_ids(), expected.as_slice(), "{s:?}");
        if !s.starts_with(char::is_whitespace) {
            assert_eq!(enc.get_ids(), hf_ids.as_slice(), "{s:?} vs transformers");
        }
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), *s);
    }
    assert_eq!(cfg["add_bos_token"], true);
    assert_eq!(cfg["bos_token"], "<s>");
    assert_eq!(cfg["eos_token"], "</s>");
    assert_eq!(cfg["unk_token"], "<unk>");
    // The user-defined token is matched whole.
    let enc = tok.encode("a<sep>b", false).unwrap();
    assert!(enc.get_tokens().contains(&"<sep>".to_string()));
}

/// Byte-level BPE with SmolLM2's digit-by-digit pre-tokenizer (`tokenizer.ggml.pre = smollm`):
/// our ids equal both the original `tokenizers` tokenizer's and transformers' GGUF tokenizer's.
#[test]
fn bpe_tokenizer_matches_original_and_transformers() {
    let (tok, cfg) = our_tokenizer("tiny_llama_bpe");
    let r = reference("tiny_llama_bpe");
    let transformers = ids_of(&r["transformers_ids"]);
    let original = ids_of(&r["original_tokenizer_ids"]);
    for ((s, orig_ids), (_, hf_ids)) in original.iter().zip(&transformers) {
        let enc = tok.encode(s.as_str(), true).unwrap();
        assert_eq!(enc.get_ids(), orig_ids.as_slice(), "{s:?} vs original");
        assert_eq!(enc.get_ids(), hf_ids.as_slice(), "{s:?} vs transformers");
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), *s);
    }
    // Special (control) and user-defined tokens stay whole.
    let enc = tok
        .encode("<|im_start|>user\n<think>hi<|im_end|>", true)
        .unwrap();
    let toks = enc.get_tokens();
    assert_eq!(toks[0], "<|im_start|>");
    assert!(toks.contains(&"<think>".to_string()) && toks.contains(&"<|im_end|>".to_string()));
    assert_eq!(cfg["add_bos_token"], false);
    assert_eq!(cfg["pad_token"], "<|im_end|>");
    assert!(cfg["chat_template"]
        .as_str()
        .unwrap()
        .contains("<|im_start|>"));
    assert_eq!(cfg["model_max_length"], 256);
}

/// Single-byte corruptions of a model's header, metadata and tensor infos either fail with an
/// error or convert; nothing panics, whatever `convert` accepts loads, and the tokenizer it
/// builds is JSON.
#[test]
fn corrupted_models_convert_or_fail_cleanly() {
    for prefix in ["tiny_llama_spm", "tiny_llama_bpe"] {
        let bytes = std::fs::read(fixture(&format!("{prefix}.gguf"))).unwrap();
        let header = Gguf::open(fixture(&format!("{prefix}.gguf")))
            .unwrap()
            .data_offset() as usize;
        let mut state = 0x9E3779B97F4A7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut parsed, mut converted) = (0, 0);
        for _ in 0..1500 {
            let mut b = bytes.clone();
            let pos = (next() % header as u64) as usize;
            b[pos] = next() as u8;
            let Ok(g) = Gguf::from_bytes("flip", b) else {
                continue;
            };
            parsed += 1;
            let Ok(c) = convert(&g) else {
                continue;
            };
            converted += 1;
            for t in c.iter() {
                let _ = t;
            }
            if let Some(t) = &c.tokenizer {
                assert!(t.is_object());
            }
        }
        eprintln!("{prefix}: of 1500 corruptions {parsed} parsed, {converted} converted");
        // The corruptions exercised both the parser's and the converter's checks.
        assert!(
            parsed > 100 && converted > 50 && converted < 1500,
            "{prefix}: {parsed} {converted}"
        );
    }
}
