//! The fuzz targets `config_json` and `safetensors_header` (fuzz/README.md) on stable: every seed
//! and saved crash input through the same harness, the hand-made seeds read as valid files, and
//! regression tests for what the fuzzers found.

use std::path::Path;

use shear_model::{LlamaConfig, SafetensorsSource};

#[path = "../../fuzz/src/config_json.rs"]
mod config_json;
#[path = "../../fuzz/src/safetensors_header.rs"]
mod safetensors_header;
#[path = "../../fuzz/seed_inputs.rs"]
mod seed_inputs;

#[test]
fn config_json_seeds_and_crash_inputs_run_clean() {
    for (path, bytes) in seed_inputs::inputs("config_json") {
        eprintln!("{}", path.display());
        config_json::run(&bytes);
    }
}

#[test]
fn safetensors_header_seeds_and_crash_inputs_run_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in seed_inputs::inputs("safetensors_header") {
        eprintln!("{}", path.display());
        safetensors_header::run(dir.path(), &bytes);
    }
}

#[test]
fn seeds_are_valid_files() {
    // The fuzzers start from files that read all the way, so they mutate deep paths.
    for (path, bytes) in seed_inputs::inputs("config_json") {
        if path.parent().unwrap().ends_with("seeds/config_json") {
            let text = std::str::from_utf8(&bytes).unwrap();
            LlamaConfig::from_json_str(text, &path).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = |name: &str| {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        std::fs::read(seeds.join("safetensors_header").join(name)).unwrap()
    };
    std::fs::write(
        dir.path().join("model.safetensors"),
        seed("f32-model.safetensors"),
    )
    .unwrap();
    let mut source = SafetensorsSource::open(dir.path()).unwrap();
    assert_eq!(source.read("model.norm.weight", &[2]).unwrap(), [1.0, 1.0]);
    std::fs::write(
        dir.path().join("model.safetensors"),
        seed("half-and-unsupported.safetensors"),
    )
    .unwrap();
    let mut source = SafetensorsSource::open(dir.path()).unwrap();
    assert_eq!(
        source.read("lm_head.weight", &[2, 2]).unwrap(),
        [1.0, 2.0, 3.0, 4.0]
    );
    assert!(source.read("position_ids", &[2]).is_err(), "I64 is refused");
}

#[test]
fn a_shape_whose_parameter_count_overflows_is_refused() {
    // Fuzz target `config_json` (fuzz/regressions/config_json/overflow-param-count.json):
    // 777717771777077102 layers passed `validate`, then `param_counts` overflowed.
    let text = r#"{"model_type": "llama", "vocab_size": 1000, "hidden_size": 64,
        "intermediate_size": 176, "num_hidden_layers": 777717771777077102,
        "num_attention_heads": 4}"#;
    let e = LlamaConfig::from_json_str(text, Path::new("config.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("(shape)") && e.contains("overflows"), "{e}");
    // The same with the sizes that multiply in the attention projections.
    let text = r#"{"model_type": "llama", "vocab_size": 1, "hidden_size": 2,
        "intermediate_size": 1, "num_hidden_layers": 1, "num_attention_heads": 4294967296,
        "head_dim": 4294967296}"#;
    let e = LlamaConfig::from_json_str(text, Path::new("config.json")).unwrap_err();
    assert!(e.to_string().contains("overflows"), "{e}");
}
