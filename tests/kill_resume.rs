//! Kill and resume through the binary: a pruning run and a training run are killed with
//! SIGKILL between checkpoints, resumed with `--resume`, and must end with the same step logs
//! (every step once, line for line) and byte-identical models as the uninterrupted runs. A
//! resumed run given a conflicting option is refused with one line naming it.

mod common;

use std::path::Path;

use common::*;

/// Two domains of ids below 500, enough sequences that nothing runs out.
fn data(dir: &Path) {
    two_domains(dir, [3, 60, 60]);
}

fn prune_args(data: &Path, out: &Path) -> Vec<String> {
    tiny_prune_args(data, out, 40)
}

fn train_args(data: &Path, out: &Path) -> Vec<String> {
    tiny_train_args(data, out, 40)
}

/// Kills a run of `args` in `killed` after `after` log lines, resumes it, and compares it with
/// the uninterrupted run in `whole`.
fn killed_and_resumed_equals_uninterrupted(
    args: impl Fn(&Path) -> Vec<String>,
    whole: &Path,
    killed: &Path,
    log_name: &str,
    after: usize,
) {
    succeed(&args(whole));
    let reference = lines(&whole.join(log_name));
    assert_eq!(reference.len(), 40);
    let at_kill = kill_after(&args(killed), &killed.join(log_name), after);
    // Steps after the newest checkpoint were logged before the kill and must not appear twice.
    let newest = std::fs::read_dir(killed.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("step-")
                .and_then(|n| n.parse::<usize>().ok())
        })
        .max()
        .unwrap();
    assert!(
        newest < at_kill,
        "killed between checkpoints: {newest} < {at_kill}"
    );
    let mut resume = args(killed);
    resume.push("--resume".into());
    let stderr = succeed(&resume);
    assert!(stderr.contains("resuming from"), "{stderr}");
    let got = lines(&killed.join(log_name));
    assert_eq!(got.len(), 40, "every step logged once");
    for (i, (a, b)) in reference.iter().zip(&got).enumerate() {
        assert_eq!(a, b, "{log_name}, step {i}");
    }
    assert_eq!(
        std::fs::read(whole.join("model/model.safetensors")).unwrap(),
        std::fs::read(killed.join("model/model.safetensors")).unwrap(),
        "the final models are byte-identical"
    );
}

#[test]
fn a_killed_pruning_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    killed_and_resumed_equals_uninterrupted(
        |out| prune_args(&d, out),
        &tmp.path().join("whole"),
        &tmp.path().join("killed"),
        "prune_log.jsonl",
        7,
    );
    // The same masks and multipliers, bit for bit (the metadata's key order may differ).
    assert_eq!(
        raw_tensors(&tmp.path().join("whole/masks.safetensors")),
        raw_tensors(&tmp.path().join("killed/masks.safetensors")),
        "the same masks"
    );
}

#[test]
fn a_killed_training_run_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    killed_and_resumed_equals_uninterrupted(
        |out| train_args(&d, out),
        &tmp.path().join("whole"),
        &tmp.path().join("killed"),
        "train_log.jsonl",
        7,
    );
}

/// A resumed run takes its settings from the checkpoint: a conflicting option given on the
/// command line is refused with one line naming it; an option left at its default is not a
/// conflict; without --resume, a directory with checkpoints is refused.
#[test]
fn a_resumed_run_refuses_conflicting_options() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    data(&d);
    let out = tmp.path().join("run");
    let mut args = prune_args(&d, &out);
    args.extend(["--stop-after".into(), "4".into()]);
    succeed(&args);
    let run = |extra: &[&str]| {
        let mut a: Vec<String> = prune_args(&d, &out);
        a.extend(extra.iter().map(|s| s.to_string()));
        run_shear(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
    };
    assert_one_line_error(
        &run(&["--resume", "--seed", "5"]),
        &["seed = 5", "checkpoint's seed = 0", "step-00000004"],
    );
    assert_one_line_error(
        &run(&["--resume", "--temperature", "0.83"]),
        &["temperature = 0.83", "checkpoint's temperature = 0.666"],
    );
    assert_one_line_error(&run(&[]), &["holds checkpoints of an earlier run"]);
    // Stopping again is not a setting of the run.
    let o = run(&["--resume", "--stop-after", "8"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(lines(&out.join("prune_log.jsonl")).len(), 8);
}
