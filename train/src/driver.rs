//! The loop skeleton shared by pruning and continued pre-training: what happens around a step.
//! One screen, in the spirit of nanoGPT's `train.py`:
//!
//! ```text
//! evaluate first?   (continued pre-training updates its domain weights before step 0)
//! for each step up to `until`:
//!     micro-batches   <- source
//!     log             <- stepper.step(micro-batches)       (forward, backward, clip, optimize)
//!     data report     <- source.after_step(model, if due)  (dynamic batch loading)
//!     append the log line; report progress
//!     checkpoint every `save_every` steps, and when stopping early
//! ```
//!
//! What differs between the loops is only the step itself ([`Stepper`]): the pruning step has
//! masks, a Lagrangian and three optimizers; the training step one optimizer and an optional
//! teacher.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shear_data::UpdateRecord;
use shear_io::{JsonlLog, Stepped};

use crate::checkpoint::Checkpoints;
use crate::error::{Result, TrainError};
use crate::observer::{Event, Observer};
use crate::source::{BatchSource, DataReport, EvalView, RowRef};

/// One kind of optimizer step and the state it carries from step to step.
pub trait Stepper<B: AutodiffBackend> {
    /// One line of the step log.
    type Log: Serialize + DeserializeOwned + Stepped;

    /// Where the run stands.
    fn position(&self) -> Position;

    /// Steps done.
    fn done(&self) -> usize {
        self.position().done
    }

    /// Steps of the whole run (the schedules follow it).
    fn total(&self) -> usize {
        self.position().total
    }
    /// One optimizer step on `batches` (`[batch, seq]` token ids each).
    fn step(&mut self, batches: &[Tensor<B, 2, Int>]) -> Result<Self::Log>;
    /// The model as an evaluation for dynamic batch loading sees it.
    fn eval_view(&self) -> Result<EvalView<B::InnerBackend>>;
    /// Adds what the data side did during the step (and, on the first step, the update of the
    /// evaluation before it) to the step's log line.
    fn attach(log: &mut Self::Log, data: DataReport, eval_first: Option<UpdateRecord>);
    /// Steps skipped so far because their loss or gradient norm was not finite (kept in
    /// checkpoints).
    fn skipped(&self) -> usize {
        0
    }
    /// A short line of the step's figures, for progress.
    fn summary(log: &Self::Log) -> String;
    /// Called once before the loop's first step: reads what depends on how the steps run (a
    /// sharded optimizer state, zero.rs); returns lines to tell the user.
    fn prepare(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Under ZeRO (zero.rs): every peer writes its share of the optimizer state into
    /// `staging` and waits for the others; returns the names of all peers' shard files, which
    /// the writing peer moves into the checkpoint (none: unsharded).
    fn save_shard(&self, _staging: &Path) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Writes module and optimizer records into a checkpoint directory; returns the loop state
    /// to keep in `state.json`.
    fn save_records(&self, dir: &Path) -> Result<serde_json::Value>;
}

/// Where a run stands: steps done, steps of the run, micro-batches per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub done: usize,
    pub total: usize,
    pub grad_accum: usize,
}

/// Where and how often a loop checkpoints, and the configuration each checkpoint records.
pub struct LoopControl<'a, C> {
    /// `None`: this loop writes nothing (a data-parallel peer other than peer 0).
    pub checkpoints: Option<&'a Checkpoints>,
    /// The run's checkpoint directory, known to every peer: under ZeRO each writes its share of
    /// the optimizer state there (`None`: nowhere, an unsharded peer other than peer 0).
    pub checkpoint_dir: Option<&'a Path>,
    /// Stored in every checkpoint (what `--resume` restores).
    pub settings: &'a C,
    /// Checkpoint after every this many steps (0: only when stopping early).
    pub save_every: usize,
    /// Stop after this many steps in total (at most the run's), with a checkpoint.
    pub until: usize,
    /// Asked after every step whether to stop there (a signal, docs/algorithm.md §9): then a
    /// checkpoint is written and [`drive`] returns `true`. Data-parallel peers must all give
    /// the same answer.
    pub stop: Option<&'a dyn Fn() -> Result<bool>>,
    /// Where skipped steps are recorded (`None`: nowhere, a peer other than peer 0).
    pub skips: Option<&'a mut JsonlLog<Skip>>,
    /// The run stops once more steps than this were skipped.
    pub max_skipped: usize,
    /// The file `skips` writes, for messages.
    pub skips_path: &'a Path,
}

/// A step skipped because its loss or gradient norm was not finite (one line of
/// `skipped.jsonl`): what was not finite, and the rows of its batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skip {
    pub step: usize,
    pub reason: String,
    pub rows: Vec<RowRef>,
}

impl Stepped for Skip {
    fn step(&self) -> usize {
        self.step
    }
}

/// `web#12, code#40, …` (at most eight rows).
fn name_rows(rows: &[RowRef]) -> String {
    let mut s: Vec<String> = rows
        .iter()
        .take(8)
        .map(|r| format!("{}#{}", r.domain, r.index))
        .collect();
    if rows.len() > 8 {
        s.push(format!("… ({} rows)", rows.len()));
    }
    s.join(", ")
}

/// Runs `stepper` from its current step to `plan.until` (see the module documentation);
/// returns whether it stopped early because `plan.stop` asked.
pub fn drive<B, S, C>(
    stepper: &mut S,
    source: &mut dyn BatchSource<B>,
    mut log: Option<&mut JsonlLog<S::Log>>,
    mut plan: LoopControl<'_, C>,
    what: &str,
    observer: &mut dyn Observer,
) -> Result<bool>
where
    B: AutodiffBackend,
    S: Stepper<B>,
    C: Serialize,
{
    let total = stepper.total();
    let until = plan.until.min(total);
    observer.event(Event::Started {
        what,
        done: stepper.done(),
        total,
    });
    for line in stepper.prepare()? {
        observer.event(Event::Message(&line));
    }
    let mut eval_first = None;
    if stepper.done() == 0 && source.wants_eval(None) {
        observer.event(Event::Busy("evaluating before the first step"));
        let report = source.after_step(None, Some(stepper.eval_view()?))?;
        if let Some(u) = &report.domain_update {
            observer.event(Event::DomainUpdate(u));
        }
        eval_first = report.domain_update;
    }
    while stepper.done() < until {
        let step = stepper.done();
        let batches = (0..stepper.position().grad_accum.max(1))
            .map(|m| source.batch(step, m))
            .collect::<Result<Vec<_>>>()?;
        // Test hooks (docs/algorithm.md §9): a kill with the step's batches drawn, before its
        // update, and right after its log line.
        shear_io::kill_point(|| format!("step:{step}:before-update"));
        // A non-finite loss or gradient norm: the stepper changed nothing but counted the
        // step; it is recorded with its rows, and the run goes on up to `max_skipped`.
        let line = match stepper.step(&batches) {
            Ok(line) => Some(line),
            Err(TrainError::NonFinite { step, what }) => {
                let rows = source.rows();
                let named = name_rows(&rows);
                if let Some(skips) = plan.skips.as_mut() {
                    skips.append(&Skip {
                        step,
                        reason: what.clone(),
                        rows,
                    })?;
                }
                if stepper.skipped() > plan.max_skipped {
                    return Err(TrainError::TooManySkipped {
                        step,
                        what: format!("{what} (rows {named})"),
                        skipped: stepper.skipped(),
                        max: plan.max_skipped,
                        log: plan.skips_path.display().to_string(),
                    });
                }
                observer.event(Event::Message(&format!(
                    "warning: step {step} skipped: {what} (rows {named}; {})",
                    plan.skips_path.display()
                )));
                None
            }
            Err(e) => return Err(e),
        };
        // A skipped step changes nothing, the domain weights included: a reweighting due at
        // it is not made (it would have no log line to show it), and the next due step makes
        // the next one (docs/algorithm.md §9).
        let view = match line.is_some() && source.wants_eval(Some(step)) {
            true => Some(stepper.eval_view()?),
            false => None,
        };
        let data = source.after_step(Some(step), view)?;
        if let Some(u) = &data.domain_update {
            observer.event(Event::DomainUpdate(u));
        }
        for event in &data.loader_events {
            observer.event(Event::Loader { step, event });
        }
        if let Some(mut line) = line {
            S::attach(&mut line, data, eval_first.take());
            if let Some(log) = log.as_mut() {
                log.append(&line)?;
                shear_io::kill_point(|| format!("step:{step}:logged"));
            }
            observer.event(Event::Step {
                step,
                total,
                summary: &S::summary(&line),
            });
        }
        let done = stepper.done();
        let asked = match plan.stop {
            Some(stop) if done < total => stop()?,
            _ => false,
        };
        let stopping = (done == until && until < total) || asked;
        let due = (plan.save_every > 0 && done.is_multiple_of(plan.save_every) && done < total)
            || stopping;
        // Under ZeRO every peer first writes its share of the optimizer state into a
        // staging directory; the writing peer moves the shards into the checkpoint, which
        // appears whole or not at all (docs/algorithm.md §9).
        let (staging, shards) = match (due, plan.checkpoint_dir) {
            (true, Some(dir)) => {
                let staging = crate::zero::staging_dir(dir, done);
                let shards = stepper.save_shard(&staging)?;
                if !shards.is_empty() {
                    shear_io::kill_point(|| format!("checkpoint:{done}:after-shards"));
                }
                (Some(staging), shards)
            }
            _ => (None, Vec::new()),
        };
        if let (true, Some(checkpoints)) = (due, plan.checkpoints) {
            let path = checkpoints.write(done, plan.settings, source.state(), |dir| {
                if let Some(staging) = &staging {
                    crate::zero::move_shards(staging, &shards, dir)?;
                }
                stepper.save_records(dir)
            })?;
            observer.event(Event::Checkpoint(&path));
        }
        if asked {
            return Ok(true);
        }
    }
    observer.event(Event::Finished);
    Ok(false)
}
