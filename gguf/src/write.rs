//! Writing GGUF files (version 3): the header, the metadata, the tensor infos, and the tensor
//! data at the alignment the spec requires (`general.alignment`, 32 when absent).
//!
//! The container is laid out by the `ggus` crate (`GGufFileWriter` / `GGufTensorWriter`: the
//! header, the key framing, the tensor infos and their aligned offsets), into a buffer, since
//! `ggus` panics where an infallible buffer cannot fail. This module only encodes metadata
//! values (the crate takes them as bytes) and streams the tensor data itself, one tensor at a
//! time, so a 7B model never has to sit in memory whole. Quantized blocks come from
//! `ggml-quants` (see [`TensorType::encode`]).

use std::io::Write;

use ggus::ggml_quants::{Quantize, Q8_0};
use ggus::{GGmlType, GGufFileHeader, GGufFileWriter, GGufMetaDataValueType};
use half::{bf16, f16};

use crate::reader::{Array, Value, DEFAULT_ALIGNMENT};

/// The storage types shear writes, by the names users type (`f32`, `f16`, `bf16`, `q8_0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TensorType {
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "bf16")]
    Bf16,
    /// Blocks of 32 values: an f16 scale `max|x| / 127` and 32 signed bytes `round(x / scale)`.
    #[serde(rename = "q8_0")]
    Q8_0,
}

/// Values per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;

impl TensorType {
    /// Every type, in the order `--dtype` lists them.
    pub const ALL: [TensorType; 4] = [
        TensorType::F32,
        TensorType::F16,
        TensorType::Bf16,
        TensorType::Q8_0,
    ];

    /// The name users type (`f32`, `f16`, `bf16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "f32",
            TensorType::F16 => "f16",
            TensorType::Bf16 => "bf16",
            TensorType::Q8_0 => "q8_0",
        }
    }

    fn ggml(self) -> GGmlType {
        match self {
            TensorType::F32 => GGmlType::F32,
            TensorType::F16 => GGmlType::F16,
            TensorType::Bf16 => GGmlType::BF16,
            TensorType::Q8_0 => GGmlType::Q8_0,
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`) for a file mostly of this type.
    pub fn file_type(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 7,
            TensorType::Bf16 => 32,
        }
    }

    /// Bytes of `n` values (`n` a multiple of 32 for Q8_0).
    pub fn bytes(self, n: usize) -> usize {
        match self {
            TensorType::F32 => 4 * n,
            TensorType::F16 | TensorType::Bf16 => 2 * n,
            TensorType::Q8_0 => n / Q8_0_BLOCK * 34,
        }
    }

    /// Whether rows of `cols` values can be stored in this type (Q8_0 blocks never cross a row).
    pub fn fits_rows(self, cols: usize) -> bool {
        self != TensorType::Q8_0 || cols.is_multiple_of(Q8_0_BLOCK)
    }

    /// The little-endian bytes of `values` in this type: f16 and bf16 round to nearest even
    /// (the `half` crate, as numpy and llama.cpp's converter do), Q8_0 blocks are
    /// `ggml-quants`' (the reference quantizer's rule, `quantize_row_q8_0_ref`).
    ///
    /// Panics if `values.len()` is not a multiple of 32 for Q8_0 (callers check
    /// [`TensorType::fits_rows`] first).
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes(values.len()));
        match self {
            TensorType::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            TensorType::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
            TensorType::Bf16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
            TensorType::Q8_0 => {
                assert!(values.len().is_multiple_of(Q8_0_BLOCK));
                for block in values.chunks_exact(Q8_0_BLOCK) {
                    let block: &[f32; Q8_0_BLOCK] = block.try_into().expect("32 values");
                    let q = Q8_0::quantize(block);
                    out.extend_from_slice(&q.delta.to_le_bytes());
                    out.extend(q.quants.iter().map(|&v| v as u8));
                }
            }
        }
        out
    }
}

impl std::str::FromStr for TensorType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TensorType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = TensorType::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "`{s}` is not a GGUF type shear writes ({})",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of the file: its GGUF name, its shape in row-major order (the reverse of ggml's
/// `ne`), and its storage type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorOut {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: TensorType,
}

impl TensorOut {
    /// Bytes of its data.
    pub fn bytes(&self) -> usize {
        self.ty.bytes(self.shape.iter().product())
    }
}

fn value_type(v: &Value) -> GGufMetaDataValueType {
    use GGufMetaDataValueType as T;
    match v {
        Value::U8(_) => T::U8,
        Value::I8(_) => T::I8,
        Value::U16(_) => T::U16,
        Value::I16(_) => T::I16,
        Value::U32(_) => T::U32,
        Value::I32(_) => T::I32,
        Value::F32(_) => T::F32,
        Value::Bool(_) => T::Bool,
        Value::String(_) => T::String,
        Value::Array(_) => T::Array,
        Value::U64(_) => T::U64,
        Value::I64(_) => T::I64,
        Value::F64(_) => T::F64,
    }
}

fn array_type(a: &Array) -> GGufMetaDataValueType {
    use GGufMetaDataValueType as T;
    match a {
        Array::U8(_) => T::U8,
        Array::I8(_) => T::I8,
        Array::U16(_) => T::U16,
        Array::I16(_) => T::I16,
        Array::U32(_) => T::U32,
        Array::I32(_) => T::I32,
        Array::F32(_) => T::F32,
        Array::Bool(_) => T::Bool,
        Array::String(_) => T::String,
        Array::Array(_) => T::Array,
        Array::U64(_) => T::U64,
        Array::I64(_) => T::I64,
        Array::F64(_) => T::F64,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A metadata value's bytes after its type id (GGUF spec: strings are a u64 length and UTF-8
/// bytes; arrays an element type, a u64 count and the elements).
fn encode_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => encode_array(a, out),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn encode_array(a: &Array, out: &mut Vec<u8>) {
    out.extend_from_slice(&(array_type(a) as u32).to_le_bytes());
    macro_rules! each {
        ($v:expr, $f:expr) => {{
            out.extend_from_slice(&($v.len() as u64).to_le_bytes());
            for x in $v.iter() {
                $f(x, &mut *out);
            }
        }};
    }
    match a {
        Array::U8(v) => each!(v, |x: &u8, o: &mut Vec<u8>| o.push(*x)),
        Array::I8(v) => each!(v, |x: &i8, o: &mut Vec<u8>| o.push(*x as u8)),
        Array::U16(v) => each!(v, |x: &u16, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each!(v, |x: &i16, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each!(v, |x: &u32, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each!(v, |x: &i32, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each!(v, |x: &f32, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each!(v, |x: &bool, o: &mut Vec<u8>| o.push(u8::from(*x))),
        Array::String(v) => each!(v, |x: &String, o: &mut Vec<u8>| put_str(o, x)),
        Array::Array(v) => each!(v, |x: &Array, o: &mut Vec<u8>| encode_array(x, o)),
        Array::U64(v) => each!(v, |x: &u64, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each!(v, |x: &i64, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each!(v, |x: &f64, o: &mut Vec<u8>| o
            .extend_from_slice(&x.to_le_bytes())),
    }
}

/// Why a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The data given for a tensor does not have the size its info says.
    #[error("tensor {name}: {found} bytes of data, its shape and type need {expected}")]
    DataSize {
        name: String,
        found: usize,
        expected: usize,
    },
    /// The source of a tensor's data failed; the message says why.
    #[error("tensor {name}: {message}")]
    Source { name: String, message: String },
}

/// Writes a GGUF file to `out`: `metadata` in order, then `tensors` with the data `data(i)`
/// returns for tensor `i` (already encoded in its type, [`TensorType::encode`]), each at the
/// next multiple of the alignment. Returns the bytes written.
pub fn write_gguf<W: Write>(
    out: &mut W,
    metadata: &[(String, Value)],
    tensors: &[TensorOut],
    mut data: impl FnMut(usize) -> Result<Vec<u8>, String>,
) -> Result<u64, WriteError> {
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        Some((_, Value::U32(a))) if *a > 0 && a.is_power_of_two() => *a as usize,
        Some(_) => {
            return Err(WriteError::Source {
                name: "general.alignment".into(),
                message: "must be a u32 power of two".into(),
            })
        }
        None => DEFAULT_ALIGNMENT as usize,
    };
    // Header, metadata and tensor infos, laid out by ggus into a buffer.
    let mut head: Vec<u8> = Vec::new();
    {
        let header = GGufFileHeader::new(3, tensors.len() as u64, metadata.len() as u64);
        let mut w = GGufFileWriter::new(&mut head, header)?;
        let mut bytes = Vec::new();
        for (key, value) in metadata {
            bytes.clear();
            encode_value(value, &mut bytes);
            w.write_meta_kv(key, value_type(value), &bytes)?;
        }
        let mut infos = w.finish::<Vec<u8>>(false);
        for t in tensors {
            let ne: Vec<u64> = t.shape.iter().rev().map(|&d| d as u64).collect();
            infos.write_tensor(&t.name, t.ty.ggml(), &ne, Vec::new())?;
        }
        infos.finish()?;
    }
    out.write_all(&head)?;
    let mut written = head.len();
    let pad = |written: usize| (alignment - written % alignment) % alignment;
    let zeros = vec![0u8; alignment];
    for (i, t) in tensors.iter().enumerate() {
        let p = pad(written);
        out.write_all(&zeros[..p])?;
        written += p;
        let bytes = data(i).map_err(|message| WriteError::Source {
            name: t.name.clone(),
            message,
        })?;
        if bytes.len() != t.bytes() {
            return Err(WriteError::DataSize {
                name: t.name.clone(),
                found: bytes.len(),
                expected: t.bytes(),
            });
        }
        out.write_all(&bytes)?;
        written += bytes.len();
    }
    out.flush()?;
    Ok(written as u64)
}
