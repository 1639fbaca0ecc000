//! The one error type of this crate. Every variant names the file (`file`: the path as given to
//! [`crate::Gguf::open`], or the name given to [`crate::Gguf::from_bytes`]) and, where one is
//! involved, the metadata key or the tensor.

use crate::types::GgmlType;

/// What went wrong reading or converting a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{file}: not a GGUF file (starts with {found:02x?}, expected the magic \"GGUF\")")]
    BadMagic { file: String, found: Vec<u8> },

    #[error("{file}: GGUF version {version} is not supported (this reader handles versions 2 and 3){hint}")]
    UnsupportedVersion {
        file: String,
        version: u32,
        /// Extra explanation for the common cases (v1, big-endian files).
        hint: &'static str,
    },

    #[error("{file}: truncated: {what} needs {needed} bytes at offset {offset}, but the file has {len} bytes")]
    Truncated {
        file: String,
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },

    #[error("{file}: {what}: count {count} cannot fit in the {remaining} bytes left in the file")]
    CountTooLarge {
        file: String,
        what: String,
        count: u64,
        remaining: u64,
    },

    #[error("{file}: {what} is not valid UTF-8")]
    InvalidUtf8 { file: String, what: String },

    #[error("{file}: metadata key `{key}`: unknown value type {type_id}")]
    UnknownValueType {
        file: String,
        key: String,
        type_id: u32,
    },

    #[error("{file}: metadata key `{key}`: arrays nested more than {max} deep")]
    NestingTooDeep {
        file: String,
        key: String,
        max: usize,
    },

    #[error("{file}: metadata key `{key}` appears twice")]
    DuplicateKey { file: String, key: String },

    #[error("{file}: metadata key `{key}`: expected {expected}, found {found}")]
    WrongType {
        file: String,
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("{file}: metadata key `{key}`: {message}")]
    BadValue {
        file: String,
        key: String,
        message: String,
    },

    #[error("{file}: missing metadata key `{key}`")]
    MissingKey { file: String, key: String },

    #[error("{file}: tensor `{tensor}` appears twice")]
    DuplicateTensor { file: String, tensor: String },

    #[error("{file}: tensor `{tensor}`: unknown ggml type id {type_id}")]
    UnknownGgmlType {
        file: String,
        tensor: String,
        type_id: u32,
    },

    #[error("{file}: tensor `{tensor}`: {n_dims} dimensions (GGUF allows 1 to 4)")]
    BadDimCount {
        file: String,
        tensor: String,
        n_dims: u32,
    },

    #[error("{file}: tensor `{tensor}`: dimensions {dims:?} overflow")]
    ShapeOverflow {
        file: String,
        tensor: String,
        dims: Vec<u64>,
    },

    #[error("{file}: tensor `{tensor}`: row length {row} is not a multiple of the {ty} block size {block}")]
    BadRowLength {
        file: String,
        tensor: String,
        ty: GgmlType,
        row: u64,
        block: usize,
    },

    #[error(
        "{file}: tensor `{tensor}`: offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        file: String,
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error("{file}: tensor `{tensor}`: data bytes {start}..{end} run past the end of the data section ({len} bytes)")]
    DataOutOfBounds {
        file: String,
        tensor: String,
        start: u64,
        end: u64,
        len: u64,
    },

    #[error("{file}: tensor `{tensor}`: unsupported quantization {ty} (supported: {supported})")]
    UnsupportedType {
        file: String,
        tensor: String,
        ty: GgmlType,
        supported: String,
    },

    #[error("{file}: no tensor `{tensor}`")]
    MissingTensor { file: String, tensor: String },

    #[error("{file}: tensor `{tensor}`: shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        file: String,
        tensor: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },

    #[error("{file}: tensor `{tensor}`: {message}")]
    UnexpectedTensor {
        file: String,
        tensor: String,
        message: String,
    },

    #[error("{file}: architecture `{architecture}` is not supported (only `llama` is)")]
    UnsupportedArchitecture { file: String, architecture: String },

    #[error("{file}: {message}")]
    Unsupported { file: String, message: String },

    #[error("{file}: tokenizer: {message}")]
    Tokenizer { file: String, message: String },
}

/// Shorthand for this crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
