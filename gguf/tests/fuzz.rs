//! The fuzz target `gguf` (fuzz/README.md) on stable: every seed and saved crash input through
//! the same harness, the hand-made LLaMA seeds convert, and regression tests for what the fuzzer
//! found.

use shear_gguf::{convert, Gguf};

#[path = "../../fuzz/src/gguf.rs"]
mod gguf;
#[path = "../../fuzz/seed_inputs.rs"]
mod seed_inputs;

#[test]
fn gguf_seeds_and_crash_inputs_run_clean() {
    for (path, bytes) in seed_inputs::inputs("gguf") {
        eprintln!("{}", path.display());
        gguf::run(&bytes);
    }
}

#[test]
fn llama_seeds_convert() {
    // The fuzzer starts from files that convert all the way, so it mutates deep paths.
    let mut n = 0;
    for (path, bytes) in seed_inputs::inputs("gguf") {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("llama-") && path.parent().unwrap().ends_with("seeds/gguf") {
            let g = Gguf::from_bytes(name.clone(), bytes).unwrap();
            let c = convert(&g).unwrap();
            for t in &c.tensors {
                c.load(t).unwrap();
            }
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

/// `bytes` with the value of integer metadata key `key`, of GGUF type `type_id` (4: u32,
/// 10: u64), replaced by `value` (its little-endian bytes).
fn patch(mut bytes: Vec<u8>, key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    let mut pattern = (key.len() as u64).to_le_bytes().to_vec();
    pattern.extend_from_slice(key.as_bytes());
    pattern.extend_from_slice(&type_id.to_le_bytes());
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("the key is in the file")
        + pattern.len();
    bytes[at..at + value.len()].copy_from_slice(value);
    bytes
}

fn seed(name: &str) -> Vec<u8> {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/gguf");
    std::fs::read(seeds.join(name)).unwrap()
}

#[test]
fn huge_block_count_is_a_missing_tensor_not_a_hang() {
    // Fuzz target `gguf` (fuzz/regressions/gguf/timeout-huge-block-count.gguf): llama_params
    // looked for biases in each of the `llama.block_count` layers, which a file can set to 4e9.
    let bytes = patch(
        seed("llama-gpt2-biases.gguf"),
        "llama.block_count",
        4,
        &u32::MAX.to_le_bytes(),
    );
    let g = Gguf::from_bytes("huge.gguf", bytes).unwrap();
    let p = shear_gguf::llama_params(&g).unwrap();
    assert_eq!(p.num_hidden_layers, u32::MAX as usize);
    assert!(
        p.attention_bias && p.mlp_bias,
        "blk.0's biases are still found"
    );
    let e = convert(&g).unwrap_err().to_string();
    assert!(e.contains("blk.1.attn_q.weight"), "{e}");
}

#[test]
fn heads_times_head_dim_past_usize_is_an_error_not_an_overflow() {
    // fuzz/regressions/gguf/overflow-heads-times-head-dim.gguf (a one-field mutation of a seed,
    // fuzz/README.md): 2^62 heads of 4 overflowed `heads * head_dim` in the expected shapes; in
    // a release build the wrapped size could match a tensor and panic in `unpermute_rows`.
    let bytes = patch(
        seed("llama-u64-sizes.gguf"),
        "llama.attention.head_count",
        10,
        &(1u64 << 62).to_le_bytes(),
    );
    let g = Gguf::from_bytes("overflow.gguf", bytes).unwrap();
    let e = shear_gguf::llama_params(&g).unwrap_err().to_string();
    assert!(
        e.contains("llama.attention.head_count") && e.contains("overflow"),
        "{e}"
    );
}
