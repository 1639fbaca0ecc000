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
