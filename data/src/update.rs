//! Domain-weight updates of dynamic batch loading (docs/algorithm.md §6.1, §6.2, §0.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// How the domain weights follow the per-domain loss gaps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateRule {
    /// The reference code (default, docs/algorithm.md §6.2): `a = softmax(ln w + η (ℓ − ℓ_ref))`, then
    /// `w' = (1 − c) a + c / k`, renormalised in f64. η = 1, c = 1e-4.
    Code,
    /// The paper (docs/algorithm.md §6.1): `w' ∝ w · exp(max(ℓ − ℓ_ref, 0))`.
    Paper,
    /// No change: static mixture.
    Constant,
}

/// η of the code rule.
pub const ETA: f64 = 1.0;
/// Uniform smoothing c of the code rule.
pub const SMOOTHING: f64 = 1e-4;

impl UpdateRule {
    /// New weights from the current ones, this evaluation's per-domain losses and the reference
    /// losses (all in domain order).
    pub fn apply(self, weights: &[f64], losses: &[f64], reference: &[f64]) -> Vec<f64> {
        let k = weights.len();
        assert!(
            losses.len() == k && reference.len() == k,
            "one value per domain"
        );
        let gaps = losses.iter().zip(reference).map(|(l, r)| l - r);
        let w: Vec<f64> = match self {
            UpdateRule::Constant => return weights.to_vec(),
            UpdateRule::Code => {
                let a: Vec<f64> = weights
                    .iter()
                    .zip(gaps)
                    .map(|(w, g)| w.ln() + ETA * g)
                    .collect();
                let max = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = a.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                e.iter()
                    .map(|x| (1.0 - SMOOTHING) * (x / sum) + SMOOTHING / k as f64)
                    .collect()
            }
            UpdateRule::Paper => weights
                .iter()
                .zip(gaps)
                .map(|(w, g)| w * g.max(0.0).exp())
                .collect(),
        };
        let sum: f64 = w.iter().sum();
        w.into_iter().map(|x| x / sum).collect()
    }
}

impl fmt::Display for UpdateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateRule::Code => "code",
            UpdateRule::Paper => "paper",
            UpdateRule::Constant => "constant",
        })
    }
}

impl FromStr for UpdateRule {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "code" => Ok(UpdateRule::Code),
            "paper" => Ok(UpdateRule::Paper),
            "constant" => Ok(UpdateRule::Constant),
            _ => Err(DataError::Parse(format!(
                "unknown update rule `{s}` (expected code, paper or constant)"
            ))),
        }
    }
}

/// One weight update, as logged (JSONL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateRecord {
    pub step: usize,
    pub rule: UpdateRule,
    pub domains: Vec<String>,
    pub losses: Vec<f64>,
    pub reference: Vec<f64>,
    /// `losses − reference`.
    pub gaps: Vec<f64>,
    pub weights_before: Vec<f64>,
    pub weights: Vec<f64>,
}
