//! One writer per output directory (docs/algorithm.md §9): every command that writes `--out`
//! holds an advisory lock on it (`OUT/.shear.lock`, with its pid) and refuses a second writer
//! with one line naming the holder's pid, leaving the holder's run untouched; the lock of a
//! process that was killed is taken over by the next run.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A second `shear prune --resume` into the directory of a running one is refused naming the
/// first's pid; the first goes on and ends as an uninterrupted run.
#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    two_domains(&d, [3, 60, 60]);
    let (whole, out) = (tmp.path().join("whole"), tmp.path().join("run"));
    succeed(&tiny_prune_args(&d, &whole, 40));
    let mut first = shear()
        .args(tiny_prune_args(&d, &out, 40))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while lines(&out.join("prune_log.jsonl")).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut second = tiny_prune_args(&d, &out, 40);
    second.push("--resume".into());
    let o = run_shear(&second.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let pid = first.id();
    assert_error_line(
        &o,
        &[
            &format!("is in use by another shear process (pid {pid})"),
            "choose another output directory",
        ],
    );
    assert!(first.wait().unwrap().success(), "the first run goes on");
    assert_eq!(
        lines(&whole.join("prune_log.jsonl")),
        lines(&out.join("prune_log.jsonl"))
    );
    assert!(!out.join(".shear.lock").exists(), "released at the end");
}

/// A run killed by SIGKILL leaves its lock file with its pid; the resumed run takes it over
/// (the kernel released the lock with the process), says so, and removes it at the end.
#[test]
fn the_lock_of_a_killed_run_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    two_domains(&d, [3, 60, 60]);
    let out = tmp.path().join("run");
    let args = tiny_train_args(&d, &out, 12);
    let child = shear()
        .args(&args)
        .env("SHEAR_TEST_KILL_AT", "step:6:logged")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.signal(), Some(9));
    let held = std::fs::read_to_string(out.join(".shear.lock")).unwrap();
    assert_eq!(
        held.trim(),
        pid.to_string(),
        "the killed run's pid is in the lock file"
    );
    let mut resume = args.clone();
    resume.push("--resume".into());
    let said = succeed(&resume);
    assert!(
        said.contains(&format!(
            "the lock of pid {pid}, which is no longer running, was taken over"
        )),
        "{said}"
    );
    assert!(!out.join(".shear.lock").exists());
}

/// Every command that writes an output directory takes its lock: each is refused while another
/// holder (this test) has it, naming the holder, and leaves the directory as it was.
#[test]
fn every_writing_command_takes_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let d = t.join("data");
    two_domains(&d, [3, 20, 20]);
    write_corpus(t);
    let recipe = mini_recipe(&t.join("recipe"), 2);
    let src = fixture("pruning/source");
    let pruned = t.join("pruned");
    succeed(&tiny_prune_args(&d, &pruned, 2));
    let out = t.join("out");
    std::fs::create_dir(&out).unwrap();
    let _held = shear_io::OutLock::acquire(&out).unwrap();
    let o = out.to_str().unwrap();
    let tok = fixture("llama2-tokenizer/tokenizer.json");
    let masks = pruned.join("masks.safetensors");
    let commands: Vec<Vec<String>> = vec![
        tiny_prune_args(&d, &out, 2),
        tiny_train_args(&d, &out, 2),
        ["run", recipe.to_str().unwrap(), "--out", o]
            .map(String::from)
            .to_vec(),
        [
            "data",
            "prepare",
            "--domain",
            &format!("code={}", t.join("code").display()),
            "--tokenizer",
            tok.to_str().unwrap(),
            "--seq-len",
            "16",
            "--eval-sequences",
            "1",
            "--out",
            o,
        ]
        .map(String::from)
        .to_vec(),
        ["convert", src.to_str().unwrap(), o]
            .map(String::from)
            .to_vec(),
        [
            "materialize",
            "--source",
            src.to_str().unwrap(),
            "--masks",
            masks.to_str().unwrap(),
            "--out",
            o,
        ]
        .map(String::from)
        .to_vec(),
    ];
    let pid = std::process::id();
    for args in commands {
        let r = run_shear(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_error_line(
            &r,
            &[&format!(
                "{o} is in use by another shear process (pid {pid})"
            )],
        );
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [".shear.lock"], "{}: nothing written", args[0]);
    }
}
