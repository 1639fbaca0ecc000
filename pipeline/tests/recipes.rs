//! Recipes: the paper's two runs parse, resolve and validate against a Llama-2-7B config (no
//! download); unknown keys and wrong types are errors naming the key.

use std::path::Path;

use shear_pipeline::recipe::Recipe;

fn llama2_7b() -> shear_model::LlamaConfig {
    shear_model::LlamaConfig::new(32000, 4096, 11008, 32, 32, 32)
}

fn recipe(name: &str) -> Recipe {
    let path = shear_testkit::assets().join("recipes").join(name);
    Recipe::from_toml_file(&path).unwrap()
}

#[test]
fn paper_recipes_resolve() {
    // docs/algorithm.md §6.4 reference rows and §3.1 shapes.
    let cases = [
        (
            "llama2-7b-to-sheared-1.3b.toml",
            (24, 2048, 16, 5504),
            1_345_423_360,
            [1.9643, 0.7459, 2.1393, 1.6117, 1.7590, 1.4449, 2.1251],
        ),
        (
            "llama2-7b-to-sheared-2.7b.toml",
            (32, 2560, 20, 6912),
            2_701_560_320,
            [1.8712, 0.6883, 2.0325, 1.5353, 1.6297, 1.3560, 2.0328],
        ),
    ];
    for (file, shape, params, refs) in cases {
        let r = recipe(file);
        let res = r.resolve(&llama2_7b(), &[1; 7]).unwrap();
        let t = res.target;
        assert_eq!(
            (t.layers, t.hidden, t.heads, t.intermediate),
            shape,
            "{file}"
        );
        let source = llama2_7b();
        assert_eq!(t.config(&source).param_counts().total(), params);
        let domains: Vec<String> = r.data.domains.iter().map(|d| d.name.clone()).collect();
        let w = &r
            .prune
            .mixture
            .proportions
            .resolve(&domains, &[1; 7])
            .unwrap();
        assert_eq!(w, &vec![0.67, 0.045, 0.045, 0.02, 0.045, 0.025, 0.15]);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(
            res.train_weights, None,
            "continued training starts from pruning's weights"
        );
        let got = res.reference.unwrap();
        for (g, want) in got.iter().zip(refs) {
            assert!((g - want).abs() < 1e-3, "{file}: {g} vs {want}");
        }
        // docs/algorithm.md §4.3 / §7 numbers.
        assert_eq!(
            (
                r.prune.hyper.steps,
                r.prune.hyper.batch * r.prune.hyper.grad_accum
            ),
            (3200, 32)
        );
        assert_eq!(
            (r.prune.hyper.lr_warmup, r.prune.hyper.lagrangian_warmup),
            (Some(320), Some(640))
        );
        assert_eq!(
            (
                r.train.config.steps,
                r.train.config.batch * r.train.config.grad_accum
            ),
            (48_000, 256)
        );
        assert_eq!(r.train.config.warmup, Some(1440));
        assert_eq!(r.data.seq_len, 4096);
        assert_eq!(r.data.eval_sequences, 500);
        assert!(r.data.domains[0].paths[0].ends_with("redpajama/common_crawl"));
    }
}

#[test]
fn bad_recipes_name_the_key() {
    let base = Path::new(".");
    let ok = "[model]\nsource = \"m\"\npreset = \"sheared-1.3b\"\n\n[data]\n[[data.domain]]\nname = \"a\"\npaths = [\"x\"]\n";
    let r = Recipe::from_toml_str(ok, base).unwrap();
    assert_eq!(r.prune.hyper.steps, 3200, "defaults");
    let e = Recipe::from_toml_str(&format!("{ok}\n[prune]\nstpes = 3\n"), base).unwrap_err();
    assert!(e.msg.contains("stpes"), "{}", e.msg);
    let e = Recipe::from_toml_str(&format!("{ok}\n[train]\nlr = \"fast\"\n"), base).unwrap_err();
    assert!(
        e.msg.contains("lr") && e.msg.contains("invalid type"),
        "{}",
        e.msg
    );
    let e = Recipe::from_toml_str(&ok.replace("[data]\n", "[data]\nseq = 5\n"), base).unwrap_err();
    assert!(e.msg.contains("seq"), "{}", e.msg);
    // Resolution errors name the section.
    let r = Recipe::from_toml_str(
        &format!("{ok}\n[prune]\nproportions = {{ a = 0.5 }}\n"),
        base,
    )
    .unwrap();
    let e = r.resolve(&llama2_7b(), &[1]).unwrap_err().to_string();
    assert!(
        e.contains("[prune] proportions") && e.contains("sum to 0.5"),
        "{e}"
    );
    let r =
        Recipe::from_toml_str(&format!("{ok}\n[dynamic]\nreference = \"llama2\"\n"), base).unwrap();
    let e = r.resolve(&llama2_7b(), &[1]).unwrap_err().to_string();
    assert!(
        e.contains("[dynamic] reference") && e.contains("`a`"),
        "{e}"
    );
    let tiny = shear_model::LlamaConfig::new(100, 64, 176, 4, 4, 4);
    let r = Recipe::from_toml_str(ok, base).unwrap();
    let e = r.resolve(&tiny, &[1]).unwrap_err().to_string();
    assert!(
        e.contains("[model] target (sheared-1.3b): preset `sheared-1.3b`"),
        "{e}"
    );
}

/// `shear run --set KEY=VALUE`: overrides reach the recipe; a wrong key or type names it.
#[test]
fn overrides_apply_and_bad_ones_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("r.toml");
    std::fs::write(
        &path,
        "[model]\nsource = \"m\"\npreset = \"sheared-1.3b\"\n\n[data]\n[[data.domain]]\nname = \"a\"\npaths = [\"x\"]\n",
    )
    .unwrap();
    let set = |s: &[&str]| {
        let v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        Recipe::from_toml_file_with(&path, &v)
    };
    let r = set(&[
        "prune.steps=20",
        "train.lr=3e-3",
        "model.dtype=bf16",
        "compare.scratch_lr=0.01",
    ])
    .unwrap();
    assert_eq!(r.prune.hyper.steps, 20);
    assert_eq!(r.train.config.lr, 3e-3);
    assert_eq!(
        r.model.dtype,
        Some(shear_model::Dtype::BF16),
        "a bare word is a string"
    );
    assert_eq!(r.compare.scratch_lr, Some(0.01));
    assert!(
        r.data.domains[0].paths[0].starts_with(tmp.path()),
        "paths stay relative to the file"
    );
    let e = set(&["prune.stpes=20"]).unwrap_err();
    assert!(e.msg.contains("stpes"), "{}", e.msg);
    let e = set(&["train.steps=many"]).unwrap_err();
    assert!(
        e.msg.contains("invalid type") && e.msg.contains("train.steps"),
        "{}",
        e.msg
    );
    let e = set(&["prune.steps"]).unwrap_err();
    assert!(e.msg.contains("KEY=VALUE"), "{}", e.msg);
}

/// The SmolLM2 recipe resolves against SmolLM2-135M's config: a grouped-query target (6 heads in
/// 2 groups; hidden 432 = 6 × 72, so the heads divide it as transformers requires), tied, about
/// half the source's parameters.
#[test]
fn the_smollm2_recipe_resolves_to_a_grouped_query_half() {
    let mut smol = shear_model::LlamaConfig::new(49152, 576, 1536, 30, 9, 3);
    smol.head_dim = 64;
    smol.tie_word_embeddings = true;
    let r = recipe("smollm2-135m-sheared.toml");
    let res = r.resolve(&smol, &[1; 4]).unwrap();
    assert_eq!(
        res.target.to_string(),
        "layers=24,hidden=432,heads=6,kv_heads=2,intermediate=1152"
    );
    let share =
        res.target.config(&smol).param_counts().total() as f64 / smol.param_counts().total() as f64;
    assert!((0.45..0.6).contains(&share), "{share}");
}
