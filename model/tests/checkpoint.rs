//! Save -> load round trips, config.json keys, and `shear convert`.

use shear_model::{load_llama, save_llama, Dtype, LlamaConfig};
use shear_testkit::*;

fn config_keys(path: &std::path::Path) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// Saving in the stored dtype reproduces every tensor of the source bit for bit.
fn round_trip(rel: &str, dtype: Dtype) {
    let src = fixture(rel);
    let model = load_llama::<B>(&src, &device()).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_llama(&model, out.path(), dtype).unwrap();
    // Source tensors, from one file or all shards.
    let mut want = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            want.extend(raw_tensors(&p));
        }
    }
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let got = raw_tensors(&out.path().join("model.safetensors"));
    assert_eq!(got.len(), want.len(), "{rel}: tensor count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            (&g.0, &g.1, &g.2),
            (&w.0, &w.1, &w.2),
            "{rel}: name/dtype/shape"
        );
        assert!(g.3 == w.3, "{rel}: tensor {} differs", g.0);
    }
    assert_eq!(
        config_keys(&out.path().join("config.json")),
        config_keys(&src.join("config.json"))
    );
    let saved = LlamaConfig::from_file(out.path()).unwrap();
    let orig = LlamaConfig::from_file(&src).unwrap();
    assert_eq!(saved.to_hf_json(dtype), orig.to_hf_json(dtype));
    // And the saved checkpoint loads back to the same model.
    let again = load_llama::<B>(out.path(), &device()).unwrap();
    let out2 = tempfile::tempdir().unwrap();
    save_llama(&again, out2.path(), dtype).unwrap();
    assert_eq!(
        std::fs::read(out.path().join("model.safetensors")).unwrap(),
        std::fs::read(out2.path().join("model.safetensors")).unwrap()
    );
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn f32_round_trip_is_bit_identical() {
    round_trip("llama-mha", Dtype::F32);
}

#[test]
fn bf16_sharded_round_trip_is_bit_identical() {
    round_trip("llama-gqa-tied-bf16-sharded", Dtype::BF16);
}

#[test]
fn saved_config_states_the_dtype() {
    let model = load_llama::<B>(&fixture("llama-mha"), &device()).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_llama(&model, out.path(), Dtype::F16).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(v["torch_dtype"], "float16");
    let t = raw_tensors(&out.path().join("model.safetensors"));
    assert!(t.iter().all(|x| x.1 == "F16"));
}
