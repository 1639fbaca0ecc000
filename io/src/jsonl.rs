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

/// The last line of a log that [`JsonlLog::resume`] dropped because it did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornLine {
    /// Its 1-based line number.
    pub line: usize,
    /// Its length in bytes, without the line break.
    pub bytes: usize,
}

impl std::fmt::Display for TornLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dropped a torn last line (line {}, {} bytes)",
            self.line, self.bytes
        )
    }
}

/// The lines of `bytes` as `str::lines` cuts them: at `\n`, without a trailing `\r`, and no
/// empty line after a final `\n`.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n')
        .filter(move |_| !bytes.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// A line that holds nothing but white space (skipped, as by [`read_jsonl`]).
fn is_blank(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|l| l.trim().is_empty())
}

fn parse<T: DeserializeOwned>(line: &[u8]) -> std::result::Result<T, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
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
    /// byte for byte (rewritten atomically), later ones dropped, and new records are appended.
    /// A missing log starts empty.
    ///
    /// A last non-empty line that does not parse (a write cut short by a power loss or a full
    /// disk: part of a record, perhaps ending inside a multi-byte character, or a run of NUL
    /// bytes) is dropped and returned as a [`TornLine`], whatever its step; the resumed run
    /// logs that step again (docs/algorithm.md §9). A line before it that does not parse is an
    /// error naming the file and line: that is not a cut write.
    pub fn resume(path: &Path, from: usize) -> Result<(Self, Option<TornLine>)> {
        let mut torn = None;
        if path.exists() {
            // Bytes, not a string: a torn last line need not be UTF-8. The kept lines are copied
            // as they are (a float parsed and printed again need not keep its last digit).
            let bytes = std::fs::read(path).map_err(IoError::at(path))?;
            let lines: Vec<&[u8]> = lines(&bytes).collect();
            let last = lines.iter().rposition(|l| !is_blank(l));
            let mut kept = Vec::with_capacity(bytes.len());
            for (i, line) in lines.iter().enumerate() {
                if is_blank(line) {
                    continue;
                }
                let record: T = match parse(line) {
                    Ok(record) => record,
                    Err(_) if Some(i) == last => {
                        torn = Some(TornLine {
                            line: i + 1,
                            bytes: line.len(),
                        });
                        continue;
                    }
                    Err(msg) => {
                        return Err(IoError::Line {
                            path: path.to_path_buf(),
                            line: i + 1,
                            msg,
                        })
                    }
                };
                if record.step() < from {
                    kept.extend_from_slice(line);
                    kept.push(b'\n');
                }
            }
            crate::atomic::write_atomic(path, &kept)?;
        }
        Ok((Self::open(path, true)?, torn))
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
        let (mut log, torn) = JsonlLog::<Rec>::resume(&path, 4).unwrap();
        assert_eq!(torn, None);
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
    }

    /// Resumes `text` at step `from` and returns the torn line and the file after.
    fn resumed(text: &[u8], from: usize) -> Result<(Option<TornLine>, Vec<u8>)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(&path, text).unwrap();
        let (log, torn) = JsonlLog::<Rec>::resume(&path, from)?;
        drop(log);
        Ok((torn, std::fs::read(&path).unwrap()))
    }

    // Kept lines byte for byte: a float's spelling and a field `Rec` does not know, with a
    // multi-byte character.
    const KEPT: &str = "{\"step\":0,\"loss\":1.10}\n{\"step\":1,\"loss\":2e0,\"note\":\"é\"}\n";

    #[test]
    fn a_torn_last_line_without_a_newline_is_dropped() {
        let text = format!("{KEPT}{{\"step\":2,\"lo");
        let (torn, after) = resumed(text.as_bytes(), 5).unwrap();
        let torn = torn.unwrap();
        assert_eq!(torn, TornLine { line: 3, bytes: 13 });
        assert_eq!(
            torn.to_string(),
            "dropped a torn last line (line 3, 13 bytes)"
        );
        assert_eq!(after, KEPT.as_bytes());
    }

    #[test]
    fn a_last_line_of_nul_bytes_is_dropped() {
        let mut text = KEPT.as_bytes().to_vec();
        text.extend([0u8; 100]);
        text.extend(b"\n\n");
        let (torn, after) = resumed(&text, 5).unwrap();
        assert_eq!(
            torn,
            Some(TornLine {
                line: 3,
                bytes: 100
            })
        );
        assert_eq!(after, KEPT.as_bytes());
    }

    #[test]
    fn a_last_line_cut_inside_a_multi_byte_character_is_dropped() {
        let mut text = KEPT.as_bytes().to_vec();
        // `€` is E2 82 AC; the write stopped after two of its bytes.
        text.extend(b"{\"step\":2,\"loss\":1.0,\"note\":\"\xE2\x82");
        let n = text.len() - KEPT.len();
        let (torn, after) = resumed(&text, 5).unwrap();
        assert_eq!(torn, Some(TornLine { line: 3, bytes: n }));
        assert_eq!(after, KEPT.as_bytes());
    }

    #[test]
    fn a_bad_line_before_the_last_is_still_an_error() {
        let text = format!("{{\"step\":0,\"lo\n{KEPT}");
        let e = resumed(text.as_bytes(), 5).unwrap_err();
        match &e {
            IoError::Line { path, line, .. } => {
                assert!(path.ends_with("log.jsonl"));
                assert_eq!(*line, 1);
            }
            other => panic!("not Line: {other:?}"),
        }
        assert!(e.to_string().contains("log.jsonl, line 1"), "{e}");
        // Bytes that are not UTF-8 before the last line too.
        let mut text = b"\xFF\xFE\n".to_vec();
        text.extend(KEPT.as_bytes());
        assert!(matches!(
            resumed(&text, 5).unwrap_err(),
            IoError::Line { line: 1, .. }
        ));
    }

    #[test]
    fn a_torn_last_line_is_dropped_whatever_its_step() {
        // The torn record is of step 1, before `from`: it is not kept either (the resumed run
        // starts from a checkpoint after it, so the log loses that line; no partial one stays).
        let text = "{\"step\":0,\"loss\":1.0}\n{\"step\":1,\"loss\":";
        let (torn, after) = resumed(text.as_bytes(), 3).unwrap();
        assert_eq!(torn, Some(TornLine { line: 2, bytes: 17 }));
        assert_eq!(after, b"{\"step\":0,\"loss\":1.0}\n");
        // And one after `from` too; the steps from `from` on are dropped as always.
        let text = format!("{KEPT}{{\"step\":2,\"loss\":3.0}}\n{{\"step\":3,");
        let (torn, after) = resumed(text.as_bytes(), 1).unwrap();
        assert_eq!(torn, Some(TornLine { line: 4, bytes: 10 }));
        assert_eq!(after, b"{\"step\":0,\"loss\":1.10}\n");
    }

    #[test]
    fn an_intact_log_reports_nothing_torn_and_keeps_crlf_and_blank_lines_out() {
        let text = "{\"step\":0,\"loss\":1.0}\r\n\n   \n{\"step\":1,\"loss\":2.0}";
        let (torn, after) = resumed(text.as_bytes(), 5).unwrap();
        assert_eq!(torn, None);
        assert_eq!(
            after,
            b"{\"step\":0,\"loss\":1.0}\n{\"step\":1,\"loss\":2.0}\n"
        );
        let (torn, after) = resumed(b"", 5).unwrap();
        assert_eq!((torn, after), (None, Vec::new()));
    }

    #[test]
    fn a_missing_log_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let (mut log, torn) = JsonlLog::<Rec>::resume(&path, 3).unwrap();
        assert_eq!(torn, None);
        log.append(&Rec { step: 3, loss: 0.5 }).unwrap();
        drop(log);
        assert_eq!(
            read_jsonl::<Rec>(&path).unwrap(),
            [Rec { step: 3, loss: 0.5 }]
        );
    }
}
