//! `shear plan` through the binary: the plan of Llama-2-7B's pruning at the paper's batch and
//! sequence length, and its refusals.

mod common;

use common::*;

fn plan(args: &[&str]) -> std::process::Output {
    let config = assets().join("configs/llama-2-7b.json");
    let mut all = vec!["plan", config.to_str().unwrap()];
    all.extend_from_slice(args);
    run_shear(&all, &[])
}

#[test]
fn plans_llama_2_7b_pruning_on_eight_devices() {
    let o = plan(&["--devices", "8", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Llama-2-7B's published parameter count.
    let params = 6_738_415_616u64;
    assert_eq!(v["params"], params);
    // The paper's 32 sequences on 8 devices, one per forward: 4 micro-batches per step.
    assert_eq!(v["grad_accum"], 4);
    let b = &v["bytes_per_device"];
    assert_eq!(b["weights"], 4 * params);
    assert_eq!(b["optimizer"], 8 * params);
    // 32 layers · 4096 tokens · (4 · (6·4096 + 4·4096 + 6·11008 + pruning's 11008 + 4·4096 +
    // 4096) + 8 · 32 · 4096) bytes, plus the final norm and masked embedding 4 · 4 · 4096.
    let per_layer: u64 =
        4 * (6 * 4096 + 4 * 4096 + 6 * 11008 + 4096 + 11008 + 4 * 4096) + 8 * 32 * 4096;
    assert_eq!(b["activations"], 4096 * (32 * per_layer + 16 * 4096));
    assert_eq!(v["fits"]["H200"], false);
}

/// Llama-2-7B → Sheared-1.3B at 32 × 4 096 on the GPU path (unfused logits): with
/// `--recompute` it fits one H200; with `--recompute --devices 8` and ZeRO stage 1 or 2 it fits
/// A100-80GB, and its moments are an eighth (plus half a tensor) of the unsharded ones.
#[test]
fn the_papers_job_fits_one_h200_and_eight_a100s() {
    let config = assets().join("configs/llama-2-7b.json");
    let run = |more: &[&str]| {
        let mut args = vec![
            "--device",
            "cuda",
            "plan",
            config.to_str().unwrap(),
            "--preset",
            "sheared-1.3b",
            "--json",
        ];
        args.extend_from_slice(more);
        let o = run_shear(&args, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let gib =
        |v: &serde_json::Value| v["total_bytes_per_device"].as_f64().unwrap() / (1u64 << 30) as f64;
    let one = run(&["--recompute"]);
    eprintln!("one device, --recompute: {:.1} GiB", gib(&one));
    assert_eq!(one["fits"]["H200"], true);
    assert_eq!(one["fits"]["A100-80GB"], false);
    let params = 6_738_415_616u64;
    for stage in ["1", "2"] {
        let v = run(&["--recompute", "--devices", "8", "--zero-stage", stage]);
        eprintln!(
            "8 devices, --recompute --zero-stage {stage}: {:.1} GiB",
            gib(&v)
        );
        assert_eq!(v["fits"]["A100-80GB"], true, "stage {stage}");
        let moments = v["bytes_per_device"]["optimizer"].as_u64().unwrap();
        let share = params.div_ceil(8) + 32000 * 4096 / 2;
        assert_eq!(moments, 8 * share, "stage {stage}");
    }
    let plain = run(&["--devices", "8", "--zero-stage", "2"]);
    assert_eq!(
        plain["fits"]["A100-80GB"], false,
        "the activations without --recompute"
    );
}

#[test]
fn the_table_names_every_card() {
    let o = plan(&[
        "--seq",
        "512",
        "--stage",
        "train",
        "--preset",
        "sheared-1.3b",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with("training a 1.35 B-parameter model (layers 24, hidden 2048"),
        "{out}"
    );
    for card in [
        "H200",
        "H100-80GB",
        "A100-80GB",
        "A100-40GB",
        "L40S",
        "RTX-4090",
    ] {
        assert!(out.contains(card), "{card} missing: {out}");
    }
}

#[test]
fn refusals_name_the_value() {
    assert_one_line_error(
        &plan(&["--batch", "30", "--devices", "8"]),
        &["--batch 30", "8"],
    );
    assert_one_line_error(&plan(&["--card", "TPU"]), &["--card TPU", "H200"]);
    assert_one_line_error(&plan(&["--micro-batch", "0"]), &["--micro-batch 0"]);
    assert_one_line_error(
        &plan(&[
            "--target",
            "layers=40,hidden=4096,heads=32,intermediate=11008",
        ]),
        &["layers=40"],
    );
    let o = run_shear(&["plan", "no/such/dir/config.json"], &[]);
    assert_one_line_error(&o, &["no/such/dir/config.json"]);
}
