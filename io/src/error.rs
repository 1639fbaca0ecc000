use std::path::{Path, PathBuf};

/// A file operation that failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of a JSONL log that is not the expected record.
    #[error("{}, line {line}: {msg}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{}: {msg}", path.display())]
    Json { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, IoError>;

impl IoError {
    /// A closure that wraps an `std::io::Error` with `path`.
    pub fn at(path: &Path) -> impl Fn(std::io::Error) -> IoError + '_ {
        move |source| IoError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
