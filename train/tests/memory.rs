//! `shear_train::memory::plan` against a hand computation (docs/algorithm.md §13).

use shear_model::LlamaConfig;
use shear_train::memory::{card, plan, MemoryPlan, PlanInput};
use shear_train::zero::ZeroStage;

/// vocab 100, hidden 8, intermediate 12, 2 layers, 2 query heads in 1 group, head_dim 4, untied.
fn small() -> LlamaConfig {
    let mut c = LlamaConfig::new(100, 8, 12, 2, 2, 1);
    c.head_dim = 4;
    c.tie_word_embeddings = false;
    c
}

#[test]
fn a_small_pruning_plan_matches_the_hand_computation() {
    let p = plan(&PlanInput {
        model: small(),
        pruning: true,
        micro_batch: 2,
        seq_len: 4,
        grad_accum: 2,
        fused_loss: false,
        recompute: false,
        peers: 1,
        zero: ZeroStage::Off,
        teacher: None,
    });
    // Parameters: embedding 100·8 = 800; attention per layer q 8·8 + k,v 2·8·4 + o 8·8 = 192,
    // two layers 384; FFN 3·8·12 = 288 per layer, 576; norms (2·2+1)·8 = 40; head 800.
    let params = 800 + 384 + 576 + 40 + 800;
    assert_eq!(params, 2600);
    // Masks: hidden 8 + per layer (heads 2 + groups 1 + channels 12 + layer 1 + FFN 1) = 17,
    // two layers 34; 12 multipliers: 54 values, each with a gradient, an accumulator and two
    // moments, f32.
    let masks = 54 * 5 * 4;
    // Activations per token and layer, f32 values: norms 6·8 = 48; attention: rotated queries 8,
    // keys and values repeated to both query heads 2·8, context 8 = 32; FFN 6·12 = 72;
    // pruning's masked copies: context 8 + channels 12 + two sub-block outputs 16 + the two
    // masked norms' squared inputs 16 = 52; 204 values, 816 bytes. Scores: 8 bytes · 2 heads ·
    // 4 positions = 64. 880 bytes per layer, 1760 for two, plus the final norm and the masked
    // embedding (3·8 + 8)·4 = 128: 1888 bytes per token, 8 tokens.
    let activations = 1888 * 8;
    // One layer's score gradients: 4 · 4 bytes · 2 heads · 4 positions per token.
    let workspace = 8 * 4 * 4 * 2 * 4;
    // Logits and their log-softmax: 2 · 8 tokens · 100.
    let logits = 2 * 8 * 100 * 4;
    assert_eq!(
        p,
        MemoryPlan {
            weights: params * 4,
            gradients: params * 4,
            accumulator: params * 4,
            optimizer: params * 8,
            // AdamW's five temporaries of the largest tensor (the 800-value embedding).
            temporaries: 5 * 800 * 4,
            masks,
            activations,
            logits,
            workspace,
            teacher: 0,
        }
    );
    assert_eq!(p.total(), 91_608);
}

#[test]
fn training_keeps_no_masks_and_the_fused_loss_no_logits() {
    let p = plan(&PlanInput {
        model: small(),
        pruning: false,
        micro_batch: 1,
        seq_len: 4,
        grad_accum: 1,
        fused_loss: true,
        recompute: false,
        peers: 1,
        zero: ZeroStage::Off,
        teacher: None,
    });
    // Per token and layer: (48 + 32 + 72) · 4 bytes + 64 for the scores = 672, two layers
    // 1344, final norm 24 · 4: 1440 bytes per token, 4 tokens.
    assert_eq!((p.masks, p.accumulator, p.logits), (0, 0, 0));
    assert_eq!(p.activations, 1440 * 4);
    assert_eq!(p.workspace, 4 * 4 * 4 * 2 * 4);
    assert_eq!(p.weights, 2600 * 4);
}

/// With blocks recomputed, the backward pass keeps every block's input and the gradient flowing
/// back (`[tokens, d]` each) and the graph of one block at a time.
#[test]
fn recomputation_keeps_the_block_inputs_and_one_block() {
    let input = |recompute| PlanInput {
        model: small(),
        pruning: false,
        micro_batch: 1,
        seq_len: 4,
        grad_accum: 1,
        fused_loss: true,
        recompute,
        peers: 1,
        zero: ZeroStage::Off,
        teacher: None,
    };
    let (plain, again) = (plan(&input(false)), plan(&input(true)));
    // Per token: (2 block inputs + 1 gradient) · 8 · 4 = 96, and the block's queries, keys,
    // values and context with their gradients, 2 · (2 · 8 + 2 · 4) · 4 = 192; then the larger
    // of one block's graph without the scores ((48 + 32 + 72) · 4 = 608, with the final norm's
    // 24 · 4: 704 per token, 2816 for 4 tokens) and one query block's scores (8 bytes · 2
    // heads · 4 queries · 4 keys = 256): 4 · 288 + 2816 = 3968; 1440 · 4 without.
    assert_eq!(again.activations, 3968);
    assert_eq!(plain.activations, 1440 * 4);
    // The gradients: the plain backward makes all 2600 at once; the recomputing one adds each
    // block's (2 · 8 norms + 480 weights = 496) or the embedding's, LM head's and final norm's
    // (800 + 800 + 8 = 1608) to the running sum of all 2600, one set at a time.
    assert_eq!((plain.gradients, plain.accumulator), (2600 * 4, 0));
    assert_eq!((again.gradients, again.accumulator), (1608 * 4, 2600 * 4));
    assert_eq!(
        again.total() + (plain.activations - again.activations),
        plain.total() + 1608 * 4
    );
}

/// ZeRO over 2 peers (docs/algorithm.md §4.5): a share is half the 2600 parameters plus at most
/// half the largest tensor (the 800-value embedding): 1700. Stage 1 shards the moments, stage 2
/// the running sum of the micro-batches' gradients as well, and reduces each micro-batch's set
/// as it is made, holding the packed bucket (here the whole model) beside the sum.
#[test]
fn zero_stages_shard_the_moments_then_the_summed_gradients() {
    let input = |zero, peers| PlanInput {
        model: small(),
        pruning: false,
        micro_batch: 1,
        seq_len: 4,
        grad_accum: 2,
        fused_loss: true,
        recompute: false,
        peers,
        zero,
        teacher: None,
    };
    let off = plan(&input(ZeroStage::Off, 2));
    let one = plan(&input(ZeroStage::Optimizer, 2));
    let two = plan(&input(ZeroStage::Gradients, 2));
    assert_eq!((off.optimizer, off.accumulator), (2 * 2600 * 4, 2600 * 4));
    assert_eq!((one.optimizer, one.accumulator), (2 * 1700 * 4, 2600 * 4));
    assert_eq!((two.optimizer, two.accumulator), (2 * 1700 * 4, 1700 * 4));
    assert_eq!(
        two.gradients,
        2600 * 4,
        "one backward still makes every gradient"
    );
    // Stage 2 reduces each micro-batch's set beside the running sum: one more packed set.
    assert_eq!(one.temporaries, off.temporaries);
    assert_eq!(two.temporaries - off.temporaries, 2600 * 4);
    // A peer alone shards nothing.
    assert_eq!(
        plan(&input(ZeroStage::Gradients, 1)),
        plan(&input(ZeroStage::Off, 1))
    );
}

/// Llama-2-7B pruned at the paper's sequence length: the weights, gradients and moments alone
/// (16 bytes per parameter, 6.74 B parameters) take 100 GiB, which fits an H200 (95 % of 140.4
/// GiB) and not an A100-80GB; the step's temporaries and the activations of even one
/// 4096-token sequence do not fit the H200 either.
#[test]
fn llama_2_7b_state_and_the_cards() {
    let c = LlamaConfig::new(32000, 4096, 11008, 32, 32, 32);
    assert_eq!(c.param_counts().total(), 6_738_415_616);
    let p = plan(&PlanInput {
        model: c,
        pruning: true,
        micro_batch: 1,
        seq_len: 4096,
        grad_accum: 1,
        fused_loss: false,
        recompute: false,
        peers: 1,
        zero: ZeroStage::Off,
        teacher: None,
    });
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let state = p.weights + p.gradients + p.optimizer;
    assert!((gib(state) - 100.4).abs() < 0.05, "{}", gib(state));
    let h200 = card("h200").unwrap();
    assert!(
        !h200.fits(&p),
        "activations at 4096 tokens: {} GiB",
        gib(p.activations)
    );
    let small = MemoryPlan {
        temporaries: 0,
        activations: 0,
        logits: 0,
        workspace: 0,
        ..p
    };
    assert!(h200.fits(&small) && !card("A100-80GB").unwrap().fits(&small));
}
