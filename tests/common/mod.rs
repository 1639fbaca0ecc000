//! Helpers shared by the integration tests: fixture paths, reading reference tensors, running
//! the `shear` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub type B = burn::backend::Flex;

pub fn device() -> burn::tensor::Device<B> {
    Default::default()
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A tensor of a safetensors file as (shape, f32 values); I64 tensors are converted.
pub fn read_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let data = t.data();
    let values = match t.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (t.shape().to_vec(), values)
}

/// Raw bytes, dtype and shape of every tensor in a safetensors file.
pub fn raw_tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn shear() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shear"))
}

/// Runs `shear` and returns its output, with the environment given.
pub fn run_shear(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = shear();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Asserts a failed run that printed exactly one line on stderr, containing every `needle`,
/// and no panic.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {stderr}");
    }
}

/// Like [`assert_one_line_error`], after leaving out `warning:` lines (e.g. a model without a
/// tokenizer.json to check data against).
pub fn assert_error_line(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept: String = stderr
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let filtered = Output {
        status: out.status,
        stdout: out.stdout.clone(),
        stderr: kept.into_bytes(),
    };
    assert_one_line_error(&filtered, needles);
}

/// Copies a fixture directory into a fresh temporary directory (writable).
pub fn copy_fixture(rel: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(rel)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// tests/fixtures/l0_and_loading.json
pub fn l0_fixture() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("l0_and_loading.json")).unwrap()).unwrap()
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Writes a prepared data folder (manifest + shards) straight from token ids, without a
/// tokenizer: `domains[i] = (name, [eval, prune, train] sequence counts)`, and `fill(domain,
/// split, index)` gives each sequence's `seq_len` tokens (ids below `vocab`).
pub fn write_prepared(
    dir: &Path,
    seq_len: usize,
    vocab: usize,
    domains: &[(&str, [usize; 3])],
    fill: impl Fn(usize, shear_data::Split, usize) -> Vec<u32>,
) -> shear_data::Manifest {
    use shear_data::manifest::{DomainManifest, SplitInfo, FORMAT};
    use shear_data::shard::{write_shard, TokenWidth};
    let width = TokenWidth::for_vocab(vocab);
    let mut out = Vec::new();
    for (d, (name, counts)) in domains.iter().enumerate() {
        let mut splits = std::collections::BTreeMap::new();
        for (split, n) in shear_data::Split::ALL.into_iter().zip(counts) {
            let toks: Vec<u32> = (0..*n).flat_map(|i| fill(d, split, i)).collect();
            assert_eq!(toks.len(), n * seq_len);
            let file = PathBuf::from(split.name()).join(format!("{name}.bin"));
            write_shard(&dir.join(&file), &toks, width).unwrap();
            splits.insert(
                split,
                SplitInfo {
                    file,
                    sequences: *n,
                    documents: *n,
                },
            );
        }
        out.push(DomainManifest {
            name: name.to_string(),
            sources: vec![],
            documents: counts.iter().sum(),
            tokens: (counts.iter().sum::<usize>() * seq_len) as u64,
            splits,
        });
    }
    let m = shear_data::Manifest {
        format: FORMAT,
        seq_len,
        token_width: width,
        vocab_size: vocab,
        tokenizer_fingerprint: "none".into(),
        inputs_fingerprint: "none".into(),
        seed: 0,
        domains: out,
    };
    m.write(dir).unwrap();
    m
}

/// A tiny random LLaMA (the llama-mha shape) with the Llama-2 vocabulary and tokenizer.json,
/// saved in `dir`; returns the model.
pub fn tiny_llama2_vocab_model(dir: &Path) -> shear_model::Llama<B> {
    use burn::tensor::backend::Backend;
    let mut config = shear_model::LlamaConfig::from_file(fixture("llama-mha")).unwrap();
    config.vocab_size = 32000;
    B::seed(&device(), 5);
    let model = shear_model::Llama::<B>::from_source(
        &config,
        &mut shear_model::RandomInit::default(),
        &device(),
    )
    .unwrap();
    shear_model::save_llama(&model, dir, shear_model::Dtype::F32).unwrap();
    std::fs::copy(
        fixture("llama2-tokenizer/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    model
}

/// `DIR/run.json` of a `shear run`.
pub fn read_run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

/// The stage names recorded in a run.json, in order.
pub fn stage_names(run: &serde_json::Value) -> Vec<&str> {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}
