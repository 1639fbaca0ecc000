//! Preemption through the binary: a SIGTERM (or SIGINT) during pruning or training finishes the
//! current step, writes a checkpoint and exits with status 75 ("resumable", one line saying
//! where the checkpoint is); `--resume` then ends with the uninterrupted run's log, line for
//! line, and its model, byte for byte. `shear run` stopped in a stage continues that stage when
//! run again. A second signal ends the process at once (status 130).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const STEPS: usize = 40;

/// Two domains of ids below 500, enough sequences that nothing runs out.
fn data(dir: &Path) {
    two_domains(dir, [3, 60, 60]);
}

/// Sends `signals` (shell names) to `child` one right after the other.
fn signal(child: &Child, signals: &[&str]) {
    let script: Vec<String> = signals
        .iter()
        .map(|s| format!("kill -{s} {}", child.id()))
        .collect();
    let ok = Command::new("sh")
        .args(["-c", &script.join("; ")])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signals:?}");
}

/// Starts `shear args` and returns it once `log` has `lines` lines.
fn start(args: &[String], log: &Path, lines_: usize) -> Child {
    let mut child = shear()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while lines(log).len() < lines_ {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before the signal");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn stopped_and_resumed_equals_uninterrupted(
    args: impl Fn(&Path) -> Vec<String>,
    tmp: &Path,
    log_name: &str,
) {
    let (whole, stopped) = (tmp.join("whole"), tmp.join("stopped"));
    succeed(&args(&whole));
    let child = start(&args(&stopped), &stopped.join(log_name), 5);
    signal(&child, &["TERM"]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("stopped by a signal after step") && last.contains("continue with --resume"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The checkpoint is at the last logged step.
    let logged = lines(&stopped.join(log_name)).len();
    assert!((5..STEPS).contains(&logged), "{logged} steps logged");
    assert!(
        last.contains(&format!("after step {logged} of {STEPS}")),
        "{last}"
    );
    let checkpoint = stopped.join(format!("checkpoints/step-{logged:08}"));
    assert!(checkpoint.is_dir(), "{} missing", checkpoint.display());
    let mut resume = args(&stopped);
    resume.push("--resume".into());
    let stderr = succeed(&resume);
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert_eq!(lines(&whole.join(log_name)), lines(&stopped.join(log_name)));
    assert_eq!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        std::fs::read(stopped.join("model/model.safetensors")).unwrap(),
        "the final models are byte-identical"
    );
}

#[test]
fn sigterm_while_pruning_checkpoints_and_the_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    stopped_and_resumed_equals_uninterrupted(
        |out| tiny_prune_args(&d, out, STEPS),
        tmp.path(),
        "prune_log.jsonl",
    );
}

#[test]
fn sigterm_while_training_checkpoints_and_the_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    stopped_and_resumed_equals_uninterrupted(
        |out| tiny_train_args(&d, out, STEPS),
        tmp.path(),
        "train_log.jsonl",
    );
}

/// With two data-parallel peers the signal reaches one process; the peers agree on the step to
/// stop at (an all-reduce of the request after every step).
#[test]
fn sigterm_while_two_peers_prune_checkpoints_and_the_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    stopped_and_resumed_equals_uninterrupted(
        |out| {
            let mut a = tiny_prune_args(&d, out, STEPS);
            a.extend(["--devices", "2"].map(String::from));
            a
        },
        tmp.path(),
        "prune_log.jsonl",
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    let out = tmp.path().join("run");
    let child = start(
        &tiny_prune_args(&d, &out, 400),
        &out.join("prune_log.jsonl"),
        3,
    );
    signal(&child, &["TERM", "INT"]);
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn shear_run_stopped_in_its_pruning_stage_continues_it_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = mini_recipe(tmp.path(), 200);
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
    let (whole, stopped) = (tmp.path().join("whole"), tmp.path().join("stopped"));
    succeed(&args(&whole));
    let log = "prune/prune_log.jsonl";
    let child = start(&args(&stopped), &stopped.join(log), 5);
    signal(&child, &["TERM"]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("prune stage") && last.contains("run the same command again"),
        "{stderr}"
    );
    assert!(!stopped.join("prune/.complete").exists());
    let stderr = succeed(&args(&stopped));
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert_eq!(lines(&whole.join(log)), lines(&stopped.join(log)));
    assert_eq!(
        std::fs::read(whole.join("train/model/model.safetensors")).unwrap(),
        std::fs::read(stopped.join("train/model/model.safetensors")).unwrap(),
    );
}
