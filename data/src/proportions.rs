//! Domain proportions (docs/algorithm.md §6.3): the initial weights of dynamic batch loading, and how the
//! prune/train token budgets of `data prepare` are shared out among domains.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The RedPajama (LLaMA-1) mixture used to start pruning (docs/algorithm.md §6.3), by domain name.
pub const REDPAJAMA: [(&str, f64); 7] = [
    ("cc", 0.67),
    ("github", 0.045),
    ("book", 0.045),
    ("stackexchange", 0.02),
    ("wiki", 0.045),
    ("arxiv", 0.025),
    ("c4", 0.15),
];

/// How much of each domain to use.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Proportions {
    /// RedPajama's (LLaMA-1) mixture, [`REDPAJAMA`] (the domains must be its seven).
    Redpajama,
    /// The same weight for every domain.
    Uniform,
    /// By each domain's token count.
    Tokens,
    /// The best informed start: RedPajama's when the domains are exactly its seven, else by
    /// token count; in a recipe's continued pre-training, the pruning stage's final weights.
    #[default]
    Auto,
    /// The pruning stage's final weights (docs/algorithm.md §6.3): only in a recipe's
    /// continued pre-training, which follows a pruning stage.
    FromPruning,
    /// A weight for every domain, by name.
    Explicit(BTreeMap<String, f64>),
}

const NAMES: [(&str, Proportions); 5] = [
    ("redpajama", Proportions::Redpajama),
    ("uniform", Proportions::Uniform),
    ("tokens", Proportions::Tokens),
    ("auto", Proportions::Auto),
    ("pruning", Proportions::FromPruning),
];

impl fmt::Display for Proportions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Proportions::Explicit(m) = self {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return write!(f, "{}", parts.join(","));
        }
        let name = NAMES
            .iter()
            .find(|(_, p)| p == self)
            .map_or("?", |(n, _)| n);
        f.write_str(name)
    }
}

/// `redpajama` | `uniform` | `tokens` | `auto` | `pruning` | `cc=0.5,github=0.5,...`
impl FromStr for Proportions {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        if s.contains('=') {
            return parse_named_numbers(s).map(Proportions::Explicit);
        }
        let name = s.trim();
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                DataError::Weights(format!(
                    "unknown proportions `{name}` (expected redpajama, uniform, tokens, auto, \
                     pruning, or name=weight pairs)"
                ))
            })
    }
}

/// A name as a string, explicit weights as a table (recipes, checkpoints).
impl Serialize for Proportions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Proportions::Explicit(m) => m.serialize(s),
            named => s.collect_str(named),
        }
    }
}

impl<'de> Deserialize<'de> for Proportions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Name(String),
            Table(BTreeMap<String, f64>),
        }
        match Form::deserialize(d)? {
            Form::Name(n) => n.parse().map_err(serde::de::Error::custom),
            Form::Table(m) => Ok(Proportions::Explicit(m)),
        }
    }
}

/// `name=value,name=value` → map; an error names the bad entry.
pub fn parse_named_numbers(s: &str) -> Result<BTreeMap<String, f64>> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| DataError::Weights(format!("`{part}` is not name=value")))?;
        let v: f64 = v
            .trim()
            .parse()
            .map_err(|_| DataError::Weights(format!("`{part}`: `{v}` is not a number")))?;
        if m.insert(k.trim().to_string(), v).is_some() {
            return Err(DataError::Weights(format!("domain `{k}` given twice")));
        }
    }
    Ok(m)
}

/// The RedPajama weight of `name` (`c4-rp` is accepted for `c4`).
fn redpajama(name: &str) -> Option<f64> {
    let name = if name == "c4-rp" { "c4" } else { name };
    REDPAJAMA.iter().find(|(n, _)| *n == name).map(|(_, w)| *w)
}

impl Proportions {
    /// Weights for `domains` (in that order), summing to 1. `tokens[i]` is domain i's token
    /// count (used by `tokens` and `auto`).
    pub fn resolve(&self, domains: &[String], tokens: &[u64]) -> Result<Vec<f64>> {
        let w = match self {
            Proportions::Uniform => vec![1.0 / domains.len() as f64; domains.len()],
            Proportions::Tokens => by_tokens(tokens)?,
            Proportions::Redpajama => domains
                .iter()
                .map(|d| {
                    redpajama(d).ok_or_else(|| {
                        DataError::Weights(format!(
                            "`redpajama` has no weight for domain `{d}` (its domains: cc, \
                             github, book, stackexchange, wiki, arxiv, c4)"
                        ))
                    })
                })
                .collect::<Result<_>>()?,
            Proportions::Auto => {
                let all = domains.len() == REDPAJAMA.len()
                    && domains.iter().all(|d| redpajama(d).is_some());
                let p = if all {
                    Proportions::Redpajama
                } else {
                    Proportions::Tokens
                };
                return p.resolve(domains, tokens);
            }
            Proportions::FromPruning => {
                return Err(DataError::Weights(
                    "`pruning` continues from a pruning stage's final weights: only a \
                     recipe's [train] follows one"
                        .into(),
                ))
            }
            Proportions::Explicit(m) => {
                for k in m.keys() {
                    if !domains.contains(k) {
                        return Err(DataError::Weights(format!(
                            "domain `{k}` has a weight but no data (domains: {})",
                            domains.join(", ")
                        )));
                    }
                }
                let w: Vec<f64> = domains
                    .iter()
                    .map(|d| {
                        m.get(d).copied().ok_or_else(|| {
                            DataError::Weights(format!("domain `{d}` has data but no weight"))
                        })
                    })
                    .collect::<Result<_>>()?;
                check_weights(&w)?;
                w
            }
        };
        Ok(w)
    }
}

fn by_tokens(tokens: &[u64]) -> Result<Vec<f64>> {
    let total: u64 = tokens.iter().sum();
    if total == 0 {
        return Err(DataError::Weights("no tokens in any domain".into()));
    }
    Ok(tokens.iter().map(|&t| t as f64 / total as f64).collect())
}

/// Weights must be finite, non-negative and sum to 1 (within 1e-6).
pub fn check_weights(w: &[f64]) -> Result<()> {
    if let Some(x) = w.iter().find(|x| !x.is_finite() || **x < 0.0) {
        return Err(DataError::Weights(format!(
            "{x} is not a non-negative number"
        )));
    }
    let sum: f64 = w.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        return Err(DataError::Weights(format!(
            "they sum to {sum}, not 1 ({w:?})"
        )));
    }
    Ok(())
}
