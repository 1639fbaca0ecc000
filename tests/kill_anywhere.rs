//! Kill anywhere through the binary (docs/algorithm.md §9): a pruning run and a training run are
//! killed with SIGKILL at moments drawn from a seeded generator — after a number of step-log
//! lines plus a delay (mid-step, between checkpoints, before the first one), and inside a
//! checkpoint write through the test hook `SHEAR_TEST_KILL_IN_CHECKPOINT` — and resumed with
//! `--resume` after each kill. The chain must end with the uninterrupted run's step log, line for
//! line, its masks and a byte-identical model. A newest checkpoint with a flipped byte or a
//! truncated file is skipped with a warning, and the run resumes exactly from the one before.

mod common;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Steps of every run here, and the checkpoint cadence.
const STEPS: usize = 30;
const EVERY: usize = 3;
/// Checkpoints kept (the default of --keep-checkpoints).
const KEEP: usize = 2;
/// Kills per chain, at most (at least 5 must fit before the run's end).
const KILLS: usize = 8;
/// The longest delay after the log line a kill waits for.
const MAX_DELAY_MS: u64 = 100;
/// Steps a run has left at least when a kill after log lines starts its delay, so that it is
/// still running when the delay ends.
const MARGIN: usize = 10;
const HOOK: &str = "SHEAR_TEST_KILL_IN_CHECKPOINT";

/// Two domains of ids below 500, enough sequences that nothing runs out.
fn data(dir: &Path) {
    two_domains(dir, [3, 60, 60]);
}

/// `args` with a checkpoint every `every` steps.
fn save_every(mut args: Vec<String>, every: usize) -> Vec<String> {
    let i = args.iter().position(|a| a == "--save-every").unwrap();
    args[i + 1] = every.to_string();
    args
}

fn with_resume(mut args: Vec<String>) -> Vec<String> {
    args.push("--resume".into());
    args
}

/// The checkpoint steps in `out/checkpoints`, ascending (temporaries left out).
fn checkpoint_steps(out: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = std::fs::read_dir(out.join("checkpoints"))
        .map(|d| {
            d.filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_prefix("step-").and_then(|n| n.parse().ok())
            })
            .collect()
        })
        .unwrap_or_default();
    steps.sort();
    steps
}

/// Where a run is killed.
#[derive(Clone, Debug)]
enum Kill {
    /// Once the step log has `lines` lines, `delay_ms` later.
    Lines { lines: usize, delay_ms: u64 },
    /// By the process itself, at `phase` of writing the checkpoint of `step`.
    Hook { step: usize, phase: &'static str },
}

/// Runs `args` until `kill` kills it (SIGKILL); its stderr goes to `stderr`. Panics if the run
/// ends otherwise.
fn run_killed(args: &[String], log: &Path, kill: &Kill, stderr: &Path) {
    let mut cmd = shear();
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(File::create(stderr).unwrap());
    if let Kill::Hook { step, phase } = kill {
        cmd.env(HOOK, format!("{step}:{phase}"));
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = match kill {
        Kill::Hook { .. } => child.wait().unwrap(),
        Kill::Lines { lines: n, delay_ms } => {
            loop {
                if lines(log).len() >= *n {
                    break;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "{kill:?}: the run ended ({status}) before it could be killed: {}",
                        std::fs::read_to_string(stderr).unwrap_or_default()
                    );
                }
                assert!(start.elapsed() < Duration::from_secs(120), "no progress");
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(*delay_ms));
            child.kill().unwrap();
            child.wait().unwrap()
        }
    };
    assert_eq!(
        status.signal(),
        Some(9),
        "{kill:?}: killed by SIGKILL, not {status}: {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
}

/// The next kill of the chain (`i`-th), for a run whose log has `logged` lines and whose
/// directory holds checkpoints at `steps` before it starts; `None` when no kill fits before
/// the run's end. Kills alternate between log lines plus a delay and the hook, the first one
/// early enough to land before the first checkpoint at times.
fn next_kill(rng: &mut StdRng, i: usize, logged: usize, steps: &[usize]) -> Option<Kill> {
    // A resumed run cuts its log back only once started: wait for lines it writes itself.
    if i.is_multiple_of(2) {
        let lines = match i {
            0 => rng.random_range(1..EVERY),
            _ => logged + rng.random_range(1..=EVERY),
        };
        let delay_ms = rng.random_range(0..=MAX_DELAY_MS);
        return (lines + MARGIN <= STEPS).then_some(Kill::Lines { lines, delay_ms });
    }
    // The first checkpoint the run writes after its log's end (it resumes at or before it),
    // before its last step (there is none at the end).
    let step = (logged / EVERY + 1) * EVERY;
    if step >= STEPS {
        return None;
    }
    // Older checkpoints are removed (and so a kill during the removal possible) only when
    // KEEP of them exist as the run writes `step`.
    let resumed_at = steps.last().copied().unwrap_or(0);
    let before = steps.len() + (resumed_at + EVERY..step).step_by(EVERY).count();
    let mut phases = vec!["after-records", "after-state", "after-commit"];
    if before >= KEEP {
        phases.push("during-cleanup");
    }
    let phase = phases[rng.random_range(0..phases.len())];
    Some(Kill::Hook { step, phase })
}

/// The uninterrupted run of `args` in `tmp/whole`: its directory and log.
fn uninterrupted(args: &dyn Fn(&Path) -> Vec<String>, tmp: &Path, log_name: &str) -> PathBuf {
    let whole = tmp.join("whole");
    succeed(&args(&whole));
    assert_eq!(lines(&whole.join(log_name)).len(), STEPS);
    whole
}

/// Asserts that the run in `got` ended as the uninterrupted one in `whole`: the same step log
/// line for line, the same model byte for byte, and for pruning the same masks bit for bit.
fn assert_same_run(whole: &Path, got: &Path, log_name: &str) {
    let (want, have) = (lines(&whole.join(log_name)), lines(&got.join(log_name)));
    assert_eq!(have.len(), STEPS, "every step logged once");
    for (i, (a, b)) in want.iter().zip(&have).enumerate() {
        assert_eq!(a, b, "{log_name}, step {i}");
    }
    assert!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap()
            == std::fs::read(got.join("model/model.safetensors")).unwrap(),
        "the final models are byte-identical"
    );
    if whole.join("masks.safetensors").exists() {
        // The same masks and multipliers, bit for bit (the metadata's key order may differ).
        assert_eq!(
            raw_tensors(&whole.join("masks.safetensors")),
            raw_tensors(&got.join("masks.safetensors")),
            "the same masks"
        );
    }
    let steps = checkpoint_steps(got);
    assert!(steps.len() <= KEEP, "at most {KEEP} checkpoints: {steps:?}");
    let left: Vec<_> = std::fs::read_dir(got.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "no temporaries left: {left:?}");
}

/// Kills a run of `args` up to [`KILLS`] times at moments drawn from `seed` (or the seed in
/// `SHEAR_TEST_KILL_SEED`, to try others), resuming it after each kill, and compares the end
/// with the uninterrupted run.
fn killed_anywhere_resumes_exactly(args: impl Fn(&Path) -> Vec<String>, log_name: &str, seed: u64) {
    let seed = match std::env::var("SHEAR_TEST_KILL_SEED") {
        Ok(s) => s.parse().expect("SHEAR_TEST_KILL_SEED: a number"),
        Err(_) => seed,
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let whole = uninterrupted(&args, tmp.path(), log_name);
    let out = tmp.path().join("killed");
    let log = out.join(log_name);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = Vec::new();
    for i in 0..KILLS {
        let (logged, steps) = (lines(&log).len(), checkpoint_steps(&out));
        let Some(kill) = next_kill(&mut rng, i, logged, &steps) else {
            break;
        };
        let run = match i {
            0 => args(&out),
            _ => with_resume(args(&out)),
        };
        let stderr = tmp.path().join(format!("stderr-{i}.txt"));
        run_killed(&run, &log, &kill, &stderr);
        let said = std::fs::read_to_string(&stderr).unwrap();
        if i > 0 {
            assert_resumed_as_expected(&said, &steps);
        }
        kills.push((kill, lines(&log).len(), checkpoint_steps(&out)));
    }
    let hooks = kills
        .iter()
        .filter(|(k, ..)| matches!(k, Kill::Hook { .. }))
        .count();
    assert!(
        kills.len() >= 5 && hooks >= 1,
        "seed {seed}: {} kills, {hooks} in a checkpoint write: {kills:#?}",
        kills.len()
    );
    let steps = checkpoint_steps(&out);
    let said = succeed(&with_resume(args(&out)));
    assert_resumed_as_expected(&said, &steps);
    assert_same_run(&whole, &out, log_name);
    eprintln!(
        "{log_name}, seed {seed}: {} kills (kind, log lines after, checkpoints after): \
         {kills:?}; {:.1} s",
        kills.len(),
        t.elapsed().as_secs_f64()
    );
}

/// A resume said where it continued: from the newest checkpoint of `steps` (those before it
/// started), or from step 0 with a warning when there was none.
fn assert_resumed_as_expected(said: &str, steps: &[usize]) {
    match steps.last() {
        Some(s) => assert!(
            said.contains("resuming from ") && said.contains(&format!("step-{s:08} (step {s})")),
            "expected a resume from step {s}: {said}"
        ),
        None => assert!(
            said.lines()
                .any(|l| l.starts_with("warning: no checkpoint in ")
                    && l.ends_with(": starting from step 0")),
            "expected a fresh start with a warning: {said}"
        ),
    }
    assert!(!said.contains("unusable"), "{said}");
}

#[test]
fn a_pruning_run_killed_anywhere_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    killed_anywhere_resumes_exactly(
        |out| save_every(tiny_prune_args(&d, out, STEPS), EVERY),
        "prune_log.jsonl",
        0x5eed_0001,
    );
}

#[test]
fn a_training_run_killed_anywhere_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    killed_anywhere_resumes_exactly(
        |out| save_every(tiny_train_args(&d, out, STEPS), EVERY),
        "train_log.jsonl",
        0x5eed_0002,
    );
}

/// The largest file of checkpoint `dir` (a module record).
fn largest_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

/// Resumes the run in `out` after `damage` spoiled a file of its newest checkpoint: the resume
/// warns, naming the checkpoint and `reason`, continues from the one before and ends as
/// `whole`.
fn resume_past_damage(
    args: &dyn Fn(&Path) -> Vec<String>,
    whole: &Path,
    out: &Path,
    log_name: &str,
    damage: impl FnOnce(&Path),
    reason: &str,
) {
    let steps = checkpoint_steps(out);
    assert!(steps.len() >= 2, "{steps:?}");
    let (older, newest) = (steps[steps.len() - 2], steps[steps.len() - 1]);
    let file = largest_file(&out.join(format!("checkpoints/step-{newest:08}")));
    damage(&file);
    let said = succeed(&with_resume(args(out)));
    let name = file.file_name().unwrap().to_str().unwrap();
    let warned = said.lines().any(|l| {
        l.starts_with("warning: checkpoint ")
            && l.contains(&format!("step-{newest:08} is unusable: {name}"))
            && l.contains(reason)
            && l.ends_with("; trying the one before")
    });
    assert!(warned, "no warning about step {newest}: {said}");
    assert!(
        said.contains(&format!("step-{older:08} (step {older})")),
        "resumed from {older}: {said}"
    );
    assert_same_run(whole, out, log_name);
}

/// A pruning run stopped at step 12 (checkpoints at 9 and 12): its newest checkpoint with one
/// byte flipped in its largest file is skipped and the run resumes from step 9; then the
/// finished run's newest checkpoint gets a truncated file, and a resume goes back to the one
/// before it. Both end as the uninterrupted run.
#[test]
fn a_damaged_newest_checkpoint_is_skipped_and_the_run_resumes_from_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let d = tmp.path().join("data");
    data(&d);
    let args = |out: &Path| save_every(tiny_prune_args(&d, out, STEPS), EVERY);
    let log_name = "prune_log.jsonl";
    let whole = uninterrupted(&args, tmp.path(), log_name);
    let out = tmp.path().join("damaged");
    let mut first = args(&out);
    first.extend(["--stop-after".into(), "12".into()]);
    succeed(&first);
    assert_eq!(checkpoint_steps(&out), [9, 12]);
    let flip = |file: &Path| {
        let mut bytes = std::fs::read(file).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x40;
        std::fs::write(file, bytes).unwrap();
    };
    resume_past_damage(&args, &whole, &out, log_name, flip, "SHA-256");
    // The finished run keeps its last two checkpoints; cut the newest's largest record.
    let truncate = |file: &Path| {
        let len = std::fs::metadata(file).unwrap().len();
        File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_len(len / 3)
            .unwrap();
    };
    resume_past_damage(&args, &whole, &out, log_name, truncate, "the manifest says");
    eprintln!("damaged checkpoints: {:.1} s", t.elapsed().as_secs_f64());
}

/// `--keep-checkpoints 0` is refused with one line; K may change on resume.
#[test]
fn keep_checkpoints_is_at_least_one_and_may_change_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    let out = tmp.path().join("run");
    let args = |extra: &[&str]| {
        let mut a = save_every(tiny_prune_args(&d, &out, STEPS), EVERY);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let o = run_shear(
        &args(&["--keep-checkpoints", "0"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    assert_one_line_error(&o, &["--keep-checkpoints 0", "at least 1"]);
    succeed(&args(&["--stop-after", "9", "--keep-checkpoints", "3"]));
    assert_eq!(checkpoint_steps(&out), [3, 6, 9]);
    succeed(&args(&[
        "--resume",
        "--stop-after",
        "12",
        "--keep-checkpoints",
        "1",
    ]));
    assert_eq!(checkpoint_steps(&out), [12]);
}
