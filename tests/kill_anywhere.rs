//! Kill anywhere through the binary (docs/algorithm.md §9): a pruning run, a training run,
//! `shear data prepare` and `shear run` are killed with SIGKILL at named points that the process
//! reaches itself (the test hook `SHEAR_TEST_KILL_AT`, `shear_io::kill_point`): inside a step,
//! right after a step's log line, at each phase of a checkpoint write, inside the atomic
//! replacement of a checkpoint directory and of the step log a resume cuts back, and inside data
//! preparation's file writes — and, once, a torn last log line is left as a power loss leaves
//! it. A run that ends by SIGKILL has reached its point, so every point of the list is known to
//! be hit. Each chain, resumed after every kill, must end as the uninterrupted run: the step log
//! line for line, the masks bit for bit, the model byte for byte, and no temporary left. A newest
//! checkpoint with a flipped byte or a truncated file is skipped with a warning, and the run
//! resumes exactly from the one before.

mod common;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Steps of every run here, and the checkpoint cadence.
const STEPS: usize = 30;
const EVERY: usize = 3;
/// Checkpoints kept (the default of --keep-checkpoints).
const KEEP: usize = 2;
const KILL_AT: &str = "SHEAR_TEST_KILL_AT";

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

/// Runs `shear args` with the hook set to kill it at `point`; its stderr goes to `stderr`.
/// Panics unless it ended by SIGKILL, which only the hook sends: the point was reached.
fn killed_at(args: &[String], point: &str, stderr: &Path) {
    let status = shear()
        .args(args)
        .env(KILL_AT, point)
        .stdout(Stdio::null())
        .stderr(File::create(stderr).unwrap())
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "{point}: not reached (the run ended with {status}): {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
}

/// Where a chain kills a run (see the module documentation).
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// `step:N:<phase>` with `before-update` or `logged`.
    Step(&'static str),
    /// `checkpoint:N:<phase>`.
    Checkpoint(&'static str),
    /// `commit:step-N:<phase>`: the checkpoint directory moved into place.
    Commit(&'static str),
    /// `write:<log>:before-rename`: the step log being cut back as the run resumes.
    LogRewrite,
}

/// The kills of a chain, in order: every phase at least once.
const CHAIN: [Kill; 10] = [
    Kill::Step("before-update"),
    Kill::Checkpoint("after-records"),
    Kill::Step("logged"),
    Kill::Checkpoint("after-state"),
    Kill::LogRewrite,
    Kill::Checkpoint("after-commit"),
    Kill::Commit("before-replace"),
    Kill::Checkpoint("during-cleanup"),
    Kill::Commit("after-replace"),
    Kill::Step("logged"),
];

/// The point name of `kill` for a run whose log has `logged` lines, with checkpoints at `steps`
/// before it starts (it resumes from the newest); `rng` picks the step where there is a
/// choice.
fn point(kill: Kill, rng: &mut StdRng, logged: usize, steps: &[usize], log: &str) -> String {
    let resumed_at = steps.last().copied().unwrap_or(0);
    // The first checkpoint the run writes after its log's end.
    let next = (logged / EVERY + 1) * EVERY;
    match kill {
        Kill::Step(phase) => {
            let step = rng.random_range(logged..logged + EVERY);
            format!("step:{step}:{phase}")
        }
        Kill::Checkpoint("during-cleanup") => {
            // Older checkpoints are removed only when KEEP of them exist as one is written.
            let mut step = next;
            while steps.len() + (resumed_at + EVERY..step).step_by(EVERY).count() < KEEP {
                step += EVERY;
            }
            format!("checkpoint:{step}:during-cleanup")
        }
        Kill::Checkpoint(phase) => format!("checkpoint:{next}:{phase}"),
        Kill::Commit(phase) => format!("commit:step-{next:08}:{phase}"),
        Kill::LogRewrite => format!("write:{log}:before-rename"),
    }
}

/// The uninterrupted run of `args` in `tmp/whole`: its directory and log.
fn uninterrupted(args: &dyn Fn(&Path) -> Vec<String>, tmp: &Path, log_name: &str) -> PathBuf {
    let whole = tmp.join("whole");
    succeed(&args(&whole));
    assert_eq!(lines(&whole.join(log_name)).len(), STEPS);
    whole
}

/// No temporary (`.*.tmp`) and no lock left anywhere under `dir`.
fn nothing_left(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !(name.starts_with('.') && name.ends_with(".tmp")) && name != ".shear.lock",
            "left behind: {}",
            path.display()
        );
        if path.is_dir() {
            nothing_left(&path);
        }
    }
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
    if log_name == "prune_log.jsonl" {
        // The same masks and multipliers, bit for bit (the metadata's key order may differ).
        assert_eq!(
            raw_tensors(&whole.join("masks.safetensors")),
            raw_tensors(&got.join("masks.safetensors")),
            "the same masks"
        );
    }
    let steps = checkpoint_steps(got);
    assert!(steps.len() <= KEEP, "at most {KEEP} checkpoints: {steps:?}");
    nothing_left(got);
}

/// Cuts the last line of `log` in half, as a write stopped by a power loss or a full disk
/// leaves it.
fn tear_last_line(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap();
    let last = text.trim_end().rsplit('\n').next().unwrap().len();
    std::fs::write(log, &text.as_bytes()[..text.trim_end().len() - last / 2]).unwrap();
}

/// Kills a run of `args` at every point of [`CHAIN`] in turn, at steps drawn from `seed` (or
/// the seed in `SHEAR_TEST_KILL_SEED`, to try others), resuming it after each kill; before the
/// last resume the log's last line is torn. The end must be the uninterrupted run's.
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
    let mut hit = Vec::new();
    for (i, kill) in CHAIN.into_iter().enumerate() {
        let (logged, steps) = (lines(&log).len(), checkpoint_steps(&out));
        let at = point(kill, &mut rng, logged, &steps, log_name);
        let run = match i {
            0 => args(&out),
            _ => with_resume(args(&out)),
        };
        let stderr = tmp.path().join(format!("stderr-{i}.txt"));
        killed_at(&run, &at, &stderr);
        if i > 0 {
            assert_resumed_as_expected(&std::fs::read_to_string(&stderr).unwrap(), &steps);
        }
        hit.push((at, lines(&log).len(), checkpoint_steps(&out)));
    }
    tear_last_line(&log);
    let steps = checkpoint_steps(&out);
    let said = succeed(&with_resume(args(&out)));
    assert_resumed_as_expected(&said, &steps);
    assert!(
        said.contains(&format!("{}: dropped a torn last line", log.display())),
        "the torn line is dropped with a warning: {said}"
    );
    assert_same_run(&whole, &out, log_name);
    eprintln!(
        "{log_name}, seed {seed}: killed at (point, log lines after, checkpoints after): {hit:?}; \
         {:.1} s",
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

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            match p.is_dir() {
                true => pending.push(p),
                false => out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                )),
            }
        }
    }
    out.sort();
    out
}

/// `shear data prepare` killed while it writes a shard and while it writes the manifest, then
/// run again: the folder ends as an uninterrupted run's, file for file, with no temporary.
#[test]
fn data_prepare_killed_anywhere_ends_as_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    write_corpus(tmp.path());
    let tok = fixture("llama2-tokenizer/tokenizer.json");
    let args = |out: &Path| -> Vec<String> {
        [
            "data",
            "prepare",
            "--domain",
            &format!(
                "web={},{}",
                tmp.path().join("web-a.jsonl").display(),
                tmp.path().join("web-b.jsonl.gz").display()
            ),
            "--domain",
            &format!("code={}", tmp.path().join("code").display()),
            "--tokenizer",
            tok.to_str().unwrap(),
            "--seq-len",
            "32",
            "--eval-sequences",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = tmp.path().join("whole");
    succeed(&args(&whole));
    let out = tmp.path().join("killed");
    for (i, point) in [
        "write:code.bin:before-rename",
        "write:manifest.json:before-rename",
    ]
    .into_iter()
    .enumerate()
    {
        killed_at(
            &args(&out),
            point,
            &tmp.path().join(format!("stderr-{i}.txt")),
        );
    }
    succeed(&args(&out));
    assert_eq!(files(&out), files(&whole), "the same shards and manifest");
    nothing_left(&out);
}

/// `shear run` killed in its data stage, its pruning stage and its training stage (mid-step,
/// inside a checkpoint write, as a stage is marked complete), each time run again with the
/// same command: it ends with the uninterrupted run's models and metrics.
#[test]
fn a_shear_run_killed_in_each_stage_ends_as_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    // Two pruning steps (no checkpoint) and four training steps with a checkpoint every two:
    // the step and checkpoint points below are each reached in one stage only.
    let recipe = mini_recipe(tmp.path(), 2);
    let args = |out: &Path| -> Vec<String> {
        [
            "run",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = tmp.path().join("whole");
    succeed(&args(&whole));
    let out = tmp.path().join("killed");
    let points = [
        "write:manifest.json:before-rename",
        "step:1:before-update",
        "write:.complete:before-rename",
        "commit:step-00000002:before-replace",
        "checkpoint:2:after-state",
        "step:3:logged",
    ];
    for (i, point) in points.into_iter().enumerate() {
        killed_at(
            &args(&out),
            point,
            &tmp.path().join(format!("stderr-{i}.txt")),
        );
    }
    succeed(&args(&out));
    for file in [
        "prune/model/model.safetensors",
        "train/model/model.safetensors",
    ] {
        assert!(
            std::fs::read(whole.join(file)).unwrap() == std::fs::read(out.join(file)).unwrap(),
            "{file} is byte-identical"
        );
    }
    // The same masks and multipliers, bit for bit (the metadata's key order may differ).
    let masks = |dir: &Path| raw_tensors(&dir.join("prune/masks.safetensors"));
    assert_eq!(masks(&whole), masks(&out));
    for log in ["prune/prune_log.jsonl", "train/train_log.jsonl"] {
        assert_eq!(lines(&whole.join(log)), lines(&out.join(log)), "{log}");
    }
    let metrics = |dir: &Path| read_run_json(dir)["metrics"].clone();
    assert_eq!(metrics(&whole), metrics(&out));
    nothing_left(&out);
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
    assert_one_line_error(&o, &["keep_checkpoints 0", "must be at least 1"]);
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
