//! Bad inputs through the binary, one test each: every one must be refused before any work with
//! exit status ≠ 0, no panic or backtrace, one `error:` line (warnings aside) naming the file,
//! key or value, and nothing written in the output directory. README "Reliability" lists each
//! with the line a user sees; run with `--nocapture` to print those lines (`ROW|...`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The names of the entries under `dir` (none when it does not exist).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Asserts the refusal and prints the table row, with the temporary directory shown as `TMP`
/// and the repository as `.`.
#[allow(clippy::too_many_arguments)]
fn check(
    test: &str,
    class: &str,
    input: &str,
    code: i32,
    tmp: &Path,
    before: Option<&[String]>,
    out: &Output,
    needles: &[&str],
) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{test}: expected a refusal, got success; stderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{test}: panic: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "{test}: exit status {code} expected (1: refused, 2: a malformed command line): {stderr}"
    );
    let mut errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("warning: "))
        .collect();
    if before.is_none() {
        // A failure during the work follows the run's progress lines: it must be the last
        // line and the only error.
        assert_eq!(
            errors.iter().filter(|l| l.starts_with("error")).count(),
            1,
            "{test}: {stderr}"
        );
        errors.drain(..errors.len().saturating_sub(1));
    }
    assert_eq!(errors.len(), 1, "{test}: expected one line, got: {stderr}");
    let line = errors[0];
    assert!(line.starts_with("error: "), "{test}: {stderr}");
    // The argument parser's refusals point at --help, the others do not.
    assert_eq!(line.ends_with("(see --help)"), code == 2, "{test}: {line}");
    for n in needles {
        assert!(line.contains(n), "{test}: `{n}` not in: {line}");
    }
    match before {
        Some(before) => assert_eq!(
            listing(&tmp.join("out")),
            before,
            "{test}: nothing may be written in the output directory"
        ),
        None => no_partial_files(test, &tmp.join("out")),
    }
    let shown = line
        .replace(tmp.to_str().unwrap(), "TMP")
        .replace(env!("CARGO_MANIFEST_DIR"), ".")
        .replace('|', "\\|");
    let row = format!("| {class} | {input} | `{test}` | {code} | `` {shown} `` |");
    println!("ROW{row}");
    // README's table is this output (scripts/reliability_table.sh writes it): the row there
    // must be the line a user sees now, up to numbers that vary by machine (available memory).
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let digits = |t: &str| {
        let mut out = String::new();
        for ch in t.chars() {
            match (ch.is_ascii_digit(), out.ends_with('#')) {
                (true, true) => {}
                (true, false) => out.push('#'),
                (false, _) => out.push(ch),
            }
        }
        out
    };
    assert!(
        readme.lines().any(|l| digits(l) == digits(&row)),
        "{test}: README's Reliability table lacks the row (run scripts/reliability_table.sh):\n{row}"
    );
}

/// `case!(name, class, input, |tmp| { setup; args }, [needles])`: a test named `name` that runs
/// `shear args` after the setup, in a fresh temporary directory.
macro_rules! case {
    ($name:ident, $class:literal, $input:literal, |$t:ident| $body:block, [$($n:expr),*]) => {
        case!(@ 1, $name, $class, $input, |$t| $body, [$($n),*]);
    };
    (@ $code:literal, $name:ident, $class:literal, $input:literal, |$t:ident| $body:block, [$($n:expr),*]) => {
        #[test]
        fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let $t: &Path = dir.path();
            let cmd: Command = $body;
            let before = listing(&$t.join("out"));
            let out = run(cmd);
            check(stringify!($name), $class, $input, $code, $t, Some(&before), &out, &[$($n),*]);
        }
    };
}

/// As [`case!`], for a malformed command line: refused by the argument parser, exit status 2.
macro_rules! usage {
    ($name:ident, $class:literal, $input:literal, |$t:ident| $body:block, [$($n:expr),*]) => {
        case!(@ 2, $name, $class, $input, |$t| $body, [$($n),*]);
    };
}

/// As [`case!`], for failures during the work (a full disk): what was written whole may stay,
/// but no temporary or half-written file, and no model.
macro_rules! case_during_work {
    ($name:ident, $class:literal, $input:literal, |$t:ident| $body:block, [$($n:expr),*]) => {
        #[test]
        fn $name() {
            let dir = tempfile::tempdir().unwrap();
            let $t: &Path = dir.path();
            let out = run($body);
            check(stringify!($name), $class, $input, 1, $t, None, &out, &[$($n),*]);
        }
    };
}

/// No `.tmp` entry anywhere under `dir`, and no model directory.
fn no_partial_files(test: &str, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp"),
            "{test}: left behind {}",
            path.display()
        );
        assert!(
            name != "model",
            "{test}: a model was written: {}",
            path.display()
        );
        if path.is_dir() {
            no_partial_files(test, &path);
        }
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap()
}

fn shear_with(args: &[String]) -> Command {
    let mut c = shear();
    c.args(args);
    c
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn p(t: &Path, rel: &str) -> String {
    t.join(rel).to_str().unwrap().to_string()
}

fn source() -> String {
    fixture("pruning/source").to_str().unwrap().to_string()
}

/// Two domains of prepared data in `t/data` (vocabulary 500).
fn data(t: &Path) -> PathBuf {
    let d = t.join("data");
    if !d.join("manifest.json").exists() {
        two_domains(&d, [3, 20, 20]);
    }
    d
}

/// `args` with each `--option value` (or `--flag`) of `extra` set: an option already there
/// takes the new value, others are appended.
fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    let mut i = 0;
    while i < extra.len() {
        let key = extra[i];
        let value = extra
            .get(i + 1)
            .filter(|v| !v.starts_with("--") || v.parse::<f64>().is_ok());
        match (args.iter().position(|a| a == key), value) {
            (Some(k), Some(v)) => args[k + 1] = v.to_string(),
            (Some(_), None) => {}
            (None, Some(v)) => args.extend([key.to_string(), v.to_string()]),
            (None, None) => args.push(key.to_string()),
        }
        i += if value.is_some() { 2 } else { 1 };
    }
    args
}

/// `shear prune` of the fixture over `t/data` into `t/out`, with `extra` options.
fn prune(t: &Path, extra: &[&str]) -> Command {
    let d = data(t);
    shear_with(&with(tiny_prune_args(&d, &t.join("out"), 6), extra))
}

/// `shear train` of the fixture over `t/data` into `t/out`, with `extra` options.
fn train(t: &Path, extra: &[&str]) -> Command {
    let d = data(t);
    shear_with(&with(tiny_train_args(&d, &t.join("out"), 6), extra))
}

/// A copy of the fixture model in `t/model`, `edit` applied to its tensors (name -> f32 values).
fn model_copy(t: &Path, edit: impl Fn(&str, &mut Vec<f32>)) -> String {
    let dst = t.join("model");
    std::fs::create_dir_all(&dst).unwrap();
    let src = fixture("pruning/source");
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let mut v: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        edit(&name, &mut v);
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((name.to_string(), view.shape().to_vec(), raw));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, raw)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
    dst.to_str().unwrap().to_string()
}

/// Edits `t/model/config.json` (a copy of the fixture's).
fn edit_config(t: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = t.join("model/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// `shear run` of the miniature recipe in `t`, with `--set` overrides.
fn recipe_run(t: &Path, sets: &[&str]) -> Command {
    let recipe = mini_recipe(t, 2);
    let mut a = s(&["run", recipe.to_str().unwrap(), "--out", &p(t, "out")]);
    for x in sets {
        a.push("--set".into());
        a.push(x.to_string());
    }
    shear_with(&a)
}

/// Rewrites the miniature recipe in `t` with `edit` applied to its text, and runs it.
fn recipe_text(t: &Path, edit: impl Fn(String) -> String) -> Command {
    let recipe = mini_recipe(t, 2);
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&recipe, edit(text)).unwrap();
    shear_with(&s(&[
        "run",
        recipe.to_str().unwrap(),
        "--out",
        &p(t, "out"),
    ]))
}

/// A corpus folder `t/corpus` with files `name -> bytes`, and `shear data prepare` of it with
/// the Llama-2 tokenizer into `t/out`.
fn prepare(t: &Path, files: &[(&str, &[u8])], extra: &[&str]) -> Command {
    let c = t.join("corpus");
    std::fs::create_dir_all(&c).unwrap();
    let mut a = s(&[
        "data",
        "prepare",
        "--tokenizer",
        fixture("llama2-tokenizer/tokenizer.json").to_str().unwrap(),
        "--out",
        &p(t, "out"),
        "--seq-len",
        "16",
        "--eval-sequences",
        "1",
    ]);
    for (name, bytes) in files {
        std::fs::write(c.join(name), bytes).unwrap();
        let stem = name.split('.').next().unwrap();
        a.push("--domain".into());
        a.push(format!("{stem}={}", c.join(name).display()));
    }
    shear_with(&with(a, extra))
}

fn docs(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!("{{\"text\": \"document {i} says the cat sat on the mat again and again\"}}\n")
        })
        .collect::<String>()
        .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Numeric options: finite and in range, checked before any work.

case!(
    prune_lr_nan,
    "option",
    "`prune --lr-weights nan`",
    |t| { prune(t, &["--lr-weights", "nan"]) },
    ["lr_weights NaN", "must be a finite number ≥ 0"]
);
case!(
    prune_lr_masks_inf,
    "option",
    "`prune --lr-masks inf`",
    |t| { prune(t, &["--lr-masks", "inf"]) },
    ["lr_masks inf", "must be a finite number ≥ 0"]
);
case!(
    prune_lr_huge,
    "option",
    "`prune --lr-weights 1e30`",
    |t| { prune(t, &["--lr-weights", "1e30"]) },
    ["lr_weights 1e30", "must be at most 1"]
);
case!(
    prune_lr_lambda_negative,
    "option",
    "`prune --lr-lambda -1` (a negative number after a space)",
    |t| { prune(t, &["--lr-lambda", "-1"]) },
    ["lr_lambda -1", "must be a finite number ≥ 0"]
);
case!(
    prune_temperature_zero,
    "option",
    "`prune --temperature 0`",
    |t| { prune(t, &["--temperature", "0"]) },
    ["hard-concrete temperature 0", "must be a positive number"]
);
case!(
    prune_steps_zero,
    "option",
    "`prune --steps 0`",
    |t| { prune(t, &["--steps", "0"]) },
    ["steps 0", "must be positive"]
);
case!(
    prune_grad_accum_zero,
    "option",
    "`prune --grad-accum 0`",
    |t| { prune(t, &["--grad-accum", "0"]) },
    ["grad_accum 0", "must be positive"]
);
case!(
    prune_batch_zero,
    "option",
    "`prune --batch 0`",
    |t| { prune(t, &["--batch", "0"]) },
    ["batch 0", "must be positive"]
);
usage!(
    prune_stop_after_zero,
    "option",
    "`prune --stop-after 0`",
    |t| { prune(t, &["--stop-after", "0"]) },
    ["'--stop-after <STOP_AFTER>'", "0 is not in 1.."]
);
case!(
    prune_lr_warmup_beyond_steps,
    "option",
    "`prune --steps 6 --lr-warmup 100`",
    |t| { prune(t, &["--lr-warmup", "100"]) },
    ["lr_warmup 100", "more than the 6 steps"]
);
case!(
    prune_lagrangian_warmup_beyond_steps,
    "option",
    "`prune --steps 6 --lagrangian-warmup 7`",
    |t| { prune(t, &["--lagrangian-warmup", "7"]) },
    ["lagrangian_warmup 7", "more than the 6 steps"]
);
usage!(
    prune_steps_not_a_number,
    "option",
    "`prune --steps ten`",
    |t| { prune(t, &["--steps", "ten"]) },
    ["'ten' for '--steps <STEPS>'", "invalid digit"]
);
usage!(
    prune_bad_precision,
    "option",
    "`prune --precision f8`",
    |t| { prune(t, &["--precision", "f8"]) },
    ["'--precision <PRECISION>'", "unknown precision `f8`"]
);
usage!(
    prune_bad_dtype,
    "option",
    "`prune --dtype f8`",
    |t| { prune(t, &["--dtype", "f8"]) },
    ["'--dtype <DTYPE>'", "unknown dtype `f8`"]
);
usage!(
    prune_unknown_dimension,
    "option",
    "`prune --prune heads,wings`",
    |t| { prune(t, &["--prune", "heads,wings"]) },
    ["'--prune <PRUNE>'", "`wings` is not prunable"]
);
usage!(
    prune_bad_layer_masks,
    "option",
    "`prune --layer-masks blocks`",
    |t| { prune(t, &["--layer-masks", "blocks"]) },
    [
        "'--layer-masks <LAYER_MASKS>'",
        "`blocks` is not a layer-mask kind"
    ]
);
usage!(
    prune_workers_zero,
    "option",
    "`prune --workers 0`",
    |t| { prune(t, &["--workers", "0"]) },
    ["'--workers <WORKERS>'", "0 is not in 1.."]
);
usage!(
    prune_devices_zero,
    "option",
    "`prune --devices 0`",
    |t| { prune(t, &["--devices", "0"]) },
    ["'--devices <DEVICES>'", "0 is not in 1.."]
);
case!(
    prune_keep_checkpoints_zero,
    "option",
    "`prune --keep-checkpoints 0`",
    |t| { prune(t, &["--keep-checkpoints", "0"]) },
    ["keep_checkpoints 0", "must be at least 1"]
);
case!(
    train_lr_nan,
    "option",
    "`train --lr nan`",
    |t| { train(t, &["--lr", "nan"]) },
    ["lr NaN", "must be a finite number ≥ 0"]
);
case!(
    train_lr_huge,
    "option",
    "`train --lr 1e30`",
    |t| { train(t, &["--lr", "1e30"]) },
    ["lr 1e30", "must be at most 1"]
);
case!(
    train_min_lr_ratio_above_one,
    "option",
    "`train --min-lr-ratio 2`",
    |t| { train(t, &["--min-lr-ratio", "2"]) },
    ["min_lr_ratio 2", "must be between 0 and 1"]
);
case!(
    train_weight_decay_negative,
    "option",
    "`train --weight-decay -0.1`",
    |t| { train(t, &["--weight-decay", "-0.1"]) },
    ["weight_decay -0.1", "must be a finite number ≥ 0"]
);
case!(
    train_max_grad_norm_negative,
    "option",
    "`train --max-grad-norm -1`",
    |t| { train(t, &["--max-grad-norm", "-1"]) },
    ["max_grad_norm -1", "must be a finite number ≥ 0"]
);
case!(
    train_distill_temperature_zero,
    "option",
    "`train --distill-from M --distill-temperature 0`",
    |t| {
        train(
            t,
            &["--distill-from", &source(), "--distill-temperature", "0"],
        )
    },
    ["distill_temperature 0", "must be a positive number"]
);
case!(
    train_distill_weight_negative,
    "option",
    "`train --distill-from M --distill-weight -1`",
    |t| { train(t, &["--distill-from", &source(), "--distill-weight", "-1"]) },
    ["distill_weight -1", "must be a finite number ≥ 0"]
);
case!(
    prune_distill_temperature_zero,
    "option",
    "`prune --distill-from M --distill-temperature 0`",
    |t| {
        prune(
            t,
            &["--distill-from", &source(), "--distill-temperature", "0"],
        )
    },
    ["distill_temperature 0", "must be a positive number"]
);
case!(
    prune_distill_other_vocabulary,
    "model",
    "`prune --distill-from` a teacher of another vocabulary",
    |t| {
        let teacher = fixture("llama-mha");
        prune(t, &["--distill-from", teacher.to_str().unwrap()])
    },
    ["vocabulary 1000 differs from the student's 500"]
);
case!(
    prune_importance_resume,
    "option",
    "`prune --method importance --resume`",
    |t| { prune(t, &["--method", "importance", "--resume"]) },
    ["--method importance runs in seconds and has no steps"]
);
case!(
    prune_importance_zero_batches,
    "option",
    "`prune --method importance --calibration-batches 0`",
    |t| { prune(t, &["--method", "importance", "--calibration-batches", "0"]) },
    ["calibration: 0 batches", "must be positive"]
);
case!(
    train_warmup_beyond_steps,
    "option",
    "`train --steps 6 --warmup 50`",
    |t| { train(t, &["--warmup", "50"]) },
    ["warmup 50", "more than the 6 steps"]
);
case!(
    train_batch_zero,
    "option",
    "`train --batch 0`",
    |t| { train(t, &["--batch", "0"]) },
    ["batch 0", "must be positive"]
);
usage!(
    train_seed_negative,
    "option",
    "`train --seed -1`",
    |t| { train(t, &["--seed", "-1"]) },
    ["'-1' for '--seed <SEED>'", "invalid digit"]
);
case!(
    data_eval_batch_zero,
    "option",
    "`train --eval-batch 0`",
    |t| { train(t, &["--eval-batch", "0"]) },
    ["eval_batch 0", "must be positive"]
);
case!(
    data_update_every_zero,
    "option",
    "`prune --update-every 0`",
    |t| { prune(t, &["--update-every", "0"]) },
    ["update_every 0", "must be positive"]
);
case!(
    data_seq_zero,
    "option",
    "`prune --seq 0`",
    |t| { prune(t, &["--seq", "0"]) },
    ["seq 0", "need at least 2 tokens per sequence"]
);
case!(
    data_eval_sequences_zero,
    "option",
    "`prune --eval-sequences 0`",
    |t| { prune(t, &["--eval-sequences", "0"]) },
    ["eval_sequences 0", "must be positive"]
);
case!(
    data_proportions_unknown_domain,
    "option",
    "`prune --proportions web=0.5,news=0.5`",
    |t| { prune(t, &["--proportions", "web=0.5,news=0.5"]) },
    ["domain `news` has a weight but no data"]
);
case!(
    data_proportions_not_summing_to_one,
    "option",
    "`prune --proportions web=0.5,code=0.2`",
    |t| { prune(t, &["--proportions", "web=0.5,code=0.2"]) },
    ["they sum to 0.7, not 1"]
);
case!(
    data_proportions_negative,
    "option",
    "`prune --proportions web=1.5,code=-0.5`",
    |t| { prune(t, &["--proportions", "web=1.5,code=-0.5"]) },
    ["-0.5 is not a non-negative number"]
);
case!(
    data_reference_missing_domain,
    "option",
    "`prune --reference web=2.5` (no loss for `code`)",
    |t| { prune(t, &["--reference", "web=2.5"]) },
    ["no reference loss for domain `code`"]
);
case!(
    data_reference_not_finite,
    "option",
    "`prune --reference web=nan,code=2`",
    |t| { prune(t, &["--reference", "web=nan,code=2"]) },
    ["the reference loss of domain `web` is NaN"]
);
usage!(
    data_bad_update_rule,
    "option",
    "`prune --update-rule sometimes`",
    |t| { prune(t, &["--update-rule", "sometimes"]) },
    [
        "'--update-rule <UPDATE_RULE>'",
        "unknown update rule `sometimes`"
    ]
);
case!(
    bench_batch_zero,
    "option",
    "`bench --batch 0`",
    |_t| { shear_with(&s(&["bench", "--batch", "0"])) },
    ["--batch 0", "must be positive"]
);
case!(
    bench_seq_zero,
    "option",
    "`bench --seq 0`",
    |_t| { shear_with(&s(&["bench", "--seq", "0"])) },
    ["--seq 0", "need at least 2 tokens"]
);
case!(
    bench_heads_not_dividing,
    "option",
    "`bench --hidden 250 --heads 4`",
    |_t| { shear_with(&s(&["bench", "--hidden", "250", "--heads", "4"])) },
    ["--hidden 250 is not a multiple of --heads 4"]
);
case!(
    bench_absurd_size,
    "option",
    "`bench --hidden 1000000 --vocab 10000000` (far beyond memory)",
    |_t| {
        shear_with(&s(&[
            "bench",
            "--hidden",
            "1000000",
            "--heads",
            "1000",
            "--intermediate",
            "1000000",
            "--vocab",
            "10000000",
        ]))
    },
    ["this shape needs about", "GiB of memory", "is available"]
);
case!(
    generate_temperature_nan,
    "option",
    "`generate --temperature nan`",
    |_t| {
        shear_with(&s(&[
            "generate",
            &source(),
            "--prompt-ids",
            "1,2",
            "--temperature",
            "nan",
        ]))
    },
    ["--temperature NaN", "must be positive"]
);
case!(
    generate_top_p_above_one,
    "option",
    "`generate --top-p 1.5`",
    |_t| {
        shear_with(&s(&[
            "generate",
            &source(),
            "--prompt-ids",
            "1,2",
            "--top-p",
            "1.5",
        ]))
    },
    ["--top-p 1.5", "must be in (0, 1]"]
);
case!(
    generate_top_k_zero,
    "option",
    "`generate --top-k 0`",
    |_t| {
        shear_with(&s(&[
            "generate",
            &source(),
            "--prompt-ids",
            "1,2",
            "--top-k",
            "0",
        ]))
    },
    ["--top-k 0", "must be positive"]
);
case!(
    generate_prompt_id_beyond_vocab,
    "option",
    "`generate --prompt-ids 1,600` (vocabulary 500)",
    |_t| { shear_with(&s(&["generate", &source(), "--prompt-ids", "1,600"])) },
    ["token id 600 is outside the model's vocabulary of 500 tokens"]
);
case!(
    eval_batch_zero,
    "option",
    "`eval --batch 0`",
    |t| {
        let d = data(t);
        shear_with(&s(&[
            "eval",
            &source(),
            "--data",
            d.to_str().unwrap(),
            "--batch",
            "0",
        ]))
    },
    ["--batch 0", "must be positive"]
);
case!(
    eval_max_sequences_zero,
    "option",
    "`eval --max-sequences 0`",
    |t| {
        let d = data(t);
        shear_with(&s(&[
            "eval",
            &source(),
            "--data",
            d.to_str().unwrap(),
            "--max-sequences",
            "0",
        ]))
    },
    ["--max-sequences 0", "must be positive"]
);
case!(
    plan_seq_zero,
    "option",
    "`plan --seq 0`",
    |_t| {
        shear_with(&s(&[
            "plan",
            &source(),
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--seq",
            "0",
        ]))
    },
    ["--seq 0", "must be at least 2"]
);
case!(
    plan_devices_zero,
    "option",
    "`plan --devices 0`",
    |_t| {
        shear_with(&s(&[
            "plan",
            &source(),
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--devices",
            "0",
        ]))
    },
    ["--devices 0", "must be at least 1"]
);
case!(
    data_bench_repeats_zero,
    "option",
    "`data bench --repeats 0`",
    |t| {
        let d = data(t);
        shear_with(&s(&[
            "data",
            "bench",
            "--data",
            d.to_str().unwrap(),
            "--repeats",
            "0",
        ]))
    },
    ["--repeats 0", "must be positive"]
);
case!(
    tokenizer_vocab_too_small,
    "option",
    "`data tokenizer --vocab 10`",
    |t| {
        std::fs::create_dir_all(t.join("c")).unwrap();
        std::fs::write(t.join("c/a.txt"), "some text here\n").unwrap();
        shear_with(&s(&[
            "data",
            "tokenizer",
            &p(t, "c/a.txt"),
            "--vocab",
            "10",
            "--out",
            &p(t, "out"),
        ]))
    },
    ["vocab size 10 must exceed 259"]
);

case!(
    prepare_seq_len_one,
    "option",
    "`data prepare --seq-len 1`",
    |t| { prepare(t, &[("web.jsonl", &docs(50))], &["--seq-len", "1"]) },
    ["seq_len 1", "at least 2"]
);
case!(
    prepare_prune_fraction_above_one,
    "option",
    "`data prepare --prune-fraction 1.5`",
    |t| { prepare(t, &[("web.jsonl", &docs(50))], &["--prune-fraction", "1.5"]) },
    ["prune_fraction 1.5", "between 0 and 1"]
);
case!(
    prepare_prune_fraction_nan,
    "option",
    "`data prepare --prune-fraction nan`",
    |t| { prepare(t, &[("web.jsonl", &docs(50))], &["--prune-fraction", "nan"]) },
    ["prune_fraction NaN", "between 0 and 1"]
);
case!(
    prepare_eval_sequences_zero,
    "option",
    "`data prepare --eval-sequences 0`",
    |t| { prepare(t, &[("web.jsonl", &docs(50))], &["--eval-sequences", "0"]) },
    ["eval_sequences 0", "at least 1"]
);
case!(
    prepare_prune_tokens_zero,
    "option",
    "`data prepare --prune-tokens 0`",
    |t| { prepare(t, &[("web.jsonl", &docs(50))], &["--prune-tokens", "0"]) },
    ["prune_tokens 0", "at least 1"]
);
case!(
    bench_gen_prompt_zero,
    "option",
    "`bench --gen-prompt 0`",
    |_t| { shear_with(&s(&["bench", "--gen-prompt", "0"])) },
    ["--gen-prompt 0", "must be positive"]
);
case!(
    plan_batch_zero,
    "option",
    "`plan --batch 0`",
    |_t| {
        shear_with(&s(&[
            "plan",
            &source(),
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--batch",
            "0",
        ]))
    },
    ["--batch 0", "must be at least 1"]
);
case!(
    plan_micro_batch_not_dividing,
    "option",
    "`plan --batch 32 --micro-batch 5`",
    |_t| {
        shear_with(&s(&[
            "plan",
            &source(),
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--micro-batch",
            "5",
        ]))
    },
    ["--batch 32", "must be a multiple of", "--micro-batch 5"]
);

// ---------------------------------------------------------------------------------------------
// CLI misuse.

usage!(
    cli_target_and_preset,
    "CLI misuse",
    "`prune --target ... --preset sheared-1.3b`",
    |t| { prune(t, &["--preset", "sheared-1.3b"]) },
    ["'--target <TARGET>'", "cannot be used multiple times"]
);
usage!(
    cli_unknown_option,
    "CLI misuse",
    "`prune --learning-rate 1`",
    |t| { prune(t, &["--learning-rate", "1"]) },
    ["unexpected argument '--learning-rate'"]
);
usage!(
    cli_logits_out_without_text,
    "CLI misuse",
    "`eval --logits-out F` without `--text`",
    |t| {
        let d = data(t);
        shear_with(&s(&[
            "eval",
            &source(),
            "--data",
            d.to_str().unwrap(),
            "--logits-out",
            &p(t, "l.safetensors"),
        ]))
    },
    ["required arguments were not provided", "--text <TEXT>"]
);
case!(
    cli_out_holds_a_finished_run,
    "CLI misuse",
    "`prune --out DIR` where DIR holds another run's files, without `--resume`",
    |t| {
        std::fs::create_dir_all(t.join("out/model")).unwrap();
        std::fs::write(t.join("out/prune_log.jsonl"), "{}\n").unwrap();
        prune(t, &[])
    },
    [
        "out holds the files of an earlier run",
        "continue it with --resume"
    ]
);
case!(
    cli_local_path_like_a_hub_id,
    "CLI misuse",
    "`prune nosuch/model --offline` (a mistyped local path)",
    |t| {
        let d = data(t);
        let mut c = shear_with(&s(&[
            "--offline",
            "prune",
            "nosuch/model",
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--data",
            d.to_str().unwrap(),
            "--out",
            &p(t, "out"),
        ]));
        // The cache the message names: the test's own, not the user's.
        c.env("HF_HOME", t.join("hf"));
        c
    },
    [
        "nosuch/model",
        "no such local directory, and not found on the hub"
    ]
);
case!(
    cli_no_model_dir,
    "CLI misuse",
    "`eval ./missing-dir`",
    |t| {
        let d = data(t);
        shear_with(&s(&[
            "eval",
            &p(t, "missing-dir"),
            "--data",
            d.to_str().unwrap(),
        ]))
    },
    ["missing-dir", "not a model directory, and not a hub id"]
);
case!(
    cli_resume_with_other_target,
    "CLI misuse",
    "`prune --resume` with another `--target` than the checkpoint's",
    |t| {
        let d = data(t);
        let mut a = tiny_prune_args(&d, &t.join("out"), 6);
        a.extend(s(&["--stop-after", "2"]));
        succeed(&a);
        let mut a = tiny_prune_args(&d, &t.join("out"), 6);
        a[3] = "layers=2,hidden=48,heads=2,intermediate=96".into();
        a.push("--resume".into());
        shear_with(&a)
    },
    [
        "target = layers=2",
        "conflicts with the checkpoint's target = layers=3"
    ]
);

// ---------------------------------------------------------------------------------------------
// Models and checkpoints.

case!(
    model_nan_weight,
    "model",
    "a NaN in `q_proj` of the source (`prune`)",
    |t| {
        let m = model_copy(t, |n, v| {
            if n == "model.layers.0.self_attn.q_proj.weight" {
                v[5] = f32::NAN
            }
        });
        let d = data(t);
        let mut a = tiny_prune_args(&d, &t.join("out"), 6);
        a[1] = m;
        shear_with(&a)
    },
    [
        "model.layers.0.self_attn.q_proj.weight",
        "holds NaN",
        "weights must be finite"
    ]
);
case!(
    model_nan_norm,
    "model",
    "a NaN in a norm weight (`train`)",
    |t| {
        let m = model_copy(t, |n, v| {
            if n == "model.layers.1.input_layernorm.weight" {
                v[0] = f32::NAN
            }
        });
        let d = data(t);
        let mut a = tiny_train_args(&d, &t.join("out"), 6);
        a[1] = m;
        shear_with(&a)
    },
    ["input_layernorm", "holds NaN", "weights must be finite"]
);
case!(
    model_inf_teacher,
    "model",
    "an infinity in the teacher (`train --distill-from`)",
    |t| {
        let m = model_copy(t, |n, v| {
            if n == "lm_head.weight" || n == "model.embed_tokens.weight" {
                v[3] = f32::INFINITY
            }
        });
        train(t, &["--distill-from", &m])
    },
    ["cannot load teacher", "holds inf", "weights must be finite"]
);
case!(
    model_nan_eval,
    "model",
    "a NaN weight (`eval`)",
    |t| {
        let m = model_copy(t, |n, v| {
            if n == "model.norm.weight" {
                v[1] = f32::NAN
            }
        });
        let d = data(t);
        shear_with(&s(&["eval", &m, "--data", d.to_str().unwrap()]))
    },
    ["model.norm.weight", "holds NaN", "weights must be finite"]
);
case!(
    model_header_beyond_file,
    "model",
    "safetensors header length beyond the file",
    |t| {
        let m = model_copy(t, |_, _| {});
        let f = Path::new(&m).join("model.safetensors");
        let mut b = std::fs::read(&f).unwrap();
        b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&f, b).unwrap();
        shear_with(&s(&["inspect", &m]))
    },
    [
        "model.safetensors",
        "not a readable safetensors file",
        "header too large"
    ]
);
case!(
    model_header_not_json,
    "model",
    "safetensors header that is not JSON",
    |t| {
        let m = model_copy(t, |_, _| {});
        let f = Path::new(&m).join("model.safetensors");
        let mut b = std::fs::read(&f).unwrap();
        b[8] = b'#';
        std::fs::write(&f, b).unwrap();
        let d = data(t);
        shear_with(&s(&["eval", &m, "--data", d.to_str().unwrap()]))
    },
    ["model.safetensors", "invalid JSON in header"]
);
case!(
    model_config_not_json,
    "model",
    "config.json that is not JSON",
    |t| {
        let m = model_copy(t, |_, _| {});
        std::fs::write(Path::new(&m).join("config.json"), "{\"hidden_size\": 64,").unwrap();
        shear_with(&s(&["inspect", &m]))
    },
    ["config.json", "invalid JSON"]
);
case!(
    model_config_more_layers_than_weights,
    "model",
    "config.json says 5 layers, the weights hold 4",
    |t| {
        let m = model_copy(t, |_, _| {});
        edit_config(t, |v| v["num_hidden_layers"] = 5.into());
        let d = data(t);
        shear_with(&s(&["eval", &m, "--data", d.to_str().unwrap()]))
    },
    ["model.layers.4", "is missing from the checkpoint"]
);
case!(
    model_config_negative_size,
    "model",
    "config.json `hidden_size: -64`",
    |t| {
        let m = model_copy(t, |_, _| {});
        edit_config(t, |v| v["hidden_size"] = (-64).into());
        shear_with(&s(&["inspect", &m]))
    },
    [
        "key `hidden_size`",
        "expected a non-negative integer, found -64"
    ]
);
case!(
    model_config_rms_eps_zero,
    "model",
    "config.json `rms_norm_eps: 0`",
    |t| {
        let m = model_copy(t, |_, _| {});
        edit_config(t, |v| v["rms_norm_eps"] = 0.0.into());
        shear_with(&s(&["inspect", &m]))
    },
    ["key `rms_norm_eps`", "must be positive"]
);
case!(
    model_quantized,
    "model",
    "config.json with a `quantization_config` (GPTQ)",
    |t| {
        let m = model_copy(t, |_, _| {});
        edit_config(t, |v| {
            v["quantization_config"] = serde_json::json!({"quant_method": "gptq", "bits": 4})
        });
        let d = data(t);
        shear_with(&s(&["eval", &m, "--data", d.to_str().unwrap()]))
    },
    ["quantization", "gptq", "are not supported"]
);
case!(
    model_gguf_unsupported_type,
    "model",
    "`convert` of a GGUF that is not a LLaMA",
    |t| {
        let f = t.join("m.gguf");
        let mut b = Vec::new();
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        let key = b"general.architecture";
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key);
        b.extend(8u32.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        b.extend(b"gpt-2");
        std::fs::write(&f, b).unwrap();
        shear_with(&s(&["convert", f.to_str().unwrap(), &p(t, "out")]))
    },
    ["architecture `gpt-2` is not supported"]
);
case!(
    mask_file_nan,
    "model",
    "`materialize` with a NaN in the masks file",
    |t| {
        let d = data(t);
        succeed(&with(
            tiny_prune_args(&d, &t.join("run"), 2),
            &["--save-every", "0"],
        ));
        let f = t.join("run/masks.safetensors");
        let bytes = std::fs::read(&f).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = st.tensor("log_alpha.head").unwrap();
        let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
        let mut b = bytes.clone();
        b[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        std::fs::write(&f, b).unwrap();
        shear_with(&s(&[
            "materialize",
            "--source",
            &source(),
            "--masks",
            f.to_str().unwrap(),
            "--out",
            &p(t, "out"),
        ]))
    },
    [
        "masks.safetensors",
        "log_alpha",
        "is NaN",
        "pruning needs finite values"
    ]
);
case!(
    mask_file_missing,
    "model",
    "`materialize --masks` of a file that does not exist",
    |t| {
        shear_with(&s(&[
            "materialize",
            "--source",
            &source(),
            "--masks",
            &p(t, "none.safetensors"),
            "--out",
            &p(t, "out"),
        ]))
    },
    ["none.safetensors", "No such file"]
);
case!(
    checkpoint_corrupt_only_one,
    "checkpoint",
    "`--resume` when the only checkpoint's records are truncated",
    |t| {
        let d = data(t);
        let mut a = tiny_prune_args(&d, &t.join("out"), 6);
        a.extend(s(&["--stop-after", "2"]));
        succeed(&a);
        let ck = t.join("out/checkpoints/step-00000002");
        let rec = std::fs::read_dir(&ck)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "mpk"))
            .unwrap();
        let b = std::fs::read(&rec).unwrap();
        std::fs::write(&rec, &b[..b.len() / 2]).unwrap();
        let mut a = tiny_prune_args(&d, &t.join("out"), 6);
        a.push("--resume".into());
        shear_with(&a)
    },
    ["no usable checkpoint", "step-00000002", "the manifest says"]
);

// ---------------------------------------------------------------------------------------------
// Tokenizer mismatch: prepared data made with another tokenizer than the model's.

fn llama2_model(t: &Path) -> String {
    tiny_llama2_vocab_model(&t.join("m"));
    p(t, "m")
}

case!(
    tokenizer_mismatch_prune,
    "tokenizer",
    "`prune` of data prepared with another tokenizer",
    |t| {
        let m = llama2_model(t);
        let d = data(t);
        shear_with(&s(&[
            "prune",
            &m,
            "--target",
            "layers=1,hidden=32,heads=2,intermediate=64",
            "--data",
            d.to_str().unwrap(),
            "--out",
            &p(t, "out"),
            "--steps",
            "2",
        ]))
    },
    ["shards were made with another tokenizer"]
);
case!(
    tokenizer_mismatch_train,
    "tokenizer",
    "`train` of data prepared with another tokenizer",
    |t| {
        let m = llama2_model(t);
        let d = data(t);
        shear_with(&s(&[
            "train",
            &m,
            "--reference-model",
            &m,
            "--data",
            d.to_str().unwrap(),
            "--out",
            &p(t, "out"),
            "--steps",
            "2",
        ]))
    },
    ["shards were made with another tokenizer"]
);
case!(
    tokenizer_mismatch_eval,
    "tokenizer",
    "`eval` of data prepared with another tokenizer",
    |t| {
        let m = llama2_model(t);
        let d = data(t);
        shear_with(&s(&["eval", &m, "--data", d.to_str().unwrap()]))
    },
    ["shards were made with another tokenizer"]
);

// ---------------------------------------------------------------------------------------------
// Data.

case!(
    data_ids_beyond_vocab_prune,
    "data",
    "`prune` of shards holding ids beyond the vocabulary",
    |t| {
        let d = t.join("data");
        write_prepared(&d, 32, 500, &[("web", [3, 20, 20])], |_, _, i| {
            (0..32)
                .map(|k| if i == 1 && k == 7 { 499 + 300 } else { k })
                .collect()
        });
        let mut a = tiny_prune_args(&d, &t.join("out"), 6);
        a.extend(s(&["--update-rule", "constant"]));
        shear_with(&a)
    },
    ["token id 799", "is outside the vocabulary of 500 tokens"]
);
case!(
    data_ids_beyond_vocab_eval,
    "data",
    "`eval` of shards holding ids beyond the vocabulary",
    |t| {
        let d = t.join("data");
        write_prepared(&d, 32, 500, &[("web", [3, 2, 2])], |_, _, i| {
            (0..32)
                .map(|k| if i == 1 && k == 3 { 4000 } else { k })
                .collect()
        });
        shear_with(&s(&["eval", &source(), "--data", d.to_str().unwrap()]))
    },
    ["token id 4000", "is outside the vocabulary of 500 tokens"]
);
case!(
    data_ids_beyond_vocab_text,
    "data",
    "`eval --text` of a token-id file with an id beyond the vocabulary",
    |t| {
        let f = t.join("ids.tok");
        std::fs::write(&f, "1 2 3 9999\n").unwrap();
        shear_with(&s(&["eval", &source(), "--text", f.to_str().unwrap()]))
    },
    ["token id 9999 is outside the model's vocabulary (size 500)"]
);
case!(
    eval_empty_split,
    "data",
    "`eval --split train` of data with no train sequences",
    |t| {
        let d = t.join("data");
        two_domains(&d, [3, 5, 0]);
        shear_with(&s(&[
            "eval",
            &source(),
            "--data",
            d.to_str().unwrap(),
            "--split",
            "train",
        ]))
    },
    ["domain `web` has no sequences in the train split"]
);
case!(
    data_invalid_json_line,
    "data",
    "`data prepare` of JSONL with invalid JSON on line 3",
    |t| {
        let mut b = docs(2);
        b.extend(b"{\"text\": oops}\n");
        b.extend(docs(5));
        prepare(t, &[("web.jsonl", &b)], &[])
    },
    ["web.jsonl:3", "invalid JSON"]
);
case!(
    data_jsonl_missing_field,
    "data",
    "`data prepare` of JSONL without the text field",
    |t| {
        let b = b"{\"body\": \"hello\"}\n".to_vec();
        prepare(t, &[("web.jsonl", &b)], &[])
    },
    ["web.jsonl:1", "no field `text`"]
);
case!(
    data_non_utf8_txt,
    "data",
    "`data prepare` of a .txt that is not UTF-8",
    |t| {
        let mut b = b"hello there ".repeat(40);
        b.extend([0xff, 0xfe, 0x80]);
        prepare(t, &[("web.txt", &b)], &[])
    },
    ["web.txt", "not UTF-8 text"]
);
case!(
    data_non_utf8_jsonl,
    "data",
    "`data prepare` of a .jsonl line that is not UTF-8",
    |t| {
        let mut b = docs(3);
        b.extend(b"{\"text\": \"\xff\xfe\"}\n");
        prepare(t, &[("web.jsonl", &b)], &[])
    },
    ["web.jsonl:4", "did not contain valid UTF-8"]
);
case!(
    data_empty_documents,
    "data",
    "`data prepare` of a domain whose documents are all empty",
    |t| {
        let b = b"{\"text\": \"\"}\n{\"text\": \"\"}\n".to_vec();
        prepare(t, &[("web.jsonl", &b)], &[])
    },
    ["domain `web`", "too few for 1 eval sequences"]
);
case!(
    data_empty_domain_folder,
    "data",
    "`data prepare` of a domain folder with no corpus files",
    |t| {
        std::fs::create_dir_all(t.join("empty")).unwrap();
        let mut c = prepare(t, &[("web.jsonl", &docs(50))], &[]);
        c.args(["--domain", &format!("books={}", t.join("empty").display())]);
        c
    },
    ["domain `books`", "empty domain"]
);
case!(
    data_missing_domain_path,
    "data",
    "`data prepare --domain web=missing.jsonl`",
    |t| {
        let mut c = prepare(t, &[], &[]);
        c.args([
            "--domain",
            &format!("web={}", t.join("missing.jsonl").display()),
        ]);
        c
    },
    ["missing.jsonl", "not found"]
);
case!(
    data_corpus_smaller_than_a_sequence,
    "data",
    "`data prepare` of a corpus smaller than one sequence",
    |t| { prepare(t, &[("web.jsonl", b"{\"text\": \"hi\"}\n")], &[]) },
    ["domain `web`: 3 tokens", "too few"]
);
case!(
    data_duplicate_domain,
    "data",
    "`data prepare` naming a domain twice",
    |t| {
        let mut c = prepare(t, &[("web.jsonl", &docs(50))], &[]);
        c.args([
            "--domain",
            &format!("web={}", t.join("corpus/web.jsonl").display()),
        ]);
        c
    },
    ["domain `web` given twice"]
);
case!(
    data_bad_domain_argument,
    "data",
    "`data prepare --domain web` (no path)",
    |t| {
        let mut c = prepare(t, &[], &[]);
        c.args(["--domain", "web"]);
        c
    },
    ["--domain web", "expected NAME=PATH"]
);
case!(
    data_missing_manifest,
    "data",
    "`prune --data DIR` of a folder that holds no prepared data",
    |t| {
        std::fs::create_dir_all(t.join("data")).unwrap();
        let mut a = tiny_prune_args(&t.join("data"), &t.join("out"), 6);
        a.truncate(a.len());
        shear_with(&a)
    },
    ["a folder without manifest.json", "not prepared data"]
);
case!(
    data_shard_missing,
    "data",
    "prepared data whose shard file is gone",
    |t| {
        let d = data(t);
        std::fs::remove_file(d.join("prune/code.bin")).unwrap();
        prune(t, &[])
    },
    ["prune/code.bin", "not found"]
);
case!(
    data_shard_truncated,
    "data",
    "prepared data whose shard is shorter than its manifest says",
    |t| {
        let d = data(t);
        let f = d.join("prune/web.bin");
        let b = std::fs::read(&f).unwrap();
        std::fs::write(&f, &b[..b.len() - 10]).unwrap();
        prune(t, &[])
    },
    ["web.bin", "not a whole number of 32-token sequences"]
);
case!(
    data_text_not_utf8_train,
    "data",
    "`train --data file.txt` that is not UTF-8",
    |t| {
        let f = t.join("c.txt");
        std::fs::write(&f, [b'a', 0xff, b'b']).unwrap();
        let m = llama2_model(t);
        shear_with(&s(&[
            "train",
            &m,
            "--data",
            f.to_str().unwrap(),
            "--out",
            &p(t, "out"),
            "--steps",
            "2",
        ]))
    },
    ["c.txt", "not UTF-8 text"]
);
case!(
    tokenizer_empty_corpus,
    "data",
    "`data tokenizer` of an empty corpus",
    |t| {
        std::fs::write(t.join("e.txt"), "").unwrap();
        shear_with(&s(&[
            "data",
            "tokenizer",
            &p(t, "e.txt"),
            "--vocab",
            "300",
            "--out",
            &p(t, "out"),
        ]))
    },
    ["e.txt", "no text to train a tokenizer on"]
);
case!(
    task_empty_choice,
    "data",
    "a task file with an empty answer choice",
    |t| {
        let f = t.join("task.jsonl");
        std::fs::write(&f, "{\"context\": \"The capital of France is\", \"choices\": [\" Paris\", \"\"], \"label\": 0}\n").unwrap();
        let m = llama2_model(t);
        shear_with(&s(&["eval", &m, "--tasks", f.to_str().unwrap()]))
    },
    ["task.jsonl:1", "choice 1 is empty"]
);
case!(
    task_label_out_of_range,
    "data",
    "a task file whose label is not among the choices",
    |t| {
        let f = t.join("task.jsonl");
        std::fs::write(
            &f,
            "{\"context\": \"x\", \"choices\": [\" a\", \" b\"], \"label\": 2}\n",
        )
        .unwrap();
        let m = llama2_model(t);
        shear_with(&s(&["eval", &m, "--tasks", f.to_str().unwrap()]))
    },
    [
        "task.jsonl:1",
        "label 2",
        "need two or more choices and a label among them"
    ]
);

// ---------------------------------------------------------------------------------------------
// Recipes (`shear run`): refused before the output directory is created.

case!(
    recipe_unknown_key,
    "recipe",
    "an unknown key (`prune.learning_rate`)",
    |t| {
        recipe_text(t, |s| {
            s.replace("[prune]\n", "[prune]\nlearning_rate = 1.0\n")
        })
    },
    ["unknown key `prune.learning_rate`"]
);
case!(
    recipe_wrong_type,
    "recipe",
    "a key of the wrong type (`prune.steps = \"many\"`)",
    |t| { recipe_run(t, &["prune.steps=\"many\""]) },
    [
        "prune.steps",
        "invalid type: string \"many\", expected usize"
    ]
);
case!(
    recipe_bad_toml,
    "recipe",
    "TOML that does not parse",
    |t| { recipe_text(t, |s| s.replace("[prune]", "[prune")) },
    ["mini.toml", "TOML parse error", "unclosed table"]
);
case!(
    recipe_impossible_target,
    "recipe",
    "a target larger than the source (`layers=9`)",
    |t| {
        recipe_run(
            t,
            &["model.target=\"layers=9,hidden=32,heads=2,intermediate=64\""],
        )
    },
    [
        "[model] target",
        "target layers 9 is bigger than the source's 2"
    ]
);
case!(
    recipe_inconsistent_target,
    "recipe",
    "a target whose heads do not divide its hidden size",
    |t| {
        recipe_run(
            t,
            &["model.target=\"layers=1,hidden=30,heads=4,intermediate=64\""],
        )
    },
    [
        "[model] target",
        "target hidden 30 is not a multiple of heads 4"
    ]
);
case!(
    recipe_proportions_not_summing,
    "recipe",
    "`prune.proportions = { web = 0.3, books = 0.3 }`",
    |t| { recipe_run(t, &["prune.proportions={web=0.3,books=0.3}"]) },
    ["[prune] proportions", "they sum to 0.6, not 1"]
);
case!(
    recipe_reference_missing_domain,
    "recipe",
    "reference losses missing for a domain",
    |t| {
        recipe_text(t, |s| {
            s + "\n[dynamic]\nreference = { values = { web = 2.5 } }\n"
        })
    },
    [
        "[dynamic] reference",
        "no reference loss for domain `books`"
    ]
);
case!(
    recipe_missing_task_file,
    "recipe",
    "a task file that does not exist",
    |t| { recipe_run(t, &["eval.tasks=[\"nope.jsonl\"]"]) },
    ["[eval] tasks", "nope.jsonl does not exist"]
);
case!(
    recipe_missing_data_file,
    "recipe",
    "a domain file that does not exist",
    |t| { recipe_text(t, |s| s.replace("books.jsonl", "missing.jsonl")) },
    ["[data] domain `books`", "missing.jsonl does not exist"]
);
case!(
    recipe_distill_temperature_zero,
    "recipe",
    "`train.distill_temperature = 0`",
    |t| { recipe_run(t, &["train.distill=true", "train.distill_temperature=0.0"]) },
    ["[train] distill_temperature 0", "must be a positive number"]
);
case!(
    recipe_lr_nan,
    "recipe",
    "`prune.lr_weights = nan`",
    |t| { recipe_run(t, &["prune.lr_weights=nan"]) },
    ["[prune] lr_weights NaN", "must be a finite number ≥ 0"]
);
case!(
    recipe_lr_huge,
    "recipe",
    "`train.lr = 1e30`",
    |t| { recipe_run(t, &["train.lr=1e30"]) },
    ["[train] lr 1e30", "must be at most 1"]
);
case!(
    recipe_negative_weight_decay,
    "recipe",
    "`train.weight_decay = -1`",
    |t| { recipe_run(t, &["train.weight_decay=-1"]) },
    ["[train] weight_decay -1", "must be a finite number ≥ 0"]
);
case!(
    recipe_zero_batch,
    "recipe",
    "`prune.batch = 0`",
    |t| { recipe_run(t, &["prune.batch=0"]) },
    ["[prune] batch 0", "must be positive"]
);
case!(
    recipe_zero_update_every,
    "recipe",
    "`train.update_every = 0`",
    |t| { recipe_run(t, &["train.update_every=0"]) },
    ["[train] update_every 0", "must be positive"]
);
case!(
    recipe_warmup_beyond_steps,
    "recipe",
    "`train.warmup = 100` with 4 steps",
    |t| { recipe_run(t, &["train.warmup=100"]) },
    ["[train] warmup 100", "more than the 4 steps"]
);
case!(
    recipe_temperature_zero,
    "recipe",
    "`prune.temperature = 0`",
    |t| { recipe_run(t, &["prune.temperature=0.0"]) },
    [
        "[prune] hard-concrete temperature 0",
        "must be a positive number"
    ]
);
case!(
    recipe_set_unknown_key,
    "recipe",
    "`--set prune.stepz=3`",
    |t| { recipe_run(t, &["prune.stepz=3"]) },
    ["with --set", "unknown key `prune.stepz`"]
);
case!(
    recipe_set_without_value,
    "recipe",
    "`--set prune.steps`",
    |t| { recipe_run(t, &["prune.steps"]) },
    ["--set prune.steps", "expected KEY=VALUE"]
);
case!(
    recipe_no_domains,
    "recipe",
    "a recipe without domains",
    |t| {
        recipe_text(t, |s| {
            s.replace(
                "[[data.domain]]\nname = \"web\"\npaths = [\"web.jsonl\"]\n",
                "",
            )
            .replace(
                "[[data.domain]]\nname = \"books\"\npaths = [\"books.jsonl\"]\n",
                "",
            )
        })
    },
    ["missing field `domain` in `data`"]
);
case!(
    recipe_missing_file,
    "recipe",
    "`shear run missing.toml`",
    |t| { shear_with(&s(&["run", &p(t, "missing.toml"), "--out", &p(t, "out")])) },
    ["missing.toml", "No such file"]
);

case!(
    recipe_seq_len_one,
    "recipe",
    "`data.seq_len = 1`",
    |t| { recipe_run(t, &["data.seq_len=1"]) },
    ["[data]", "seq_len 1", "at least 2"]
);
case!(
    recipe_eval_sequences_zero,
    "recipe",
    "`data.eval_sequences = 0`",
    |t| { recipe_run(t, &["data.eval_sequences=0"]) },
    ["[data]", "eval_sequences 0", "at least 1"]
);
case!(
    recipe_dynamic_eval_sequences_zero,
    "recipe",
    "`dynamic.eval_sequences = 0`",
    |t| { recipe_run(t, &["dynamic.eval_sequences=0"]) },
    ["dynamic.eval_sequences = 0", "must be positive"]
);
case!(
    recipe_devices_zero,
    "recipe",
    "`run.devices = 0`",
    |t| { recipe_run(t, &["run.devices=0"]) },
    ["run.devices = 0", "must be positive"]
);
case!(
    generate_max_new_tokens_zero,
    "option",
    "`generate --max-new-tokens 0`",
    |_t| {
        shear_with(&s(&[
            "generate",
            &source(),
            "--prompt-ids",
            "1,2",
            "--max-new-tokens",
            "0",
        ]))
    },
    ["--max-new-tokens 0", "must be positive"]
);

// ---------------------------------------------------------------------------------------------
// Full disk and read-only output.

/// `cmd` under a file-size limit of `kib` KiB, with SIGXFSZ ignored, so a write beyond it fails
/// with EFBIG as a write to a full disk fails with ENOSPC.
fn limited(cmd: Command, kib: u64) -> Command {
    let mut argv = vec![cmd.get_program().to_string_lossy().into_owned()];
    argv.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!(
        "trap '' XFSZ; ulimit -f {}; exec {}",
        kib * 2,
        quoted.join(" ")
    ));
    sh
}

case_during_work!(
    disk_full_prepare,
    "disk",
    "`data prepare` when the disk fills (file size limit 64 KiB)",
    |t| {
        limited(
            prepare(t, &[("web.jsonl", &docs(4000))], &["--eval-sequences", "2"]),
            64,
        )
    },
    [
        "out/prune/web.bin",
        "is the disk full or the folder read-only?"
    ]
);
case_during_work!(
    disk_full_model,
    "disk",
    "`prune` when the disk fills while writing the model",
    |t| { limited(prune(t, &["--steps", "2", "--save-every", "0"]), 16) },
    [
        "out/checkpoint/model.safetensors",
        "cannot write",
        "is the disk full or the folder read-only?"
    ]
);
case_during_work!(
    disk_full_checkpoint,
    "disk",
    "`prune --stop-after 1` when the disk fills while writing the checkpoint",
    |t| { limited(prune(t, &["--stop-after", "1"]), 16) },
    [
        "out/checkpoints/step-00000001",
        "cannot write",
        "is the disk full or the folder read-only?"
    ]
);
/// A directory its owner cannot create files in (mode 0555); when the tests run as root, who
/// ignores permission bits, `cmd` runs as the unprivileged user 65534 (`nobody`), from a copy
/// of the binary and of every input in `t`, which is made readable to it.
fn as_unprivileged(t: &Path, cmd: &mut Command) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let probe = t.join(".uid");
    std::fs::write(&probe, b"").unwrap();
    let root = std::fs::metadata(&probe).unwrap().uid() == 0;
    std::fs::remove_file(&probe).unwrap();
    if root {
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(65534).gid(65534);
    }
}

/// `shear` copied into `t` (readable by anyone, for [`as_unprivileged`]).
fn shear_copy(t: &Path) -> Command {
    let bin = t.join("shear");
    std::fs::copy(env!("CARGO_BIN_EXE_shear"), &bin).unwrap();
    Command::new(bin)
}

/// The fixture model copied into `t/model`, readable by anyone.
fn model_in(t: &Path) -> String {
    model_copy(t, |_, _| {})
}

case!(
    read_only_out,
    "disk",
    "`prune --out` in a directory where the user cannot create files (mode 0555)",
    |t| {
        let m = model_in(t);
        let d = data(t);
        let ro = t.join("ro");
        std::fs::create_dir(&ro).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let mut cmd = shear_copy(t);
        cmd.args(s(&[
            "prune",
            &m,
            "--target",
            "layers=3,hidden=48,heads=2,intermediate=96",
            "--data",
            d.to_str().unwrap(),
            "--out",
            &p(t, "ro/out"),
            "--steps",
            "2",
        ]));
        as_unprivileged(t, &mut cmd);
        cmd
    },
    [
        "ro/out",
        "Permission denied",
        "is the disk full or the folder read-only?"
    ]
);
case!(
    out_is_a_file,
    "disk",
    "`prune --out FILE` (a regular file)",
    |t| {
        std::fs::write(t.join("out"), b"notes").unwrap();
        prune(t, &[])
    },
    ["output directory", "/out is a file, not a directory"]
);
case!(
    out_is_a_symlink,
    "disk",
    "`prune --out LINK` (a symbolic link to a directory)",
    |t| {
        std::fs::create_dir(t.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.join("elsewhere"), t.join("out")).unwrap();
        prune(t, &[])
    },
    [
        "output directory",
        "/out is a symbolic link (to ",
        "elsewhere); give the directory itself"
    ]
);
case!(
    out_locked_by_another_run,
    "disk",
    "`prune --out DIR` while another shear process writes DIR",
    |t| {
        std::fs::create_dir(t.join("out")).unwrap();
        let lock = shear_io::OutLock::acquire(&t.join("out")).unwrap();
        // The holder is this test's process; the refused run must leave its lock in place.
        std::mem::forget(lock);
        prune(t, &[])
    },
    [
        "out is in use by another shear process (pid ",
        "wait for it to end or choose another output directory"
    ]
);
case!(
    model_tensor_of_another_dtype,
    "model",
    "a model.safetensors with an I64 tensor",
    |t| {
        let m = model_in(t);
        let path = t.join("model/model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        let norm = tensors
            .iter_mut()
            .find(|x| x.0 == "model.norm.weight")
            .unwrap();
        norm.1 = safetensors::Dtype::I64;
        norm.3 = norm.3.iter().flat_map(|&b| [b, 0]).collect();
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, d, shape, raw)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, shape.clone(), raw).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &path).unwrap();
        let d = data(t);
        shear_with(&s(&["eval", &m, "--data", d.to_str().unwrap()]))
    },
    [
        "tensor `model.norm.weight` has dtype I64",
        "supported: F32, BF16, F16"
    ]
);
case!(
    model_gguf_truncated,
    "model",
    "a GGUF file cut in half",
    |t| {
        let bytes = std::fs::read(root().join("gguf/tests/fixtures/tiny_llama_spm.gguf")).unwrap();
        std::fs::write(t.join("m.gguf"), &bytes[..bytes.len() / 2]).unwrap();
        let mut c = shear_with(&s(&["inspect", &p(t, "m.gguf")]));
        c.env("SHEAR_CACHE", t.join("cache"));
        c
    },
    ["m.gguf", "run past the end of the data section"]
);
case!(
    tokenizer_truncated,
    "tokenizer",
    "a tokenizer.json cut in half (`generate --prompt`)",
    |t| {
        let m = tiny_llama2_vocab_model(&t.join("m"));
        drop(m);
        let path = t.join("m/tokenizer.json");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        shear_with(&s(&[
            "generate",
            &p(t, "m"),
            "--prompt",
            "the cat",
            "--max-new-tokens",
            "2",
        ]))
    },
    ["m/tokenizer.json", "EOF while parsing"]
);
case!(
    mask_file_truncated,
    "model",
    "`materialize --masks` of a mask file cut in half",
    |t| {
        let out = t.join("run");
        let d = data(t);
        succeed(&with(tiny_prune_args(&d, &out, 2), &["--save-every", "0"]));
        let masks = out.join("masks.safetensors");
        let bytes = std::fs::read(&masks).unwrap();
        std::fs::write(&masks, &bytes[..bytes.len() / 2]).unwrap();
        shear_with(&s(&[
            "materialize",
            "--source",
            &source(),
            "--masks",
            masks.to_str().unwrap(),
            "--out",
            &p(t, "out"),
        ]))
    },
    ["masks.safetensors", "not a readable safetensors file"]
);
case!(
    random_init_beyond_memory,
    "model",
    "`train --init random` of a config.json far beyond this machine's memory",
    |t| {
        let m = model_in(t);
        edit_config(t, |v| {
            v["hidden_size"] = 16384.into();
            v["intermediate_size"] = 65536.into();
            v["num_hidden_layers"] = 120.into();
            v["num_attention_heads"] = 128.into();
            v["num_key_value_heads"] = 8.into();
            v["head_dim"] = 128.into();
        });
        let d = data(t);
        let mut a = tiny_train_args(&d, &t.join("out"), 6);
        a[1] = m;
        shear_with(&with(a, &["--init", "random"]))
    },
    [
        "training",
        "needs about",
        "GiB of memory (shear plan's estimate)",
        "is available"
    ]
);

/// README's Reliability table lists every case of this file (regenerate it from `--nocapture`
/// when a case is added).
#[test]
fn readme_lists_every_case() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let source = std::fs::read_to_string(root.join("tests/bad_inputs.rs")).unwrap();
    let mut n = 0;
    let lines: Vec<&str> = source.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line
            .strip_prefix("case!(")
            .or_else(|| line.strip_prefix("usage!("))
            .or_else(|| line.strip_prefix("case_during_work!("))
        else {
            continue;
        };
        // `case!(name, ...` on one line, or the name alone on the next (rustfmt's layout).
        let rest = if rest.trim().is_empty() {
            lines[i + 1].trim()
        } else {
            rest
        };
        let name = rest.split(',').next().unwrap().trim();
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README's Reliability table lacks `{name}`"
        );
        n += 1;
    }
    // ... and nothing else: a row of a case that is gone is stale.
    let rows = readme
        .lines()
        .filter(|l| l.contains("` | 1 | ``") || l.contains("` | 2 | ``"))
        .count();
    assert_eq!(
        rows, n,
        "README's Reliability table has {rows} rows for {n} cases"
    );
}
