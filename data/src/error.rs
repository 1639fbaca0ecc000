//! Errors of the data crate. Each names the file, line, key or domain it is about, so the CLI
//! can print it as one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: not found", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot load tokenizer: {msg}", path.display())]
    Tokenizer { path: PathBuf, msg: String },
    #[error("{}: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
    #[error("{}:{line}: {msg}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("domain `{domain}`: {msg}")]
    Domain { domain: String, msg: String },
    #[error("weights: {0}")]
    Weights(String),
    #[error("recipe: {0}")]
    Recipe(String),
    /// A value that does not parse (an option's or a recipe key's), with what is expected.
    #[error("{0}")]
    Parse(String),
    #[error("tokenizer: {0}")]
    Encode(String),
    #[error(transparent)]
    File(#[from] shear_io::IoError),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| {
            match source.kind() {
                std::io::ErrorKind::NotFound => DataError::NotFound { path },
                // What `read_to_string` and `lines` report for bytes that are not UTF-8.
                std::io::ErrorKind::InvalidData => DataError::Invalid {
                    path,
                    msg: "not UTF-8 text".into(),
                },
                _ => DataError::File(shear_io::IoError::Io { path, source }),
            }
        }
    }

    pub(crate) fn domain(domain: &str, msg: impl Into<String>) -> DataError {
        DataError::Domain {
            domain: domain.to_string(),
            msg: msg.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, DataError>;
