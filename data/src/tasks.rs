//! Zero-shot multiple-choice task files (lm-evaluation-harness style): JSONL with one item per
//! line, `{"context": "...", "choices": ["...", ...], "label": N}`.

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::tokenizer::Tokenizer;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McItem {
    pub context: String,
    pub choices: Vec<String>,
    /// Index of the correct choice.
    pub label: usize,
}

/// An item as token ids: the context (with BOS) and each choice's continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct McTokens {
    pub context: Vec<u32>,
    pub continuations: Vec<Vec<u32>>,
    /// Length of each choice's text in characters (for `acc_norm`).
    pub chars: Vec<usize>,
    pub label: usize,
}

/// Reads a task file; a bad line is an error naming the file and line.
pub fn read_tasks(path: &Path) -> Result<Vec<McItem>> {
    let file = std::fs::File::open(path).map_err(DataError::io(path))?;
    let mut items = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let at = |msg: String| DataError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let line = line.map_err(|e| at(format!("cannot read ({e})")))?;
        if line.trim().is_empty() {
            continue;
        }
        let item: McItem = serde_json::from_str(&line).map_err(|e| at(format!("{e}")))?;
        if item.choices.len() < 2 || item.label >= item.choices.len() {
            return Err(at(format!(
                "{} choices and label {}: need two or more choices and a label among them",
                item.choices.len(),
                item.label
            )));
        }
        // An empty choice adds no tokens, so its log-likelihood is 0, above every real choice.
        if let Some(k) = item.choices.iter().position(|c| c.trim().is_empty()) {
            return Err(at(format!(
                "choice {k} is empty: every choice needs text to score"
            )));
        }
        items.push(item);
    }
    if items.is_empty() {
        return Err(DataError::Invalid {
            path: path.to_path_buf(),
            msg: "no items".into(),
        });
    }
    Ok(items)
}

impl McItem {
    /// Tokenizes like the harness: the continuation is what `context + choice` adds to the
    /// tokens of `context` (so a merge across the boundary is scored as the model would see
    /// it); when the tokens of `context` are not a prefix, the choice is encoded on its own.
    pub fn tokenize(&self, tok: &Tokenizer) -> Result<McTokens> {
        let context = tok.encode(&self.context, true)?;
        let continuations = self
            .choices
            .iter()
            .map(|c| {
                let whole = tok.encode(&format!("{}{c}", self.context), true)?;
                if whole.len() > context.len() && whole.starts_with(&context) {
                    Ok(whole[context.len()..].to_vec())
                } else {
                    tok.encode(c, false)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(McTokens {
            context,
            continuations,
            chars: self.choices.iter().map(|c| c.chars().count()).collect(),
            label: self.label,
        })
    }
}
