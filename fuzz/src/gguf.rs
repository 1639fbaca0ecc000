//! Fuzz harness of the GGUF reader and LLaMA converter (gguf/src/reader.rs, gguf/src/llama.rs);
//! fuzz/src/lib.rs says why it is shared by path.

use shear_gguf::{convert, llama_params, plan_tensors, Gguf};

/// Parses `data` as a GGUF file, reads every metadata value through the typed getters,
/// dequantizes every tensor, then goes as far as the LLaMA conversion goes: hyper-parameters,
/// tensor plan, config and tokenizer, and every converted tensor. A tensor that dequantizes has
/// as many values as its shape says.
pub fn run(data: &[u8]) {
    let Ok(g) = Gguf::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    let _ = (g.version(), g.alignment(), g.data_offset());
    for (key, value) in g.metadata() {
        let _ = value.type_description();
        let _ = g.get_str(key);
        let _ = g.get_u64(key);
        let _ = g.get_f64(key);
        let _ = g.get_bool(key);
        let _ = g.get_str_array(key);
        let _ = g.get_i64_array(key);
        let _ = g.get_f64_array(key);
    }
    for t in g.tensors() {
        if let Ok(values) = g.dequantize(t) {
            assert_eq!(
                values.len(),
                t.shape().iter().product::<usize>(),
                "{}",
                t.name
            );
        }
    }
    let Ok(params) = llama_params(&g) else {
        return;
    };
    let _ = shear_gguf::config_json(&params);
    let _ = plan_tensors(&g, &params);
    let Ok(converted) = convert(&g) else {
        return;
    };
    for t in &converted.tensors {
        if let Ok(values) = converted.load(t) {
            assert_eq!(
                values.len(),
                t.shape.iter().product::<usize>(),
                "{}",
                t.hf_name
            );
        }
    }
}
