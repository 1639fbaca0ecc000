//! LLaMA conversion paths the fixture models do not cover, on minimal GGUFs built in memory:
//! Llama-3 rope factors, linear rope scaling, biases, and the errors for files that are not a
//! complete LLaMA.

use shear_gguf::{convert, unpermute_rows, Error, Gguf, Source};

enum Kv {
    U32(u32),
    F32(f32),
    Str(&'static str),
}

/// A GGUF v3 with F32 tensors, written per the GGUF spec (see src/reader.rs).
struct Builder {
    kv: Vec<(String, Kv)>,
    /// (name, row-major shape, values)
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

const H: usize = 64; // hidden size = head_dim (one head)
const F: usize = 32;
const V: usize = 4;

impl Builder {
    /// One layer, one head of 64, vocab 4, every tensor filled with a distinct ramp.
    fn llama() -> Builder {
        let kv = vec![
            ("general.architecture".into(), Kv::Str("llama")),
            ("llama.block_count".into(), Kv::U32(1)),
            ("llama.context_length".into(), Kv::U32(128)),
            ("llama.embedding_length".into(), Kv::U32(H as u32)),
            ("llama.feed_forward_length".into(), Kv::U32(F as u32)),
            ("llama.attention.head_count".into(), Kv::U32(1)),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Kv::F32(1e-5),
            ),
            ("llama.rope.freq_base".into(), Kv::F32(500000.0)),
        ];
        let mut b = Builder {
            kv,
            tensors: Vec::new(),
        };
        for (name, shape) in [
            ("token_embd.weight", vec![V, H]),
            ("blk.0.attn_q.weight", vec![H, H]),
            ("blk.0.attn_k.weight", vec![H, H]),
            ("blk.0.attn_v.weight", vec![H, H]),
            ("blk.0.attn_output.weight", vec![H, H]),
            ("blk.0.ffn_gate.weight", vec![F, H]),
            ("blk.0.ffn_up.weight", vec![F, H]),
            ("blk.0.ffn_down.weight", vec![H, F]),
            ("blk.0.attn_norm.weight", vec![H]),
            ("blk.0.ffn_norm.weight", vec![H]),
            ("output_norm.weight", vec![H]),
        ] {
            b.tensor(name, shape);
        }
        b
    }

    fn tensor(&mut self, name: &str, shape: Vec<usize>) -> &mut Self {
        let n: usize = shape.iter().product();
        let base = self.tensors.len() as f32 * 1000.0;
        let values = (0..n).map(|i| base + i as f32).collect();
        self.tensors.push((name.into(), shape, values));
        self
    }

    fn build(&self) -> Gguf {
        let mut b: Vec<u8> = Vec::new();
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            s(&mut b, k);
            match v {
                Kv::U32(x) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(x.to_le_bytes());
                }
                Kv::F32(x) => {
                    b.extend(6u32.to_le_bytes());
                    b.extend(x.to_le_bytes());
                }
                Kv::Str(x) => {
                    b.extend(8u32.to_le_bytes());
                    s(&mut b, x);
                }
            }
        }
        let mut offset = 0u64;
        for (name, shape, values) in &self.tensors {
            s(&mut b, name);
            b.extend((shape.len() as u32).to_le_bytes());
            for &d in shape.iter().rev() {
                b.extend((d as u64).to_le_bytes());
            }
            b.extend(0u32.to_le_bytes()); // F32
            b.extend(offset.to_le_bytes());
            offset += (values.len() as u64 * 4).next_multiple_of(32);
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        for (_, _, values) in &self.tensors {
            let start = b.len();
            b.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            b.resize(start + (values.len() * 4).next_multiple_of(32), 0);
        }
        Gguf::from_bytes("synthetic.gguf", b).unwrap()
    }

    fn set(&mut self, key: &str, v: Kv) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self.kv.push((key.into(), v));
        self
    }

    fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|(n, _, _)| n != name);
        self
    }
}

/// llama.cpp's converter's rope factors (convert_hf_to_gguf.py, LlamaModel), from its definition.
fn llama_cpp_rope_freqs(
    d: usize,
    base: f64,
    factor: f64,
    low: f64,
    high: f64,
    old: f64,
) -> Vec<f32> {
    (0..d)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / base.powf(i as f64 / d as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let f = if wavelen < old / high {
                1.0
            } else if wavelen > old / low {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            f as f32
        })
        .collect()
}

#[test]
fn plain_model_converts_and_is_untied_only_with_output() {
    let g = Builder::llama().build();
    let c = convert(&g).unwrap();
    assert_eq!(c.config["tie_word_embeddings"], true);
    assert_eq!(c.config["num_key_value_heads"], 1);
    assert_eq!(c.config["head_dim"], 64);
    assert_eq!(c.config["rope_theta"], 500000.0);
    assert!(c.config.get("rope_scaling").is_none());
    assert!(c.tokenizer.is_none() && c.tokenizer_config.is_none());
    assert_eq!(
        c.notes,
        vec!["the GGUF has no tokenizer (tokenizer.ggml.model)"]
    );
    assert_eq!(c.tensors.len(), 11);
    // Values pass through in row-major order; q is un-permuted over its one head.
    let (name, shape, values) = c.iter().nth(1).unwrap().unwrap();
    assert_eq!(name, "model.layers.0.self_attn.q_proj.weight");
    assert_eq!(shape, vec![H, H]);
    let mut stored: Vec<f32> = (0..H * H).map(|i| 1000.0 + i as f32).collect();
    unpermute_rows(&mut stored, H, H, 1);
    assert_eq!(values, stored);
    // HF row 1 (first half, i = 1) is stored at GGUF row 2.
    assert_eq!(values[H], 1000.0 + (2 * H) as f32);

    let mut b = Builder::llama();
    b.tensor("output.weight", vec![V, H]);
    let g = b.build();
    let c = convert(&g).unwrap();
    assert_eq!(c.config["tie_word_embeddings"], false);
    assert_eq!(c.tensors.last().unwrap().hf_name, "lm_head.weight");
}

#[test]
fn llama3_rope_factors_become_rope_scaling() {
    let mut b = Builder::llama();
    b.tensor("rope_freqs.weight", vec![H / 2]);
    let f = llama_cpp_rope_freqs(H, 500000.0, 32.0, 1.0, 4.0, 8192.0);
    b.tensors.last_mut().unwrap().2 = f;
    let g = b.build();
    let c = convert(&g).unwrap();
    assert_eq!(
        c.config["rope_scaling"],
        serde_json::json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    );
    assert!(c.tensors.iter().all(|t| !t.hf_name.contains("rope")));

    // Factors that no Llama-3 band produces are refused, naming the tensor.
    let mut b = Builder::llama();
    b.tensor("rope_freqs.weight", vec![H / 2]);
    let mut f = llama_cpp_rope_freqs(H, 500000.0, 8.0, 1.0, 4.0, 8192.0);
    f[0] = 3.0;
    b.tensors.last_mut().unwrap().2 = f;
    let e = convert(&b.build()).unwrap_err();
    assert!(
        e.to_string()
            .contains("tensor `rope_freqs.weight`: rope factors are not Llama-3"),
        "{e}"
    );
}

#[test]
fn linear_rope_scaling_metadata() {
    let mut b = Builder::llama();
    b.set("llama.rope.scaling.type", Kv::Str("linear"))
        .set("llama.rope.scaling.factor", Kv::F32(2.0));
    let g = b.build();
    let c = convert(&g).unwrap();
    assert_eq!(
        c.config["rope_scaling"],
        serde_json::json!({"rope_type": "linear", "factor": 2.0})
    );
    let mut b = Builder::llama();
    b.set("llama.rope.scaling.type", Kv::Str("longrope"));
    assert!(matches!(
        convert(&b.build()),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn q_bias_is_unpermuted_and_missing_biases_are_zero() {
    let mut b = Builder::llama();
    b.tensor("blk.0.attn_q.bias", vec![H]);
    let g = b.build();
    let c = convert(&g).unwrap();
    assert_eq!(c.config["attention_bias"], true);
    assert_eq!(c.config["mlp_bias"], false);
    assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
    let find = |n: &str| c.tensors.iter().find(|t| t.hf_name == n).unwrap();
    let q = find("model.layers.0.self_attn.q_proj.bias");
    assert_eq!(
        q.source,
        Source::Gguf {
            name: "blk.0.attn_q.bias".into(),
            unpermute_heads: Some(1)
        }
    );
    let values = c.load(q).unwrap();
    let base = 11000.0; // the 12th tensor's ramp
    assert_eq!(values[0], base);
    assert_eq!(values[1], base + 2.0); // HF element 1 is stored at 2
    assert_eq!(values[H / 2], base + 1.0); // the second half starts with stored element 1
    for n in ["k_proj", "v_proj", "o_proj"] {
        let t = find(&format!("model.layers.0.self_attn.{n}.bias"));
        assert_eq!(t.source, Source::Zeros);
        assert_eq!(c.load(t).unwrap(), vec![0.0; H]);
    }
}

#[test]
fn not_a_complete_llama() {
    let mut b = Builder::llama();
    b.set("general.architecture", Kv::Str("qwen2"));
    let e = convert(&b.build()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "synthetic.gguf: architecture `qwen2` is not supported (only `llama` is)"
    );

    let mut b = Builder::llama();
    b.remove_tensor("blk.0.ffn_up.weight");
    let e = convert(&b.build()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "synthetic.gguf: no tensor `blk.0.ffn_up.weight`"
    );

    let mut b = Builder::llama();
    b.remove_tensor("blk.0.ffn_up.weight")
        .tensor("blk.0.ffn_up.weight", vec![F + 1, H]);
    let e = convert(&b.build()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("shape [33, 64], expected [32, 64]"),
        "{e}"
    );

    let mut b = Builder::llama();
    b.tensor("blk.0.ffn_gate_inp.weight", vec![4, H]);
    let e = convert(&b.build()).unwrap_err();
    assert!(
        e.to_string()
            .contains("tensor `blk.0.ffn_gate_inp.weight`: `ffn_gate_inp` is not part"),
        "{e}"
    );

    let mut b = Builder::llama();
    b.tensor("blk.1.attn_norm.weight", vec![H]);
    assert!(convert(&b.build())
        .unwrap_err()
        .to_string()
        .contains("layer 1 is past llama.block_count 1"));

    let mut b = Builder::llama();
    b.kv.retain(|(k, _)| k != "llama.embedding_length");
    assert!(matches!(
        convert(&b.build()),
        Err(Error::MissingKey { ref key, .. }) if key == "llama.embedding_length"
    ));

    let mut b = Builder::llama();
    b.set("llama.rope.dimension_count", Kv::U32(32));
    assert!(convert(&b.build())
        .unwrap_err()
        .to_string()
        .contains("partial rotary"));
}
