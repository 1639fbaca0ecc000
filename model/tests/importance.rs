//! Importance scores (importance.rs, docs/algorithm.md §15) on hand-built models: a head, an
//! FFN channel, a hidden channel, a key/value group and a whole layer made inert score zero,
//! are ranked last and are the ones cut, and the cut is exactly the target shape (multi-head
//! and grouped-query sources); the scoring forward is the model's own; the importance path's
//! materialized model equals its masked model (≤ 1e-4).

use burn::module::Param;
use burn::prelude::*;
use shear_model::importance::ImportanceScores;
use shear_model::{materialize, to_vec_f32, DeterministicMasks, Llama, PruneModules, TargetShape};
use shear_testkit::*;

fn zero_rows(w: &Param<Tensor<B, 2>>, rows: std::ops::Range<usize>) -> Param<Tensor<B, 2>> {
    let t = w.val();
    let [_, c] = t.dims();
    let z = Tensor::zeros([rows.len(), c], &device());
    Param::from_tensor(t.slice_assign([rows, 0..c], z))
}

fn zero_cols(w: &Param<Tensor<B, 2>>, cols: std::ops::Range<usize>) -> Param<Tensor<B, 2>> {
    let t = w.val();
    let [r, _] = t.dims();
    let z = Tensor::zeros([r, cols.len()], &device());
    Param::from_tensor(t.slice_assign([0..r, cols], z))
}

fn zero_entry(w: &Param<Tensor<B, 1>>, i: usize) -> Param<Tensor<B, 1>> {
    let n = w.val().dims()[0];
    let keep: Vec<f32> = (0..n).map(|j| if j == i { 0.0 } else { 1.0 }).collect();
    let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [n]), &device());
    Param::from_tensor(w.val() * keep)
}

fn ids(rows: usize, seq: usize, vocab: usize, salt: usize) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = (0..rows * seq)
        .map(|i| ((i * 7919 + salt * 131 + 3) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, seq]), &device())
}

fn scores_of(model: &Llama<B>) -> ImportanceScores {
    let mut s = ImportanceScores::new(&model.config);
    let vocab = model.config.vocab_size;
    for salt in 0..3 {
        let x = ids(2, 24, vocab, salt);
        let h = s.accumulate(model, x.clone());
        // The scoring forward is the model's forward.
        let want = model.hidden_masked(x, None);
        let d = max_abs_diff(&to_vec_f32(h.into_data()), &to_vec_f32(want.into_data()));
        assert!(
            d <= 1e-5,
            "the scoring forward differs from the model's by {d}"
        );
    }
    assert_eq!(s.tokens, 3 * 2 * 24);
    s
}

/// The smallest entry of `row` is at `i` and is zero (to rounding, relative to the row's max).
fn lowest(row: &[f64], i: usize, what: &str) {
    let max = row.iter().cloned().fold(0.0, f64::max);
    assert!(row[i] <= 1e-6 * max, "{what}: {} of max {max}", row[i]);
    for (j, &v) in row.iter().enumerate() {
        assert!(
            j == i || v > row[i],
            "{what}: unit {j} scores {v} ≤ {}",
            row[i]
        );
    }
}

fn kept(row: &[f64]) -> usize {
    row.iter().filter(|&&x| x == 1.0).count()
}

/// The masks are 0/1 and keep exactly `t`.
fn exact(m: &DeterministicMasks, t: &TargetShape) {
    let all = m
        .hidden
        .iter()
        .chain(&m.layer)
        .chain(m.head.iter().flatten())
        .chain(m.intermediate.iter().flatten());
    assert!(all.into_iter().all(|&x| x == 0.0 || x == 1.0), "0/1 masks");
    assert_eq!(kept(&m.hidden), t.hidden);
    assert_eq!(kept(&m.layer), t.layers);
    let eff = m.effective_heads();
    for (l, (heads, ffn)) in eff.iter().zip(&m.intermediate).enumerate() {
        assert_eq!(kept(heads), t.heads, "layer {l} heads");
        assert_eq!(kept(ffn), t.intermediate, "layer {l} FFN");
    }
    if let Some(kv) = &m.kv_head {
        for row in kv {
            assert_eq!(kept(row), t.kv_heads);
        }
    }
}

/// Materialized = masked, on fresh tokens.
fn materialized_equals_masked(model: &Llama<B>, m: &DeterministicMasks) {
    let x = ids(2, 20, model.config.vocab_size, 9);
    let masked = model.forward_masked(x.clone(), &m.to_z(&device()));
    let small = materialize(model, m, &device()).unwrap();
    let d = max_abs_diff(
        &to_vec_f32(small.forward(x).into_data()),
        &to_vec_f32(masked.into_data()),
    );
    eprintln!("materialized vs masked logits: {d:e}");
    assert!(d <= 1e-4, "materialized vs masked: {d}");
}

#[test]
fn inert_units_of_a_multi_head_model_rank_last_and_are_cut_to_the_exact_target() {
    let mut model: Llama<B> =
        shear_model::load_llama(&fixture("pruning/source"), &device()).unwrap();
    let hd = model.config.head_dim;
    // Head 2 of layer 1 writes nothing (its rows of o_proj), FFN channel 5 of layer 0 reads
    // nothing (its up_proj column), hidden channel 7 is zero after every norm, and layer 3
    // adds nothing (o_proj and down_proj zero: its output is its input).
    let a = &mut model.layers[1].self_attn;
    a.o_proj.weight = zero_rows(&a.o_proj.weight, 2 * hd..3 * hd);
    let m = &mut model.layers[0].mlp;
    m.up_proj.weight = zero_cols(&m.up_proj.weight, 5..6);
    for l in model.layers.iter_mut() {
        l.input_layernorm.weight = zero_entry(&l.input_layernorm.weight, 7);
        l.post_attention_layernorm.weight = zero_entry(&l.post_attention_layernorm.weight, 7);
    }
    model.norm.weight = zero_entry(&model.norm.weight, 7);
    let l3 = &mut model.layers[3];
    l3.self_attn.o_proj.weight = zero_rows(&l3.self_attn.o_proj.weight, 0..4 * hd);
    l3.mlp.down_proj.weight =
        zero_rows(&l3.mlp.down_proj.weight, 0..model.config.intermediate_size);

    let s = scores_of(&model);
    lowest(&s.head[1], 2, "heads of layer 1");
    lowest(&s.intermediate[0], 5, "FFN channels of layer 0");
    lowest(&s.hidden, 7, "hidden channels");
    lowest(&s.layer, 3, "layers");
    assert!(s.kv_head.is_none());

    let t: TargetShape = "layers=3,hidden=48,heads=2,intermediate=96"
        .parse()
        .unwrap();
    let m = s
        .masks::<B>(&model.config, &t, PruneModules::default(), &device())
        .unwrap();
    exact(&m, &t);
    assert_eq!(m.layer[3], 0.0);
    assert_eq!(m.hidden[7], 0.0);
    assert_eq!(m.head[1][2], 0.0);
    assert_eq!(m.intermediate[0][5], 0.0);
    // The kept units are the best-scoring ones.
    for (l, row) in s.head.iter().enumerate() {
        let worst_kept = (0..row.len())
            .filter(|&j| m.head[l][j] == 1.0)
            .map(|j| row[j])
            .fold(f64::INFINITY, f64::min);
        let best_cut = (0..row.len())
            .filter(|&j| m.head[l][j] == 0.0)
            .map(|j| row[j])
            .fold(0.0, f64::max);
        assert!(
            worst_kept >= best_cut,
            "layer {l}: kept {worst_kept} < cut {best_cut}"
        );
    }
    materialized_equals_masked(&model, &m);

    // A dimension left out keeps its size.
    let only = PruneModules {
        hidden: false,
        heads: true,
        intermediate: true,
        layers: false,
    };
    let t2: TargetShape = "layers=4,hidden=64,heads=2,intermediate=96"
        .parse()
        .unwrap();
    let m2 = s.masks::<B>(&model.config, &t2, only, &device()).unwrap();
    exact(&m2, &t2);
}

#[test]
fn inert_groups_and_heads_of_a_grouped_model_rank_last_and_are_cut_to_the_exact_target() {
    let mut model: Llama<B> =
        shear_model::load_llama(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap();
    let hd = model.config.head_dim;
    // Group 1 of layer 0 reads zero values (its v_proj columns): its four query heads write
    // nothing. Query head 1 (group 0) of layer 1 writes nothing (its o_proj rows).
    let a = &mut model.layers[0].self_attn;
    a.v_proj.weight = zero_cols(&a.v_proj.weight, hd..2 * hd);
    let a = &mut model.layers[1].self_attn;
    a.o_proj.weight = zero_rows(&a.o_proj.weight, hd..2 * hd);

    let s = scores_of(&model);
    let kv = s
        .kv_head
        .as_ref()
        .expect("a grouped source has group scores");
    lowest(&kv[0], 1, "groups of layer 0");
    lowest(&s.head[1][0..4], 1, "query heads of group 0, layer 1");

    // One group of four kept: layer 0 keeps group 0.
    let t: TargetShape = "layers=3,hidden=48,heads=4,kv_heads=1,intermediate=64"
        .parse()
        .unwrap();
    let m = s
        .masks::<B>(&model.config, &t, PruneModules::default(), &device())
        .unwrap();
    exact(&m, &t);
    assert_eq!(m.kv_head.as_ref().unwrap()[0], vec![1.0, 0.0]);
    materialized_equals_masked(&model, &m);

    // Both groups, two query heads each: layer 1 drops head 1 from group 0.
    let t: TargetShape = "layers=2,hidden=32,heads=4,kv_heads=2,intermediate=64"
        .parse()
        .unwrap();
    let m = s
        .masks::<B>(&model.config, &t, PruneModules::default(), &device())
        .unwrap();
    exact(&m, &t);
    assert_eq!(m.head[1][1], 0.0);
    assert_eq!(kept(&m.head[1][0..4]), 2);
    materialized_equals_masked(&model, &m);
}
