//! The run directory a command writes (`--out`): checked before any work (not a regular file,
//! not a symbolic link), locked for one writer at a time from the first look inside (an
//! advisory lock, `OUT/.shear.lock`, naming the holder's pid; one left by a killed process is
//! taken over), and cleared of the temporaries a killed write left behind (docs/algorithm.md §9).

use std::path::{Path, PathBuf};

use shear_io::{IoError, OutLock};

use crate::error::{invalid, Result};

/// A run directory on its way to being written.
pub struct RunDir {
    path: PathBuf,
    /// Whether this process writes it (not a node other than 0 of a multi-node run).
    writes: bool,
    lock: Option<OutLock>,
}

impl RunDir {
    /// Checks `path` as a run directory and, when it exists and this process writes it, locks
    /// it (the checks and decisions that look inside then see no other writer).
    pub fn open(path: &Path, writes: bool) -> Result<Self> {
        check(path)?;
        let lock = match writes && path.is_dir() {
            true => Some(OutLock::acquire(path)?),
            false => None,
        };
        Ok(RunDir {
            path: path.to_path_buf(),
            writes,
            lock,
        })
    }

    /// Creates the directory (when this process writes it), locks it if not yet, and removes
    /// what killed writes left in it and in its folders (`checkpoints/`, `model/`, ...). Holds
    /// the lock until dropped.
    pub fn create(mut self) -> Result<Self> {
        if !self.writes {
            return Ok(self);
        }
        std::fs::create_dir_all(&self.path).map_err(IoError::at(&self.path))?;
        if self.lock.is_none() {
            self.lock = Some(OutLock::acquire(&self.path)?);
        }
        shear_io::remove_temporaries(&self.path)?;
        let entries = std::fs::read_dir(&self.path).map_err(IoError::at(&self.path))?;
        for entry in entries {
            let path = entry.map_err(IoError::at(&self.path))?.path();
            if path.is_dir() {
                shear_io::remove_temporaries(&path)?;
            }
        }
        Ok(self)
    }
}

impl RunDir {
    /// The pid of a killed process whose lock this one took over (docs/algorithm.md §9).
    pub fn taken_over(&self) -> Option<u32> {
        self.lock.as_ref().and_then(OutLock::taken_over)
    }
}

/// Refuses an output path that is a regular file or a symbolic link (a run directory is the
/// directory itself: a link would let two names share one lock-free run).
pub fn check(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).unwrap_or_default();
        return invalid!(
            "output directory {} is a symbolic link (to {}); give the directory itself",
            path.display(),
            target.display()
        );
    }
    if !meta.is_dir() {
        return invalid!(
            "output directory {} is a file, not a directory; choose another path",
            path.display()
        );
    }
    Ok(())
}

/// Creates directory `path` (checked as above) and locks it, for the commands that write one
/// directory whole (conversion, materialization, data preparation).
pub fn create_locked(path: &Path) -> Result<RunDir> {
    RunDir::open(path, true)?.create()
}
