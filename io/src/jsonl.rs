//! Typed JSONL step logs: one record per line, flushed per line so the log can be followed while
//! a run goes on. A run resumed from the checkpoint of step `k` keeps exactly the records of
//! steps before `k` (docs/algorithm.md §9): a run killed after step `k + 3` had already logged
//! steps `k..k+3`, which the resumed run logs again.

use std::io::{BufRead, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::atomic::flush;
use crate::error::{IoError, Result};

/// A record that belongs to an optimizer step.
pub trait Stepped {
    /// The 0-based step this record logs.
    fn step(&self) -> usize;
}

/// Reads every record of a JSONL file; an empty line is skipped, anything else that is not a
/// `T` is an error naming the file and line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = std::fs::File::open(path).map_err(IoError::at(path))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(IoError::at(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| IoError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        out.push(record);
    }
    Ok(out)
}

/// An open step log.
pub struct JsonlLog<T> {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    _record: PhantomData<fn(&T)>,
}

impl<T: Serialize + DeserializeOwned + Stepped> JsonlLog<T> {
    /// A new, empty log at `path` (an old one is replaced).
    pub fn create(path: &Path) -> Result<Self> {
        Self::open(path, false)
    }

    /// The log of a run resumed at step `from`: the records of steps before `from` are kept
    /// (rewritten atomically), later ones dropped, and new records are appended. A missing log
    /// starts empty; a line that does not parse is an error.
    pub fn resume(path: &Path, from: usize) -> Result<Self> {
        if path.exists() {
            // The kept lines are copied as they are (a float parsed and printed again need not
            // keep its last digit).
            let text = std::fs::read_to_string(path).map_err(IoError::at(path))?;
            let mut kept = String::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let record: T = serde_json::from_str(line).map_err(|e| IoError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg: e.to_string(),
                })?;
                if record.step() < from {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            crate::atomic::write_atomic(path, kept.as_bytes())?;
        }
        Self::open(path, true)
    }

    fn open(path: &Path, append: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(IoError::at(path))?;
        Ok(JsonlLog {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            _record: PhantomData,
        })
    }

    /// Appends one record and flushes it.
    pub fn append(&mut self, record: &T) -> Result<()> {
        write_line(&mut self.out, record, &self.path)?;
        flush(&mut self.out, &self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_line<T: Serialize>(w: &mut impl Write, record: &T, path: &Path) -> Result<()> {
    serde_json::to_writer(&mut *w, record).map_err(|e| IoError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    w.write_all(b"\n").map_err(IoError::at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        step: usize,
        loss: f64,
    }
    impl Stepped for Rec {
        fn step(&self) -> usize {
            self.step
        }
    }

    #[test]
    fn resuming_cuts_the_log_back_to_the_checkpoint_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut log = JsonlLog::<Rec>::create(&path).unwrap();
        for step in 0..7 {
            log.append(&Rec {
                step,
                loss: step as f64,
            })
            .unwrap();
        }
        drop(log);
        // Killed after step 6 with the newest checkpoint at step 4: steps 4..6 are logged again.
        let mut log = JsonlLog::<Rec>::resume(&path, 4).unwrap();
        for step in 4..8 {
            log.append(&Rec {
                step,
                loss: step as f64,
            })
            .unwrap();
        }
        drop(log);
        let steps: Vec<usize> = read_jsonl::<Rec>(&path)
            .unwrap()
            .iter()
            .map(|r| r.step)
            .collect();
        assert_eq!(steps, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn a_corrupt_line_is_an_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, "{\"step\":0,\"loss\":1.0}\n{\"step\":1,\"lo").unwrap();
        let e = read_jsonl::<Rec>(&path).unwrap_err().to_string();
        assert!(e.contains("log.jsonl, line 2"), "{e}");
        assert!(JsonlLog::<Rec>::resume(&path, 1).is_err());
    }
}
