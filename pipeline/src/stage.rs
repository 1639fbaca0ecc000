//! What a stage is: a [`Stage`] says what differs between the pruning and the training stage
//! (what to load, how to build its stepper, what to check and to write), and a [`Job`] says how
//! to run one; the skeleton that does the rest once is [`crate::runner::run`].

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shear_data::LoaderState;
use shear_model::precision::Compute;
use shear_model::{Dtype, Llama, LlamaConfig};
use shear_train::driver::Stepper;
use shear_train::execution::Execution;
use shear_train::peers::Topology;
use shear_train::Observer;

use crate::controls::{Checkpointing, Guard};
use crate::error::Result;
use crate::feed::{DataOptions, LoaderSpec};

/// A pruning or training run to do: its `settings` (what every checkpoint records and `Resume`
/// restores) and how to run it.
#[derive(Clone, Debug)]
pub struct Job<S> {
    pub settings: S,
    /// The run directory.
    pub out: PathBuf,
    /// Checkpoint cadence and retention (may change on resume).
    pub checkpoints: Checkpointing,
    /// Stop after this many steps in total (the schedules still follow the run's steps), with
    /// a checkpoint.
    pub stop_after: Option<usize>,
    pub resume: Resume,
    /// Storage dtype of the model written at the end (default: the input model's).
    pub dtype: Option<Dtype>,
    /// How each peer's steps run (workers, recomputation); its `peer` is set per peer.
    pub exec: Execution,
    /// Data-parallel peers: devices in this process, and the nodes of a multi-node run. A
    /// run's numbers do not depend on it beyond the order of floating-point sums.
    pub topology: Topology,
    /// Set (e.g. by a signal handler) to stop after the current step with a checkpoint: the
    /// run then ends with [`crate::PipelineError::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
    /// How many non-finite steps the run tolerates.
    pub guard: Guard,
    /// Called with the line that names a node of a multi-node run that went away (the binary
    /// prints it and exits: the peers' threads may be stuck in the collective).
    pub on_lost: Option<crate::watch::OnLost>,
}

impl<S> Job<S> {
    /// `settings` run in `out` with the default controls.
    pub fn new(settings: S, out: impl Into<PathBuf>) -> Self {
        Job {
            settings,
            out: out.into(),
            checkpoints: Checkpointing::default(),
            stop_after: None,
            resume: Resume::Fresh,
            dtype: None,
            exec: Execution::default(),
            topology: Topology::default(),
            stop: None,
            guard: Guard::default(),
            on_lost: None,
        }
    }
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Steps done (fewer than `total` when stopped early).
    pub steps: usize,
    /// Steps of the run.
    pub total: usize,
    /// The model written at the end (a Hugging Face checkpoint), when the run finished.
    pub model_dir: Option<PathBuf>,
}

/// Whether a stage starts afresh or continues from its newest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resume {
    /// Start at step 0; a directory that already holds checkpoints is refused.
    Fresh,
    /// Continue from the newest usable checkpoint with its settings (an unusable newer one is
    /// skipped with a warning); a setting named in `explicit` (`"*"`: all) that differs from the
    /// checkpoint's is refused. Without a checkpoint: a fresh start, announced with a warning
    /// when `warn_if_none` (the user asked for a resume).
    Newest {
        explicit: Vec<String>,
        warn_if_none: bool,
    },
}

/// The checkpoint a run continues from: its directory, step, loop state and loader state.
pub struct FromCheckpoint {
    pub dir: PathBuf,
    pub step: usize,
    pub loop_state: serde_json::Value,
    pub loader: Option<LoaderState>,
}

/// The autodiff backend the steps run on.
pub type AD<B> = Autodiff<B>;

/// What a stage's settings say about its run, whatever the stage: the model it starts from, its
/// data, how the loader reads it, and whether the settings can work.
pub trait StageSettings: Clone + Serialize + DeserializeOwned + Sync {
    /// The settings with absolute paths, so that a resume compares equal wherever it starts.
    fn canonical(&self) -> Self;
    /// The model the stage starts from (its config, tokenizer and stored dtype).
    fn model_dir(&self) -> &Path;
    fn data(&self) -> &DataOptions;
    fn precision(&self) -> Compute;
    /// How the data loader reads batches for the steps (its split, batch, accumulation,
    /// steps, seed, update interval and first evaluation), for a run of one peer.
    fn loader(&self) -> LoaderSpec;
    /// Refuses settings that cannot work with the model's `config`, before any work.
    fn check(&self, config: &LlamaConfig) -> Result<()>;
    /// The teacher of distillation the run loads (none at weight 0).
    fn teacher(&self) -> Option<&Path> {
        None
    }
}

/// What a stage is: the parts in which pruning and continued pre-training differ.
pub trait Stage {
    /// What every checkpoint records and a resume restores.
    type Settings: StageSettings;
    /// What is loaded once and shared by the local peers (the model to train, a teacher).
    type Loaded<B: Backend>: Sync;
    /// The optimizer step.
    type Stepper<B: Backend>: Stepper<AD<B>>;

    /// The step log in the run directory.
    const LOG: &'static str;
    /// The run, in messages (`pruning`, `training`).
    const WHAT: &'static str;
    /// Whether the step prunes (masks and multipliers beside the model: its memory, §13).
    const PRUNING: bool;

    /// The output's storage dtype when the job does not give one.
    fn stored_dtype(s: &Self::Settings) -> Result<Dtype>;
    /// The parameter count a scaling-law reference loss is read at (§6.4).
    fn reference_params(s: &Self::Settings, config: &LlamaConfig) -> f64;
    /// Loads what the peers share; `fresh` is false on resume (the weights are then the
    /// checkpoint's).
    fn load<B: Backend>(
        s: &Self::Settings,
        config: &LlamaConfig,
        fresh: bool,
        device: &B::Device,
        observer: &mut dyn Observer,
    ) -> Result<Self::Loaded<B>>;
    /// The already loaded model that is the `source` reference, if any.
    fn reference_model<B: Backend>(loaded: &Self::Loaded<B>) -> Option<Llama<B>>;
    /// The stepper of a fresh run, or of one resumed from `from`, running as `exec` says, on
    /// `device`.
    fn stepper<B: Backend>(
        loaded: &Self::Loaded<B>,
        s: &Self::Settings,
        from: Option<&FromCheckpoint>,
        exec: Execution,
        device: &B::Device,
    ) -> Result<Self::Stepper<B>>;
    /// Writes what a run leaves even when stopped early.
    fn after_loop<B: Backend>(_stepper: &Self::Stepper<B>, _out: &Path) -> Result<()> {
        Ok(())
    }
    /// Writes the outputs of a finished run into `out`; returns the final model's directory.
    fn finish<B: Backend>(
        stepper: &Self::Stepper<B>,
        s: &Self::Settings,
        out: &Path,
        dtype: Dtype,
    ) -> Result<PathBuf>;
}

/// Saves `model` as a Hugging Face checkpoint with the tokenizer files of `tokenizer_from`.
pub fn save_with_tokenizer<B: Backend>(
    model: &Llama<B>,
    dir: &Path,
    dtype: Dtype,
    tokenizer_from: &Path,
) -> Result<()> {
    shear_model::save_llama(model, dir, dtype)?;
    shear_model::checkpoint::copy_tokenizer_files(tokenizer_from, dir)?;
    Ok(())
}
