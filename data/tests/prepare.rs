//! `data prepare` (docs/algorithm.md §8): corpus files of every supported kind → disjoint, packed,
//! per-domain shards with a manifest; re-runs are no-ops; bad inputs are clear errors that
//! leave nothing behind.

use std::collections::BTreeSet;

use shear_data::prepare::{prepare, DomainSpec, PrepareRecipe};
use shear_data::shard::TokenWidth;
use shear_data::{PreparedData, Split, Tokenizer};
use shear_testkit::*;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(fixture("llama2-tokenizer")).unwrap()
}

fn recipe(domains: Vec<DomainSpec>) -> PrepareRecipe {
    PrepareRecipe {
        seq_len: 64,
        eval_sequences: 3,
        ..PrepareRecipe::new(domains)
    }
}

/// Markers `<<dNNNN>>` in `text`.
fn markers(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(p) = rest.find("<<d") {
        let tail = &rest[p + 3..];
        if tail.len() >= 6 && tail[..4].bytes().all(|b| b.is_ascii_digit()) && &tail[4..6] == ">>" {
            out.insert(tail[..4].to_string());
        }
        rest = &rest[p + 3..];
    }
    out
}

#[test]
fn prepare_packs_disjoint_splits_and_reruns_as_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    let r = recipe(write_corpus(tmp.path()));
    let tok = tokenizer();
    let report = prepare(&r, &tok, &out, &mut |_| {}).unwrap();
    assert!(!report.up_to_date);
    assert!(report.tokens > 0 && report.tokens_per_second() > 0.0);
    let m = &report.manifest;
    assert_eq!(m.token_width, TokenWidth::U16, "32000 tokens fit in u16");
    assert_eq!((m.seq_len, m.vocab_size), (64, 32000));
    assert_eq!(m.domain_names(), vec!["web", "code"]);
    assert_eq!(m.domains[0].sources.len(), 2);
    assert_eq!(m.domains[1].sources.len(), 3, "README.md skipped");
    assert_eq!(m.domains[0].documents, 30);
    assert_eq!(m.domains[1].documents, 30);
    for (i, path) in ["web-a.jsonl", "web-b.jsonl.gz"].iter().enumerate() {
        let size = std::fs::metadata(tmp.path().join(path)).unwrap().len();
        assert_eq!(m.domains[0].sources[i].bytes, size);
    }

    let data = PreparedData::open(&out).unwrap();
    data.check_tokenizer(&tok).unwrap();
    for (d, dm) in m.domains.iter().enumerate() {
        let mut seen: Vec<BTreeSet<String>> = Vec::new();
        let mut all_tokens = 0;
        for split in Split::ALL {
            let shard = &data.shards(split).unwrap()[d];
            let info = &dm.splits[&split];
            assert_eq!(shard.len(), info.sequences);
            if split == Split::Eval {
                assert_eq!(shard.len(), 3, "eval has exactly eval_sequences");
            } else {
                assert!(shard.len() > 3, "{split:?} of {} has data", dm.name);
            }
            let mut set = BTreeSet::new();
            for i in 0..shard.len() {
                let ids = shard.sequence(i).unwrap();
                assert_eq!(ids.len(), 64);
                all_tokens += ids.len();
                set.extend(markers(&tok.decode(&ids).unwrap()));
            }
            // Packing starts at a document's start: BOS first.
            assert_eq!(shard.sequence(0).unwrap()[0], 1, "BOS");
            assert!(!set.is_empty());
            for s in &set {
                assert!(s.starts_with(&d.to_string()), "domain {d} holds marker {s}");
            }
            seen.push(set);
        }
        for a in 0..3 {
            for b in a + 1..3 {
                let common: Vec<_> = seen[a].intersection(&seen[b]).collect();
                assert!(
                    common.is_empty(),
                    "{}: splits {a} and {b} share {common:?}",
                    dm.name
                );
            }
        }
        // Every document has BOS and EOS: the packed stream alternates EOS, BOS.
        let shard = &data.shards(Split::Train).unwrap()[d];
        let train: Vec<u32> = (0..shard.len())
            .flat_map(|i| shard.sequence(i).unwrap())
            .collect();
        let eos: Vec<usize> = (0..train.len()).filter(|&i| train[i] == 2).collect();
        let docs = dm.splits[&Split::Train].documents;
        assert!(
            eos.len() + 1 >= docs && eos.len() <= docs,
            "{} EOS, {docs} documents",
            eos.len()
        );
        for i in eos.into_iter().filter(|&i| i + 1 < train.len()) {
            assert_eq!(train[i + 1], 1, "BOS follows EOS");
        }
        assert!(all_tokens as u64 <= dm.tokens);
    }

    // Same inputs: nothing is done, the shards are untouched.
    let shard = out.join("prune/web.bin");
    let before = std::fs::metadata(&shard).unwrap().modified().unwrap();
    let again = prepare(&r, &tok, &out, &mut |_| {}).unwrap();
    assert!(again.up_to_date);
    assert_eq!(&again.manifest, m);
    assert_eq!(
        std::fs::metadata(&shard).unwrap().modified().unwrap(),
        before
    );
    // Another seed: other splits.
    let other = prepare(
        &PrepareRecipe {
            seed: 7,
            ..r.clone()
        },
        &tok,
        &out,
        &mut |_| {},
    )
    .unwrap();
    assert!(!other.up_to_date);
    assert_ne!(other.manifest.inputs_fingerprint, m.inputs_fingerprint);
}

#[test]
fn shards_of_another_tokenizer_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("data");
    prepare(
        &recipe(write_corpus(tmp.path())),
        &tokenizer(),
        &out,
        &mut |_| {},
    )
    .unwrap();
    // The same tokenizer with two vocabulary entries swapped.
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("llama2-tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["▁a"].clone(), vocab["▁b"].clone());
    vocab.insert("▁a".into(), b);
    vocab.insert("▁b".into(), a);
    let other = tmp.path().join("other.json");
    std::fs::write(&other, json.to_string()).unwrap();
    let e = PreparedData::open(&out)
        .unwrap()
        .check_tokenizer(&Tokenizer::from_file(&other).unwrap())
        .unwrap_err();
    assert!(e.to_string().contains("another tokenizer"), "{e}");
}

/// Runs `prepare` expecting an error that contains every needle, and checks nothing was left
/// in the output folder.
fn refused(r: &PrepareRecipe, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let e = prepare(r, &tokenizer(), &out, &mut |_| {})
        .unwrap_err()
        .to_string();
    for n in needles {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_inputs_are_clear_errors_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut domains = write_corpus(tmp.path());
    let r = |domains: &[DomainSpec]| recipe(domains.to_vec());

    // A missing file.
    let mut d = domains.clone();
    d[1].paths.push(tmp.path().join("nope.jsonl"));
    refused(&r(&d), &["nope.jsonl", "not found"]);

    // Invalid JSON on line 3 of a file of the second domain (after a valid first domain).
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"text\": \"ok\"}}\n{{\"text\": oops}}\n",
            "{\"text\": \"a\"}"
        ),
    )
    .unwrap();
    let mut d = domains.clone();
    d[1].paths = vec![bad.clone()];
    refused(&r(&d), &["bad.jsonl:3:", "invalid JSON"]);
    // A line without the text field.
    std::fs::write(&bad, "{\"body\": \"x\"}\n").unwrap();
    refused(&r(&d), &["bad.jsonl:1:", "no field `text`"]);

    // An empty domain: a folder with no corpus files; a file of blank lines.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.md"), "x").unwrap();
    let mut d = domains.clone();
    d[1].paths = vec![empty.clone()];
    refused(&r(&d), &["domain `code`", "empty domain"]);
    std::fs::write(empty.join("blank.jsonl"), "\n\n").unwrap();
    refused(&r(&d), &["domain `code`", "empty domain", "no documents"]);

    // Too little data for the eval split.
    let small = tmp.path().join("small.jsonl");
    std::fs::write(&small, jsonl(&[doc(1, 0)])).unwrap();
    d[1].paths = vec![small];
    refused(&r(&d), &["domain `code`", "eval sequences"]);

    // Budgets shared by proportions naming a domain without data.
    let mut rr = r(&domains);
    rr.prune_tokens = Some(1000);
    rr.proportions = "web=0.5,code=0.3,wiki=0.2".parse().unwrap();
    refused(&rr, &["`wiki`", "no data"]);
    rr.proportions = "web=0.5,code=0.6".parse().unwrap();
    refused(&rr, &["sum to 1.1"]);

    // Two domains with one name.
    domains[1].name = "web".into();
    refused(&r(&domains), &["`web` given twice"]);
}
