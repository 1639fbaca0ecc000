//! Writes a LLaMA GGUF as a Hugging Face checkpoint directory: `model.safetensors` (f32),
//! `config.json`, `tokenizer.json`, `tokenizer_config.json`.
//!
//!     cargo run -p shear-gguf --release --example gguf_to_hf -- MODEL.gguf OUT_DIR
//!
//! A check of the conversion against transformers (scripts/check_gguf_transformers.py), not the
//! project's converter: it holds every tensor in memory before writing the safetensors file.

use std::borrow::Cow;
use std::path::PathBuf;

use safetensors::{Dtype, View};

struct F32Tensor {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &F32Tensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gguf, out] = args.as_slice() else {
        return Err("usage: gguf_to_hf MODEL.gguf OUT_DIR".into());
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let g = shear_gguf::Gguf::open(gguf)?;
    let c = shear_gguf::convert(&g)?;
    for note in &c.notes {
        eprintln!("note: {note}");
    }
    let mut tensors = Vec::with_capacity(c.tensors.len());
    for t in c.iter() {
        let (name, shape, values) = t?;
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, F32Tensor { shape, bytes }));
    }
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        None,
        &out.join("model.safetensors"),
    )?;
    let write = |name: &str, v: &serde_json::Value| {
        std::fs::write(
            out.join(name),
            serde_json::to_string_pretty(v).unwrap() + "\n",
        )
    };
    write("config.json", &c.config)?;
    if let (Some(t), Some(tc)) = (&c.tokenizer, &c.tokenizer_config) {
        write("tokenizer.json", t)?;
        write("tokenizer_config.json", tc)?;
    }
    println!("{}: {} tensors -> {}", gguf, tensors.len(), out.display());
    Ok(())
}
