//! Helpers shared by the integration tests: fixture paths, reading reference tensors, running
//! the `shear` binary.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use shear_testkit::*;

pub fn shear() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shear"))
}

/// Runs `shear` and returns its output, with the environment given.
pub fn run_shear(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = shear();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Asserts a failed run that printed exactly one line on stderr, containing every `needle`,
/// and no panic, with exit status 1.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    assert_refused(out, 1, needles);
}

/// Asserts a malformed command line: refused by the argument parser with exit status 2 and one
/// line, containing every `needle`, that ends by pointing at `--help`.
pub fn assert_usage_error(out: &Output, needles: &[&str]) {
    assert_refused(out, 2, needles);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim_end().ends_with("(see --help)"), "{stderr}");
}

/// A refusal with exit status `code` and one `error:` line containing every `needle`.
pub fn assert_refused(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` not in: {stderr}");
    }
    // For README's table of refusals (`--nocapture`).
    println!("REFUSED|{}", lines[0]);
}

/// Like [`assert_one_line_error`], after leaving out `warning:` lines (e.g. a model without a
/// tokenizer.json to check data against).
pub fn assert_error_line(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept: String = stderr
        .lines()
        .filter(|l| !l.starts_with("warning: "))
        .map(|l| format!("{l}\n"))
        .collect();
    let filtered = Output {
        status: out.status,
        stdout: out.stdout.clone(),
        stderr: kept.into_bytes(),
    };
    assert_one_line_error(&filtered, needles);
}

/// A run that failed during its work: exit status 1, no panic, and after its progress lines one
/// last line, the only `error:` line, containing every `needle`.
pub fn assert_last_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(
        stderr.lines().last(),
        Some(errors[0]),
        "the last line: {stderr}"
    );
    for n in needles {
        assert!(errors[0].contains(n), "`{n}` not in: {stderr}");
    }
}

/// `DIR/run.json` of a `shear run`.
pub fn read_run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

/// The stage names recorded in a run.json, in order.
pub fn stage_names(run: &serde_json::Value) -> Vec<&str> {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

/// The lines of a text file (none when it does not exist).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Starts `shear args` and kills it (SIGKILL) once `log` has `after` lines: past a checkpoint
/// and some steps beyond it. Returns the number of lines the log had when it was killed.
pub fn kill_after(args: &[String], log: &Path, after: usize) -> usize {
    let mut child = shear()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let n = lines(log).len();
        if n >= after {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert!(!status.success(), "the run was killed, not finished");
            return lines(log).len();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn succeed(args: &[String]) -> String {
    let o = run_shear(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    stderr
}

/// A pruning run of the `pruning/source` fixture over two-domain data: micro-batches of 4, two
/// per step, an update every 3 steps, a checkpoint every 4.
pub fn tiny_prune_args(data: &Path, out: &Path, steps: usize) -> Vec<String> {
    let src = fixture("pruning/source");
    [
        "prune",
        src.to_str().unwrap(),
        "--target",
        "layers=3,hidden=48,heads=2,intermediate=96",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        &steps.to_string(),
        "--batch",
        "4",
        "--grad-accum",
        "2",
        "--update-every",
        "3",
        "--save-every",
        "4",
    ]
    .map(String::from)
    .to_vec()
}

/// Continued training of the `pruning/source` fixture, as [`tiny_prune_args`].
pub fn tiny_train_args(data: &Path, out: &Path, steps: usize) -> Vec<String> {
    let model = fixture("pruning/source");
    [
        "train",
        model.to_str().unwrap(),
        "--reference-model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        &steps.to_string(),
        "--batch",
        "4",
        "--grad-accum",
        "2",
        "--update-every",
        "3",
        "--save-every",
        "4",
        "--lr",
        "1e-3",
    ]
    .map(String::from)
    .to_vec()
}
