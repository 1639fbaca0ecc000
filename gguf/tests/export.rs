//! GGUF export ([`plan_export`] + [`write_gguf`]) against independent references: the tiny
//! byte-level BPE LLaMA that gguf-py wrote the way llama.cpp's converter does
//! (fixtures/make_fixtures.py), read back by this crate's reader; Q8_0 bytes from gguf-py's
//! quantizer (fixtures/make_q8_0.py); and hand-made shapes for the refusals.

use std::path::PathBuf;

use half::{bf16, f16};
use serde_json::{json, Value as Json};
use shear_gguf::{
    convert, plan_export, write_gguf, ExportError, ExportSource, Gguf, LlamaParams, TensorOut,
    TensorType, TokenizerFiles, Value, WriteError,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A converted checkpoint in memory: its params, tokenizer files and tensors by HF name.
struct Checkpoint {
    params: LlamaParams,
    tokenizer: Json,
    tokenizer_config: Option<Json>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn checkpoint(g: &Gguf) -> Checkpoint {
    let c = convert(g).unwrap();
    Checkpoint {
        params: c.params.clone(),
        tokenizer: c.tokenizer.clone().unwrap(),
        tokenizer_config: c.tokenizer_config.clone(),
        tensors: c.iter().map(|t| t.unwrap()).collect(),
    }
}

/// The GGUF bytes shear exports for `ck` in `ty`, with the plan's notes.
fn export(ck: &Checkpoint, ty: TensorType) -> (Vec<u8>, Vec<String>) {
    let files = TokenizerFiles {
        tokenizer: &ck.tokenizer,
        config: ck.tokenizer_config.as_ref(),
    };
    let plan = plan_export(&ck.params, "tiny", ty, &files).unwrap();
    let infos: Vec<TensorOut> = plan.tensors.iter().map(|t| t.out.clone()).collect();
    let mut out = Vec::new();
    let n = write_gguf(&mut out, &plan.metadata, &infos, |i| {
        let t = &plan.tensors[i];
        let values = match &t.source {
            ExportSource::Checkpoint { hf_name, .. } => {
                let (_, shape, v) = ck.tensors.iter().find(|x| &x.0 == hf_name).unwrap();
                assert_eq!(shape, &t.out.shape, "{hf_name}");
                v.clone()
            }
            ExportSource::Computed(_) => Vec::new(),
        };
        Ok(t.encode(values))
    })
    .unwrap();
    assert_eq!(n as usize, out.len());
    (out, plan.notes)
}

fn source() -> Gguf {
    Gguf::open(fixture("tiny_llama_bpe.gguf")).unwrap()
}

/// Exported in f32 and read back: every tensor, the config and the tokenizer.json equal those
/// of the first conversion bit for bit; the file's q/k data equal the gguf-py file's
/// (dequantized) data, so the rows are permuted as llama.cpp's converter permutes them; and
/// every tokenizer key llama.cpp reads equals what gguf-py wrote.
#[test]
fn f32_export_of_a_converted_gguf_reads_back_identically() {
    let g = source();
    let ck = checkpoint(&g);
    let (bytes, notes) = export(&ck, TensorType::F32);
    assert!(notes.is_empty(), "{notes:?}");
    let back = Gguf::from_bytes("exported.gguf", bytes).unwrap();
    assert_eq!(back.version(), 3);
    assert_eq!(back.alignment(), 32);
    for t in back.tensors() {
        assert_eq!(t.offset % 32, 0, "{}: offset {}", t.name, t.offset);
        assert_eq!(t.ggml_type, shear_gguf::GgmlType::F32, "{}", t.name);
    }
    let names = |g: &Gguf| {
        g.tensors()
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    let mut ours = names(&back);
    let mut theirs = names(&g);
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "tied embeddings: no output.weight");
    for t in g.tensors() {
        let want = g.dequantize(t).unwrap();
        let got = back.tensor_f32(&t.name).unwrap();
        assert_eq!(back.tensor(&t.name).unwrap().dims, t.dims, "{}", t.name);
        assert!(
            want.iter()
                .zip(&got)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: the file's data differ from gguf-py's",
            t.name
        );
    }

    let again = checkpoint(&back);
    assert_eq!(again.params, ck.params);
    assert_eq!(again.tokenizer, ck.tokenizer);
    assert_eq!(again.tokenizer_config, ck.tokenizer_config);
    assert_eq!(again.tensors.len(), ck.tensors.len());
    for ((n1, s1, v1), (n2, s2, v2)) in ck.tensors.iter().zip(&again.tensors) {
        assert_eq!((n1, s1), (n2, s2));
        assert!(
            v1.iter().zip(v2).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{n1}"
        );
    }

    for key in [
        "general.architecture",
        "llama.block_count",
        "llama.context_length",
        "llama.embedding_length",
        "llama.feed_forward_length",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
        "llama.rope.freq_base",
        "llama.attention.layer_norm_rms_epsilon",
        "llama.vocab_size",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.chat_template",
    ] {
        let want = g.get(key).unwrap_or_else(|| panic!("fixture has no {key}"));
        assert_eq!(back.get(key), Some(want), "{key}");
    }
}

/// f16 and bf16: every matrix holds its values rounded to nearest even (as numpy and
/// llama.cpp's converter round), every 1-D tensor stays f32.
#[test]
fn half_precision_exports_hold_the_rounded_values() {
    let ck = checkpoint(&source());
    for (ty, ggml, round) in [
        (
            TensorType::F16,
            shear_gguf::GgmlType::F16,
            (|x: f32| f16::from_f32(x).to_f32()) as fn(f32) -> f32,
        ),
        (TensorType::Bf16, shear_gguf::GgmlType::BF16, |x: f32| {
            bf16::from_f32(x).to_f32()
        }),
    ] {
        let (bytes, notes) = export(&ck, ty);
        assert!(notes.is_empty(), "{notes:?}");
        let back = Gguf::from_bytes("half.gguf", bytes).unwrap();
        let again = checkpoint(&back);
        let mut changed = 0;
        for ((name, shape, v), (_, _, got)) in ck.tensors.iter().zip(&again.tensors) {
            let want: Vec<f32> = if shape.len() == 1 {
                v.clone()
            } else {
                v.iter().map(|&x| round(x)).collect()
            };
            changed += want.iter().zip(v).filter(|(a, b)| a != b).count();
            assert!(
                want.iter()
                    .zip(got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} {name}"
            );
        }
        assert!(
            changed > 0,
            "{ty}: rounding changed nothing, so nothing was tested"
        );
        for t in back.tensors() {
            let want = if t.dims.len() == 1 {
                shear_gguf::GgmlType::F32
            } else {
                ggml
            };
            assert_eq!(t.ggml_type, want, "{ty} {}", t.name);
        }
    }
}

fn read_f32(name: &str) -> Vec<f32> {
    std::fs::read(fixture(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Q8_0 blocks byte for byte equal to gguf-py's quantizer's (`gguf.quants.quantize`), on 12
/// blocks chosen for the edge cases (fixtures/make_q8_0.py: zeros, ties at half a step, an
/// f16-subnormal scale, a scale near f16's largest, a negative largest magnitude).
#[test]
fn q8_0_bytes_equal_gguf_py() {
    let x = read_f32("q8_0_input.f32");
    let want = std::fs::read(fixture("q8_0_ref.bin")).unwrap();
    assert_eq!((x.len(), want.len()), (384, 12 * 34));
    let got = TensorType::Q8_0.encode(&x);
    for (b, (g, w)) in got.chunks(34).zip(want.chunks(34)).enumerate() {
        assert_eq!(g, w, "block {b}");
    }
}

/// A Q8_0 export reads back with every value within one quantization step of its block
/// (`max|x| / 127`): rounding to the nearest step is half a step, the f16 scale adds at most
/// 127 · 2⁻¹¹ of a step more.
#[test]
fn q8_0_export_reads_back_within_its_quantization_step() {
    let ck = checkpoint(&source());
    let (bytes, notes) = export(&ck, TensorType::Q8_0);
    assert!(notes.is_empty(), "{notes:?}");
    let back = Gguf::from_bytes("q8.gguf", bytes).unwrap();
    assert_eq!(
        back.get("general.file_type"),
        Some(&Value::U32(7)),
        "LLAMA_FTYPE_MOSTLY_Q8_0"
    );
    let again = checkpoint(&back);
    let mut worst = 0f32;
    for ((name, shape, v), (_, _, got)) in ck.tensors.iter().zip(&again.tensors) {
        if shape.len() == 1 {
            assert_eq!(v, got, "{name}: 1-D tensors stay f32");
            continue;
        }
        // Blocks run along the rows of the file's (permuted) layout; a q/k row permutation
        // moves whole rows, and rows are whole blocks, so the HF layout's blocks are the same.
        for (b, (xs, ys)) in v.chunks(32).zip(got.chunks(32)).enumerate() {
            let step = xs.iter().fold(0f32, |m, x| m.max(x.abs())) / 127.0;
            for (x, y) in xs.iter().zip(ys) {
                let d = (x - y).abs();
                assert!(d <= step, "{name} block {b}: {x} -> {y}, step {step}");
                if step > 0.0 {
                    worst = worst.max(d / step);
                }
            }
        }
    }
    eprintln!("Q8_0 round trip: worst error {worst:.3} of a step");
    assert!(worst > 0.1, "nothing was quantized");
}

fn params() -> LlamaParams {
    LlamaParams {
        vocab_size: 8,
        hidden_size: 64,
        intermediate_size: 40,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 32,
        rms_norm_eps: 1e-5,
        rope_theta: 500000.0,
        max_position_embeddings: 8192,
        tie_word_embeddings: true,
        attention_bias: false,
        mlp_bias: false,
        rope_scaling: None,
        bos_token_id: Some(0),
        eos_token_id: Some(1),
        pad_token_id: None,
    }
}

/// A byte-level BPE tokenizer.json of `n` tokens (`<s>`, `</s>` special, then letters).
fn tokenizer(n: usize) -> Json {
    let mut vocab = serde_json::Map::new();
    for i in 0..n {
        let t = match i {
            0 => "<s>".to_string(),
            1 => "</s>".to_string(),
            _ => ((b'a' + (i - 2) as u8) as char).to_string(),
        };
        vocab.insert(t, json!(i));
    }
    json!({
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "added_tokens": [
            {"id": 0, "content": "<s>", "special": true},
            {"id": 1, "content": "</s>", "special": true}
        ],
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": [["a", "b"]]}
    })
}

fn plan(
    p: &LlamaParams,
    tok: &Json,
    ty: TensorType,
) -> Result<shear_gguf::ExportPlan, ExportError> {
    plan_export(
        p,
        "t",
        ty,
        &TokenizerFiles {
            tokenizer: tok,
            config: None,
        },
    )
}

/// Shapes llama.cpp's Q8_0 cannot block (rows of 40 values) fall back to f16, with a note per
/// tensor; GQA, tied embeddings, unused embedding rows and Llama-3 RoPE are described as
/// llama.cpp reads them.
#[test]
fn the_plan_describes_odd_shapes_as_llama_cpp_reads_them() {
    let mut p = params();
    p.vocab_size = 10;
    p.rope_scaling = Some(json!({
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192
    }));
    let plan = plan(&p, &tokenizer(8), TensorType::Q8_0).unwrap();
    let ty = |name: &str| {
        plan.tensors
            .iter()
            .find(|t| t.out.name == name)
            .map(|t| (t.out.ty, t.out.shape.clone()))
    };
    assert_eq!(
        ty("blk.0.ffn_down.weight"),
        Some((TensorType::F16, vec![64, 40]))
    );
    assert_eq!(
        ty("blk.0.ffn_up.weight"),
        Some((TensorType::Q8_0, vec![40, 64]))
    );
    assert_eq!(
        ty("blk.0.attn_k.weight"),
        Some((TensorType::Q8_0, vec![32, 64]))
    );
    assert_eq!(
        ty("blk.0.attn_norm.weight"),
        Some((TensorType::F32, vec![64]))
    );
    assert_eq!(ty("output.weight"), None, "tied");
    let (rty, rshape) = ty("rope_freqs.weight").unwrap();
    assert_eq!((rty, rshape), (TensorType::F32, vec![16]));
    assert_eq!(plan.notes.len(), 2, "{:?}", plan.notes);
    assert!(
        plan.notes[0].contains("2 embedding rows have no token"),
        "{:?}",
        plan.notes
    );
    assert!(
        plan.notes[1].starts_with("blk.*.ffn_down.weight (1 tensor): rows of 40 values"),
        "{:?}",
        plan.notes
    );
    let meta = |k: &str| plan.metadata.iter().find(|(key, _)| key == k).map(|x| &x.1);
    assert_eq!(meta("llama.attention.head_count_kv"), Some(&Value::U32(1)));
    assert_eq!(meta("llama.attention.key_length"), Some(&Value::U32(32)));
    assert_eq!(
        meta("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
    let Some(Value::Array(shear_gguf::Array::String(tokens))) = meta("tokenizer.ggml.tokens")
    else {
        panic!("no tokens")
    };
    assert_eq!(&tokens[7..], ["f", "[PAD8]", "[PAD9]"]);
    let Some(Value::Array(shear_gguf::Array::I32(types))) = meta("tokenizer.ggml.token_type")
    else {
        panic!("no token types")
    };
    assert_eq!(types, &[3, 3, 1, 1, 1, 1, 1, 1, 5, 5]);
    // The divisors are llama.cpp's rope_freqs: 1 for high frequencies, the factor for low ones.
    let ExportSource::Computed(d) = &plan
        .tensors
        .iter()
        .find(|t| t.out.name == "rope_freqs.weight")
        .unwrap()
        .source
    else {
        panic!("rope_freqs is computed")
    };
    assert_eq!((d[0], d[15]), (1.0, 8.0));
}

/// Each shape or tokenizer the format or llama.cpp's LLaMA cannot hold is refused with a
/// message naming it.
#[test]
fn what_llama_cpp_cannot_hold_is_refused() {
    let tok = tokenizer(8);
    let refused = |p: LlamaParams, tok: &Json, needle: &str| {
        let e = plan(&p, tok, TensorType::F32).unwrap_err().to_string();
        assert!(e.contains(needle), "{e:?} should say {needle:?}");
    };
    let mut p = params();
    p.mlp_bias = true;
    refused(p, &tok, "mlp_bias");
    let mut p = params();
    p.head_dim = 31;
    refused(p, &tok, "head_dim 31 is odd");
    let mut p = params();
    p.num_key_value_heads = 3;
    refused(p, &tok, "not a multiple of num_key_value_heads 3");
    let mut p = params();
    p.num_hidden_layers = 0;
    refused(p, &tok, "num_hidden_layers is 0");
    let mut p = params();
    p.vocab_size = 6;
    refused(
        p,
        &tok,
        "the tokenizer has 8 tokens, but the model's embedding has only 6 rows",
    );
    let mut p = params();
    p.rope_scaling = Some(json!({"rope_type": "dynamic", "factor": 2.0}));
    refused(p, &tok, "rope_scaling type `dynamic`");
    let mut p = params();
    p.rope_scaling = Some(json!({"rope_type": "llama3", "factor": 8.0}));
    refused(p, &tok, "has no `original_max_position_embeddings`");
    let mut wordpiece = tok.clone();
    wordpiece["model"]["type"] = json!("WordPiece");
    refused(params(), &wordpiece, "a `WordPiece` model");
    let mut unigram = tok.clone();
    unigram["model"]["type"] = json!("Unigram");
    refused(params(), &unigram, "a `Unigram` model");
    let mut p = params();
    p.eos_token_id = Some(9);
    refused(p, &tok, "tokenizer.ggml.eos_token_id 9 is past the 8 rows");
}

/// The writer checks each tensor's data against its info, and honours `general.alignment`.
#[test]
fn the_writer_checks_sizes_and_aligns_data() {
    let infos = vec![
        TensorOut {
            name: "a".into(),
            shape: vec![3],
            ty: TensorType::F32,
        },
        TensorOut {
            name: "b".into(),
            shape: vec![2, 32],
            ty: TensorType::Q8_0,
        },
    ];
    let meta = vec![("general.alignment".to_string(), Value::U32(64))];
    let mut out = Vec::new();
    write_gguf(&mut out, &meta, &infos, |i| {
        // 127: a Q8_0 scale of exactly 1, so the values read back exactly.
        Ok(infos[i]
            .ty
            .encode(&vec![127.0; infos[i].shape.iter().product()]))
    })
    .unwrap();
    let g = Gguf::from_bytes("aligned.gguf", out).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.data_offset() % 64, 0);
    assert_eq!(
        g.tensors().iter().map(|t| t.offset).collect::<Vec<_>>(),
        [0, 64]
    );
    assert_eq!(g.tensor_f32("b").unwrap(), vec![127.0; 64]);

    let mut out = Vec::new();
    let e = write_gguf(&mut out, &[], &infos, |_| Ok(vec![0; 12])).unwrap_err();
    assert!(
        matches!(&e, WriteError::DataSize { name, found: 12, expected: 68 } if name == "b"),
        "{e}"
    );
    let e = write_gguf(&mut Vec::new(), &[], &infos, |_| Err("gone".into())).unwrap_err();
    assert_eq!(e.to_string(), "tensor a: gone");
}

fn spm_ids(tokenizer: &Json, text: &str) -> Vec<u32> {
    let t = tokenizers::Tokenizer::from_bytes(tokenizer.to_string().as_bytes()).unwrap();
    t.encode(text, true).unwrap().get_ids().to_vec()
}

/// A SentencePiece vocabulary (the gguf-py fixture, `tokenizer.ggml.model = llama`) converted
/// and exported again: the tokens and token types equal gguf-py's, the special ids too, and
/// our scores rank the merged pieces as SentencePiece's own scores do, so the tokenizer.json
/// read back from the export tokenizes the fixture's strings to SentencePiece's own ids.
#[test]
fn sentencepiece_vocabularies_export_as_llama_cpp_stores_them() {
    let g = Gguf::open(fixture("tiny_llama_spm.gguf")).unwrap();
    let ck = checkpoint(&g);
    let (bytes, notes) = export(&ck, TensorType::F32);
    assert!(notes.is_empty(), "{notes:?}");
    let back = Gguf::from_bytes("spm.gguf", bytes).unwrap();
    for key in [
        "tokenizer.ggml.model",
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        assert_eq!(back.get(key), g.get(key), "{key}");
    }
    assert_eq!(
        back.get("tokenizer.ggml.add_space_prefix"),
        Some(&Value::Bool(true))
    );
    // Merged pieces (normal tokens of more than one character) keep SentencePiece's order.
    let types = g
        .get_i64_array("tokenizer.ggml.token_type")
        .unwrap()
        .unwrap();
    let tokens = g.get_str_array("tokenizer.ggml.tokens").unwrap().unwrap();
    let theirs = g.get_f64_array("tokenizer.ggml.scores").unwrap().unwrap();
    let ours = back
        .get_f64_array("tokenizer.ggml.scores")
        .unwrap()
        .unwrap();
    let merged: Vec<usize> = (0..tokens.len())
        .filter(|&i| types[i] == 1 && tokens[i].chars().count() > 1 && ours[i] != 0.0)
        .collect();
    assert!(merged.len() > 100, "{} merged pieces", merged.len());
    for w in merged.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert_eq!(
            theirs[a].partial_cmp(&theirs[b]),
            ours[a].partial_cmp(&ours[b]),
            "{} vs {}",
            tokens[a],
            tokens[b]
        );
    }
    let again = checkpoint(&back);
    let reference: Json =
        serde_json::from_slice(&std::fs::read(fixture("tiny_llama_spm.reference.json")).unwrap())
            .unwrap();
    for (text, want) in reference["sentencepiece_ids"].as_object().unwrap() {
        let mut want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        want.insert(0, 1); // BOS, which SentencePiece's own encode leaves out
        assert_eq!(spm_ids(&again.tokenizer, text), want, "{text:?}");
    }
}

/// Llama-2's own tokenizer.json (tests/fixtures at the repository root: 32 000 pieces, byte
/// fallback, the Prepend + Replace normalizer) is described as llama.cpp's converter describes
/// it from tokenizer.model: `llama`, 256 byte tokens, `<unk>` unknown, `<s>` `</s>` control,
/// a space prefix, BOS added; and read back it tokenizes as the original tokenizer.json.
#[test]
fn llama2_tokenizer_exports_as_sentencepiece() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama2-tokenizer");
    let tok: Json =
        serde_json::from_slice(&std::fs::read(dir.join("tokenizer.json")).unwrap()).unwrap();
    let mut p = params();
    p.vocab_size = 32000;
    p.bos_token_id = Some(1);
    p.eos_token_id = Some(2);
    let plan = plan(&p, &tok, TensorType::F32).unwrap();
    assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    let meta = |k: &str| {
        plan.metadata
            .iter()
            .find(|(key, _)| key == k)
            .map(|x| x.1.clone())
    };
    assert_eq!(
        meta("tokenizer.ggml.model"),
        Some(Value::String("llama".into()))
    );
    assert_eq!(meta("tokenizer.ggml.pre"), None);
    assert_eq!(
        meta("tokenizer.ggml.add_space_prefix"),
        Some(Value::Bool(true))
    );
    assert_eq!(
        meta("tokenizer.ggml.add_bos_token"),
        Some(Value::Bool(true))
    );
    assert_eq!(meta("tokenizer.ggml.unknown_token_id"), Some(Value::U32(0)));
    let Some(Value::Array(shear_gguf::Array::I32(types))) = meta("tokenizer.ggml.token_type")
    else {
        panic!("no token types")
    };
    assert_eq!(&types[..4], [2, 3, 3, 6]);
    assert_eq!(types.iter().filter(|&&t| t == 6).count(), 256);
    assert_eq!(types.iter().filter(|&&t| t == 1).count(), 32000 - 259);
    // Written and read back through this crate's reader (merges rebuilt from the scores), the
    // vocabulary tokenizes like the original tokenizer.json.
    let infos: Vec<TensorOut> = vec![];
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &plan.metadata, &infos, |_| Ok(vec![])).unwrap();
    let g = Gguf::from_bytes("llama2-vocab.gguf", bytes).unwrap();
    let mut notes = Vec::new();
    let (rebuilt, _) = shear_gguf::tokenizer_json(&g, &mut notes).unwrap().unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let original = tokenizers::Tokenizer::from_bytes(tok.to_string().as_bytes()).unwrap();
    for text in [
        "Hello world",
        "The miller kept a ledger of every sack of grain.",
        " leading space and  two spaces",
        "Naïve café — ünïcödé ✓ 日本語",
        "In 1911, 12 sacks cost 345 pence.",
    ] {
        assert_eq!(
            spm_ids(&rebuilt, text),
            original.encode(text, true).unwrap().get_ids(),
            "{text:?}"
        );
    }
}
