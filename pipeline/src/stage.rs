//! What the pruning and training stages share around their loop: starting fresh or from the
//! newest checkpoint (with the checkpoint's settings, an explicitly conflicting option refused,
//! docs/algorithm.md §9), the step log cut back to the checkpoint's step, and the loop itself.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shear_data::LoaderState;
use shear_io::JsonlLog;
use shear_train::checkpoint::{read_state, reconcile, Checkpoints};
use shear_train::driver::{drive, Plan, Stepper};
use shear_train::source::BatchSource;
use shear_train::Observer;

use crate::error::{invalid, Result};

/// Whether a stage starts afresh or continues from its newest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resume {
    /// Start at step 0; a directory that already holds checkpoints is refused.
    Fresh,
    /// Continue from the newest checkpoint with its settings; a setting named in `explicit`
    /// (`"*"`: all) that differs from the checkpoint's is refused. Without a checkpoint: an
    /// error when `required`, else a fresh start.
    Newest {
        explicit: Vec<String>,
        required: bool,
    },
}

/// Where a stage's run begins.
pub(crate) struct Start<C> {
    /// The settings the run goes on with (the checkpoint's when resuming).
    pub settings: C,
    /// The checkpoint, its step, its loop state and its loader state.
    pub from: Option<FromCheckpoint>,
}

pub(crate) struct FromCheckpoint {
    pub dir: PathBuf,
    pub step: usize,
    pub loop_state: serde_json::Value,
    pub loader: Option<LoaderState>,
}

/// Decides where the run in `out` begins.
pub(crate) fn start<C: Serialize + DeserializeOwned>(
    out: &Path,
    requested: C,
    resume: &Resume,
) -> Result<Start<C>> {
    let checkpoints = Checkpoints::new(out.join("checkpoints"));
    let newest = checkpoints.newest();
    match (resume, newest) {
        (Resume::Fresh, Some(dir)) => invalid!(
            "{} holds checkpoints of an earlier run ({}); resume it, or choose another output \
             directory",
            out.display(),
            dir.display()
        ),
        (Resume::Fresh, None)
        | (
            Resume::Newest {
                required: false, ..
            },
            None,
        ) => Ok(Start {
            settings: requested,
            from: None,
        }),
        (Resume::Newest { required: true, .. }, None) => invalid!(
            "nothing to resume: no checkpoint in {}",
            checkpoints.dir().display()
        ),
        (Resume::Newest { explicit, .. }, Some(dir)) => {
            let state = read_state::<C>(&dir)?;
            let settings = reconcile(state.settings, &requested, explicit, &dir)?;
            Ok(Start {
                settings,
                from: Some(FromCheckpoint {
                    dir,
                    step: state.step,
                    loop_state: state.loop_state,
                    loader: state.loader,
                }),
            })
        }
    }
}

/// Runs `stepper` in `out` up to `until` steps with checkpoints every `save_every`, appending to
/// `out/log_name` (cut back to the starting step when resuming).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_loop<B, S, C>(
    stepper: &mut S,
    source: &mut dyn BatchSource<B>,
    out: &Path,
    log_name: &str,
    settings: &C,
    save_every: usize,
    until: usize,
    what: &str,
    observer: &mut dyn Observer,
) -> Result<()>
where
    B: AutodiffBackend,
    S: Stepper<B>,
    C: Serialize,
{
    let path = out.join(log_name);
    let mut log = match stepper.done() {
        0 => JsonlLog::create(&path)?,
        step => JsonlLog::resume(&path, step)?,
    };
    let checkpoints = Checkpoints::new(out.join("checkpoints"));
    drive(
        stepper,
        source,
        &mut log,
        Plan {
            checkpoints: &checkpoints,
            settings,
            save_every,
            until,
        },
        what,
        observer,
    )?;
    Ok(())
}
