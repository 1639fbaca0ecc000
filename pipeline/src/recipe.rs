//! A recipe: one TOML file describing a whole run — source model and target shape, domains and
//! their data, dynamic batch loading, pruning, continued pre-training and evaluation.
//!
//! The sections are the libraries' own settings, not copies: `[prune]` is
//! [`PruneHyper`] + [`Mixture`] + [`Checkpointing`], `[train]` is [`TrainConfig`] + [`Mixture`] +
//! [`Checkpointing`], `[dynamic]` is [`Dynamic`] and `[run]` holds the [`Guard`]; their keys,
//! defaults and checks are those types' (the same as `shear prune` / `shear train`'s flags).
//! Every key has a default; an unknown key, a wrong type or an impossible value is an error
//! naming the key (`prune.steps`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shear_data::prepare::PrepareRecipe;
use shear_data::Proportions;
use shear_model::gguf::GgufType;
use shear_model::precision::Compute;
use shear_model::{Dtype, LlamaConfig, TargetShape, TargetSpec};
use shear_train::prune::{PruneConfig, PruneHyper};
use shear_train::trainer::TrainConfig;

use crate::controls::{Checkpointing, Guard};
pub use crate::error::RecipeError;
use crate::feed::{Dynamic, Mixture};
use crate::importance::PruneMethod;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ModelSection,
    pub data: PrepareRecipe,
    #[serde(default)]
    pub dynamic: Dynamic,
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
    #[serde(default)]
    pub export: ExportSection,
}

/// What a run writes besides the Hugging Face checkpoint of its final model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// Also write the final model as a llama.cpp GGUF file of this type (`f32`, `f16`, `bf16`,
    /// `q8_0`) next to its directory: `train/model.gguf` (docs/algorithm.md §14).
    pub gguf: Option<GgufType>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Model directory (relative to the recipe) or hub id.
    pub source: String,
    /// `layers=..,hidden=..,heads=..,kv_heads=..,intermediate=..`, or a preset name
    /// (`sheared-1.3b`, `sheared-2.7b`, `370m`; the key `preset` is the same).
    #[serde(alias = "preset")]
    pub target: TargetSpec,
    /// Storage dtype of the outputs (default: the source's).
    #[serde(default)]
    pub dtype: Option<Dtype>,
    /// Compute precision of pruning and training: `f32` (default) or `bf16` (mixed precision:
    /// bf16 matrix products, f32 weights and optimizer; for GPUs).
    #[serde(default)]
    pub precision: Compute,
}

/// Pruning (defaults: docs/algorithm.md §4.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PruneSection {
    /// `learned` (the default: masks under the Lagrangian) or `importance` (one-shot scores,
    /// docs/algorithm.md §15).
    pub method: PruneMethod,
    /// With `method = "importance"`: calibration batches of `batch` sequences.
    pub calibration_batches: usize,
    /// Distil from the source model while pruning (`distill_weight`, `distill_temperature`).
    pub distill: bool,
    #[serde(flatten)]
    pub hyper: PruneHyper,
    #[serde(flatten)]
    pub mixture: Mixture,
    #[serde(flatten)]
    pub checkpoints: Checkpointing,
}

impl Default for PruneSection {
    fn default() -> Self {
        PruneSection {
            method: PruneMethod::default(),
            calibration_batches: 32,
            distill: false,
            hyper: PruneHyper::default(),
            mixture: Mixture::default(),
            checkpoints: Checkpointing::default(),
        }
    }
}

/// Continued pre-training (defaults: docs/algorithm.md §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSection {
    /// Run this stage at all.
    pub enabled: bool,
    /// Distil from the source model (`distill_weight`, `distill_temperature`).
    pub distill: bool,
    #[serde(flatten)]
    pub config: TrainConfig,
    /// `proportions` `auto` (the default) continues from the pruning stage's final weights
    /// (Paper §2.2), as `pruning` does.
    #[serde(flatten)]
    pub mixture: Mixture,
    #[serde(flatten)]
    pub checkpoints: Checkpointing,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            enabled: true,
            distill: false,
            config: TrainConfig::default(),
            mixture: Mixture::default(),
            checkpoints: Checkpointing::default(),
        }
    }
}

impl TrainSection {
    /// Whether training starts from the pruning stage's final weights.
    pub fn from_pruning(&self) -> bool {
        matches!(
            self.mixture.proportions,
            Proportions::Auto | Proportions::FromPruning
        )
    }
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

/// How the stages run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSection {
    /// Data-parallel peers (devices) of the pruning and training stages (`--devices`
    /// overrides it).
    pub devices: usize,
    #[serde(flatten)]
    pub guard: Guard,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            devices: 1,
            guard: Guard::default(),
        }
    }
}

/// What a recipe resolves to against its source model.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub target: TargetShape,
    /// The initial weights of continued pre-training; `None`: the pruning stage's final ones.
    pub train_weights: Option<Vec<f64>>,
    /// `None`: the source model's own eval losses (computed at run time).
    pub reference: Option<Vec<f64>>,
}

/// The keys of a settings type (its fields as serialized).
fn keys_of<T: Serialize + Default>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The sections made of several settings types, with each type's keys: a key of the section
/// must be one of them. Each part is read on its own so that an error names its key (serde
/// loses the key inside flattened structs).
fn check_part<T: DeserializeOwned + Serialize + Default>(
    section: &str,
    table: &toml::Table,
    seen: &mut Vec<String>,
) -> Result<(), RecipeError> {
    let keys = keys_of::<T>();
    let part: toml::Table = table
        .iter()
        .filter(|(k, _)| keys.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    seen.extend(keys);
    toml::Value::Table(part)
        .try_into::<T>()
        .map(|_| ())
        .map_err(|e| {
            // toml ends the message with the key: "invalid type: ... \nin `steps`".
            let text = e.to_string();
            RecipeError::from(match text.trim_end().rsplit_once("\nin `") {
                Some((msg, key)) => format!(
                    "{section}.{}: {}",
                    key.trim_end_matches('`'),
                    one_line(&msg)
                ),
                None => format!("[{section}] {}", one_line(&text)),
            })
        })
}

/// Unknown keys and wrong types in the sections built of flattened settings, named.
fn check_sections(table: &toml::Table) -> Result<(), RecipeError> {
    type Check = fn(&str, &toml::Table, &mut Vec<String>) -> Result<(), RecipeError>;
    let sections: [(&str, &[Check]); 4] = [
        (
            "prune",
            &[
                check_part::<PruneFlags>,
                check_part::<PruneHyper>,
                check_part::<Mixture>,
                check_part::<Checkpointing>,
            ],
        ),
        (
            "train",
            &[
                check_part::<TrainFlags>,
                check_part::<TrainConfig>,
                check_part::<Mixture>,
                check_part::<Checkpointing>,
            ],
        ),
        ("dynamic", &[check_part::<Dynamic>]),
        ("run", &[check_part::<RunOwn>, check_part::<Guard>]),
    ];
    for (name, parts) in sections {
        let Some(value) = table.get(name) else {
            continue;
        };
        let Some(section) = value.as_table() else {
            return Err(format!("`{name}` must be a table ([{name}])").into());
        };
        let mut seen = Vec::new();
        for check in parts {
            check(name, section, &mut seen)?;
        }
        if let Some(k) = section.keys().find(|k| !seen.contains(k)) {
            return Err(format!("unknown key `{name}.{k}` (known: {})", seen.join(", ")).into());
        }
    }
    Ok(())
}

/// The keys of `[prune]` that are its own (not a library's settings).
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct PruneFlags {
    method: PruneMethod,
    calibration_batches: usize,
    distill: bool,
}

/// The keys of `[train]` that are its own (not a library's settings).
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct TrainFlags {
    enabled: bool,
    distill: bool,
}

/// The keys of `[run]` that are its own.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct RunOwn {
    devices: usize,
}

fn one_line(e: &impl std::fmt::Display) -> String {
    e.to_string().trim().replace('\n', " ")
}

/// Applies one `KEY=VALUE` override (dotted key into tables, created when missing).
fn set_key(table: &mut toml::Table, assignment: &str) -> Result<(), RecipeError> {
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

impl Recipe {
    /// Parses a recipe; relative paths (data, tasks, a local source) become relative to it.
    pub fn from_toml_file(path: &Path) -> Result<Self, RecipeError> {
        Self::from_toml_file_with(path, &[])
    }

    /// As [`Recipe::from_toml_file`], with `KEY=VALUE` overrides applied first (`prune.steps=20`,
    /// `model.target="layers=2,..."`; a value that is not TOML is taken as a string).
    pub fn from_toml_file_with(path: &Path, overrides: &[String]) -> Result<Self, RecipeError> {
        let err = |msg: String| RecipeError::new(path, msg);
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| err(one_line(&e)))?;
        for o in overrides {
            set_key(&mut table, o).map_err(|e| e.at(path))?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let with = if overrides.is_empty() {
            ""
        } else {
            "with --set: "
        };
        let r = Self::from_table(table, base).map_err(|e| err(format!("{with}{}", e.msg)))?;
        r.check().map_err(|e| err(e.msg))?;
        Ok(r)
    }

    /// Parses recipe text whose relative paths are relative to `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<Self, RecipeError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| RecipeError::new(Path::new(""), one_line(&e)))?;
        Self::from_table(table, base)
    }

    fn from_table(table: toml::Table, base: &Path) -> Result<Self, RecipeError> {
        check_sections(&table)?;
        let r: Recipe = toml::Value::Table(table)
            .try_into()
            .map_err(|e| RecipeError::from(one_line(&e)))?;
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

    /// Checks what can be checked without the source model, with the stages' own checks
    /// (the settings types' `validate`): every count positive, every rate finite and in range,
    /// warm-ups within the steps, the reference losses readable, the task files present. Run
    /// when the recipe is read, so a bad value stops the run before any work.
    pub fn check(&self) -> Result<(), RecipeError> {
        self.data.validate().map_err(|e| format!("[data] {e}"))?;
        for (key, v) in [
            ("eval.max_sequences", self.eval.max_sequences),
            ("dynamic.eval_sequences", self.dynamic.eval_sequences),
        ] {
            if v == Some(0) {
                return Err(format!("{key} = 0: must be positive (leave it out for all)").into());
            }
        }
        for (key, v) in [
            ("eval.batch", self.eval.batch),
            ("dynamic.eval_batch", self.dynamic.eval_batch),
            ("run.devices", self.run.devices),
        ] {
            if v == 0 {
                return Err(format!("{key} = 0: must be positive").into());
            }
        }
        let (p, t) = (&self.prune, &self.train);
        let section = |name: &str, r: crate::Result<()>| r.map_err(|e| format!("[{name}] {e}"));
        section("prune", p.hyper.validate().map_err(Into::into))?;
        section("prune", p.checkpoints.validate())?;
        section("prune", self.stage_data(&p.mixture).validate())?;
        section("train", t.config.validate().map_err(Into::into))?;
        section("train", t.checkpoints.validate())?;
        section("train", self.stage_data(&t.mixture).validate())?;
        if p.mixture.proportions == Proportions::FromPruning {
            return Err(
                "[prune] proportions `pruning`: only [train] continues from a pruning stage".into(),
            );
        }
        for task in &self.eval.tasks {
            if !task.is_file() {
                return Err(format!("[eval] tasks: {} does not exist", task.display()).into());
            }
        }
        Ok(())
    }

    /// A stage's data options as its checks see them (the data folder is the run's).
    fn stage_data(&self, mixture: &Mixture) -> crate::feed::DataOptions {
        crate::feed::DataOptions {
            mixture: mixture.clone(),
            dynamic: self.dynamic.clone(),
            ..crate::feed::DataOptions::new("data")
        }
    }

    /// Checks that every domain's files or folders exist (not part of [`Recipe::check`]: a
    /// recipe can be checked before its corpus is downloaded).
    pub fn check_data_present(&self) -> Result<(), RecipeError> {
        for d in &self.data.domains {
            if let Some(p) = d.paths.iter().find(|p| !p.exists()) {
                return Err(RecipeError::from(format!(
                    "[data] domain `{}`: {} does not exist",
                    d.name,
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// The pruning stage's configuration for `target`.
    pub fn prune_config(&self, target: TargetShape) -> PruneConfig {
        PruneConfig::new(target, self.prune.hyper.clone())
    }

    /// Checks the recipe against the source's config and resolves the target, the initial
    /// weights (by the domains' shares of `tokens`, when proportions say so) and the reference
    /// losses.
    pub fn resolve(&self, source: &LlamaConfig, tokens: &[u64]) -> Result<Resolved, RecipeError> {
        self.check()?;
        let spec = &self.model.target;
        let target = spec
            .resolve(source)
            .map_err(|e| format!("[model] target ({spec}): {e}"))?;
        target
            .validate(source, self.prune.hyper.prune)
            .map_err(|e| format!("[model] target ({target}): {e}"))?;
        let domains: Vec<String> = self.data.domains.iter().map(|d| d.name.clone()).collect();
        self.prune
            .mixture
            .proportions
            .resolve(&domains, tokens)
            .map_err(|e| format!("[prune] proportions: {e}"))?;
        let train = &self.train;
        let train_weights = match train.from_pruning() {
            true => None,
            false => Some(
                train
                    .mixture
                    .proportions
                    .resolve(&domains, tokens)
                    .map_err(|e| format!("[train] proportions: {e}"))?,
            ),
        };
        let target_params = target.config(source).param_counts().total();
        let reference = self
            .dynamic
            .reference
            .resolve(&domains, target_params as f64)
            .map_err(|e| format!("[dynamic] reference: {e}"))?;
        Ok(Resolved {
            target,
            train_weights,
            reference,
        })
    }
}
