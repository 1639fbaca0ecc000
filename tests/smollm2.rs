//! A real model end to end, through the binary: SmolLM2-135M-Instruct (30 layers, d 576, 9
//! heads in 3 key/value groups, tied embeddings) as a Q4_1 GGUF (scripts/fetch_smollm2.sh) is
//! converted, generates, is evaluated against transformers' figures for the same GGUF, and is
//! pruned for a few steps to a grouped-query target; the pruned model loads and generates.

mod common;

use common::*;

fn ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = run_shear(args, env);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn smollm2_converts_generates_matches_transformers_and_prunes() {
    let gguf = smollm2_gguf();
    let reference = smollm2_reference();
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("smollm2");

    // Convert: the config of the GGUF's metadata.
    ok(
        &["convert", gguf.to_str().unwrap(), hf.to_str().unwrap()],
        &[],
    );
    let c = shear_model::LlamaConfig::from_file(&hf).unwrap();
    assert_eq!(
        shear_model::TargetShape::of(&c).to_string(),
        "layers=30,hidden=576,heads=9,kv_heads=3,intermediate=1536"
    );
    assert!(c.tie_word_embeddings);
    assert_eq!((c.vocab_size, c.head_dim), (49152, 64));

    // Generate: greedy, from an English prompt.
    let out = ok(
        &[
            "generate",
            hf.to_str().unwrap(),
            "--prompt",
            "The capital of France is",
            "--max-new-tokens",
            "8",
            "--greedy",
        ],
        &[],
    );
    assert!(out.contains("Paris"), "{out}");

    // Evaluate the paragraph: perplexity, and per position the argmax and the largest logit,
    // against transformers loading the same GGUF file.
    let para = tmp.path().join("paragraph.txt");
    std::fs::write(&para, reference["paragraph"].as_str().unwrap()).unwrap();
    let logits_file = tmp.path().join("logits.safetensors");
    let out = ok(
        &[
            "eval",
            hf.to_str().unwrap(),
            "--text",
            para.to_str().unwrap(),
            "--logits-out",
            logits_file.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let ppl = line["perplexity"].as_f64().unwrap();
    let want = reference["paragraph_perplexity"].as_f64().unwrap();
    assert!(
        (ppl / want - 1.0).abs() < 1e-4,
        "perplexity {ppl} vs transformers {want}"
    );
    let (_, ids) = read_tensor(&logits_file, "input_ids");
    let want_ids: Vec<f32> = f64s(&reference["paragraph_ids"])
        .iter()
        .map(|&x| x as f32)
        .collect();
    assert_eq!(ids, want_ids, "the same tokens");
    let (shape, logits) = read_tensor(&logits_file, "logits");
    let v = shape[2];
    let (argmax, max_logit) = (
        f64s(&reference["paragraph_argmax"]),
        f64s(&reference["paragraph_max_logit"]),
    );
    let mut worst = 0f64;
    for (p, row) in logits.chunks(v).enumerate() {
        let (i, m) =
            row.iter().enumerate().fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &x)| if x > b.1 { (i, x) } else { b },
            );
        assert_eq!(i as f64, argmax[p], "position {p}: argmax");
        worst = worst.max((m as f64 - max_logit[p]).abs());
    }
    eprintln!("max |max-logit diff| against transformers: {worst:e}");
    assert!(worst <= 1e-3, "largest logits differ by {worst}");

    // A GGUF file is accepted wherever a model is (converted once into the shear cache).
    let cache = tmp.path().join("cache");
    let out = ok(
        &[
            "eval",
            gguf.to_str().unwrap(),
            "--text",
            para.to_str().unwrap(),
            "--json",
        ],
        &[("SHEAR_CACHE", cache.to_str().unwrap())],
    );
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(line["perplexity"], ppl, "the same model");

    // Prune a few steps to a grouped-query target (6 query heads in 2 groups) and materialize.
    let text = tmp.path().join("corpus.txt");
    std::fs::write(&text, reference["paragraph"].as_str().unwrap().repeat(6)).unwrap();
    let run = tmp.path().join("pruned");
    ok(
        &[
            "prune",
            hf.to_str().unwrap(),
            "--preset",
            "smollm2-half",
            "--data",
            text.to_str().unwrap(),
            "--seq",
            "32",
            "--steps",
            "2",
            "--batch",
            "1",
            "--grad-accum",
            "1",
            "--out",
            run.to_str().unwrap(),
        ],
        &[],
    );
    let small = run.join("model");
    let p = shear_model::LlamaConfig::from_file(&small).unwrap();
    assert_eq!(
        shear_model::TargetShape::of(&p).to_string(),
        "layers=24,hidden=432,heads=6,kv_heads=2,intermediate=1152"
    );
    assert!(p.tie_word_embeddings, "tied stays tied");
    assert!(small.join("tokenizer.json").is_file());
    let out = ok(
        &[
            "generate",
            small.to_str().unwrap(),
            "--prompt",
            "The capital of France is",
            "--max-new-tokens",
            "4",
            "--greedy",
        ],
        &[],
    );
    assert!(out.trim().len() > "The capital of France is".len(), "{out}");
}
