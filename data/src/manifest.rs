//! The manifest of a prepared data folder (`manifest.json`): what each shard holds and where it
//! came from (docs/algorithm.md §8). Shards are `<split>/<domain>.bin` next to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::corpus::SourceFile;
use crate::error::{DataError, Result};
use crate::shard::{Shard, TokenWidth};
use crate::tokenizer::Tokenizer;

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: u32 = 1;

/// The three disjoint splits (by document).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Held-out sequences for per-domain losses (dynamic loading, evaluation).
    Eval,
    /// Data for the pruning stage.
    Prune,
    /// Data for continued pre-training.
    Train,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Eval, Split::Prune, Split::Train];

    pub fn name(self) -> &'static str {
        match self {
            Split::Eval => "eval",
            Split::Prune => "prune",
            Split::Train => "train",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Shard path relative to the manifest's folder.
    pub file: PathBuf,
    pub sequences: usize,
    /// Documents whose tokens are (at least partly) in this split.
    pub documents: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainManifest {
    pub name: String,
    pub sources: Vec<SourceFile>,
    pub documents: usize,
    /// Tokens of all documents, BOS/EOS included.
    pub tokens: u64,
    pub splits: BTreeMap<Split, SplitInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub seq_len: usize,
    pub token_width: TokenWidth,
    pub vocab_size: usize,
    pub tokenizer_fingerprint: String,
    /// Hash of everything the shards depend on (recipe, source files and sizes, tokenizer):
    /// re-running `data prepare` with the same value does nothing.
    pub inputs_fingerprint: String,
    pub seed: u64,
    pub domains: Vec<DomainManifest>,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(DataError::io(&path))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| DataError::Invalid {
            path: path.clone(),
            msg: format!("not a shear data manifest ({e})"),
        })?;
        if m.format != FORMAT {
            return Err(DataError::Invalid {
                path,
                msg: format!("manifest format {} (this shear reads {FORMAT})", m.format),
            });
        }
        Ok(m)
    }

    /// Writes `dir/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        Ok(shear_io::write_json_atomic(&dir.join(MANIFEST), self)?)
    }

    pub fn domain_names(&self) -> Vec<String> {
        self.domains.iter().map(|d| d.name.clone()).collect()
    }

    /// Whether every shard the manifest lists exists with the size it should have.
    pub fn shards_complete(&self, dir: &Path) -> bool {
        self.domains.iter().all(|d| {
            d.splits.values().all(|s| {
                // The counts come from the file: a size that overflows is no shard's size.
                let size = s
                    .sequences
                    .checked_mul(self.seq_len)
                    .and_then(|n| n.checked_mul(self.token_width.bytes()));
                std::fs::metadata(dir.join(&s.file))
                    .is_ok_and(|m| size.is_some_and(|size| m.len() == size as u64))
            })
        })
    }
}

/// A prepared data folder, opened for reading.
pub struct PreparedData {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl PreparedData {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(PreparedData {
            dir: dir.to_path_buf(),
            manifest: Manifest::read(dir)?,
        })
    }

    /// Whether `dir` looks like a prepared data folder.
    pub fn is_prepared(dir: &Path) -> bool {
        dir.join(MANIFEST).is_file()
    }

    /// Refuses shards made with another tokenizer than the model's.
    pub fn check_tokenizer(&self, tokenizer: &Tokenizer) -> Result<()> {
        let fp = tokenizer.fingerprint()?;
        if fp != self.manifest.tokenizer_fingerprint {
            return Err(DataError::Invalid {
                path: self.dir.join(MANIFEST),
                msg: format!(
                    "shards were made with another tokenizer (fingerprint {}) than {} ({fp}); \
                     run `shear data prepare` again with this model's tokenizer",
                    self.manifest.tokenizer_fingerprint,
                    tokenizer.path().display()
                ),
            });
        }
        Ok(())
    }

    /// Refuses shards holding ids outside a vocabulary of `vocab_size` tokens.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        if self.manifest.vocab_size > vocab_size {
            return Err(DataError::Invalid {
                path: self.dir.join(MANIFEST),
                msg: format!(
                    "shards use a vocabulary of {} tokens, the model has {vocab_size}",
                    self.manifest.vocab_size
                ),
            });
        }
        Ok(())
    }

    pub fn domains(&self) -> Vec<String> {
        self.manifest.domain_names()
    }

    /// The shard of every domain for `split`, in domain order (an empty shard where a domain
    /// has none).
    pub fn shards(&self, split: Split) -> Result<Vec<Shard>> {
        let m = &self.manifest;
        m.domains
            .iter()
            .map(|d| match d.splits.get(&split) {
                Some(info) => {
                    let shard = Shard::open(&self.dir.join(&info.file), m.token_width, m.seq_len)?;
                    if shard.len() != info.sequences {
                        return Err(DataError::Invalid {
                            path: shard.path().to_path_buf(),
                            msg: format!(
                                "{} sequences, the manifest says {}",
                                shard.len(),
                                info.sequences
                            ),
                        });
                    }
                    shard.check_ids(m.vocab_size)?;
                    Ok(shard)
                }
                None => Ok(Shard::empty(m.token_width, m.seq_len)),
            })
            .collect()
    }
}
