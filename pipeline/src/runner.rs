//! The one skeleton of the pruning and the training stage: the checks before any work,
//! starting fresh or from the newest checkpoint (with the checkpoint's settings, an explicitly
//! conflicting option refused, docs/algorithm.md §9), the lock on the run directory, the
//! training data and reference losses, one loop per data-parallel peer, and the outputs. What
//! differs between the stages is their [`Stage`] impl.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shear_model::LlamaConfig;
use shear_train::checkpoint::{reconcile, Checkpoints};
use shear_train::peers::Peer;
use shear_train::{Event, Observer};

use crate::error::{invalid, Result};
use crate::feed::{Feed, LoaderSpec};
use crate::out::RunDir;
use crate::reference::reference_losses;
use crate::stage::{FromCheckpoint, Job, Outcome, Resume, Stage, StageSettings, AD};

/// Runs stage `S` as `job` says: the shared skeleton (see the module documentation).
pub fn run<S: Stage, B: Backend>(
    job: &Job<S::Settings>,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let requested = job.settings.canonical();
    let _precision = shear_model::precision::autocast(requested.precision());
    let model_dir = requested.model_dir().to_path_buf();
    let config = LlamaConfig::from_file(&model_dir)?;
    // Everything that can be refused is checked before the model is loaded and before the run
    // directory changes; the writer holds the directory's lock from the first look inside on.
    requested.check(&config)?;
    job.checkpoints.validate()?;
    let out = RunDir::open(&job.out, job.topology.writes())?;
    let (s, from) = start(job, requested, observer)?;
    s.check(&config)?;
    let spec = s.loader();
    crate::peers::check(&job.topology, spec.batch)?;
    let dtype = job.dtype.map_or_else(|| S::stored_dtype(&s), Ok)?;
    let data = s.data();
    let (feed, warning) = Feed::open(data, &model_dir, &config)?;
    if let Some(w) = warning {
        observer.event(Event::Message(&format!("warning: {w}")));
    }
    feed.initial_weights(data, spec.split)?;
    check_memory::<S, B>(job, &config, &spec, feed.seq_len(), &model_dir)?;
    let out = out.create()?;
    if let Some(pid) = out.taken_over() {
        observer.event(Event::Message(&format!(
            "{}: the lock of pid {pid}, which is no longer running, was taken over",
            job.out.display()
        )));
    }

    let loaded = S::load::<B>(&s, &config, from.is_none(), device, observer)?;
    let (params, known) = (
        S::reference_params(&s, &config),
        S::reference_model(&loaded),
    );
    let reference =
        reference_losses::<B>(&feed, data, params, &model_dir, known, device, observer)?;
    // One loop per data-parallel peer; peer 0's stepper is kept for the outputs.
    let peer_run = |peer: Peer, device: &B::Device, observer: &mut dyn Observer| {
        let _precision = shear_model::precision::autocast(s.precision());
        let spec = LoaderSpec {
            peer: peer.clone(),
            ..spec.clone()
        };
        let mut source = feed.source::<AD<B>>(data, &spec, reference.clone(), device)?;
        if let Some(from) = &from {
            crate::steps::resumed(from, source.as_mut(), observer)?;
        }
        let exec = job.exec.for_peer(peer.clone());
        let mut stepper = S::stepper(&loaded, &s, from.as_ref(), exec, device)?;
        let done = crate::steps::run_steps::<S, B>(
            &mut stepper,
            source.as_mut(),
            job,
            &s,
            &peer,
            device,
            observer,
        )?;
        Ok((done, stepper))
    };
    let topology = &job.topology;
    let ((steps, total), stepper) = crate::peers::run_peers::<B, _>(
        topology,
        spec.batch,
        device,
        observer,
        job.on_lost,
        peer_run,
    )?;
    S::after_loop(&stepper, &job.out)?;
    let model_dir = match steps < total {
        true => None,
        false => Some(S::finish(&stepper, &s, &job.out, dtype)?),
    };
    Ok(Outcome {
        steps,
        total,
        model_dir,
    })
}

/// On the CPU backend the run lives in this machine's memory, shared by its local peers: one
/// that cannot fit is refused before anything is allocated (docs/algorithm.md §13.3). A GPU's
/// memory is the device's, which the plan (`shear plan`) reports instead.
fn check_memory<S: Stage, B: Backend>(
    job: &Job<S::Settings>,
    config: &LlamaConfig,
    spec: &LoaderSpec,
    seq_len: usize,
    model_dir: &Path,
) -> Result<()> {
    if !shear_model::fused_kernels::<B>() {
        return Ok(());
    }
    let teacher = match job.settings.teacher() {
        Some(t) => Some(LlamaConfig::from_file(t)?),
        None => None,
    };
    let plan = shear_train::memory::plan(&shear_train::memory::PlanInput {
        model: config.clone(),
        pruning: S::PRUNING,
        micro_batch: spec.batch.div_ceil(job.topology.peers()),
        seq_len,
        grad_accum: spec.grad_accum,
        fused_loss: true,
        recompute: job.exec.recompute,
        peers: job.topology.peers(),
        zero: job.exec.zero,
        teacher,
    });
    let what = format!("{} {}", S::WHAT, model_dir.display());
    Ok(shear_train::memory::check_fits(
        &plan,
        job.topology.devices as u64,
        &what,
    )?)
}

/// Decides where the run of `job` begins (docs/algorithm.md §9), reading only: refuses a fresh
/// run in a directory with checkpoints or an earlier run's files, and on resume takes the newest
/// usable checkpoint (reporting each one skipped through `observer`) with its settings.
fn start<C: Serialize + DeserializeOwned>(
    job: &Job<C>,
    requested: C,
    observer: &mut dyn Observer,
) -> Result<(C, Option<FromCheckpoint>)> {
    let out = &job.out;
    let checkpoints = Checkpoints::new(out.join("checkpoints"));
    let (explicit, warn_if_none) = match &job.resume {
        Resume::Fresh => {
            if let Some(dir) = checkpoints.newest() {
                return invalid!(
                    "{} holds checkpoints of an earlier run ({}); resume it, or choose another \
                     output directory",
                    out.display(),
                    dir.display()
                );
            }
            if let Some(found) = earlier_run_files(out) {
                return invalid!(
                    "{} holds the files of an earlier run ({found}); continue it with \
                     --resume, or choose another output directory",
                    out.display()
                );
            }
            return Ok((requested, None));
        }
        Resume::Newest {
            explicit,
            warn_if_none,
        } => (explicit, *warn_if_none),
    };
    let found = checkpoints.newest_usable::<C>(|e| {
        observer.event(Event::Message(&format!(
            "warning: {e}; trying the one before"
        )))
    })?;
    let Some((dir, state)) = found else {
        if warn_if_none {
            observer.event(Event::Message(&format!(
                "warning: no checkpoint in {}: starting from step 0",
                checkpoints.dir().display()
            )));
        }
        return Ok((requested, None));
    };
    if state.manifest.is_none() {
        observer.event(Event::Message(&format!(
            "warning: {} has no manifest (written by an older shear): its files are not \
             verified",
            dir.display()
        )));
    }
    let settings = reconcile(state.settings, &requested, explicit, &dir)?;
    let from = FromCheckpoint {
        dir,
        step: state.step,
        loop_state: state.loop_state,
        loader: state.loader,
    };
    Ok((settings, Some(from)))
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
