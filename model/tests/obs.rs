//! Structured OBS (obs.rs, docs/algorithm.md §15.1) on hand-built models whose heads and FFN
//! channels include exact duplicates and dead units: greedy removal under refitting ranks one
//! unit of every duplicated set and every dead unit last, the cut is exactly the target shape
//! (multi-head and grouped-query sources), and because only redundant units go, the refitted,
//! materialized model computes the source's logits (within 1e-4) — which magnitude scores, cutting
//! a duplicate's twin or a live unit, do not. The greedy order is also checked against a brute
//! force over the same damped Gram matrix.

use burn::module::Param;
use burn::prelude::*;
use shear_model::importance::ImportanceScores;
use shear_model::obs::{greedy_channels, Gram};
use shear_model::{materialize, to_vec_f32, DeterministicMasks, Llama, PruneModules, TargetShape};
use shear_testkit::*;

type W = Param<Tensor<B, 2>>;

/// `w` with columns `to` set to columns `from`.
fn copy_cols(w: &W, from: std::ops::Range<usize>, to: usize) -> W {
    let t = w.val();
    let [r, _] = t.dims();
    let src = t.clone().slice([0..r, from.clone()]);
    Param::from_tensor(t.slice_assign([0..r, to..to + from.len()], src))
}

/// `w` with rows `to` set to rows `from`.
fn copy_rows(w: &W, from: std::ops::Range<usize>, to: usize) -> W {
    let t = w.val();
    let [_, c] = t.dims();
    let src = t.clone().slice([from.clone(), 0..c]);
    Param::from_tensor(t.slice_assign([to..to + from.len(), 0..c], src))
}

fn zero_rows(w: &W, rows: std::ops::Range<usize>) -> W {
    let t = w.val();
    let [_, c] = t.dims();
    let z = Tensor::zeros([rows.len(), c], &device());
    Param::from_tensor(t.slice_assign([rows, 0..c], z))
}

fn zero_cols(w: &W, cols: std::ops::Range<usize>) -> W {
    let t = w.val();
    let [r, _] = t.dims();
    let z = Tensor::zeros([r, cols.len()], &device());
    Param::from_tensor(t.slice_assign([0..r, cols], z))
}

/// Query head `to` of layer `l` becomes a copy of head `from` (same key/value head).
fn duplicate_head(model: &mut Llama<B>, l: usize, from: usize, to: usize) {
    let a = &mut model.layers[l].self_attn;
    let hd = a.head_dim;
    a.q_proj.weight = copy_cols(&a.q_proj.weight, from * hd..(from + 1) * hd, to * hd);
    if a.n_kv_heads == a.n_heads {
        a.k_proj.weight = copy_cols(&a.k_proj.weight, from * hd..(from + 1) * hd, to * hd);
        a.v_proj.weight = copy_cols(&a.v_proj.weight, from * hd..(from + 1) * hd, to * hd);
    }
    a.o_proj.weight = copy_rows(&a.o_proj.weight, from * hd..(from + 1) * hd, to * hd);
}

/// FFN channel `to` of layer `l` becomes a copy of channel `from`.
fn duplicate_channel(model: &mut Llama<B>, l: usize, from: usize, to: usize) {
    let m = &mut model.layers[l].mlp;
    m.gate_proj.weight = copy_cols(&m.gate_proj.weight, from..from + 1, to);
    m.up_proj.weight = copy_cols(&m.up_proj.weight, from..from + 1, to);
    m.down_proj.weight = copy_rows(&m.down_proj.weight, from..from + 1, to);
}

fn ids(rows: usize, seq: usize, vocab: usize, salt: usize) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = (0..rows * seq)
        .map(|i| ((i * 7919 + salt * 131 + 3 + (i * i) % 17) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, seq]), &device())
}

/// Scores with Gram matrices over 1 280 calibration tokens (more than any layer has units).
fn calibrated(model: &Llama<B>) -> ImportanceScores {
    let mut s = ImportanceScores::with_grams(&model.config);
    for salt in 0..10 {
        s.accumulate(model, ids(2, 64, model.config.vocab_size, salt));
    }
    s
}

/// The `k` lowest-scoring units of `row`, lowest first.
fn lowest(row: &[f64], k: usize) -> Vec<usize> {
    let mut i: Vec<usize> = (0..row.len()).collect();
    i.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
    i.truncate(k);
    i
}

fn one_of(got: usize, set: &[usize], what: &str) {
    assert!(
        set.contains(&got),
        "{what}: unit {got} cut, not one of {set:?}"
    );
}

fn kept(row: &[f64]) -> usize {
    row.iter().filter(|&&x| x == 1.0).count()
}

fn exact(m: &DeterministicMasks, t: &TargetShape) {
    for (l, (heads, ffn)) in m.effective_heads().iter().zip(&m.intermediate).enumerate() {
        assert_eq!(kept(heads), t.heads, "layer {l} heads");
        assert_eq!(kept(ffn), t.intermediate, "layer {l} FFN");
    }
    if let Some(kv) = &m.kv_head {
        for row in kv {
            assert_eq!(kept(row), t.kv_heads);
        }
    }
}

/// The largest difference between the logits of `small` and of `source` on fresh tokens.
fn logits_gap(source: &Llama<B>, small: &Llama<B>) -> f32 {
    let x = ids(2, 40, source.config.vocab_size, 77);
    max_abs_diff(
        &to_vec_f32(small.forward(x.clone()).into_data()),
        &to_vec_f32(source.forward(x).into_data()),
    )
}

const ONLY_UNITS: PruneModules = PruneModules {
    hidden: false,
    heads: true,
    intermediate: true,
    layers: false,
};

#[test]
fn duplicated_and_dead_units_of_a_multi_head_model_rank_last_and_are_refitted_away() {
    let mut model: Llama<B> =
        shear_model::load_llama(&fixture("pruning/source"), &device()).unwrap();
    let hd = model.config.head_dim;
    // Per layer, one redundant head and two redundant FFN channels (of 4 and 176).
    duplicate_head(&mut model, 0, 0, 3);
    duplicate_channel(&mut model, 0, 4, 9);
    let m = &mut model.layers[0].mlp;
    m.up_proj.weight = zero_cols(&m.up_proj.weight, 5..6); // channel 5 reads nothing
    let a = &mut model.layers[1].self_attn;
    a.o_proj.weight = zero_rows(&a.o_proj.weight, hd..2 * hd); // head 1 writes nothing
    duplicate_channel(&mut model, 1, 10, 20);
    duplicate_channel(&mut model, 1, 11, 30);
    duplicate_head(&mut model, 2, 1, 2);
    let m = &mut model.layers[2].mlp;
    m.down_proj.weight = zero_rows(&m.down_proj.weight, 0..1); // channel 0 writes nothing
    duplicate_channel(&mut model, 2, 50, 100);
    duplicate_head(&mut model, 3, 2, 0);
    duplicate_channel(&mut model, 3, 3, 7); // three copies of channel 3
    duplicate_channel(&mut model, 3, 3, 8);

    let s = calibrated(&model);
    let t: TargetShape = "layers=4,hidden=64,heads=3,intermediate=174"
        .parse()
        .unwrap();
    let obs = s.obs(&model, &t, ONLY_UNITS).unwrap();
    one_of(lowest(&obs.head[0], 1)[0], &[0, 3], "layer 0 heads");
    assert_eq!(lowest(&obs.head[1], 1), vec![1], "layer 1 heads");
    one_of(lowest(&obs.head[2], 1)[0], &[1, 2], "layer 2 heads");
    one_of(lowest(&obs.head[3], 1)[0], &[0, 2], "layer 3 heads");
    let mut f0 = lowest(&obs.intermediate[0], 2);
    f0.sort();
    assert!(
        f0 == vec![4, 5] || f0 == vec![5, 9],
        "layer 0 FFN cut {f0:?}"
    );
    let f1 = lowest(&obs.intermediate[1], 2);
    assert!(f1.iter().any(|&c| c == 10 || c == 20) && f1.iter().any(|&c| c == 11 || c == 30));
    let f2 = lowest(&obs.intermediate[2], 2);
    assert!(
        f2.contains(&0) && f2.iter().any(|&c| c == 50 || c == 100),
        "{f2:?}"
    );
    let f3 = lowest(&obs.intermediate[3], 2);
    assert!(f3.iter().all(|c| [3, 7, 8].contains(c)), "{f3:?}");

    let masks = obs
        .masks::<B>(&model.config, &t, ONLY_UNITS, &device())
        .unwrap();
    exact(&masks, &t);
    let refitted = s.refit(&model, &masks).unwrap();
    let small = materialize(&refitted, &masks, &device()).unwrap();
    let gap = logits_gap(&model, &small);
    // Without the refit the same cut loses each removed duplicate's share.
    let unfitted = logits_gap(&model, &materialize(&model, &masks, &device()).unwrap());
    // Magnitude scores cut a duplicate's twin or a live unit: the function changes.
    let magnitude = s
        .masks::<B>(&model.config, &t, ONLY_UNITS, &device())
        .unwrap();
    exact(&magnitude, &t);
    let by_magnitude = logits_gap(&model, &materialize(&model, &magnitude, &device()).unwrap());
    eprintln!("logits vs source: OBS + refit {gap:e}, OBS cut unrefitted {unfitted:e}, magnitude cut {by_magnitude:e}");
    assert!(gap <= 1e-4, "OBS + refit vs source: {gap}");
    assert!(unfitted > 100.0 * gap && by_magnitude > 100.0 * gap);
}

#[test]
fn duplicated_query_heads_of_a_grouped_model_rank_last_in_their_group() {
    let mut model: Llama<B> =
        shear_model::load_llama(&fixture("llama-gqa-tied-bf16-sharded"), &device()).unwrap();
    // Two groups of four query heads; in every layer one head of each group copies another
    // of the same group (so reads the same keys and values).
    for l in 0..3 {
        duplicate_head(&mut model, l, l, (l + 2) % 4);
        duplicate_head(&mut model, l, 4 + (l + 1) % 4, 4 + (l + 3) % 4);
    }
    let s = calibrated(&model);
    let t: TargetShape = "layers=3,hidden=64,heads=6,kv_heads=2,intermediate=128"
        .parse()
        .unwrap();
    let modules = PruneModules {
        intermediate: false,
        ..ONLY_UNITS
    };
    let obs = s.obs(&model, &t, modules).unwrap();
    let masks = obs
        .masks::<B>(&model.config, &t, modules, &device())
        .unwrap();
    exact(&masks, &t);
    for l in 0..3 {
        let cut: Vec<usize> = (0..8).filter(|&j| masks.head[l][j] == 0.0).collect();
        assert_eq!(cut.len(), 2, "layer {l}");
        one_of(cut[0], &[l, (l + 2) % 4], &format!("layer {l} group 0"));
        one_of(
            cut[1],
            &[4 + (l + 1) % 4, 4 + (l + 3) % 4],
            &format!("layer {l} group 1"),
        );
    }
    let refitted = s.refit(&model, &masks).unwrap();
    let gap = logits_gap(&model, &materialize(&refitted, &masks, &device()).unwrap());
    let unfitted = logits_gap(&model, &materialize(&model, &masks, &device()).unwrap());
    eprintln!("grouped: logits vs source, OBS + refit {gap:e}, unrefitted {unfitted:e}");
    assert!(gap <= 1e-4, "OBS + refit vs source: {gap}");
    assert!(unfitted > 100.0 * gap);
}

/// Exact greedy removal by brute force: at each step, the unit whose removal with refitting
/// adds least error, `‖W_v‖² / [(G_AA + λI)⁻¹]_vv` over the units `A` still there, each inverse
/// computed afresh by Gauss–Jordan elimination in f64.
fn brute_force_order(g: &Gram, w_sq: &[f64], remove: usize) -> Vec<usize> {
    let n = g.n;
    let lambda = 1e-3 * (0..n).map(|i| g.sum[i * n + i]).sum::<f64>() / n as f64;
    let mut alive: Vec<usize> = (0..n).collect();
    let mut order = Vec::new();
    for _ in 0..remove {
        let m = alive.len();
        let mut a: Vec<Vec<f64>> = (0..m)
            .map(|i| {
                let mut row: Vec<f64> = (0..m)
                    .map(|j| g.sum[alive[i] * n + alive[j]] + if i == j { lambda } else { 0.0 })
                    .collect();
                row.extend((0..m).map(|j| f64::from(u8::from(i == j))));
                row
            })
            .collect();
        for c in 0..m {
            let p = a[c][c];
            a[c].iter_mut().for_each(|x| *x /= p);
            for r in 0..m {
                if r != c {
                    let f = a[r][c];
                    let pivot = a[c].clone();
                    a[r].iter_mut().zip(pivot).for_each(|(x, y)| *x -= f * y);
                }
            }
        }
        let cost = |i: usize| w_sq[alive[i]] / a[i][m + i];
        let best = (0..m).min_by(|&x, &y| cost(x).total_cmp(&cost(y))).unwrap();
        order.push(alive.remove(best));
    }
    order
}

#[test]
fn greedy_removal_is_the_brute_force_greedy() {
    // 150 units (more than one round of the blocked update), 400 samples, correlated.
    let (n, t) = (150, 400);
    let mut x = vec![0f32; t * n];
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) as f32
    };
    for r in 0..t {
        let common = next();
        for c in 0..n {
            x[r * n + c] = next() + common * (c % 7) as f32 * 0.3;
        }
    }
    let a = Tensor::<B, 2>::from_data(TensorData::new(x, [t, n]), &device());
    let mut g = Gram::new(n);
    g.add(a);
    let w_sq: Vec<f64> = (0..n)
        .map(|i| 0.5 + ((i * 37) % 11) as f64 / 10.0)
        .collect();
    let fast = greedy_channels(&g, &w_sq, 100, "test").unwrap();
    let slow = brute_force_order(&g, &w_sq, 100);
    assert_eq!(fast, slow);
}
