//! Dynamic batch loading through burn's data API (`DataLoader::iter`, `slice`, `to_device`,
//! `split_dataloader`): frequencies follow the weights, a weight change through the handle
//! applies from the next batch, a restored state continues the exact batch sequence, and slices
//! are disjoint and together reproduce the whole loader's rows; the token-stream loader too.

use std::sync::Arc;

use burn::data::dataloader::split::split_dataloader;
use burn::data::dataloader::DataLoader;
use shear_data::stream::TokenStream;
use shear_data::{
    DynamicDataLoader, DynamicLoader, PreparedData, Split, StreamDataLoader, TokenBatch,
};
use shear_testkit::*;

const SEQ: usize = 8;

/// Three domains whose sequences say where they come from: token 0 = domain, token 1 = index.
fn data(counts: [usize; 3]) -> (tempfile::TempDir, PreparedData) {
    let dir = tempfile::tempdir().unwrap();
    let domains = [
        ("a", [2, counts[0], 1]),
        ("b", [2, counts[1], 1]),
        ("c", [2, counts[2], 1]),
    ];
    write_prepared(dir.path(), SEQ, 100_000, &domains, |d, _, i| {
        let mut v = vec![d as u32, i as u32];
        v.resize(SEQ, 7);
        v
    });
    let data = PreparedData::open(dir.path()).unwrap();
    (dir, data)
}

fn loader(data: &PreparedData, w: Vec<f64>, batch: usize, batches: u64) -> DynamicDataLoader<B> {
    let l = DynamicLoader::new(
        data.domains(),
        data.shards(Split::Prune).unwrap(),
        w,
        batch,
        11,
    )
    .unwrap();
    DynamicDataLoader::new(l, batches, &device())
}

/// (domain, index) of every row of a batch.
fn rows(b: &TokenBatch<B>) -> Vec<(i64, i64)> {
    let [n, s] = b.input_ids.dims();
    let ids: Vec<i64> = b.input_ids.to_data().convert::<i64>().to_vec().unwrap();
    (0..n).map(|r| (ids[r * s], ids[r * s + 1])).collect()
}

#[test]
fn draws_through_the_trait_follow_the_weights() {
    let (_d, data) = data([50, 50, 50]);
    let w = vec![0.6, 0.1, 0.3];
    let l = loader(&data, w.clone(), 100, 200);
    assert_eq!(l.num_items(), 20_000);
    let mut counts = [0usize; 3];
    let mut it = l.iter();
    let mut n = 0;
    for b in &mut it {
        for (d, _) in rows(&b) {
            counts[d as usize] += 1;
            n += 1;
        }
    }
    assert_eq!(n, 20_000, "the iterator ends with the run's batches");
    let p = it.progress();
    assert_eq!((p.items_processed, p.items_total), (20_000, 20_000));
    for (i, p) in w.iter().enumerate() {
        let freq = counts[i] as f64 / n as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        assert!((freq - p).abs() <= 3.0 * se, "domain {i}: {freq} vs {p}");
    }
    assert!(
        l.iter().next().is_none(),
        "a used-up loader yields nothing more"
    );
}

#[test]
fn a_weight_change_applies_from_the_next_batch() {
    let (_d, data) = data([20, 20, 20]);
    let l = loader(&data, vec![1.0 / 3.0; 3], 16, 10);
    let handle = l.handle();
    let first = l.iter().next().unwrap();
    assert!(rows(&first).iter().any(|r| r.0 != 1));
    handle.set_weights(vec![0.0, 1.0, 0.0]).unwrap();
    // A new iterator and an old one alike see the change from their next batch.
    let mut it = l.iter();
    assert!(rows(&it.next().unwrap()).iter().all(|r| r.0 == 1));
    handle.set_weights(vec![0.5, 0.0, 0.5]).unwrap();
    assert!(rows(&it.next().unwrap()).iter().all(|r| r.0 != 1));
    assert_eq!(handle.batches(), 3);
}

#[test]
fn a_restored_state_continues_the_exact_batch_sequence() {
    let (_d, data) = data([7, 5, 3]);
    let whole = loader(&data, vec![0.5, 0.3, 0.2], 4, 12);
    let want: Vec<_> = whole.iter().map(|b| rows(&b)).collect();
    let part = loader(&data, vec![0.5, 0.3, 0.2], 4, 12);
    let head: Vec<_> = part.iter().take(5).map(|b| rows(&b)).collect();
    let state = part.handle().state();
    let fresh = loader(&data, vec![1.0 / 3.0; 3], 4, 12);
    fresh.handle().restore(state).unwrap();
    let tail: Vec<_> = fresh.iter().map(|b| rows(&b)).collect();
    assert_eq!([head, tail].concat(), want, "passes and orders included");
}

#[test]
fn slices_are_disjoint_and_together_the_whole_loader() {
    let (_d, data) = data([40, 40, 40]);
    let w = vec![0.4, 0.35, 0.25];
    let whole = loader(&data, w.clone(), 6, 9);
    let want: Vec<Vec<(i64, i64)>> = whole.iter().map(|b| rows(&b)).collect();
    // burn's own splitter: peer k of 2 gets rows k*3..(k+1)*3 of every global batch.
    let one: Arc<dyn DataLoader<B, TokenBatch<B>>> = Arc::new(loader(&data, w.clone(), 6, 9));
    let peers = split_dataloader(one, &[device(), device()]);
    assert_eq!(peers[0].num_items() + peers[1].num_items(), 54);
    let a: Vec<_> = peers[0].iter().map(|b| rows(&b)).collect();
    let b: Vec<_> = peers[1].iter().map(|b| rows(&b)).collect();
    assert_eq!(a.len(), 9);
    for (k, global) in want.iter().enumerate() {
        assert_eq!([a[k].clone(), b[k].clone()].concat(), *global, "batch {k}");
        assert!(
            a[k].iter().all(|r| !b[k].contains(r)),
            "disjoint in batch {k}"
        );
    }
    // A slice saves and restores like the whole: state after 4 batches, continued elsewhere.
    let s = loader(&data, w.clone(), 6, 9).share(0, 27);
    let head: Vec<_> = s.iter().take(4).map(|b| rows(&b)).collect();
    let state = s.handle().state();
    let t = loader(&data, w, 6, 9).share(0, 27);
    t.handle().restore(state).unwrap();
    let tail: Vec<_> = t.iter().map(|b| rows(&b)).collect();
    assert_eq!([head, tail].concat(), a);
}

#[test]
fn the_token_stream_is_a_data_loader_too() {
    let tokens: Vec<u32> = (0..500).collect();
    let l = StreamDataLoader::<B>::new(TokenStream::from_tokens(tokens), 16, 3, 2, 5, 8, &device());
    assert_eq!(l.num_items(), 24);
    let all: Vec<_> = l
        .iter()
        .map(|b| {
            b.input_ids
                .to_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .unwrap()
        })
        .collect();
    assert_eq!(all.len(), 8);
    // Any batch can be regenerated: seek to batch 5 (step 2, micro-batch 1).
    l.seek(5);
    let again = l
        .iter()
        .next()
        .unwrap()
        .input_ids
        .to_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap();
    assert_eq!(again, all[5]);
    for w in all[0].chunks(16) {
        assert!(w.windows(2).all(|p| p[1] == p[0] + 1), "contiguous windows");
    }
}
