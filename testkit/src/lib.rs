//! Helpers shared by the tests of every shear crate: fixture paths (the reference data in
//! `tests/fixtures/`, made with Hugging Face transformers), reading reference tensors, and small
//! prepared data folders and models.

use std::io::Write;
use std::path::{Path, PathBuf};

pub type B = burn::backend::Flex;

pub fn device() -> burn::tensor::Device<B> {
    Default::default()
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit sits in the workspace")
        .to_path_buf()
}

/// `tests/fixtures/REL` at the repository root.
pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures").join(rel)
}

/// `assets/` at the repository root.
pub fn assets() -> PathBuf {
    root().join("assets")
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

/// Every float parameter of `module` in visiting order: its gradient in `grads` (each must have
/// one), or its value when `grads` is `None`.
pub fn param_tensors<M: burn::module::Module<burn::backend::Autodiff<B>>>(
    module: &M,
    grads: Option<&burn::optim::GradientsParams>,
) -> Vec<Vec<f32>> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    type AD = burn::backend::Autodiff<B>;
    struct Collect<'a>(Option<&'a burn::optim::GradientsParams>, Vec<Vec<f32>>);
    impl ModuleVisitor<AD> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AD, D>>) {
            let t = match self.0 {
                Some(g) => g.get::<B, D>(p.id).expect("every parameter has a gradient"),
                None => p.val().inner(),
            };
            self.1
                .push(t.into_data().convert::<f32>().to_vec().unwrap());
        }
    }
    let mut c = Collect(grads, Vec::new());
    module.visit(&mut c);
    c.1
}

/// Largest difference over all tensors, relative to the largest entry of `want`.
pub fn rel_diff(got: &[Vec<f32>], want: &[Vec<f32>]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0f32, f32::max);
    diff / scale
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

/// Prepared data for the `pruning/source` fixture (vocabulary 500) in `dir`: two domains, `web`
/// and `code`, of 32-token sequences, `counts` = [eval, prune, train] sequences each, with ids
/// that differ by domain, split and position.
pub fn two_domains(dir: &Path, counts: [usize; 3]) {
    write_prepared(
        dir,
        32,
        500,
        &[("web", counts), ("code", counts)],
        |d, s, i| {
            (0..32u32)
                .map(|t| (t * 31 + i as u32 * 97 + d as u32 * 211 + s as u32 * 7) % 500)
                .collect()
        },
    );
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

/// A document that names itself: `<<d017>>` repeated, so any complete marker in a decoded
/// sequence says which document it came from.
pub fn doc(domain: usize, i: usize) -> String {
    let m = format!("<<d{domain}{i:03}>> ");
    format!("{} words of document {i}.", m.repeat(12))
}

pub fn jsonl(docs: &[String]) -> String {
    docs.iter()
        .map(|d| serde_json::json!({ "text": d, "id": 0 }).to_string() + "\n")
        .collect()
}

/// Domain 0 (`web`): a .jsonl and a .jsonl.gz file; domain 1 (`code`): a folder with a
/// .jsonl.zst file, two .txt files and a file of another type (skipped).
pub fn write_corpus(root: &Path) -> Vec<shear_data::prepare::DomainSpec> {
    let web: Vec<String> = (0..30).map(|i| doc(0, i)).collect();
    std::fs::write(root.join("web-a.jsonl"), jsonl(&web[..15])).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(root.join("web-b.jsonl.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(jsonl(&web[15..]).as_bytes()).unwrap();
    gz.finish().unwrap();
    let code_dir = root.join("code");
    std::fs::create_dir_all(code_dir.join("sub")).unwrap();
    let code: Vec<String> = (0..30).map(|i| doc(1, i)).collect();
    let zst = ruzstd::encoding::compress_to_vec(
        jsonl(&code[..28]).as_bytes(),
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    std::fs::write(code_dir.join("a.jsonl.zst"), zst).unwrap();
    std::fs::write(code_dir.join("sub/b.txt"), &code[28]).unwrap();
    std::fs::write(code_dir.join("sub/c.txt"), &code[29]).unwrap();
    std::fs::write(code_dir.join("README.md"), "not a corpus file").unwrap();
    vec![
        shear_data::prepare::DomainSpec {
            name: "web".into(),
            paths: vec![root.join("web-a.jsonl"), root.join("web-b.jsonl.gz")],
        },
        shear_data::prepare::DomainSpec {
            name: "code".into(),
            paths: vec![code_dir],
        },
    ]
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF (`scripts/fetch_smollm2.sh`): `$SHEAR_SMOLLM2_GGUF`, else
/// `${SHEAR_CACHE:-~/.cache/shear}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. A missing file fails
/// the test with the command that fetches it.
pub fn smollm2_gguf() -> PathBuf {
    let path = match std::env::var_os("SHEAR_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("SHEAR_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/shear")
            })
            .join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch_smollm2.sh (or set SHEAR_SMOLLM2_GGUF)",
        path.display()
    );
    path
}

/// transformers' figures for SmolLM2 on a fixed English paragraph (gguf/tests/fixtures).
pub fn smollm2_reference() -> serde_json::Value {
    let path = root().join("gguf/tests/fixtures/smollm2_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A miniature `shear run` recipe in `dir` (a tiny model with Llama-2's vocabulary, two
/// domains of repeated words, the capitals task): `prune_steps` pruning steps, 4 training steps
/// with a checkpoint every 2. Returns the recipe's path.
pub fn mini_recipe(dir: &Path, prune_steps: usize) -> PathBuf {
    tiny_llama2_vocab_model(&dir.join("source"));
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far",
    ];
    for (d, name) in ["web", "books"].iter().enumerate() {
        let lines: String = (0..40)
            .map(|i| {
                let text: Vec<&str> = (0..30).map(|j| words[(i * 7 + j * (d + 3)) % 10]).collect();
                serde_json::json!({ "text": text.join(" ") }).to_string() + "\n"
            })
            .collect();
        std::fs::write(dir.join(format!("{name}.jsonl")), lines).unwrap();
    }
    let tasks = assets().join("tasks/capitals.jsonl");
    let recipe = dir.join("mini.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"[model]
source = "source"
target = "layers=1,hidden=32,heads=2,intermediate=64"

[data]
seq_len = 32
eval_sequences = 2

[[data.domain]]
name = "web"
paths = ["web.jsonl"]

[[data.domain]]
name = "books"
paths = ["books.jsonl"]

[prune]
steps = {prune_steps}
batch = 2
grad_accum = 1
update_every = 2
proportions = "uniform"

[train]
steps = 4
batch = 2
grad_accum = 1
update_every = 2
save_every = 2

[eval]
tasks = [{tasks:?}]
"#
        ),
    )
    .unwrap();
    recipe
}
