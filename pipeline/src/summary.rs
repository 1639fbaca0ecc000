//! `run.json`: what a `shear run` did, typed. The report reads it back.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shear_model::{ExpectedShape, LlamaConfig};

use shear_train::eval::{DomainLoss, TaskScore};

use crate::recipe::Recipe;

/// A model shape with its parameter count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub params: usize,
}

impl Shape {
    pub fn of(c: &LlamaConfig) -> Self {
        Shape {
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            intermediate: c.intermediate_size,
            params: c.param_counts().total(),
        }
    }
}

/// The loss of one text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextLoss {
    pub file: PathBuf,
    /// Predicted tokens (the text's tokens minus one).
    pub tokens: usize,
    pub loss: f64,
    pub perplexity: f64,
}

/// A model's evaluation, as run.json holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub params: usize,
    pub domains: Vec<DomainLoss>,
    pub tasks: Vec<TaskScore>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts: Vec<TextLoss>,
}

impl ModelMetrics {
    /// Mean of the per-domain losses.
    pub fn mean_loss(&self) -> f64 {
        let n = self.domains.len().max(1) as f64;
        self.domains.iter().map(|d| d.loss).sum::<f64>() / n
    }

    pub fn losses(&self) -> Vec<f64> {
        self.domains.iter().map(|d| d.loss).collect()
    }
}

/// How long a stage took, and whether it was skipped as already complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub name: String,
    pub seconds: f64,
    pub skipped: bool,
    /// Tokens the stage trained on (pruning and training stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
}

/// The evaluations of the run's models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub source: ModelMetrics,
    pub pruned: ModelMetrics,
    /// After continued pre-training (absent when the recipe has none).
    #[serde(rename = "final", default, skip_serializing_if = "Option::is_none")]
    pub final_: Option<ModelMetrics>,
}

impl Metrics {
    /// The last model's metrics (final, else pruned).
    pub fn last(&self) -> &ModelMetrics {
        self.final_.as_ref().unwrap_or(&self.pruned)
    }
}

/// The materialized shape against the target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeReached {
    #[serde(flatten)]
    pub shape: Shape,
    pub reached: bool,
    /// The expected shape at the last pruning step.
    pub final_expected: Option<ExpectedShape>,
}

/// The baselines of `shear run --compare` (the paper's claims in miniature).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareSummary {
    /// Tokens of pruning + continued training (what the from-scratch baseline gets).
    pub tokens: u64,
    pub scratch_steps: usize,
    /// The reference losses the gaps are measured against (those the stages used).
    pub reference: Vec<f64>,
    /// Where `reference` comes from: `source`, `scaling` or `values`.
    #[serde(default)]
    pub reference_kind: String,
    /// The source model's own eval losses (the second reference the gaps are reported against;
    /// equal to `reference` when that is `source`).
    #[serde(default)]
    pub source_reference: Vec<f64>,
    pub scratch: ModelMetrics,
    #[serde(rename = "static")]
    pub static_: ModelMetrics,
    pub shape: ShapeReached,
}

/// `run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub shear_version: String,
    pub recipe_file: PathBuf,
    pub recipe: Recipe,
    pub source: PathBuf,
    pub source_shape: Shape,
    pub target: Shape,
    pub stages: Vec<StageTiming>,
    pub wall_seconds: f64,
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSummary>,
    pub final_model: PathBuf,
    /// The final model as a llama.cpp GGUF file (`[export] gguf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<PathBuf>,
}

impl RunSummary {
    /// Reads `dir/run.json`.
    pub fn read(dir: &Path) -> crate::Result<Self> {
        Ok(shear_io::read_json(&dir.join("run.json"))?)
    }
}
