//! Token shards (docs/algorithm.md §8): a flat little-endian array of `sequences × seq_len` token ids, u16
//! when the vocabulary fits in 16 bits, u32 otherwise. Written to a temporary name and renamed
//! when complete; read through a memory map without copying the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Width of one stored token id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    /// The narrowest width holding every id of a vocabulary of `vocab_size` tokens.
    pub fn for_vocab(vocab_size: usize) -> Self {
        if vocab_size <= 1 << 16 {
            TokenWidth::U16
        } else {
            TokenWidth::U32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }
}

/// Writes `tokens` (a whole number of sequences) to `path` atomically: a temporary file in the
/// same folder, renamed over `path` once everything is written and flushed.
pub fn write_shard(path: &Path, tokens: &[u32], width: TokenWidth) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(DataError::io(dir))?;
    shear_io::write_atomic_path(path, |tmp| -> Result<()> {
        let file = std::fs::File::create(tmp).map_err(DataError::io(tmp))?;
        let mut w = std::io::BufWriter::new(file);
        for &t in tokens {
            let r = match width {
                TokenWidth::U16 => w.write_all(&(t as u16).to_le_bytes()),
                TokenWidth::U32 => w.write_all(&t.to_le_bytes()),
            };
            r.map_err(DataError::io(path))?;
        }
        w.flush().map_err(DataError::io(path))
    })
}

/// A memory-mapped shard: random access to sequence `i` without reading the rest.
pub struct Shard {
    /// `None` for an empty file (which cannot be mapped).
    map: Option<memmap2::Mmap>,
    path: PathBuf,
    width: TokenWidth,
    seq_len: usize,
    sequences: usize,
}

impl Shard {
    /// Opens `path`, holding `seq_len`-token sequences of `width`. The file size must be a
    /// whole number of sequences.
    pub fn open(path: &Path, width: TokenWidth, seq_len: usize) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(DataError::io(path))?;
        let len = file.metadata().map_err(DataError::io(path))?.len();
        if len == 0 && seq_len > 0 {
            return Ok(Shard {
                path: path.to_path_buf(),
                ..Shard::empty(width, seq_len)
            });
        }
        // SAFETY: the shard is only read; shear never writes a shard in place (new shards are
        // renamed over old ones, which leaves an existing map valid).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(DataError::io(path))?;
        // seq_len comes from a manifest: a row past usize saturates, and no file is a multiple.
        let row = seq_len.saturating_mul(width.bytes());
        if seq_len == 0 || map.len() % row != 0 {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                msg: format!(
                    "{} bytes is not a whole number of {seq_len}-token sequences of {width:?}",
                    map.len()
                ),
            });
        }
        Ok(Shard {
            sequences: map.len() / row,
            map: Some(map),
            path: path.to_path_buf(),
            width,
            seq_len,
        })
    }

    /// A shard with no sequences.
    pub fn empty(width: TokenWidth, seq_len: usize) -> Self {
        Shard {
            map: None,
            path: PathBuf::new(),
            width,
            seq_len,
            sequences: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.sequences
    }

    pub fn is_empty(&self) -> bool {
        self.sequences == 0
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Refuses a shard holding an id `>= vocab_size`: such an id would index past the
    /// embedding table inside the backend. The whole file is read once, in parallel (about
    /// 1 GB/s per core), when the shard is opened for a run.
    pub fn check_ids(&self, vocab_size: usize) -> Result<()> {
        use rayon::prelude::*;
        let Some(map) = self.map.as_ref() else {
            return Ok(());
        };
        let w = self.width.bytes();
        if self.width == TokenWidth::U16 && vocab_size > u16::MAX as usize {
            return Ok(());
        }
        let id = |b: &[u8]| match self.width {
            TokenWidth::U16 => u16::from_le_bytes([b[0], b[1]]) as usize,
            TokenWidth::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize,
        };
        const CHUNK: usize = 1 << 20;
        let bad = map
            .par_chunks(CHUNK * w)
            .enumerate()
            .find_map_first(|(c, bytes)| {
                bytes
                    .chunks_exact(w)
                    .position(|b| id(b) >= vocab_size)
                    .map(|k| c * CHUNK + k)
            });
        match bad {
            None => Ok(()),
            Some(at) => Err(DataError::Invalid {
                path: self.path.clone(),
                msg: format!(
                    "token id {} at sequence {}, position {} is outside the vocabulary of {} \
                     tokens",
                    id(&map[at * w..(at + 1) * w]),
                    at / self.seq_len,
                    at % self.seq_len,
                    vocab_size
                ),
            }),
        }
    }

    /// Appends sequence `i` to `out`. Panics if `i >= len()`.
    pub fn read_into(&self, i: usize, out: &mut Vec<u32>) {
        assert!(i < self.sequences, "sequence {i} of {}", self.sequences);
        let w = self.width.bytes();
        let map = self.map.as_ref().expect("a non-empty shard is mapped");
        let bytes = &map[i * self.seq_len * w..(i + 1) * self.seq_len * w];
        match self.width {
            TokenWidth::U16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32),
            ),
            TokenWidth::U32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }

    /// Sequence `i` as token ids, or `None` past the end.
    pub fn sequence(&self, i: usize) -> Option<Vec<u32>> {
        (i < self.sequences).then(|| {
            let mut v = Vec::with_capacity(self.seq_len);
            self.read_into(i, &mut v);
            v
        })
    }
}

/// A shard is a burn dataset of token sequences.
impl burn::data::dataset::Dataset<Vec<u32>> for Shard {
    fn get(&self, index: usize) -> Option<Vec<u32>> {
        self.sequence(index)
    }

    fn len(&self) -> usize {
        self.sequences
    }
}
