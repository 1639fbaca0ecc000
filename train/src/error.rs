//! Errors of the training crate: checkpoints that cannot be written or read back, a resumed run
//! whose settings conflict with its checkpoint, and a non-finite value that stops a run.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    File(#[from] shear_io::IoError),
    /// A burn record (module or optimizer state) that cannot be written or read.
    #[error("{}: {msg}", path.display())]
    Record { path: PathBuf, msg: String },
    /// A burn record that could not be written (burn's message does not keep the I/O error).
    #[error("{}: cannot write ({msg}); is the disk full or the folder read-only?", path.display())]
    WriteRecord { path: PathBuf, msg: String },
    /// A checkpoint that is not what this run needs.
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// A checkpoint a resume cannot use: `state.json` missing or unreadable, or a file missing
    /// or not matching its manifest entry.
    #[error("checkpoint {} is unusable: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    /// Checkpoints exist, but none is usable: the newest and why.
    #[error("no usable checkpoint in {}: the newest, {}, is unusable: {reason}; start a new run in another directory", dir.display(), newest.display())]
    NoUsableCheckpoint {
        dir: PathBuf,
        newest: PathBuf,
        reason: String,
    },
    /// An option given for a resumed run that differs from the value its checkpoint was made with.
    #[error("{key} = {requested} conflicts with the checkpoint's {key} = {stored} ({}); resume without it, or start a new run in another directory", path.display())]
    Conflict {
        key: String,
        requested: String,
        stored: String,
        path: PathBuf,
    },
    #[error(transparent)]
    Model(#[from] shear_model::ModelError),
    #[error(transparent)]
    Data(#[from] shear_data::DataError),
    #[error("{0}")]
    Invalid(String),
    /// A step whose loss or gradient norm is not finite: it was skipped (no parameter changed,
    /// the step counted as done).
    #[error("step {step}: {what}")]
    NonFinite { step: usize, what: String },
    /// More skipped steps than allowed.
    #[error("step {step}: {what}; {skipped} steps skipped, more than the {max} allowed (--max-skipped); the skipped batches are in {log}")]
    TooManySkipped {
        step: usize,
        what: String,
        skipped: usize,
        max: usize,
        log: String,
    },
    /// A collective operation between data-parallel peers that failed (also when another
    /// peer failed first and the run was stopped).
    #[error("data parallelism: {0}")]
    Collective(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;
