//! shear-gguf: reads GGUF files (llama.cpp's format, versions 2 and 3) and turns a
//! LLaMA-architecture GGUF into what a Hugging Face Llama checkpoint holds.
//!
//! ```no_run
//! # fn main() -> shear_gguf::Result<()> {
//! let gguf = shear_gguf::Gguf::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let converted = shear_gguf::convert(&gguf)?;
//! println!("{}", converted.config); // config.json
//! for tensor in converted.iter() {
//!     let (hf_name, shape, values) = tensor?; // one dequantized f32 tensor at a time
//!     assert_eq!(values.len(), shape.iter().product::<usize>());
//!     # let _ = hf_name;
//! }
//! # Ok(()) }
//! ```
//!
//! * [`Gguf`] parses a file ([`Gguf::open`], memory-mapped) or a buffer ([`Gguf::from_bytes`]):
//!   metadata ([`Value`]), tensor infos ([`TensorInfo`]) and tensor data. Malformed input is an
//!   [`Error`], never a panic.
//! * [`dequantize`] turns ggml data of the [`SUPPORTED_TYPES`] into `f32`.
//! * [`convert`] maps a LLaMA GGUF to Hugging Face names, layouts, `config.json`,
//!   `tokenizer.json` and `tokenizer_config.json`.
//! * [`plan_export`] and [`write_gguf`] go the other way: a LLaMA checkpoint's shape, tensors
//!   and byte-level BPE tokenizer as llama.cpp reads them, in f32, f16, bf16 or Q8_0.

pub mod dequant;
mod error;
mod export;
mod llama;
mod reader;
mod rope;
mod tokenizer;
mod types;
mod write;

pub use dequant::{dequantize, DequantError};
pub use error::{Error, Result};
pub use export::{
    plan_export, ExportError, ExportPlan, ExportSource, ExportTensor, TokenizerFiles,
};
pub use llama::{
    config_json, convert, llama_params, permute_rows, plan_tensors, unpermute_rows, Converted,
    LlamaParams, PlannedTensor, Source,
};
pub use reader::{
    Array, Gguf, TensorInfo, Value, ValueType, DEFAULT_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_DIMS,
};
pub use tokenizer::tokenizer_json;
pub use types::{GgmlType, SUPPORTED_TYPES};
pub use write::{write_gguf, TensorOut, TensorType, WriteError, Q8_0_BLOCK};
