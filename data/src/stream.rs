//! A plain token stream for pruning before the domain data pipeline: one corpus, read whole,
//! sampled as random contiguous windows with a seeded RNG.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::tokenizer::Tokenizer;

pub struct TokenStream {
    tokens: Vec<u32>,
}

impl TokenStream {
    /// Reads `path`: a `.txt` file is tokenized (BOS as the tokenizer adds it, EOS appended);
    /// any other file holds token ids separated by whitespace or commas.
    pub fn from_file(path: &Path, tokenizer: Option<&Tokenizer>) -> Result<Self> {
        if path.is_dir() {
            return Err(DataError::Invalid {
                path: path.to_path_buf(),
                msg: "a folder without manifest.json: not prepared data (`shear data prepare` \
                      makes it), nor a text or token-id file"
                    .into(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(DataError::io(path))?;
        let tokens = if path.extension().is_some_and(|e| e == "txt") {
            let tok = tokenizer.ok_or_else(|| DataError::Tokenizer {
                path: path.to_path_buf(),
                msg: "a .txt corpus needs the model's tokenizer.json".into(),
            })?;
            let mut ids = tok.encode(&text, true)?;
            if let Some(eos) = tok.token_to_id("</s>") {
                ids.push(eos);
            }
            ids
        } else {
            text.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|s| !s.is_empty())
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<u32>().map_err(|_| DataError::Invalid {
                        path: path.to_path_buf(),
                        msg: format!("token {} (`{s}`) is not a token id", i + 1),
                    })
                })
                .collect::<Result<Vec<u32>>>()?
        };
        Ok(TokenStream { tokens })
    }

    pub fn from_tokens(tokens: Vec<u32>) -> Self {
        TokenStream { tokens }
    }

    /// The token ids.
    pub fn into_tokens(self) -> Vec<u32> {
        self.tokens
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn max_token(&self) -> Option<u32> {
        self.tokens.iter().copied().max()
    }

    /// `batch` windows of `seq` tokens starting at offsets drawn from `rng`, row-major.
    pub fn sample(&self, rng: &mut impl rand::Rng, batch: usize, seq: usize) -> Vec<u32> {
        let last = self.tokens.len().saturating_sub(seq);
        let mut out = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let start = rng.random_range(0..=last);
            out.extend_from_slice(&self.tokens[start..start + seq]);
        }
        out
    }
}
