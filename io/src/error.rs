use std::path::{Path, PathBuf};

/// A file operation that failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{}: {source}{}", path.display(), hint(source))]
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
    /// The output directory's advisory lock ([`crate::OutLock`]) is held by another process, or
    /// by another lock of this one; `pid` is the holder's, when its lock file could be read.
    #[error(
        "{} is in use by another shear process{}; wait for it to end or choose another output \
         directory",
        path.display(),
        holder(pid)
    )]
    Locked { path: PathBuf, pid: Option<u32> },
}

/// What a user can do about a write that the file system refused.
fn hint(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        StorageFull | FileTooLarge | QuotaExceeded | ReadOnlyFilesystem | PermissionDenied => {
            "; is the disk full or the folder read-only?"
        }
        _ => "",
    }
}

fn holder(pid: &Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
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
