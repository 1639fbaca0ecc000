//! Corpus files → documents (docs/algorithm.md §8, ingest). A domain is a list of files or folders; folders
//! are walked recursively in name order. Supported: `.jsonl` (one JSON object per line, the text
//! in a selectable string field), `.jsonl.gz`, `.jsonl.zst`, and `.txt` (the whole file is one
//! document).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// One input file of a domain, as recorded in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: PathBuf,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Jsonl,
    JsonlGz,
    JsonlZst,
    Txt,
}

fn kind_of(path: &Path) -> Option<Kind> {
    let name = path.file_name()?.to_str()?;
    [
        (".jsonl", Kind::Jsonl),
        (".jsonl.gz", Kind::JsonlGz),
        (".jsonl.zst", Kind::JsonlZst),
        (".txt", Kind::Txt),
    ]
    .into_iter()
    .find(|(ext, _)| name.ends_with(ext))
    .map(|(_, k)| k)
}

/// The files of one domain: each path is a file or a folder (walked recursively, sorted by name,
/// files of unknown types inside folders skipped). A path that does not exist, or a file given by
/// name with an unsupported type, is an error.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(DataError::io(p))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else if kind_of(p).is_some() {
            out.push(SourceFile {
                path: p.clone(),
                bytes: meta.len(),
            });
        } else {
            return Err(DataError::Invalid {
                path: p.clone(),
                msg: "unsupported file type (expected .jsonl, .jsonl.gz, .jsonl.zst or .txt)"
                    .into(),
            });
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<SourceFile>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(DataError::io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(DataError::io(dir)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        let meta = std::fs::metadata(&p).map_err(DataError::io(&p))?;
        if meta.is_dir() {
            walk(&p, out)?;
        } else if kind_of(&p).is_some() {
            out.push(SourceFile {
                path: p,
                bytes: meta.len(),
            });
        }
    }
    Ok(())
}

/// The documents of `path`, in file order. Blank lines of a JSONL file are skipped; a line that
/// is not a JSON object with a string `text_field` is an error naming the file and the line.
pub fn read_documents(path: &Path, text_field: &str) -> Result<Vec<String>> {
    let kind = kind_of(path).ok_or_else(|| DataError::Invalid {
        path: path.to_path_buf(),
        msg: "unsupported file type".into(),
    })?;
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    let reader: Box<dyn Read> = match kind {
        Kind::Txt => {
            let mut text = String::new();
            BufReader::new(file)
                .read_to_string(&mut text)
                .map_err(|e| DataError::Invalid {
                    path: path.to_path_buf(),
                    msg: format!("not UTF-8 text ({e})"),
                })?;
            return Ok(if text.trim().is_empty() {
                vec![]
            } else {
                vec![text]
            });
        }
        Kind::Jsonl => Box::new(file),
        Kind::JsonlGz => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Kind::JsonlZst => Box::new(zstd_frames(path, file)?),
    };
    let mut docs = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| DataError::Line {
            path: path.to_path_buf(),
            line: line_no,
            msg: format!("cannot read ({e})"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| DataError::Line {
            path: path.to_path_buf(),
            line: line_no,
            msg,
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| at(format!("invalid JSON: {e}")))?;
        match value.get(text_field) {
            Some(serde_json::Value::String(s)) => docs.push(s.clone()),
            Some(_) => return Err(at(format!("field `{text_field}` is not a string"))),
            None => return Err(at(format!("no field `{text_field}`"))),
        }
    }
    Ok(docs)
}

/// All frames of a zstd file, decoded one after another (files made by concatenation hold
/// several).
fn zstd_frames(path: &Path, mut file: std::fs::File) -> Result<std::io::Cursor<Vec<u8>>> {
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(DataError::io(path))?;
    let mut input = raw.as_slice();
    let mut out = Vec::new();
    while !input.is_empty() {
        let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut input).map_err(|e| {
            DataError::Invalid {
                path: path.to_path_buf(),
                msg: format!("not a zstd stream ({e})"),
            }
        })?;
        dec.read_to_end(&mut out).map_err(|e| DataError::Invalid {
            path: path.to_path_buf(),
            msg: format!("corrupt zstd stream ({e})"),
        })?;
    }
    Ok(std::io::Cursor::new(out))
}
