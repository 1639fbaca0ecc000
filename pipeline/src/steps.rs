//! One peer's steps of a stage: the step log and the log of skipped steps (cut back to the
//! checkpoint's step when resuming, a torn last line dropped with a warning), the checkpoints
//! (peer 0 writes them), the stop flag agreed on by all peers, and the loader's final state
//! (docs/algorithm.md §9).

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shear_io::{JsonlLog, Stepped};
use shear_train::checkpoint::Checkpoints;
use shear_train::driver::{drive, LoopControl, Stepper};
use shear_train::peers::Peer;
use shear_train::source::BatchSource;
use shear_train::{Event, Observer};

use crate::error::{PipelineError, Result};
use crate::stage::{FromCheckpoint, Job, Stage, AD};

/// Continues `source` from a checkpoint's loader state, and says so.
pub(crate) fn resumed<B: AutodiffBackend>(
    from: &FromCheckpoint,
    source: &mut dyn BatchSource<B>,
    observer: &mut dyn Observer,
) -> Result<()> {
    if let Some(state) = &from.loader {
        source.restore(state.clone())?;
    }
    observer.event(Event::Message(&format!(
        "resuming from {} (step {})",
        from.dir.display(),
        from.step
    )));
    Ok(())
}

/// A log in the run directory: new at step 0, or resumed (cut back to `step`, a torn last line
/// dropped and said), or `None` for a peer that does not write.
fn open_log<T: Serialize + DeserializeOwned + Stepped>(
    path: &std::path::Path,
    peer: &Peer,
    step: usize,
    observer: &mut dyn Observer,
) -> Result<Option<JsonlLog<T>>> {
    if !peer.writes() {
        return Ok(None);
    }
    if step == 0 {
        return Ok(Some(JsonlLog::create(path)?));
    }
    let (log, torn) = JsonlLog::resume(path, step)?;
    if let Some(torn) = torn {
        observer.event(Event::Message(&format!(
            "warning: {}: {torn} (a write cut short); the run goes on",
            path.display()
        )));
    }
    Ok(Some(log))
}

/// Runs `stepper` of stage `St` in `job.out` up to `job.stop_after` (at most the run's steps)
/// with checkpoints every `job.checkpoints.save_every`, appending to the stage's step log, then
/// writes the loader's final state. Returns the steps done and
/// the run's. Only `peer` 0 writes. A stop asked through `job.stop` ends the run after the step
/// where any peer saw it, with a checkpoint, as [`PipelineError::Interrupted`].
pub(crate) fn run_steps<St: Stage, B: Backend>(
    stepper: &mut St::Stepper<B>,
    source: &mut dyn BatchSource<AD<B>>,
    job: &Job<St::Settings>,
    settings: &St::Settings,
    peer: &Peer,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<(usize, usize)> {
    let (log_name, what) = (St::LOG, St::WHAT);
    let done = stepper.done();
    let mut log = open_log(&job.out.join(log_name), peer, done, observer)?;
    let skips_path = job.out.join("skipped.jsonl");
    let mut skips = open_log(&skips_path, peer, done, observer)?;
    let checkpoints =
        Checkpoints::new(job.out.join("checkpoints")).keeping(job.checkpoints.keep_checkpoints);
    let total = stepper.total();
    let asked = |flag: &AtomicBool| -> shear_train::Result<bool> {
        let local = flag.load(Ordering::SeqCst);
        match peer.count {
            1 => Ok(local),
            _ => peer.any::<B>(local, device),
        }
    };
    let stop = job.stop.as_deref().map(|flag| move || asked(flag));
    let control = LoopControl {
        checkpoints: peer.writes().then_some(&checkpoints),
        checkpoint_dir: Some(checkpoints.dir()),
        settings,
        save_every: job.checkpoints.save_every,
        until: job.stop_after.unwrap_or(total).min(total),
        stop: stop
            .as_ref()
            .map(|f| f as &dyn Fn() -> shear_train::Result<bool>),
        skips: skips.as_mut(),
        max_skipped: job.guard.max_skipped,
        skips_path: &skips_path,
    };
    let stopped = drive(stepper, source, log.as_mut(), control, what, observer)?;
    if let (true, Some(state)) = (peer.writes(), source.state()) {
        shear_io::write_json_atomic(&job.out.join("loader_state.json"), &state)?;
    }
    if stopped {
        return Err(PipelineError::Interrupted {
            what: what.to_string(),
            step: stepper.done(),
            total,
            checkpoints: checkpoints.dir().to_path_buf(),
        });
    }
    Ok((stepper.done(), total))
}
