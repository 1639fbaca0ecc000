//! The embedded default's assets: the four-domain corpus, the tokenizer trained on it, and the
//! default recipe (the tiny source model's quality is checked through the binary).

use shear_data::{bpe, corpus, Tokenizer};
use shear_pipeline::recipe::Recipe;
use shear_testkit::assets;

fn default_recipe() -> Recipe {
    Recipe::from_toml_file(&assets().join("recipes/default.toml")).unwrap()
}

fn documents(recipe: &Recipe) -> Vec<(String, Vec<String>)> {
    recipe
        .data
        .domains
        .iter()
        .map(|d| {
            let docs = corpus::collect_files(&d.paths)
                .unwrap()
                .iter()
                .flat_map(|f| corpus::read_documents(&f.path, "text").unwrap())
                .collect();
            (d.name.clone(), docs)
        })
        .collect()
}

#[test]
fn the_corpus_has_four_domains_of_at_least_a_megabyte_of_text() {
    let recipe = default_recipe();
    let docs = documents(&recipe);
    let names: Vec<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["code", "book", "dictionary", "quotes"]);
    for (name, d) in &docs {
        let bytes: usize = d.iter().map(|t| t.len()).sum();
        assert!(bytes >= 1_000_000, "{name}: {bytes} bytes of text");
    }
    // The domains differ the way they should.
    let has = |name: &str, needle: &str| {
        docs.iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .iter()
            .filter(|t| t.contains(needle))
            .count()
    };
    assert!(has("code", "fn ") > 50);
    assert!(has("book", "LORD") > 100);
    assert!(has("dictionary", "<programming>") > 20);
    assert!(has("quotes", "\t\t-- ") > 500);
}

/// The committed tokenizer is exactly what `shear data tokenizer --vocab 4096` trains on the
/// corpus, and it is byte-level: any text round-trips without unknown tokens.
/// The committed tokenizer is exactly what `shear data tokenizer --vocab 4096` trains on the
/// corpus, and it is byte-level: any text round-trips without unknown tokens.
#[test]
fn the_tokenizer_is_the_4096_token_byte_level_bpe_of_the_corpus() {
    let committed = Tokenizer::from_file(assets().join("tiny")).unwrap();
    assert_eq!(committed.vocab_size(), 4096);
    assert_eq!(committed.eos_id(), Some(2));
    let text = "fn main() { println!(\"héllo, 世界 ✓\"); }\n\tAnd God said";
    let ids = committed.encode(text, true).unwrap();
    assert_eq!(ids[0], 1, "BOS first");
    assert!(!ids.contains(&0), "no <unk>");
    assert_eq!(committed.decode(&ids).unwrap(), text);

    let docs: Vec<String> = documents(&default_recipe())
        .into_iter()
        .flat_map(|(_, d)| d)
        .collect();
    let retrained = bpe::train_bpe(&docs, 4096, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    bpe::save_tokenizer(&retrained, dir.path()).unwrap();
    let retrained = Tokenizer::from_file(dir.path()).unwrap();
    assert_eq!(
        retrained.fingerprint().unwrap(),
        committed.fingerprint().unwrap()
    );
}

/// The default recipe prunes with the ratios of Llama-2-7B -> Sheared-LLaMA-1.3B (32 -> 24
/// layers, 4096 -> 2048 hidden, 32 -> 16 heads, 11008 -> 5504 intermediate).
/// The default recipe prunes with the ratios of Llama-2-7B -> Sheared-LLaMA-1.3B (32 -> 24
/// layers, 4096 -> 2048 hidden, 32 -> 16 heads, 11008 -> 5504 intermediate).
#[test]
fn the_default_recipe_has_the_sheared_1_3b_ratios() {
    let recipe = default_recipe();
    let source = shear_model::LlamaConfig::from_file(assets().join("tiny")).unwrap();
    let r = recipe.resolve(&source, &[1, 1, 1, 1]).unwrap();
    assert_eq!(r.target.layers * 32, source.num_hidden_layers * 24);
    assert_eq!(r.target.hidden * 4096, source.hidden_size * 2048);
    assert_eq!(r.target.heads * 32, source.num_attention_heads * 16);
    assert_eq!(
        r.target.intermediate * 11008,
        source.intermediate_size * 5504
    );
}

/// The default recipe's scaling reference at the target's 675 264 parameters. Expected values
/// from an independent computation (a plain Python least-squares scan of the shared exponent over
/// [0.01, 2] on the same points, 2026-12-04): every domain's own exponent leaves the range, the
/// shared one is 2 (its bound), and the laws read 4.2189 / 4.1675 / 4.3327 / 5.5493.
#[test]
fn the_default_scaling_reference_reads_the_expected_losses_at_the_target() {
    let recipe = default_recipe();
    let domains: Vec<String> = recipe.data.domains.iter().map(|d| d.name.clone()).collect();
    let r = &recipe.dynamic.reference;
    assert_eq!(r.kind(), "scaling");
    let got = r.resolve(&domains, 675_264.0).unwrap().unwrap();
    let want = [4.2189, 4.1675, 4.3327, 5.5493];
    for ((d, g), w) in domains.iter().zip(&got).zip(want) {
        assert!((g - w).abs() < 1e-4, "{d}: {g} vs {w}");
    }
    let fits = r.scaling_fits(&domains).unwrap().unwrap();
    let plateau = [4.1488, 4.1284, 4.2824, 5.5266];
    for (f, c) in fits.iter().zip(plateau) {
        let why = f.shared_exponent.as_deref().unwrap_or("");
        assert!(
            why.contains("exponent") && why.contains("outside"),
            "{}: {why}",
            f.domain
        );
        assert!(
            (f.law.b - 2.0).abs() < 1e-6 && (f.law.c - c).abs() < 1e-4,
            "{f:?}"
        );
    }
    // Both update every 3 steps: the paper's cadence scaled to 160 and 400 steps.
    assert_eq!(recipe.prune.mixture.update_every, Some(3));
    assert_eq!(recipe.train.mixture.update_every, Some(3));
}
