//! What the pruning and training stages share around their step: the job (settings, output
//! directory, checkpoint cadence, resume), starting fresh or from the newest checkpoint (with the
//! checkpoint's settings, an explicitly conflicting option refused, docs/algorithm.md §9), the
//! training data, the step log cut back to the checkpoint's step, and the loop itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::tensor::backend::AutodiffBackend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shear_data::{LoaderState, Split};
use shear_io::JsonlLog;
use shear_model::{Dtype, LlamaConfig};
use shear_train::checkpoint::{reconcile, Checkpoints};
use shear_train::driver::{drive, Plan, Stepper};
use shear_train::source::BatchSource;
use shear_train::{Event, Observer};

use burn::tensor::backend::Backend;
use shear_train::peers::{self, Peer, Topology};
use shear_train::Silent;

use crate::error::{invalid, PipelineError, Result};
use crate::feed::{DataOptions, Feed};

/// A pruning or training run to do: its `settings` (what every checkpoint records and `Resume`
/// restores) and how to run it.
#[derive(Clone, Debug)]
pub struct Job<S> {
    pub settings: S,
    /// The run directory.
    pub out: PathBuf,
    /// Checkpoint every this many steps (0: only when stopping early).
    pub save_every: usize,
    /// Keep the newest this many checkpoints (at least 1): older ones are removed once a newer
    /// one is complete. Not a setting of the run: it may change on resume.
    pub keep_checkpoints: usize,
    /// Stop after this many steps in total (the schedules still follow the run's steps), with
    /// a checkpoint.
    pub stop_after: Option<usize>,
    pub resume: Resume,
    /// Storage dtype of the model written at the end (default: the input model's).
    pub dtype: Option<Dtype>,
    /// Workers per step (shear_train::workers): the rows of every micro-batch split over this
    /// many copies of the model, their gradients summed. A run's numbers do not depend on it
    /// beyond the order of floating-point sums.
    pub workers: usize,
    /// Data-parallel peers (shear_train::peers): devices in this process, and the nodes of a
    /// multi-node run. A run's numbers do not depend on it beyond the order of floating-point
    /// sums.
    pub topology: Topology,
    /// Recompute each block in the backward pass (shear_train::recompute): less memory, one
    /// more forward pass; the same numbers up to the order of floating-point sums.
    pub recompute: bool,
    /// Set (e.g. by a signal handler) to stop after the current step with a checkpoint: the
    /// run then ends with [`PipelineError::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
    /// Steps with a non-finite loss or gradient norm are skipped (recorded in
    /// `OUT/skipped.jsonl`); the run stops once more than this many were.
    pub max_skipped: usize,
}

impl<S> Job<S> {
    pub(crate) fn with_settings(settings: S, out: PathBuf) -> Self {
        Job {
            settings,
            out,
            save_every: 0,
            keep_checkpoints: 2,
            stop_after: None,
            resume: Resume::Fresh,
            dtype: None,
            workers: 1,
            topology: Topology::default(),
            recompute: false,
            stop: None,
            max_skipped: 10,
        }
    }

    pub fn with_save_every(mut self, steps: usize) -> Self {
        self.save_every = steps;
        self
    }

    pub fn with_keep_checkpoints(mut self, k: usize) -> Self {
        self.keep_checkpoints = k;
        self
    }

    pub fn with_stop_after(mut self, steps: Option<usize>) -> Self {
        self.stop_after = steps;
        self
    }

    pub fn with_resume(mut self, resume: Resume) -> Self {
        self.resume = resume;
        self
    }

    pub fn with_dtype(mut self, dtype: Option<Dtype>) -> Self {
        self.dtype = dtype;
        self
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

/// Decides where the run of `job` begins (docs/algorithm.md §9): refuses a fresh run in a
/// directory with checkpoints, removes what a killed checkpoint write left, and on resume takes
/// the newest usable checkpoint, reporting each one skipped through `observer`.
pub(crate) fn start<C: Serialize + DeserializeOwned>(
    job: &Job<C>,
    requested: C,
    observer: &mut dyn Observer,
) -> Result<Start<C>> {
    if job.keep_checkpoints == 0 {
        return invalid!("keep_checkpoints 0: at least the checkpoint to resume from must be kept");
    }
    let out = &job.out;
    let checkpoints = Checkpoints::new(out.join("checkpoints"));
    let fresh = |settings: C| -> Result<Start<C>> {
        Ok(Start {
            settings,
            from: None,
        })
    };
    match &job.resume {
        Resume::Fresh => match checkpoints.newest() {
            Some(dir) => invalid!(
                "{} holds checkpoints of an earlier run ({}); resume it, or choose another \
                 output directory",
                out.display(),
                dir.display()
            ),
            None => {
                if let Some(found) = earlier_run_files(out) {
                    return invalid!(
                        "{} holds the files of an earlier run ({found}); continue it with \
                         --resume, or choose another output directory",
                        out.display()
                    );
                }
                checkpoints.remove_temporaries()?;
                fresh(requested)
            }
        },
        Resume::Newest {
            explicit,
            warn_if_none,
        } => {
            checkpoints.remove_temporaries()?;
            let found = checkpoints.newest_usable::<C>(|e| {
                observer.event(Event::Message(&format!(
                    "warning: {e}; trying the one before"
                )))
            })?;
            let Some((dir, state)) = found else {
                if *warn_if_none {
                    observer.event(Event::Message(&format!(
                        "warning: no checkpoint in {}: starting from step 0",
                        checkpoints.dir().display()
                    )));
                }
                return fresh(requested);
            };
            if state.manifest.is_none() {
                observer.event(Event::Message(&format!(
                    "warning: {} has no manifest (written by an older shear): its files are \
                     not verified",
                    dir.display()
                )));
            }
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

/// What a finished or interrupted run leaves in its directory (a step log, the model), which a
/// fresh start would overwrite: the names found, or `None`.
fn earlier_run_files(out: &Path) -> Option<String> {
    let found: Vec<String> = ["prune_log.jsonl", "train_log.jsonl", "model"]
        .into_iter()
        .filter(|name| out.join(name).exists())
        .map(String::from)
        .collect();
    (!found.is_empty()).then(|| found.join(", "))
}

/// Opens the training data of a stage for the model in `model_dir` and checks it, the initial
/// domain weights of `split` included, before any model is loaded; creates the run directory.
pub(crate) fn open_data(
    opts: &DataOptions,
    model_dir: &Path,
    config: &LlamaConfig,
    split: Split,
    out: &Path,
    observer: &mut dyn Observer,
) -> Result<Feed> {
    let (feed, warning) = Feed::open(opts, model_dir, config)?;
    if let Some(w) = warning {
        observer.event(Event::Message(&format!("warning: {w}")));
    }
    feed.initial_weights(opts, split)?;
    std::fs::create_dir_all(out).map_err(shear_io::IoError::at(out))?;
    Ok(feed)
}

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

/// Runs `stepper` in `job.out` up to `job.stop_after` (at most the run's steps) with checkpoints
/// every `job.save_every`, appending to `out/log_name` (cut back to the starting step when
/// resuming), then writes the loader's final state. Returns the steps done and the run's.
/// Only `peer` 0 of a data-parallel run writes (the others keep the same numbers). A stop asked
/// through `job.stop` ends the run after the step where any peer saw it, with a checkpoint, as
/// [`PipelineError::Interrupted`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_loop<B, S, C>(
    stepper: &mut S,
    source: &mut dyn BatchSource<B>,
    job: &Job<C>,
    settings: &C,
    log_name: &str,
    what: &str,
    peer: &Peer,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<(usize, usize)>
where
    B: AutodiffBackend,
    S: Stepper<B>,
    C: Serialize,
{
    let path = job.out.join(log_name);
    let mut log = match (peer.writes(), stepper.done()) {
        (false, _) => None,
        (true, 0) => Some(JsonlLog::create(&path)?),
        (true, step) => Some(JsonlLog::resume(&path, step)?),
    };
    let skips_path = job.out.join("skipped.jsonl");
    let mut skips = match (peer.writes(), stepper.done()) {
        (false, _) => None,
        (true, 0) => Some(JsonlLog::create(&skips_path)?),
        (true, step) => Some(JsonlLog::resume(&skips_path, step)?),
    };
    let checkpoints = Checkpoints::new(job.out.join("checkpoints")).keeping(job.keep_checkpoints);
    let total = stepper.total();
    let asked = |flag: &AtomicBool| -> shear_train::Result<bool> {
        let local = flag.load(Ordering::SeqCst);
        match peer.count {
            1 => Ok(local),
            _ => peer.any::<B::InnerBackend>(local, device),
        }
    };
    let stop = job.stop.as_deref().map(|flag| move || asked(flag));
    let plan = Plan {
        checkpoints: peer.writes().then_some(&checkpoints),
        settings,
        save_every: job.save_every,
        until: job.stop_after.unwrap_or(total).min(total),
        stop: stop
            .as_ref()
            .map(|f| f as &dyn Fn() -> shear_train::Result<bool>),
        skips: skips.as_mut(),
        max_skipped: job.max_skipped,
        skips_path: &skips_path,
    };
    let stopped = drive(stepper, source, log.as_mut(), plan, what, observer)?;
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

/// Refuses data-parallel peers that cannot run (checked before any work).
pub(crate) fn check_peers(topology: &Topology, batch: usize) -> Result<()> {
    topology.validate()?;
    if batch < topology.peers() {
        return invalid!(
            "batch {batch}: {} data-parallel peers need at least one sequence each",
            topology.peers()
        );
    }
    Ok(())
}

/// Runs `peer_run(peer, device, observer)` once per local peer of `topology` (docs/algorithm.md
/// §4.4): local peer 0 on this thread with `observer`, the others on their own threads,
/// silent, on the devices of [`Topology::local_devices`] from `first`; node 0 of a multi-node
/// run starts the coordinator. Returns local peer 0's result. When a peer fails, the others are
/// woken from their collective operations and the failure reported is the first one that is
/// not only the echo of another's.
pub(crate) fn run_peers<B, R>(
    topology: &Topology,
    batch: usize,
    first: &B::Device,
    observer: &mut dyn Observer,
    peer_run: impl Fn(Peer, &B::Device, &mut dyn Observer) -> Result<R> + Sync,
) -> Result<R>
where
    B: Backend,
{
    check_peers(topology, batch)?;
    if topology.peers() == 1 {
        return peer_run(Peer::solo(), first, observer);
    }
    let _session = peers::session::<B>();
    if let Some(n) = topology.nodes.as_ref().filter(|n| n.rank == 0) {
        let (_, port) =
            shear_train::peers::host_port(&n.coordinator).map_err(PipelineError::Invalid)?;
        peers::start_coordinator(port)?;
    }
    let devices = topology.local_devices(first);
    let one = |local: usize, observer: &mut dyn Observer| -> Result<R> {
        let device = &devices[local];
        let peer = Peer::join::<B>(topology, local, device)?.with_batch(batch);
        let out = peer_run(peer.clone(), device, observer).and_then(|r| {
            peer.leave::<B>(device)?;
            Ok(r)
        });
        if out.is_err() {
            peers::abort::<B>();
        }
        out
    };
    let (first_result, others) = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..topology.devices)
            .map(|local| {
                let one = &one;
                std::thread::Builder::new()
                    .name(format!("shear-peer-{local}"))
                    .stack_size(16 << 20)
                    .spawn_scoped(scope, move || one(local, &mut Silent).map(|_| ()))
            })
            .collect();
        let first_result = one(0, observer);
        let others: Vec<Result<()>> = handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| invalid!("a peer thread panicked")),
                Err(e) => invalid!("cannot start a peer thread: {e}"),
            })
            .collect();
        (first_result, others)
    });
    let (result, mut errors) = match first_result {
        Ok(r) => (Some(r), Vec::new()),
        Err(e) => (None, vec![e]),
    };
    errors.extend(others.into_iter().filter_map(|r| r.err()));
    match result {
        Some(r) if errors.is_empty() => Ok(r),
        _ => {
            let i = errors.iter().position(|e| !e.is_collective()).unwrap_or(0);
            Err(errors.swap_remove(i))
        }
    }
}
