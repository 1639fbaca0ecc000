//! Errors of the pipeline: those of the crates below, a recipe or report problem, or an invalid
//! setting, each one line naming the file, key or value; [`Context`] adds what was being done.

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] shear_model::ModelError),
    #[error(transparent)]
    Data(#[from] shear_data::DataError),
    #[error(transparent)]
    Train(#[from] shear_train::TrainError),
    #[error(transparent)]
    File(#[from] shear_io::IoError),
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A setting that cannot work, named with its value.
    #[error("{0}")]
    Invalid(String),
    /// A run stopped by request (a signal) after `step` of `total`, with a checkpoint in
    /// `checkpoints`: it continues with `--resume`.
    #[error("{what} stopped by a signal after step {step} of {total} (checkpoint in {})", checkpoints.display())]
    Interrupted {
        what: String,
        step: usize,
        total: usize,
        checkpoints: std::path::PathBuf,
    },
    /// A node of a multi-node run went away (the line names it, crate::watch).
    #[error("{0}")]
    PeerLost(String),
    /// `inner`, while doing `context`.
    #[error("{context}: {inner}")]
    Context {
        context: String,
        inner: Box<PipelineError>,
    },
}

pub type Result<T> = std::result::Result<T, PipelineError>;

/// A recipe that cannot be read or cannot work: the file (empty when the recipe is not from
/// a file) and the message, which names the key (`prune.steps`, `[prune] lr_masks ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{msg}", if path.as_os_str().is_empty() { String::new() } else { format!("{}: ", path.display()) })]
pub struct RecipeError {
    pub path: std::path::PathBuf,
    pub msg: String,
}

impl RecipeError {
    pub fn new(path: &std::path::Path, msg: impl Into<String>) -> Self {
        RecipeError {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    /// This error, of the recipe in `path`.
    pub fn at(self, path: &std::path::Path) -> Self {
        RecipeError {
            path: path.to_path_buf(),
            ..self
        }
    }
}

impl From<&str> for RecipeError {
    fn from(msg: &str) -> Self {
        RecipeError::from(msg.to_string())
    }
}

impl From<String> for RecipeError {
    fn from(msg: String) -> Self {
        RecipeError {
            path: std::path::PathBuf::new(),
            msg,
        }
    }
}

/// The report (charts and `report.md`) cannot be written, or a log it reads is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {msg}", path.display())]
    Io {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("chart {}: {msg}", path.display())]
    Chart {
        path: std::path::PathBuf,
        msg: String,
    },
    #[error("report: {0}")]
    Log(#[from] shear_io::IoError),
}

impl PipelineError {
    /// Whether this is (or wraps) a run stopped by a signal ([`PipelineError::Interrupted`]).
    pub fn is_interrupted(&self) -> bool {
        match self {
            PipelineError::Interrupted { .. } => true,
            PipelineError::Context { inner, .. } => inner.is_interrupted(),
            _ => false,
        }
    }

    /// Whether this is a failed collective operation between data-parallel peers (often only
    /// the echo of another peer's failure).
    pub fn is_collective(&self) -> bool {
        match self {
            PipelineError::Train(shear_train::TrainError::Collective(_)) => true,
            PipelineError::Context { inner, .. } => inner.is_collective(),
            _ => false,
        }
    }
}

/// Adds what was being done to an error.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: what.into(),
            inner: Box::new(e.into()),
        })
    }
}

/// `Err(PipelineError::Invalid(...))` with a formatted message.
macro_rules! invalid {
    ($($t:tt)*) => {
        Err($crate::error::PipelineError::Invalid(format!($($t)*)))
    };
}
pub(crate) use invalid;
