//! config.json parsing: both RoPE layouts, Llama-3.1 `llama3` scaling, clear key errors.

use std::path::Path;

use shear_model::rope::inv_freq;
use shear_model::{LlamaConfig, ModelError, RopeScaling};

fn parse(text: &str) -> Result<LlamaConfig, ModelError> {
    LlamaConfig::from_json_str(text, Path::new("config.json"))
}

const LLAMA32: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
  "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
  "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
  "rms_norm_eps": 1e-05, "max_position_embeddings": 131072, "tie_word_embeddings": true,
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
  "rope_theta": 500000.0,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}
}"#;

#[test]
fn llama3_rope_scaling_is_read_and_applied_like_transformers() {
    let c = parse(LLAMA32).unwrap();
    assert_eq!(c.rope.theta, 500000.0);
    assert_eq!(
        c.rope.scaling,
        RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0
        }
    );
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
    assert_eq!(
        (c.head_dim, c.num_key_value_heads, c.kv_groups()),
        (64, 8, 4)
    );
    // Reference values from transformers' `_compute_llama3_parameters` formula, in f64.
    let f = inv_freq(64, &c.rope);
    for (i, want) in [
        (0, 1.0),
        (5, 0.12868737343265052),
        (12, 0.0072926647372171085),
        (15, 0.001290547928209264),
        (20, 8.570255489881478e-06),
        (31, 9.418306725434909e-08),
    ] {
        let rel = ((f[i] as f64 - want) / want).abs();
        assert!(rel < 1e-6, "inv_freq[{i}] = {} vs {want}", f[i]);
    }
}

#[test]
fn rope_parameters_layout_is_read() {
    let text = LLAMA32.replace(
        r#""rope_theta": 500000.0,"#,
        r#""rope_parameters": {"rope_theta": 250000.0, "rope_type": "linear", "factor": 2.0},"#,
    );
    let text = text.replace(r#""rope_scaling""#, r#""unused_scaling""#);
    let c = parse(&text).unwrap();
    assert_eq!(c.rope.theta, 250000.0);
    assert_eq!(c.rope.scaling, RopeScaling::Linear { factor: 2.0 });
}

#[test]
fn llama2_shape_counts_match_the_paper() {
    // docs/algorithm.md §3.1: LLaMA2-7B has 6,738,415,616 parameters, 6,476,005,376 prunable.
    let c = LlamaConfig::new(32000, 4096, 11008, 32, 32, 32);
    assert_eq!(c.param_counts().total(), 6_738_415_616);
    assert_eq!(c.param_counts().prunable(), 6_476_005_376);
}

#[test]
fn errors_name_the_key() {
    let err = |t: &str| parse(t).unwrap_err().to_string();
    let e = err(&LLAMA32.replace(r#""hidden_size": 2048,"#, ""));
    assert!(e.contains("config.json: key `hidden_size`: missing"), "{e}");
    let e = err(&LLAMA32.replace(r#""hidden_size": 2048"#, r#""hidden_size": "big""#));
    assert!(e.contains("`hidden_size`") && e.contains("integer"), "{e}");
    let e = err(&LLAMA32.replace(r#""model_type": "llama""#, r#""model_type": "gpt2""#));
    assert!(e.contains("unsupported model_type `gpt2`"), "{e}");
    let e = err(&LLAMA32.replace(r#""rope_type": "llama3""#, r#""rope_type": "yarn""#));
    assert!(
        e.contains("rope_scaling.rope_type") && e.contains("yarn"),
        "{e}"
    );
    let e = err(&LLAMA32.replace(r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 5"#));
    assert!(e.contains("not a multiple"), "{e}");
    let e = err("[1, 2]");
    assert!(e.contains("expected a JSON object"), "{e}");
}
