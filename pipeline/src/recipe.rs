//! A recipe: one TOML file describing a whole run — source model and target shape, domains and
//! their data, dynamic batch loading, pruning, continued pre-training and evaluation. Every key
//! has a default (below); fields are parsed into their types when the file is read, and an
//! unknown key, a wrong type or an impossible value is an error naming the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shear_data::prepare::PrepareRecipe;
use shear_data::{Proportions, ReferenceLoss, UpdateRule};
use shear_model::precision::Compute;
use shear_model::{Dtype, LayerMasks, LlamaConfig, PruneModules, TargetShape};
use shear_train::prune::PruneConfig;
use shear_train::trainer::{Distill, TrainConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ModelSection,
    pub data: PrepareRecipe,
    #[serde(default)]
    pub dynamic: DynamicSection,
    #[serde(default)]
    pub prune: PruneSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub eval: EvalSection,
    #[serde(default)]
    pub compare: CompareSection,
    #[serde(default)]
    pub run: RunSection,
}

/// How the stages run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Data-parallel peers (devices) of the pruning and training stages (`--devices`
    /// overrides it).
    #[serde(default = "one")]
    pub devices: usize,
}

fn one() -> usize {
    1
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection { devices: 1 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model directory (relative to the recipe) or hub id.
    pub source: String,
    /// `layers=..,hidden=..,heads=..,kv_heads=..,intermediate=..`; or `preset`.
    #[serde(default)]
    pub target: Option<TargetShape>,
    /// A named target (`shear prune --help` lists them).
    #[serde(default)]
    pub preset: Option<String>,
    /// Storage dtype of the outputs (default: the source's).
    #[serde(default)]
    pub dtype: Option<Dtype>,
    /// `layer` (default) or `head-layer-mlp`.
    #[serde(default)]
    pub layer_masks: LayerMasks,
    /// The dimensions to prune (default all: `hidden,heads,intermediate,layers`).
    #[serde(default)]
    pub prune: PruneModules,
    /// Compute precision of pruning and training: `f32` (default) or `bf16` (mixed precision:
    /// bf16 matrix products, f32 weights and optimizer; for GPUs).
    #[serde(default)]
    pub precision: Compute,
}

/// Reference losses: `"source"`, `"llama2"`, or a `values` / `scaling` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReferenceSpec {
    Named(String),
    Table(ReferenceLoss),
}

impl ReferenceSpec {
    pub fn to_loss(&self) -> Result<ReferenceLoss, String> {
        match self {
            ReferenceSpec::Named(n) => ReferenceLoss::parse(n).map_err(|e| e.to_string()),
            ReferenceSpec::Table(t) => Ok(t.clone()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicSection {
    /// `code` (default), `paper` or `constant`.
    #[serde(default = "default_rule")]
    pub update_rule: UpdateRule,
    /// Default `source`.
    #[serde(default = "default_reference")]
    pub reference: ReferenceSpec,
    #[serde(default = "default_eval_batch")]
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (default: all).
    #[serde(default)]
    pub eval_sequences: Option<usize>,
}

fn default_rule() -> UpdateRule {
    UpdateRule::Code
}
fn default_reference() -> ReferenceSpec {
    ReferenceSpec::Named("source".into())
}
fn default_eval_batch() -> usize {
    8
}

impl Default for DynamicSection {
    fn default() -> Self {
        DynamicSection {
            update_rule: default_rule(),
            reference: default_reference(),
            eval_batch: default_eval_batch(),
            eval_sequences: None,
        }
    }
}

/// Pruning (defaults: docs/algorithm.md §4.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneSection {
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch: usize,
    pub grad_accum: usize,
    pub lr_weights: f64,
    pub lr_masks: f64,
    pub lr_lambda: f64,
    /// Default 10 % of the steps.
    pub lr_warmup: Option<usize>,
    /// Default 20 % of the steps.
    pub lagrangian_warmup: Option<usize>,
    pub update_every: usize,
    /// Initial domain weights (`redpajama`, `uniform`, `tokens`, `auto`, or a table).
    pub proportions: Proportions,
    /// Checkpoint every this many steps (an interrupted stage resumes from the newest).
    pub save_every: usize,
    /// Keep the newest this many checkpoints (docs/algorithm.md §9); may change on resume.
    pub keep_checkpoints: usize,
    pub seed: u64,
    /// Hard-concrete temperature β (2/3: the reference code; 0.83: the paper).
    pub temperature: f64,
}

impl Default for PruneSection {
    fn default() -> Self {
        PruneSection {
            steps: 3200,
            batch: 4,
            grad_accum: 8,
            lr_weights: 1e-4,
            lr_masks: 1.0,
            lr_lambda: 1.0,
            lr_warmup: None,
            lagrangian_warmup: None,
            update_every: 50,
            proportions: Proportions::default(),
            save_every: 400,
            keep_checkpoints: 2,
            seed: 0,
            temperature: 2.0 / 3.0,
        }
    }
}

/// Continued pre-training (defaults: docs/algorithm.md §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Run this stage at all.
    pub enabled: bool,
    pub steps: usize,
    pub batch: usize,
    pub grad_accum: usize,
    pub lr: f64,
    /// Default 3 % of the steps.
    pub warmup: Option<usize>,
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub update_every: usize,
    /// Initial domain weights; `pruning` (default) continues from the pruning stage's final
    /// weights (Paper §2.2).
    pub proportions: Proportions,
    pub save_every: usize,
    /// Keep the newest this many checkpoints (docs/algorithm.md §9); may change on resume.
    pub keep_checkpoints: usize,
    pub seed: u64,
    /// Knowledge distillation from the source model (off by default).
    pub distill: Option<DistillSection>,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            enabled: true,
            steps: 48_000,
            batch: 16,
            grad_accum: 16,
            lr: 1e-4,
            warmup: None,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            update_every: 400,
            proportions: Proportions::Named("pruning".into()),
            save_every: 3200,
            keep_checkpoints: 2,
            seed: 0,
            distill: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    pub weight: f64,
    pub temperature: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Multiple-choice task files (relative to the recipe).
    pub tasks: Vec<PathBuf>,
    pub batch: usize,
    pub max_sequences: Option<usize>,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            tasks: vec![],
            batch: 8,
            max_sequences: None,
        }
    }
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().trim().replace('\n', " ")
}

/// Applies one `KEY=VALUE` override (dotted key into tables, created when missing).
fn set_key(table: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| format!("--set {assignment}: expected KEY=VALUE"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, path) = parts.split_last().expect("split yields one part");
    let mut t = table;
    for p in path {
        t = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("--set {assignment}: `{p}` is not a table"))?;
    }
    t.insert(last.to_string(), value);
    Ok(())
}

/// The baselines `shear run --compare` adds (the paper's claims in miniature): the target shape
/// trained from scratch on as many tokens as pruning + continued training used, and the same
/// pruning + continued training with a static mixture instead of dynamic batch loading.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompareSection {
    /// Peak learning rate of the from-scratch baseline (default: `train.lr`).
    pub scratch_lr: Option<f64>,
    /// Its warm-up steps (default: 3 % of its steps).
    pub scratch_warmup: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct RecipeError {
    pub path: PathBuf,
    pub msg: String,
}

/// What a recipe resolves to against its source model.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub target: TargetShape,
    pub target_params: usize,
    pub prune_weights: Vec<f64>,
    /// `None`: continue from the pruning stage's final weights.
    pub train_weights: Option<Vec<f64>>,
    /// `None`: the source model's own eval losses (computed at run time).
    pub reference: Option<Vec<f64>>,
}

impl Recipe {
    /// Parses a recipe; relative paths (data, tasks, a local source) become relative to it.
    pub fn from_toml_file(path: &Path) -> Result<Self, RecipeError> {
        Self::from_toml_file_with(path, &[])
    }

    /// As [`Recipe::from_toml_file`], with `KEY=VALUE` overrides applied first (`prune.steps=20`,
    /// `model.target="layers=2,..."`; a value that is not TOML is taken as a string).
    pub fn from_toml_file_with(path: &Path, overrides: &[String]) -> Result<Self, RecipeError> {
        let err = |msg: String| RecipeError {
            path: path.to_path_buf(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if overrides.is_empty() {
            let r = Self::from_toml_str(&text, base).map_err(|e| err(e.msg))?;
            r.check().map_err(err)?;
            return Ok(r);
        }
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| err(one_line(&e)))?;
        for o in overrides {
            set_key(&mut table, o).map_err(err)?;
        }
        let r: Recipe = toml::Value::Table(table)
            .try_into()
            .map_err(|e| err(format!("with --set: {}", one_line(&e))))?;
        let r = r.relative_to(base);
        r.check().map_err(err)?;
        Ok(r)
    }

    /// Parses recipe text whose relative paths are relative to `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<Self, RecipeError> {
        let r: Recipe = toml::from_str(text).map_err(|e| RecipeError {
            path: PathBuf::new(),
            msg: one_line(&e),
        })?;
        Ok(r.relative_to(base))
    }

    /// Makes relative paths (data, tasks, a local source) relative to `base`.
    fn relative_to(mut self, base: &Path) -> Self {
        let r = &mut self;
        for d in &mut r.data.domains {
            for p in &mut d.paths {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        for t in &mut r.eval.tasks {
            if t.is_relative() {
                *t = base.join(&*t);
            }
        }
        let local = base.join(&r.model.source);
        if Path::new(&r.model.source).is_relative() && local.exists() {
            r.model.source = local.to_string_lossy().into_owned();
        }
        self
    }

    /// Checks what can be checked without the source model: every count positive, every rate
    /// finite, the temperature a temperature, the reference losses readable, the task files
    /// present. Run when the recipe is read, so a bad value stops the run before any work.
    pub fn check(&self) -> Result<(), String> {
        if self.model.target.is_some() && self.model.preset.is_some() {
            return Err("[model]: give `target` or `preset`, not both".into());
        }
        if self.model.target.is_none() && self.model.preset.is_none() {
            return Err("[model]: give `target` or `preset`".into());
        }
        if self.data.domains.is_empty() {
            return Err("[data]: no domains".into());
        }
        self.data.validate().map_err(|e| format!("[data] {e}"))?;
        for (key, v) in [
            ("dynamic.eval_sequences", self.dynamic.eval_sequences),
            ("eval.max_sequences", self.eval.max_sequences),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{key} = 0: must be positive (leave it out for all)"
                ));
            }
        }
        let p = &self.prune;
        let t = &self.train;
        for (key, v) in [
            ("prune.steps", p.steps),
            ("prune.batch", p.batch),
            ("prune.grad_accum", p.grad_accum),
            ("prune.update_every", p.update_every),
            ("prune.keep_checkpoints", p.keep_checkpoints),
            ("train.steps", t.steps),
            ("train.batch", t.batch),
            ("train.grad_accum", t.grad_accum),
            ("train.update_every", t.update_every),
            ("train.keep_checkpoints", t.keep_checkpoints),
            ("dynamic.eval_batch", self.dynamic.eval_batch),
            ("eval.batch", self.eval.batch),
            ("run.devices", self.run.devices),
        ] {
            if v == 0 {
                return Err(format!("{key} must be positive"));
            }
        }
        for (key, v) in [
            ("prune.lr_weights", p.lr_weights),
            ("prune.lr_masks", p.lr_masks),
            ("prune.lr_lambda", p.lr_lambda),
            ("train.lr", t.lr),
            ("train.weight_decay", t.weight_decay),
            ("train.max_grad_norm", t.max_grad_norm),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{key} = {v}: must be a finite number ≥ 0"));
            }
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return Err(format!(
                "train.min_lr_ratio = {}: must be between 0 and 1",
                t.min_lr_ratio
            ));
        }
        // The stages' own checks (ranges, warm-ups within the steps, the temperatures), here
        // before any work; the target is checked against the source in `resolve`.
        let any_target = TargetShape {
            layers: 1,
            hidden: 1,
            heads: 1,
            kv_heads: 1,
            intermediate: 1,
        };
        self.prune_config(any_target)
            .validate_settings()
            .map_err(|e| format!("[prune] {e}"))?;
        TrainConfig::new(t.steps)
            .with_lr(t.lr)
            .with_warmup(t.warmup)
            .with_min_lr_ratio(t.min_lr_ratio)
            .with_weight_decay(t.weight_decay)
            .with_max_grad_norm(t.max_grad_norm)
            .with_grad_accum(t.grad_accum)
            .with_distill(t.distill.map(|d| Distill {
                weight: d.weight,
                temperature: d.temperature,
            }))
            .validate()
            .map_err(|e| format!("[train] {e}"))?;
        self.dynamic
            .reference
            .to_loss()
            .map_err(|e| format!("[dynamic] reference: {e}"))?;
        for task in &self.eval.tasks {
            if !task.is_file() {
                return Err(format!("[eval] tasks: {} does not exist", task.display()));
            }
        }
        Ok(())
    }

    /// Checks that every domain's files or folders exist (not part of [`Recipe::check`]: a
    /// recipe can be checked before its corpus is downloaded).
    pub fn check_data_present(&self) -> Result<(), String> {
        for d in &self.data.domains {
            if let Some(p) = d.paths.iter().find(|p| !p.exists()) {
                return Err(format!(
                    "[data] domain `{}`: {} does not exist",
                    d.name,
                    p.display()
                ));
            }
        }
        Ok(())
    }

    /// The pruning stage's configuration for `target`.
    pub fn prune_config(&self, target: TargetShape) -> PruneConfig {
        let (p, m) = (&self.prune, &self.model);
        PruneConfig::new(target, p.steps)
            .with_lr_warmup(p.lr_warmup)
            .with_lagrangian_warmup(p.lagrangian_warmup)
            .with_lr_weights(p.lr_weights)
            .with_lr_masks(p.lr_masks)
            .with_lr_lambda(p.lr_lambda)
            .with_grad_accum(p.grad_accum)
            .with_seed(p.seed)
            .with_temperature(p.temperature)
            .with_layer_masks(m.layer_masks)
            .with_prune(m.prune)
    }

    /// The target shape: the recipe's, or its preset for this source.
    pub fn target(&self, source: &LlamaConfig) -> Result<TargetShape, String> {
        match (&self.model.target, &self.model.preset) {
            (Some(t), None) => Ok(*t),
            (None, Some(p)) => {
                TargetShape::preset(p, source).map_err(|e| format!("[model] preset: {e}"))
            }
            _ => Err("[model]: give `target` or `preset`, not both".into()),
        }
    }

    /// Checks the recipe against the source's config and resolves the target, the initial
    /// weights (by the domains' shares of `tokens`, when proportions say so) and the reference
    /// losses.
    pub fn resolve(&self, source: &LlamaConfig, tokens: &[u64]) -> Result<Resolved, String> {
        self.check()?;
        let target = self.target(source)?;
        target
            .validate(source, self.model.prune)
            .map_err(|e| format!("[model] target ({target}): {e}"))?;
        let domains: Vec<String> = self.data.domains.iter().map(|d| d.name.clone()).collect();
        let p = &self.prune;
        let t = &self.train;
        let prune_weights = p
            .proportions
            .resolve(&domains, tokens)
            .map_err(|e| format!("[prune] proportions: {e}"))?;
        let train_weights = match &t.proportions {
            Proportions::Named(n) if n == "pruning" => None,
            other => Some(
                other
                    .resolve(&domains, tokens)
                    .map_err(|e| format!("[train] proportions: {e}"))?,
            ),
        };
        let target_params = target.config(source).param_counts().total();
        let reference = self
            .dynamic
            .reference
            .to_loss()
            .and_then(|r| {
                r.resolve(&domains, target_params as f64)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| format!("[dynamic] reference: {e}"))?;
        Ok(Resolved {
            target,
            target_params,
            prune_weights,
            train_weights,
            reference,
        })
    }
}
