//! Zero-shot multiple-choice scoring: continuation log-likelihoods against a hand computation
//! (log-softmax in f64 of the model's logits), harness-style tokenization, `shear eval --tasks`.

use burn::prelude::*;
use shear_data::tasks::McTokens;
use shear_testkit::*;
use shear_train::eval::{continuation_logliks, score_task};

/// log P(continuation | context) by hand: the model's logits for the unpadded sequence, then a
/// log-softmax in f64.
fn by_hand(model: &shear_model::Llama<B>, ctx: &[u32], cont: &[u32]) -> f64 {
    let seq: Vec<i64> = ctx.iter().chain(cont).map(|&t| t as i64).collect();
    let n = seq.len();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seq.clone(), [1, n]), &device());
    let logits: Vec<f32> = model.forward(ids).into_data().to_vec().unwrap();
    let v = logits.len() / n;
    (ctx.len()..n)
        .map(|t| {
            let row = &logits[(t - 1) * v..t * v];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, x| m.max(*x as f64));
            let lse = max
                + row
                    .iter()
                    .map(|x| (*x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            row[seq[t] as usize] as f64 - lse
        })
        .sum()
}

#[test]
fn logliks_and_accuracy_match_a_hand_computation() {
    let model = shear_model::load_llama::<B>(&fixture("llama-mha"), &device()).unwrap();
    let ctx = vec![1u32, 5, 9, 77];
    let conts = vec![vec![12u32, 40], vec![7], vec![300, 2, 9, 999]];
    let got = continuation_logliks(&model, &ctx, &conts);
    for (c, g) in conts.iter().zip(&got) {
        let want = by_hand(&model, &ctx, c);
        assert!((g - want).abs() < 1e-4, "{g} vs {want}");
    }
    // acc: the highest sum; acc_norm: the highest sum per character.
    let best = (0..3).max_by(|&a, &b| got[a].total_cmp(&got[b])).unwrap();
    let chars = vec![1usize, 50, 2];
    let best_norm = (0..3)
        .max_by(|&a, &b| (got[a] / chars[a] as f64).total_cmp(&(got[b] / chars[b] as f64)))
        .unwrap();
    let items: Vec<McTokens> = (0..3)
        .map(|label| McTokens {
            context: ctx.clone(),
            continuations: conts.clone(),
            chars: chars.clone(),
            label,
        })
        .collect();
    let s = score_task(&model, "t", &items);
    assert_eq!(s.items, 3);
    assert!(
        (s.acc - 1.0 / 3.0).abs() < 1e-12,
        "one label of three is the argmax"
    );
    assert!((s.acc_norm - 1.0 / 3.0).abs() < 1e-12);
    let one = score_task(&model, "t", &items[best..best + 1]);
    assert_eq!(one.acc, 1.0);
    let one = score_task(&model, "t", &items[best_norm..best_norm + 1]);
    assert_eq!(one.acc_norm, 1.0);
}
