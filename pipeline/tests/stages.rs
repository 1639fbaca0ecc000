//! The stages as library calls, without the binary (docs/algorithm.md §9): a pruning and a
//! training run stopped early and resumed end as the uninterrupted run; a resume that sets a
//! setting to another value than its checkpoint's is refused, naming it; a fresh start into a
//! directory that holds an earlier run, and a second writer while a first holds the directory,
//! are refused; and `run::run` drives a whole recipe.

use std::path::{Path, PathBuf};

use shear_pipeline::feed::DataOptions;
use shear_pipeline::prune::{prune, PruneSettings};
use shear_pipeline::run::{run, RunOptions};
use shear_pipeline::stage::{Job, Outcome, Resume};
use shear_pipeline::train::{train, TrainSettings};
use shear_pipeline::{PipelineError, Silent};
use shear_testkit::{fixture, two_domains};
use shear_train::prune::{PruneConfig, PruneHyper};
use shear_train::trainer::TrainConfig;

type B = burn::backend::Flex;

const STEPS: usize = 8;

fn data(dir: &Path) -> DataOptions {
    two_domains(dir, [3, 30, 30]);
    let mut d = DataOptions::new(dir);
    d.mixture.update_every = Some(3);
    d
}

fn prune_settings(data: &DataOptions) -> PruneSettings {
    let target = "layers=3,hidden=48,heads=2,intermediate=96"
        .parse()
        .unwrap();
    let hyper = PruneHyper {
        steps: STEPS,
        batch: 4,
        grad_accum: 2,
        ..PruneHyper::default()
    };
    PruneSettings::new(
        fixture("pruning/source"),
        PruneConfig::new(target, hyper),
        data.clone(),
    )
}

fn train_settings(data: &DataOptions) -> TrainSettings {
    let config = TrainConfig {
        steps: STEPS,
        batch: 4,
        grad_accum: 2,
        lr: 1e-3,
        ..TrainConfig::default()
    };
    let mut data = data.clone();
    data.reference_model = Some(fixture("pruning/source"));
    TrainSettings::new(fixture("pruning/source"), config, data)
}

fn job<S>(settings: S, out: &Path) -> Job<S> {
    let mut job = Job::new(settings, out);
    job.checkpoints.save_every = 2;
    job
}

fn resume<S>(mut job: Job<S>, explicit: &[&str]) -> Job<S> {
    job.resume = Resume::Newest {
        explicit: explicit.iter().map(|s| s.to_string()).collect(),
        warn_if_none: true,
    };
    job
}

fn lines(path: PathBuf) -> Vec<String> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(String::from)
        .collect()
}

fn bytes(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `stage` whole in `tmp/whole`, then stopped after 3 steps and resumed in `tmp/parts`:
/// the two must log the same lines and write the same model bytes.
fn stopped_and_resumed<S: Clone>(
    settings: S,
    tmp: &Path,
    log: &str,
    stage: impl Fn(&Job<S>) -> shear_pipeline::Result<Outcome>,
) {
    let (whole, parts) = (tmp.join("whole"), tmp.join("parts"));
    let done = stage(&job(settings.clone(), &whole)).unwrap();
    assert_eq!((done.steps, done.total), (STEPS, STEPS));
    assert_eq!(done.model_dir, Some(whole.join("model")));
    let mut first = job(settings.clone(), &parts);
    first.stop_after = Some(3);
    let stopped = stage(&first).unwrap();
    assert_eq!((stopped.steps, stopped.model_dir), (3, None));
    assert!(parts.join("checkpoints/step-00000003/state.json").is_file());
    let rest = stage(&resume(job(settings, &parts), &[])).unwrap();
    assert_eq!(rest.steps, STEPS);
    assert_eq!(lines(whole.join(log)), lines(parts.join(log)));
    assert_eq!(
        bytes(whole.join("model/model.safetensors")),
        bytes(parts.join("model/model.safetensors")),
        "the same model, byte for byte"
    );
}

#[test]
fn a_pruning_stage_stopped_and_resumed_ends_as_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let settings = prune_settings(&d);
    stopped_and_resumed(settings, tmp.path(), "prune_log.jsonl", |j| {
        prune::<B>(j, &Default::default(), &mut Silent)
    });
    // The same masks and multipliers, bit for bit.
    let masks =
        |dir: &str| shear_testkit::raw_tensors(&tmp.path().join(dir).join("masks.safetensors"));
    assert_eq!(masks("whole"), masks("parts"));
}

#[test]
fn a_training_stage_stopped_and_resumed_ends_as_the_whole_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    stopped_and_resumed(train_settings(&d), tmp.path(), "train_log.jsonl", |j| {
        train::<B>(j, &Default::default(), &mut Silent)
    });
}

#[test]
fn a_resume_refuses_an_explicit_setting_that_differs_and_takes_the_others_from_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let out = tmp.path().join("run");
    let mut first = job(prune_settings(&d), &out);
    first.stop_after = Some(2);
    prune::<B>(&first, &Default::default(), &mut Silent).unwrap();
    let mut other = prune_settings(&d);
    other.config.hyper.lr_masks = 0.5;
    // Given explicitly: refused, naming the key and both values.
    let e = prune::<B>(
        &resume(job(other.clone(), &out), &["lr_masks"]),
        &Default::default(),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("lr_masks = 0.5 conflicts with the checkpoint's lr_masks = 1.0"),
        "{e}"
    );
    // Not given explicitly: the checkpoint's value wins and the run goes on.
    let mut j = resume(job(other, &out), &["steps"]);
    j.stop_after = Some(4);
    let o = prune::<B>(&j, &Default::default(), &mut Silent).unwrap();
    assert_eq!(o.steps, 4);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoints/step-00000004/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["settings"]["lr_masks"], 1.0);
}

#[test]
fn a_fresh_start_into_an_earlier_run_and_a_second_writer_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let out = tmp.path().join("run");
    let mut first = job(train_settings(&d), &out);
    first.checkpoints.save_every = 0;
    train::<B>(&first, &Default::default(), &mut Silent).unwrap();
    let e = train::<B>(&first, &Default::default(), &mut Silent).unwrap_err();
    assert!(
        e.to_string()
            .contains("holds the files of an earlier run (train_log.jsonl, model)"),
        "{e}"
    );
    // Another writer holds the directory: refused before anything is read or written.
    let log = lines(out.join("train_log.jsonl"));
    let held = shear_io::OutLock::acquire(&out).unwrap();
    let e = train::<B>(
        &resume(first.clone(), &[]),
        &Default::default(),
        &mut Silent,
    )
    .unwrap_err();
    let pid = std::process::id();
    assert!(
        matches!(&e, PipelineError::File(shear_io::IoError::Locked { pid: Some(p), .. }) if *p == pid),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains(&format!("in use by another shear process (pid {pid})")));
    assert_eq!(
        lines(out.join("train_log.jsonl")),
        log,
        "the holder's files are untouched"
    );
    drop(held);
    assert!(!out.join(".shear.lock").exists());
}

#[test]
fn a_recipe_runs_through_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = shear_testkit::mini_recipe(tmp.path(), 2);
    let opts = RunOptions {
        out: tmp.path().join("run"),
        ..RunOptions::default()
    };
    let summary = run::<B>(&recipe, &opts, &Default::default(), &mut Silent).unwrap();
    let names: Vec<&str> = summary.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["data", "prune", "train", "eval"]);
    assert_eq!(
        (
            summary.target.layers,
            summary.target.hidden,
            summary.target.heads
        ),
        (1, 32, 2)
    );
    assert_eq!(lines(opts.out.join("prune/prune_log.jsonl")).len(), 2);
    assert_eq!(lines(opts.out.join("train/train_log.jsonl")).len(), 4);
    // Again: every stage is complete and skipped.
    let again = run::<B>(&recipe, &opts, &Default::default(), &mut Silent).unwrap();
    let skipped: Vec<bool> = again.stages.iter().map(|s| s.skipped).collect();
    assert_eq!(skipped, [true, true, true, false], "eval always runs");
}
