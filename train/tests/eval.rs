//! Per-domain evaluation against transformers' loss, `shear eval`, and `shear prune` with
//! dynamic batch loading over a prepared data folder.

use std::path::Path;

use shear_data::{PreparedData, Split};
use shear_testkit::*;
use shear_train::eval::eval_domains;

/// The llama-mha fixture's two 16-token sequences, as ids.
fn fixture_ids() -> Vec<Vec<u32>> {
    let (_, ids) = read_tensor(&fixture("llama-mha/expected.safetensors"), "input_ids");
    ids.chunks(16)
        .map(|c| c.iter().map(|&x| x as u32).collect())
        .collect()
}

/// Domain `both` holds both fixture sequences in its eval split, `first` only the first one.
fn fixture_data(dir: &Path) {
    let seqs = fixture_ids();
    write_prepared(
        dir,
        16,
        1000,
        &[("both", [2, 2, 2]), ("first", [1, 1, 1])],
        |_, _, i| seqs[i].clone(),
    );
}

#[test]
fn per_domain_loss_equals_the_transformers_loss() {
    let tmp = tempfile::tempdir().unwrap();
    fixture_data(tmp.path());
    let data = PreparedData::open(tmp.path()).unwrap();
    let model = shear_model::load_llama::<B>(&fixture("llama-mha"), &device()).unwrap();
    let (_, want) = read_tensor(&fixture("llama-mha/expected.safetensors"), "loss");
    let shards = data.shards(Split::Eval).unwrap();
    for batch in [1, 2, 5] {
        let got = eval_domains(&model, None, &data.domains(), &shards, batch, None);
        assert_eq!(got[0].tokens, 30);
        assert!(
            (got[0].loss - want[0] as f64).abs() < 1e-5,
            "batch {batch}: {} vs transformers {}",
            got[0].loss,
            want[0]
        );
        assert!((got[0].perplexity - got[0].loss.exp()).abs() < 1e-9);
        assert_eq!((got[1].sequences, got[1].tokens), (1, 15));
    }
    // The token average of `both` is the mean of its two sequences' losses.
    let one = eval_domains(&model, None, &data.domains(), &shards, 1, Some(1));
    let first = one[1].loss;
    assert!(
        (one[0].loss - first).abs() < 1e-9,
        "max_sequences 1 is the first sequence"
    );
    let all = eval_domains(&model, None, &data.domains(), &shards, 2, None);
    let tokens = data.shards(Split::Prune).unwrap();
    let second_only = {
        let ids: Vec<i64> = tokens[0]
            .sequence(1)
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        let t = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(ids, [1, 16]),
            &device(),
        );
        model.loss(t).into_scalar() as f64
    };
    assert!((all[0].loss - (first + second_only) / 2.0).abs() < 1e-5);
}
