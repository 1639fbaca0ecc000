//! `shear generate` through the binary.

mod common;

use common::*;

#[test]
fn cli_generate_ids_only_prints_the_continuation() {
    let (_, want) = fixture_ids();
    assert_eq!(generate_ids(&["--greedy"]), format!("{want}\n"));
}

/// The fixture's ids: `(prompt "a,b,c", greedy continuation "x y z")`.
fn fixture_ids() -> (String, String) {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("llama-mha/generate.json")).unwrap())
            .unwrap();
    let join = |k: &str, sep: &str| {
        g[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    };
    (join("prompt_ids", ","), join("greedy_continuation", " "))
}

/// `shear generate` on the `llama-mha` fixture's prompt with `more` options; its stdout.
fn generate_ids(more: &[&str]) -> String {
    let (prompt, _) = fixture_ids();
    let dir = fixture("llama-mha");
    let mut args = vec![
        "generate",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &prompt,
        "--max-new-tokens",
        "20",
        "--ids-only",
    ];
    args.extend_from_slice(more);
    let out = run_shear(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Without the KV cache the whole sequence is recomputed at each step: the same tokens.
#[test]
fn cli_generate_without_the_cache_gives_the_same_continuation() {
    let (_, want) = fixture_ids();
    assert_eq!(
        generate_ids(&["--greedy", "--no-cache"]),
        format!("{want}\n")
    );
}

/// Sampling: top-k 1 keeps only the most likely token, so any temperature gives the greedy
/// continuation; with a wider nucleus a seed gives the same tokens twice and another seed other
/// tokens.
#[test]
fn cli_generate_samples_with_temperature_top_k_top_p_and_a_seed() {
    let (_, want) = fixture_ids();
    let top1 = generate_ids(&["--temperature", "1.5", "--top-k", "1", "--seed", "7"]);
    assert_eq!(top1, format!("{want}\n"));
    let sample = |seed: &str| {
        generate_ids(&[
            "--temperature",
            "1.0",
            "--top-p",
            "0.95",
            "--top-k",
            "50",
            "--seed",
            seed,
        ])
    };
    let (a, b, c) = (sample("1"), sample("1"), sample("2"));
    assert_eq!(a, b, "the same seed draws the same tokens");
    assert_ne!(a, c, "another seed draws other tokens");
    assert_eq!(a.split_whitespace().count(), 20);
}

/// A text prompt through the embedded model's tokenizer: the output starts with the prompt and
/// continues it; the cache changes nothing.
#[test]
fn cli_generate_continues_a_text_prompt() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny");
    let text = |more: &[&str]| {
        let mut args = vec![
            "generate",
            dir.to_str().unwrap(),
            "--prompt",
            "the cat sat",
            "--max-new-tokens",
            "8",
            "--greedy",
        ];
        args.extend_from_slice(more);
        let out = run_shear(&args, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let cached = text(&[]);
    assert!(cached.starts_with("the cat sat"), "{cached}");
    assert!(cached.trim_end().len() > "the cat sat".len(), "{cached}");
    assert_eq!(cached, text(&["--no-cache"]));
}

/// `shear bench` at a tiny shape: every kind of step measured, and the parameter count of the
/// shape (embedding 128·32, attention 4·32², FFN 3·32·64, norms 3·32, head 128·32 = 18 528).
#[test]
fn cli_bench_measures_every_step_of_a_tiny_shape() {
    let out = run_shear(
        &[
            "bench",
            "--layers",
            "1",
            "--hidden",
            "32",
            "--heads",
            "2",
            "--intermediate",
            "64",
            "--vocab",
            "128",
            "--seq",
            "16",
            "--batch",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--gen-prompt",
            "4",
            "--gen-new",
            "4",
            "--json",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["params"], 18_528);
    for key in [
        "forward_tokens_per_s",
        "forward_backward_tokens_per_s",
        "train_step_tokens_per_s",
        "prune_step_tokens_per_s",
        "generate_tokens_per_s",
    ] {
        let v = r[key].as_f64().unwrap_or(0.0);
        assert!(v > 0.0 && v.is_finite(), "{key}: {v}");
    }
}

/// Generation stops at the model's EOS token (2 in the embedded model's config.json), which it
/// prints; `--ignore-eos` goes on to `--max-new-tokens` through the same first tokens.
#[test]
fn cli_generate_stops_at_eos_unless_told_otherwise() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tiny");
    let ids = |more: &[&str]| -> Vec<u32> {
        let mut args = vec![
            "generate",
            dir.to_str().unwrap(),
            "--prompt",
            "the cat sat",
            "--max-new-tokens",
            "300",
            "--greedy",
            "--ids-only",
        ];
        args.extend_from_slice(more);
        let out = run_shear(&args, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect()
    };
    let stopped = ids(&[]);
    let all = ids(&["--ignore-eos"]);
    assert!(stopped.len() < 300, "{} tokens", stopped.len());
    assert_eq!(stopped.last(), Some(&2), "ends with EOS");
    assert_eq!(stopped.iter().filter(|&&t| t == 2).count(), 1);
    assert_eq!(all.len(), 300);
    assert_eq!(&all[..stopped.len()], &stopped[..]);
}
