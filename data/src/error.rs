//! Errors of the data crate.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot load tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("tokenizer: {0}")]
    Encode(String),
}

pub type Result<T> = std::result::Result<T, DataError>;
