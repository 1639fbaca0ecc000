//! Parsing a GGUF file: header, metadata, tensor infos, data section.
//!
//! Layout followed (ggml's `docs/gguf.md`, "File Structure"; versions 2 and 3 are identical for
//! little-endian files, v3 only added big-endian ones, which this reader refuses):
//!
//! ```text
//! u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
//! metadata_kv_count x { string key | u32 value_type | value }
//! tensor_count x { string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset }
//! padding to general.alignment (default 32)
//! data section: each tensor at `offset` (a multiple of the alignment) from its start
//! ```
//!
//! A string is `u64 length | bytes` (UTF-8, no terminator); an array is
//! `u32 element type | u64 count | elements`, and may nest. All integers are little-endian.
//!
//! Nothing here trusts a count or a length: each is checked against the bytes left before
//! anything is allocated, and all offset arithmetic is checked, so malformed input gives an
//! [`Error`], never a panic or an allocation larger than a small multiple of the input.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use crate::dequant;
use crate::error::{Error, Result};
use crate::types::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
/// `general.alignment` when the file does not set it (gguf.md: `GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// How deep arrays of arrays may nest. GGUF sets no limit; real files use at most one level, and
/// the limit keeps a hostile file from recursing the parser off the stack.
pub const MAX_ARRAY_DEPTH: usize = 8;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// The type of a metadata value (gguf.md's `gguf_metadata_value_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// The type with GGUF id `id` (0..=12).
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// GGUF's id of this type.
    pub fn id(self) -> u32 {
        use ValueType::*;
        match self {
            U8 => 0,
            I8 => 1,
            U16 => 2,
            I16 => 3,
            U32 => 4,
            I32 => 5,
            F32 => 6,
            Bool => 7,
            String => 8,
            Array => 9,
            U64 => 10,
            I64 => 11,
            F64 => 12,
        }
    }

    /// The fewest bytes one value of this type takes in a file (a string is at least its length,
    /// an array at least its element type and count). Used to refuse absurd counts.
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: one vector per element type, so a 150 000-entry merge list costs what the
/// strings cost and not an enum per element. Arrays of arrays nest through [`Array::Array`].
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Value {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Any integer type, as `i128` (wide enough for both `u64` and `i64`).
    fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// An integer of any width and signedness that fits `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_i128().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer of any width and signedness that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// A float (`f32` or `f64`) or an integer, as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// `"u32"`, `"array of string"`, ...: for error messages.
    pub fn type_description(&self) -> String {
        match self {
            Value::Array(a) => format!("array of {}", a.element_type()),
            v => v.value_type().to_string(),
        }
    }
}

impl Array {
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements of an integer array of any type, as `i64` (`None` for other element types,
    /// or a `u64` element above `i64::MAX`).
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        fn conv<T: Copy>(v: &[T], f: impl Fn(T) -> Option<i64>) -> Option<Vec<i64>> {
            v.iter().map(|&x| f(x)).collect()
        }
        match self {
            Array::U8(v) => conv(v, |x| Some(x.into())),
            Array::I8(v) => conv(v, |x| Some(x.into())),
            Array::U16(v) => conv(v, |x| Some(x.into())),
            Array::I16(v) => conv(v, |x| Some(x.into())),
            Array::U32(v) => conv(v, |x| Some(x.into())),
            Array::I32(v) => conv(v, |x| Some(x.into())),
            Array::U64(v) => conv(v, |x| i64::try_from(x).ok()),
            Array::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// The elements of a float array (`f32` or `f64`), as `f64`.
    pub fn to_f64s(&self) -> Option<Vec<f64>> {
        match self {
            Array::F32(v) => Some(v.iter().map(|&x| x.into()).collect()),
            Array::F64(v) => Some(v.clone()),
            _ => None,
        }
    }
}

/// One tensor's entry in the file's tensor-info table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF lists them: fastest-varying first (`ne[0]` is the row length).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the tensor's data from the start of the data section.
    pub offset: u64,
    /// Size of the tensor's data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The shape in row-major (PyTorch / safetensors) order: GGUF's `dims` reversed. A GGUF
    /// `token_embd.weight` with dims `[hidden, vocab]` has shape `[vocab, hidden]`.
    pub fn shape(&self) -> Vec<usize> {
        // Each dim fits usize: the element count was checked to fit it while parsing.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (product of the dims; 1 for a tensor with no dims).
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file. Tensor data stays in the file (memory-mapped) or the given buffer until a
/// tensor is asked for.
pub struct Gguf {
    file: String,
    storage: Storage,
    version: u32,
    metadata: Vec<(String, Value)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: usize,
}

impl fmt::Debug for Gguf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gguf")
            .field("file", &self.file)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .finish()
    }
}

impl Gguf {
    /// Opens and parses `path`, memory-mapping it.
    ///
    /// The file must not be changed by another process while the returned value lives (the usual
    /// condition of a memory map).
    pub fn open(path: impl AsRef<Path>) -> Result<Gguf> {
        let path = path.as_ref();
        let file_name = path.display().to_string();
        let io = |source| Error::Io {
            file: file_name.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lives inside the returned `Gguf`; as documented above,
        // the caller must not modify or truncate the file while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Gguf::parse(file_name, Storage::Mmap(map))
    }

    /// Parses a GGUF file held in memory. `name` stands for the file in error messages.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<Gguf> {
        Gguf::parse(name.into(), Storage::Owned(bytes))
    }

    fn parse(file: String, storage: Storage) -> Result<Gguf> {
        let parsed = parse_header(&file, storage.bytes())?;
        Ok(Gguf {
            file,
            storage,
            version: parsed.version,
            metadata_index: parsed
                .metadata
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect(),
            metadata: parsed.metadata,
            tensor_index: parsed
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
        })
    }

    /// The file's name as used in error messages.
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// GGUF version: 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section (the tensor offsets are relative to it).
    pub fn data_offset(&self) -> u64 {
        self.data_start as u64
    }

    /// All metadata, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of metadata key `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn wrong_type(&self, key: &str, expected: &'static str, v: &Value) -> Error {
        Error::WrongType {
            file: self.file.clone(),
            key: key.to_string(),
            expected,
            found: v.type_description(),
        }
    }

    /// `key` as a string; `Ok(None)` when absent, an error when it has another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a string", v)),
        }
    }

    /// `key` as an unsigned integer (stored as any integer type that holds a value >= 0).
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a non-negative integer", v)),
        }
    }

    /// `key` as a float (stored as `f32`, `f64` or an integer).
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a number", v)),
        }
    }

    /// `key` as a bool.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a bool", v)),
        }
    }

    /// `key` as an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(Array::as_strings)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an array of strings", v)),
        }
    }

    /// `key` as an array of integers (any integer element type), as `i64`.
    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(Array::to_i64s)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an array of integers", v)),
        }
    }

    /// `key` as an array of floats (`f32` or `f64` elements), as `f64`.
    pub fn get_f64_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .and_then(Array::to_f64s)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "an array of floats", v)),
        }
    }

    /// The tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of tensor `info` (one of [`Gguf::tensors`]; checked to lie inside the file
    /// while parsing). An info that is not this file's gives an empty slice.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_start as u64).checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) => usize::try_from(s)
                .ok()
                .zip(usize::try_from(e).ok())
                .and_then(|(s, e)| self.storage.bytes().get(s..e))
                .unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Tensor `name` dequantized to `f32`, in GGUF memory order (row-major in the order of
    /// [`TensorInfo::shape`]).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name).ok_or_else(|| Error::MissingTensor {
            file: self.file.clone(),
            tensor: name.to_string(),
        })?;
        self.dequantize(info)
    }

    /// The tensor `info` dequantized to `f32`. `info` must be one of [`Gguf::tensors`]; any
    /// other is refused as a missing tensor.
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        if self.tensor(&info.name) != Some(info) {
            return Err(Error::MissingTensor {
                file: self.file.clone(),
                tensor: info.name.clone(),
            });
        }
        if !info.ggml_type.is_supported() {
            return Err(Error::UnsupportedType {
                file: self.file.clone(),
                tensor: info.name.clone(),
                ty: info.ggml_type,
                supported: crate::types::supported_list(),
            });
        }
        let mut out = vec![0f32; info.n_elements()];
        dequant::dequantize(info.ggml_type, self.tensor_data(info), &mut out).map_err(|e| {
            Error::UnexpectedTensor {
                file: self.file.clone(),
                tensor: info.name.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(out)
    }
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_start: usize,
}

/// A bounds-checked little-endian reader over the file's bytes.
struct Cursor<'a> {
    file: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated {
                file: self.file.to_string(),
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        // n <= remaining <= usize::MAX
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Refuses `count` items of at least `min_size` bytes each when the rest of the file cannot
    /// hold them.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<()> {
        let fits = count
            .checked_mul(min_size)
            .is_some_and(|total| total <= self.remaining());
        if fits {
            Ok(())
        } else {
            Err(Error::CountTooLarge {
                file: self.file.to_string(),
                what: what(),
                count,
                remaining: self.remaining(),
            })
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidUtf8 {
            file: self.file.to_string(),
            what: what(),
        })
    }

    fn value_type(&mut self, key: &str, what: &dyn Fn() -> String) -> Result<ValueType> {
        let id = self.u32(what)?;
        ValueType::from_id(id).ok_or_else(|| Error::UnknownValueType {
            file: self.file.to_string(),
            key: key.to_string(),
            type_id: id,
        })
    }

    fn value(&mut self, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
        let what = || format!("value of metadata key `{key}`");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(&what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(&what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(&what)?[0] != 0),
            ValueType::String => Value::String(self.string(&what)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            ValueType::Array => Value::Array(self.array_value(key, depth + 1)?),
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(Error::NestingTooDeep {
                file: self.file.to_string(),
                key: key.to_string(),
                max: MAX_ARRAY_DEPTH,
            });
        }
        let what = || format!("array of metadata key `{key}`");
        let elem = self.value_type(key, &what)?;
        let count = self.u64(&what)?;
        self.check_count(count, elem.min_size(), &what)?;
        // count * min_size <= remaining bytes, so count fits usize and the vector is at most a
        // few times the size of the input.
        let n = count as usize;

        fn fixed<'a, T, const N: usize>(
            c: &mut Cursor<'a>,
            n: usize,
            what: &dyn Fn() -> String,
            conv: fn([u8; N]) -> T,
        ) -> Result<Vec<T>> {
            let bytes = c.take((n * N) as u64, what)?;
            Ok(bytes
                .chunks_exact(N)
                .map(|ch| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(ch);
                    conv(a)
                })
                .collect())
        }

        Ok(match elem {
            ValueType::U8 => Array::U8(fixed(self, n, &what, |a: [u8; 1]| a[0])?),
            ValueType::I8 => Array::I8(fixed(self, n, &what, |a: [u8; 1]| a[0] as i8)?),
            ValueType::U16 => Array::U16(fixed(self, n, &what, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(fixed(self, n, &what, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(fixed(self, n, &what, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(fixed(self, n, &what, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(fixed(self, n, &what, f32::from_le_bytes)?),
            ValueType::Bool => Array::Bool(fixed(self, n, &what, |a: [u8; 1]| a[0] != 0)?),
            ValueType::U64 => Array::U64(fixed(self, n, &what, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(fixed(self, n, &what, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(fixed(self, n, &what, f64::from_le_bytes)?),
            ValueType::String => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.string(&|| format!("string in metadata key `{key}`"))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

fn parse_header(file: &str, buf: &[u8]) -> Result<Parsed> {
    let mut c = Cursor { file, buf, pos: 0 };
    let magic: [u8; 4] = c.array(&|| "magic".into())?;
    if &magic != MAGIC {
        return Err(Error::BadMagic {
            file: file.to_string(),
            found: magic.to_vec(),
        });
    }
    let version = c.u32(&|| "version".into())?;
    if version != 2 && version != 3 {
        let hint = if version == 1 {
            " (version 1 used 32-bit counts and lengths; re-convert the model with a newer llama.cpp)"
        } else if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            " (this looks like a big-endian file; only little-endian files are read)"
        } else {
            ""
        };
        return Err(Error::UnsupportedVersion {
            file: file.to_string(),
            version,
            hint,
        });
    }
    let n_tensors = c.u64(&|| "tensor count".into())?;
    let n_kv = c.u64(&|| "metadata count".into())?;
    // Smallest metadata entry: empty key (8) + type (4) + a one-byte value.
    c.check_count(n_kv, 8 + 4 + 1, &|| "metadata count".into())?;

    let mut metadata: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
    let mut seen: HashSet<String> = HashSet::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string(&|| format!("key of metadata entry {i}"))?;
        if !seen.insert(key.clone()) {
            return Err(Error::DuplicateKey {
                file: file.to_string(),
                key,
            });
        }
        let ty = c.value_type(&key, &|| format!("type of metadata key `{key}`"))?;
        let value = c.value(ty, &key, 0)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((k, v)) => {
            let a = v.as_u64().ok_or_else(|| Error::WrongType {
                file: file.to_string(),
                key: k.clone(),
                expected: "an unsigned integer",
                found: v.type_description(),
            })?;
            if a == 0 || !a.is_power_of_two() {
                return Err(Error::BadValue {
                    file: file.to_string(),
                    key: k.clone(),
                    message: format!("alignment {a} is not a power of two"),
                });
            }
            a
        }
    };

    // Smallest tensor info: empty name (8) + n_dims (4) + no dims + type (4) + offset (8).
    c.check_count(n_tensors, 8 + 4 + 4 + 8, &|| "tensor count".into())?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names: HashSet<String> = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string(&|| format!("name of tensor {i}"))?;
        let ctx = || format!("info of tensor `{name}`");
        let n_dims = c.u32(&ctx)?;
        if n_dims > MAX_DIMS {
            return Err(Error::BadDimCount {
                file: file.to_string(),
                tensor: name,
                n_dims,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&ctx)?);
        }
        let type_id = c.u32(&ctx)?;
        let offset = c.u64(&ctx)?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| Error::UnknownGgmlType {
            file: file.to_string(),
            tensor: name.clone(),
            type_id,
        })?;
        let overflow = || Error::ShapeOverflow {
            file: file.to_string(),
            tensor: name.clone(),
            dims: dims.clone(),
        };
        // Element count must fit both u64 and usize (it sizes the dequantized buffer) and, as
        // ggml requires, i64.
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64 && usize::try_from(n).is_ok())
            .ok_or_else(overflow)?;
        let (block, type_size) = ggml_type.block_layout();
        let row = dims.first().copied().unwrap_or(1);
        if row % block as u64 != 0 {
            return Err(Error::BadRowLength {
                file: file.to_string(),
                tensor: name,
                ty: ggml_type,
                row,
                block,
            });
        }
        // n_elements is a multiple of the block size because the row length is.
        let n_bytes = (n_elements / block as u64)
            .checked_mul(type_size as u64)
            .ok_or_else(overflow)?;
        if offset % alignment != 0 {
            return Err(Error::Misaligned {
                file: file.to_string(),
                tensor: name,
                offset,
                alignment,
            });
        }
        if !names.insert(name.clone()) {
            return Err(Error::DuplicateTensor {
                file: file.to_string(),
                tensor: name,
            });
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        });
    }

    // The data section starts at the next multiple of the alignment.
    let end_of_infos = c.pos as u64;
    let data_start = end_of_infos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| Error::BadValue {
            file: file.to_string(),
            key: "general.alignment".into(),
            message: format!("alignment {alignment} overflows the data offset"),
        })?;
    let file_len = buf.len() as u64;
    let data_len = file_len.saturating_sub(data_start);
    for t in &tensors {
        let end = t.offset.checked_add(t.n_bytes);
        if end.is_none_or(|end| end > data_len) || (t.n_bytes > 0 && data_start > file_len) {
            return Err(Error::DataOutOfBounds {
                file: file.to_string(),
                tensor: t.name.clone(),
                start: t.offset,
                end: end.unwrap_or(u64::MAX),
                len: data_len,
            });
        }
    }
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        // When data_start > file_len every tensor is empty; clamp so slicing stays in bounds.
        data_start: data_start.min(file_len) as usize,
    })
}
