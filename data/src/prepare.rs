//! `data prepare` (docs/algorithm.md §8): corpus files → tokenized, packed, split, per-domain token shards
//! plus a manifest.
//!
//! Per domain: read every document (sorted file order), tokenize in parallel (BOS as the
//! tokenizer's post-processor adds it, EOS appended), shuffle the documents with the seed, then
//! give whole documents to `eval` until it has `eval_sequences` sequences, then to `prune` until
//! its budget, then to `train`. Each split packs its documents back to back into `seq_len`
//! sequences (documents cross sequence boundaries, as in the reference); the tokens that do not
//! fill a last sequence are dropped, never handed to another split, so the splits are disjoint
//! by document.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::corpus::{collect_files, read_documents, SourceFile};
use crate::error::{DataError, Result};
use crate::manifest::{DomainManifest, Manifest, Split, SplitInfo, FORMAT};
use crate::proportions::Proportions;
use crate::shard::{write_shard, TokenWidth};
use crate::tokenizer::{hex, Tokenizer};

/// One domain: a name and its files or folders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    pub name: String,
    pub paths: Vec<PathBuf>,
}

/// The `[data]` part of a recipe: what `data prepare` builds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareRecipe {
    #[serde(rename = "domain")]
    pub domains: Vec<DomainSpec>,
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// JSONL field holding a document's text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Held-out sequences per domain (docs/algorithm.md §8: 500 in the paper).
    #[serde(default = "default_eval_sequences")]
    pub eval_sequences: usize,
    /// Total tokens of the prune split, shared out by `proportions`; without it, each domain
    /// gives `prune_fraction` of its non-eval tokens.
    #[serde(default)]
    pub prune_tokens: Option<u64>,
    /// Total tokens of the train split, shared out by `proportions`; without it, all the rest.
    #[serde(default)]
    pub train_tokens: Option<u64>,
    #[serde(default = "default_prune_fraction")]
    pub prune_fraction: f64,
    /// How the token budgets are shared out among domains.
    #[serde(default)]
    pub proportions: Proportions,
}

fn default_seq_len() -> usize {
    4096
}
fn default_seed() -> u64 {
    42
}
fn default_text_field() -> String {
    "text".into()
}
fn default_eval_sequences() -> usize {
    500
}
fn default_prune_fraction() -> f64 {
    0.5
}

impl PrepareRecipe {
    pub fn new(domains: Vec<DomainSpec>) -> Self {
        PrepareRecipe {
            domains,
            seq_len: default_seq_len(),
            seed: default_seed(),
            text_field: default_text_field(),
            eval_sequences: default_eval_sequences(),
            prune_tokens: None,
            train_tokens: None,
            prune_fraction: default_prune_fraction(),
            proportions: Proportions::default(),
        }
    }

    /// Reads a TOML recipe; the data part is its `[data]` table (or the whole file).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| DataError::Invalid {
                path: path.to_path_buf(),
                msg: e.to_string().trim().replace('\n', " "),
            })?;
        let data = match value.get("data") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => value,
        };
        let mut recipe: PrepareRecipe =
            data.try_into()
                .map_err(|e: toml::de::Error| DataError::Invalid {
                    path: path.to_path_buf(),
                    msg: e.to_string().trim().replace('\n', " "),
                })?;
        // Relative corpus paths are relative to the recipe.
        let base = path.parent().unwrap_or(Path::new("."));
        for d in &mut recipe.domains {
            for p in &mut d.paths {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(recipe)
    }

    /// Checks the settings (domains named once, each with files; `seq_len` ≥ 2; fractions,
    /// counts and token budgets in range) without reading any file.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Recipe(m));
        if self.domains.is_empty() {
            return bad("no domains".into());
        }
        for (i, d) in self.domains.iter().enumerate() {
            if d.name.is_empty() || d.name.contains(['/', '\\', '=', ',']) {
                return bad(format!(
                    "domain name `{}` (no '/', '\\\\', '=' or ',')",
                    d.name
                ));
            }
            if self.domains[..i].iter().any(|e| e.name == d.name) {
                return bad(format!("domain `{}` given twice", d.name));
            }
            if d.paths.is_empty() {
                return Err(DataError::domain(&d.name, "no files or folders given"));
            }
        }
        if self.seq_len < 2 {
            return bad(format!("seq_len {} (at least 2)", self.seq_len));
        }
        if !(0.0..=1.0).contains(&self.prune_fraction) {
            return bad(format!(
                "prune_fraction {} (between 0 and 1)",
                self.prune_fraction
            ));
        }
        if self.eval_sequences == 0 {
            return bad(
                "eval_sequences 0 (at least 1: dynamic loading evaluates every domain)".into(),
            );
        }
        for (name, v) in [
            ("prune_tokens", self.prune_tokens),
            ("train_tokens", self.train_tokens),
        ] {
            if v == Some(0) {
                return bad(format!(
                    "{name} 0 (at least 1; leave it out for the default)"
                ));
            }
        }
        Ok(())
    }
}

/// Progress of `prepare`, reported after every chunk of documents.
#[derive(Clone, Debug)]
pub struct PrepareProgress<'a> {
    pub domain: &'a str,
    pub tokens: u64,
}

/// What `prepare` did.
#[derive(Clone, Debug)]
pub struct PrepareReport {
    /// The shards were already there for these inputs: nothing was done.
    pub up_to_date: bool,
    pub manifest: Manifest,
    /// Tokens produced by the tokenizer (0 when up to date).
    pub tokens: u64,
    /// Seconds spent tokenizing.
    pub tokenize_seconds: f64,
    /// Budgets that a domain could not fill.
    pub warnings: Vec<String>,
}

impl PrepareReport {
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.tokenize_seconds.max(1e-9)
    }
}

/// Documents per parallel tokenization chunk (progress is reported after each).
const CHUNK: usize = 512;

/// Builds the shards and manifest of `recipe` in `out` (see the module docs).
pub fn prepare(
    recipe: &PrepareRecipe,
    tokenizer: &Tokenizer,
    out: &Path,
    progress: &mut dyn FnMut(PrepareProgress),
) -> Result<PrepareReport> {
    recipe.validate()?;
    let sources: Vec<Vec<SourceFile>> = recipe
        .domains
        .iter()
        .map(|d| {
            let files = collect_files(&d.paths)?;
            if files.is_empty() {
                return Err(DataError::domain(
                    &d.name,
                    "empty domain: no .jsonl, .jsonl.gz, .jsonl.zst or .txt files",
                ));
            }
            Ok(files)
        })
        .collect::<Result<_>>()?;
    let tokenizer_fingerprint = tokenizer.fingerprint()?;
    let inputs_fingerprint = {
        use sha2::Digest;
        let key = serde_json::json!({
            "format": FORMAT, "recipe": recipe, "sources": sources,
            "tokenizer": tokenizer_fingerprint,
        });
        format!(
            "sha256:{}",
            hex(&sha2::Sha256::digest(key.to_string().as_bytes()))
        )
    };
    if let Ok(m) = Manifest::read(out) {
        if m.inputs_fingerprint == inputs_fingerprint && m.shards_complete(out) {
            return Ok(PrepareReport {
                up_to_date: true,
                manifest: m,
                tokens: 0,
                tokenize_seconds: 0.0,
                warnings: vec![],
            });
        }
    }
    // Tokenize every domain (documents kept in memory: ~4 bytes per token).
    let eos = tokenizer.eos_id();
    let start = Instant::now();
    let mut docs_per_domain: Vec<Vec<Vec<u32>>> = Vec::new();
    let mut total_tokens = 0u64;
    for (spec, files) in recipe.domains.iter().zip(&sources) {
        let mut docs = Vec::new();
        let mut domain_tokens = 0u64;
        for f in files {
            let texts = read_documents(&f.path, &recipe.text_field)?;
            for chunk in texts.chunks(CHUNK) {
                let ids = tokenizer.encode_documents(chunk, eos)?;
                domain_tokens += ids.iter().map(|d| d.len() as u64).sum::<u64>();
                docs.extend(ids);
                progress(PrepareProgress {
                    domain: &spec.name,
                    tokens: total_tokens + domain_tokens,
                });
            }
        }
        if docs.is_empty() {
            return Err(DataError::domain(
                &spec.name,
                format!("empty domain: no documents in its {} file(s)", files.len()),
            ));
        }
        total_tokens += domain_tokens;
        docs_per_domain.push(docs);
    }
    let tokenize_seconds = start.elapsed().as_secs_f64();

    let names: Vec<String> = recipe.domains.iter().map(|d| d.name.clone()).collect();
    let tokens: Vec<u64> = docs_per_domain
        .iter()
        .map(|d| d.iter().map(|x| x.len() as u64).sum())
        .collect();
    let weights = recipe.proportions.resolve(&names, &tokens)?;
    let vocab_size = tokenizer.vocab_size();
    let width = TokenWidth::for_vocab(vocab_size);
    let seq = recipe.seq_len;
    let mut warnings = Vec::new();
    let mut domains = Vec::new();
    let mut shards = Vec::new();
    for (i, docs) in docs_per_domain.into_iter().enumerate() {
        let name = &names[i];
        let mut order: Vec<usize> = (0..docs.len()).collect();
        order.shuffle(&mut domain_rng(recipe.seed, name));
        let mut next = 0usize;
        let take = |next: &mut usize, want| pack(&docs, &order, next, want, seq);
        let eval_tokens = recipe.eval_sequences * seq;
        let (eval, eval_docs) = take(&mut next, Some(recipe.eval_sequences));
        if eval.len() < eval_tokens {
            return Err(DataError::domain(
                name,
                format!(
                    "{} tokens in {} documents: too few for {} eval sequences of {seq} tokens \
                     and data to train on (lower eval_sequences or seq_len, or add data)",
                    tokens[i],
                    order.len(),
                    recipe.eval_sequences
                ),
            ));
        }
        let rest: u64 = order[next..].iter().map(|&d| docs[d].len() as u64).sum();
        let prune_want = match recipe.prune_tokens {
            Some(t) => (t as f64 * weights[i] / seq as f64).round() as usize,
            None => (rest as f64 * recipe.prune_fraction / seq as f64).floor() as usize,
        };
        let (prune, prune_docs) = take(&mut next, Some(prune_want));
        let train_want = recipe
            .train_tokens
            .map(|t| (t as f64 * weights[i] / seq as f64).round() as usize);
        let (train, train_docs) = take(&mut next, train_want);
        for (split, want, got) in [
            (Split::Prune, Some(prune_want), prune.len() / seq),
            (Split::Train, train_want, train.len() / seq),
        ] {
            if let Some(w) = want.filter(|&w| got < w) {
                warnings.push(format!(
                    "domain `{name}`: {} split has {got} of the {w} sequences its budget asks for",
                    split.name()
                ));
            }
        }
        if prune.is_empty() && train.is_empty() {
            return Err(DataError::domain(
                name,
                format!(
                    "{} tokens: nothing left for the prune and train splits after {} eval \
                     sequences",
                    tokens[i], recipe.eval_sequences
                ),
            ));
        }
        let mut splits = std::collections::BTreeMap::new();
        let mut data = Vec::new();
        for (split, toks, n_docs) in [
            (Split::Eval, eval, eval_docs),
            (Split::Prune, prune, prune_docs),
            (Split::Train, train, train_docs),
        ] {
            let file = PathBuf::from(split.name()).join(format!("{name}.bin"));
            splits.insert(
                split,
                SplitInfo {
                    file: file.clone(),
                    sequences: toks.len() / seq,
                    documents: n_docs,
                },
            );
            data.push((file, toks));
        }
        domains.push(DomainManifest {
            name: name.clone(),
            sources: sources[i].clone(),
            documents: order.len(),
            tokens: tokens[i],
            splits,
        });
        shards.push(data);
    }
    // Nothing is written until every domain has been split without error. What a killed
    // preparation left half-written (temporaries) goes first.
    std::fs::create_dir_all(out).map_err(DataError::io(out))?;
    for dir in std::iter::once(out.to_path_buf()).chain(Split::ALL.map(|s| out.join(s.name()))) {
        shear_io::remove_temporaries(&dir)?;
    }
    // An old manifest must not describe the new shards while they are being written.
    let old = out.join(crate::manifest::MANIFEST);
    if old.exists() {
        std::fs::remove_file(&old).map_err(DataError::io(&old))?;
    }
    for (file, toks) in shards.iter().flatten() {
        write_shard(&out.join(file), toks, width)?;
    }
    let manifest = Manifest {
        format: FORMAT,
        seq_len: seq,
        token_width: width,
        vocab_size,
        tokenizer_fingerprint,
        inputs_fingerprint,
        seed: recipe.seed,
        domains,
    };
    manifest.write(out)?;
    Ok(PrepareReport {
        up_to_date: false,
        manifest,
        tokens: total_tokens,
        tokenize_seconds,
        warnings,
    })
}

/// Packs whole documents `order[*next..]` back to back until `want` sequences of `seq` tokens
/// are filled (all of them with `None`), advancing `next`. Returns the tokens of the complete
/// sequences and the number of documents used; the tail of the last document is dropped.
fn pack(
    docs: &[Vec<u32>],
    order: &[usize],
    next: &mut usize,
    want: Option<usize>,
    seq: usize,
) -> (Vec<u32>, usize) {
    let mut buf = Vec::new();
    let first = *next;
    while *next < order.len() && want.is_none_or(|w| buf.len() < w * seq) {
        buf.extend_from_slice(&docs[order[*next]]);
        *next += 1;
    }
    let n = buf.len() / seq;
    buf.truncate(want.map_or(n, |w| w.min(n)) * seq);
    (buf, *next - first)
}

/// The shuffling RNG of one domain: depends on the seed and the domain's name only, so adding
/// a domain does not change the others' splits.
fn domain_rng(seed: u64, name: &str) -> rand_chacha::ChaCha8Rng {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    let salt = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ salt)
}
