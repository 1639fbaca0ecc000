//! Errors of the model crate. Every variant names the file, key or tensor at fault, so the CLI
//! can print it as one line.

use std::path::PathBuf;

/// Anything that can go wrong while reading, building or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not found (a Hugging Face model directory needs a config.json)", path.display())]
    MissingConfig { path: PathBuf },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: key `{key}`: {msg}", path.display())]
    ConfigKey {
        path: PathBuf,
        key: String,
        msg: String,
    },
    #[error("{}: unsupported model_type `{model_type}` (shear supports `llama`)", path.display())]
    UnsupportedModel { path: PathBuf, model_type: String },
    #[error("{}: no model.safetensors or model.safetensors.index.json", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: shard `{shard}` named in the index does not exist", index.display())]
    MissingShard { index: PathBuf, shard: String },
    #[error("{}: not a readable safetensors file (truncated or corrupt?): {msg}", path.display())]
    Safetensors { path: PathBuf, msg: String },
    #[error("{}: tensor `{name}` has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{}: tensor `{name}` has dtype {dtype}; supported: F32, BF16, F16", path.display())]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{}: tensor `{name}` holds {value} at index {index}: weights must be finite", path.display())]
    NonFiniteWeight {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
    #[error("{}: cannot write ({msg}); is the disk full or the folder read-only?", path.display())]
    Write { path: PathBuf, msg: String },
    #[error("{}: tensor `{name}` is missing from the checkpoint", dir.display())]
    MissingTensor { dir: PathBuf, name: String },
    #[error("{}: unexpected tensor `{name}` (not part of a {arch} model)", path.display())]
    UnexpectedTensor {
        path: PathBuf,
        name: String,
        arch: String,
    },
    #[error("unknown dtype `{0}` (expected f32, bf16 or f16)")]
    UnknownDtype(String),
    #[error("model `{id}`: {msg}")]
    Hub { id: String, msg: String },
    #[error("invalid model shape: {0}")]
    InvalidShape(String),
    #[error("{what} is {value}: pruning needs finite values")]
    NonFinite { what: String, value: f64 },
    /// Structured OBS (obs.rs) could not factor a calibration Gram matrix.
    #[error("structured OBS: {0}")]
    Obs(String),
    #[error(transparent)]
    File(#[from] shear_io::IoError),
    #[error(transparent)]
    Gguf(#[from] shear_gguf::Error),
    /// A checkpoint that cannot be written as a GGUF file (`msg` says what the format lacks).
    #[error("{}: {msg}", path.display())]
    GgufExport { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, ModelError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |source| ModelError::Io { path, source }
}
