//! Fuzz harness of the Hugging Face `config.json` reader (model/src/config.rs); fuzz/src/lib.rs
//! says why it is shared by path.

use std::path::Path;

use shear_model::{Dtype, LlamaConfig};

/// Everything a config read from a file decides about the model.
fn shape(c: &LlamaConfig) -> impl PartialEq + std::fmt::Debug {
    (
        [
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.max_position_embeddings,
        ],
        (c.rms_norm_eps, c.rope.clone()),
        (c.tie_word_embeddings, c.attention_bias),
        (c.bos_token_id, c.eos_token_ids.clone()),
    )
}

/// Reads `data` as `config.json`. A config that reads is valid, can be counted and written, and
/// what shear writes for it (a pruned or converted model's config.json) reads back the same.
pub fn run(data: &[u8]) {
    let path = Path::new("config.json");
    // `LlamaConfig::from_file` refuses text that is not UTF-8 the same way.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = LlamaConfig::from_json_str(text, path) else {
        return;
    };
    config.validate().expect("a config that reads is valid");
    let _ = config.kv_groups();
    let _ = config.param_counts().total();
    let written = config.to_hf_json(Dtype::BF16).to_string();
    let back = LlamaConfig::from_json_str(&written, path).expect("a written config reads back");
    assert_eq!(shape(&back), shape(&config), "{written}");
}
