//! How much device memory a pruning or training run needs, per device, before it is started
//! (docs/algorithm.md §13): the weights, gradients, gradient accumulator, AdamW moments, masks
//! and multipliers, and the activations autodiff keeps for the backward pass, for a model
//! shape, micro-batch, sequence length and number of data-parallel peers.
//!
//! Everything is f32, as shear trains: under bf16 autocast only the matrix products run in bf16
//! (shear_model::precision), so the weights, gradients, optimizer state and the tensors kept
//! for the backward pass stay f32 and the plan does not change with the precision.

use serde::{Deserialize, Serialize};
use shear_model::LlamaConfig;

use crate::zero::ZeroStage;

const F32: u64 = 4;

/// One run to plan.
#[derive(Clone, Debug)]
pub struct PlanInput {
    /// The model trained: the source when pruning.
    pub model: LlamaConfig,
    /// Pruning (masks, multipliers and the masked forward) or plain training.
    pub pruning: bool,
    /// Sequences per micro-batch on each device (one forward/backward).
    pub micro_batch: usize,
    pub seq_len: usize,
    /// Micro-batches per optimizer step on each device; above 1 a running sum of the
    /// gradients is kept beside each new set.
    pub grad_accum: usize,
    /// The LM head and cross-entropy fused, as on the CPU backend (docs/algorithm.md §12): the
    /// `[tokens, vocab]` logits are never kept. Off on GPU backends.
    pub fused_loss: bool,
    /// Blocks recomputed in the backward pass (`--recompute`, recompute.rs): only every
    /// block's input is kept, plus one block's activations at a time.
    pub recompute: bool,
    /// Data-parallel peers over all devices and nodes (the shares of a sharded state).
    pub peers: usize,
    /// How much of the state is sharded over the peers (`--zero-stage`, zero.rs).
    pub zero: ZeroStage,
    /// The teacher of logit distillation (`--distill-from`), if any: frozen, on every device.
    pub teacher: Option<LlamaConfig>,
}

/// Bytes per device, by what holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryPlan {
    /// Model parameters, f32.
    pub weights: u64,
    /// The gradients one backward pass makes, f32: all of them, or under `--recompute` one
    /// block's (or the embedding's and LM head's) at a time.
    pub gradients: u64,
    /// The step's running sum of gradients (grads.rs `GradSum`), beside the set being made: 0
    /// when one backward makes the whole step's (one micro-batch, no recomputation); this
    /// peer's share of it under ZeRO stage 2.
    pub accumulator: u64,
    /// AdamW's two moments per parameter, f32: this peer's share under ZeRO stages 1 and 2.
    pub optimizer: u64,
    /// The optimizer step's temporaries: clipping and AdamW go one parameter at a time, so five
    /// tensors of the largest parameter's size at most (its new moments, squared gradient,
    /// update and new value; train/tests/live_memory.rs counts them). With peers, the packed
    /// bucket of an all-reduce where it coexists with another full set (1 GiB at most; see
    /// `plan`). What a process's resident
    /// memory shows beyond the live bytes is its allocator's (README "Memory").
    pub temporaries: u64,
    /// `log_alpha` of every mask and the multipliers `lambda_1`, `lambda_2`, with their
    /// gradients, accumulator and moments (0 when training).
    pub masks: u64,
    /// What the forward keeps for the backward: per layer and token, plus the final norm.
    pub activations: u64,
    /// The LM head's logits and their softmax, kept for the backward (0 when fused).
    pub logits: u64,
    /// One layer's backward temporaries at a time: the gradients flowing back through its
    /// attention scores, four f32 `[tokens, heads, seq]` tensors (one query block's rows under
    /// `--recompute`).
    pub workspace: u64,
    /// The teacher of distillation: its f32 weights, its forward's workspace (no graph: one
    /// layer's temporaries at a time), its final hidden states, and its logits beside the
    /// student's (one chunk's when fused). 0 without a teacher.
    #[serde(default)]
    pub teacher: u64,
}

impl MemoryPlan {
    pub fn total(&self) -> u64 {
        self.rows()
            .iter()
            .fold(0u64, |sum, (_, bytes)| sum.saturating_add(*bytes))
    }

    /// The rows a user reads: (name, bytes).
    pub fn rows(&self) -> [(&'static str, u64); 10] {
        [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("accumulator", self.accumulator),
            ("optimizer (AdamW)", self.optimizer),
            ("step temporaries", self.temporaries),
            ("masks + multipliers", self.masks),
            ("activations", self.activations),
            ("logits", self.logits),
            ("backward workspace", self.workspace),
            ("teacher (frozen)", self.teacher),
        ]
    }
}

/// Bytes one token keeps for the backward pass in one layer (docs/algorithm.md §13), counted
/// from the forward in shear_model::llama and the state burn 0.21's autodiff saves for each
/// operation, and checked against measured peak memory (README, "Memory"):
/// - each RMSNorm keeps its input, the normalized input and the scaled output: `2 × 3d` f32;
/// - attention keeps the rotated queries, keys and values as the score products read them
///   (keys and values repeated to every query head when grouped) and the context before
///   `o_proj`;
/// - the scores: burn's attention under autodiff is the decomposed fallback, which keeps the
///   exponentials of the shifted scores (the `exp` output and the division's numerator, one
///   tensor) and the probabilities (the second product's input), both f32:
///   `8 · heads · seq` bytes per token, the term that grows with the sequence (the causal mask
///   is one `[seq, seq]` byte tensor per layer);
/// - the SwiGLU FFN keeps the gate's output, its sigmoid and SiLU (burn composes SiLU from
///   both), the up projection, their product and the down projection's input: `6 ·
///   intermediate` f32;
/// - pruning adds the masked copies: the head-masked context, the channel-masked product, the
///   two layer-masked sub-block outputs and the hidden-masked norms' squared inputs.
pub fn activation_bytes_per_token_layer(c: &LlamaConfig, seq_len: usize, pruning: bool) -> u64 {
    let d = c.hidden_size as u64;
    let i = c.intermediate_size as u64;
    let q = (c.num_attention_heads * c.head_dim) as u64;
    let kv = (c.num_key_value_heads * c.head_dim) as u64;
    // repeat_kv materializes every query head's keys and values when grouped.
    let kv_read = if kv == q { kv } else { q };
    let norms = 6 * d;
    let attention = q + 2 * kv_read + q;
    let ffn = 6 * i;
    let masked = if pruning { q + i + 2 * d + 2 * d } else { 0 };
    let scores = SCORE_BYTES * (c.num_attention_heads * seq_len) as u64;
    (norms + attention + ffn + masked) * F32 + scores
}

/// Mask parameters (`log_alpha`) of a source and the multipliers: hidden `[d]`, heads `[L, H]`,
/// groups `[L, G]` when grouped, FFN channels `[L, m]`, layers `[L]` and FFN sub-blocks `[L]`
/// (the most `--layer-masks` can make), two multipliers per mask type.
pub fn mask_params(c: &LlamaConfig) -> u64 {
    let l = c.num_hidden_layers as u64;
    let groups = if c.num_key_value_heads == c.num_attention_heads {
        0
    } else {
        c.num_key_value_heads as u64
    };
    c.hidden_size as u64
        + l * (c.num_attention_heads as u64 + groups + c.intermediate_size as u64 + 2)
        + 2 * 6
}

/// Bytes the attention keeps per token, head and visible key (docs/algorithm.md §13.1).
pub const SCORE_BYTES: u64 = 8;

/// Bytes of the gradients flowing back through the scores, per token, head and visible key:
/// four f32 tensors of the scores' size at a time.
pub const SCORE_WORKSPACE_BYTES: u64 = 16;

/// The plan of one run (docs/algorithm.md §13).
pub fn plan(input: &PlanInput) -> MemoryPlan {
    let c = &input.model;
    let params = c.param_counts().total() as u64;
    let peers = input.peers.max(1) as u64;
    let zero = match peers {
        1 => ZeroStage::Off,
        _ => input.zero,
    };
    let d = c.hidden_size as u64;
    let counts = c.param_counts();
    let block =
        (counts.attention + counts.mlp) as u64 / (c.num_hidden_layers.max(1) as u64) + 2 * d;
    let outside_params = (counts.embedding + counts.lm_head) as u64 + d;
    // A share: the mean, plus at most half of the largest tensor (zero.rs `Shards`).
    let largest = (c.vocab_size as u64 * d).max(c.intermediate_size as u64 * d);
    let share = params.div_ceil(peers) + largest / 2;
    let sharded = |n: u64, from: ZeroStage| if zero >= from { share.min(n) } else { n };
    let tokens = (input.micro_batch * input.seq_len) as u64;
    let accumulating = input.grad_accum > 1;
    let per_param = |n: u64| n * F32;
    let masks = if input.pruning {
        // value, gradient, accumulator, two moments
        per_param(mask_params(c)) * if accumulating { 5 } else { 4 }
    } else {
        0
    };
    let layers = c.num_hidden_layers as u64;
    let per_layer = activation_bytes_per_token_layer(c, input.seq_len, input.pruning);
    // The final norm, and the hidden-masked embedding when pruning.
    let outside = 3 * c.hidden_size as u64
        + if input.pruning {
            c.hidden_size as u64
        } else {
            0
        };
    // Under recomputation the attention goes `ATTENTION_BLOCK` queries at a time in both
    // passes (§13.4): one query block's scores `[micro-batch, heads, block, seq]` at a time.
    let heads = c.num_attention_heads as u64;
    let query_rows = match input.recompute {
        true => input.seq_len.min(crate::recompute::ATTENTION_BLOCK),
        false => input.seq_len,
    } as u64;
    let score_cells = input.micro_batch as u64 * heads * query_rows * input.seq_len as u64;
    let activations = match input.recompute {
        // Every block's input `[tokens, d]`, the gradient flowing back `[tokens, d]`, the
        // block's queries, keys, values and context (and their gradients, while the attention
        // goes back), and the larger of the block's graph without the scores or one query
        // block's scores (or the head's graph).
        true => {
            let q = (c.num_attention_heads * c.head_dim) as u64;
            let kv = (c.num_key_value_heads * c.head_dim) as u64;
            let held = 2 * (2 * q + 2 * kv) * F32;
            let graph = activation_bytes_per_token_layer(c, 0, input.pruning) + outside * F32;
            tokens * ((layers + 1) * c.hidden_size as u64 * F32 + held)
                + (tokens * graph).max(SCORE_BYTES * score_cells)
        }
        false => tokens * (layers * per_layer + outside * F32),
    };
    // Logits and their log-softmax, both `[tokens, vocab]`.
    let logits = if input.fused_loss {
        0
    } else {
        2 * tokens * c.vocab_size as u64 * F32
    };
    // The gradients a backward pass makes; the running sum exists beside them when the step
    // has more than one backward (micro-batches, or recomputed blocks).
    let made = match input.recompute {
        true => block.max(outside_params),
        false => params,
    };
    let summing = accumulating || input.recompute;
    // The all-reduce of a set of gradients packs them into buckets and holds a bucket and its
    // reduced copy in place of the set: one more set-sized tensor (at most a bucket) when the
    // set is reduced beside another full set — each micro-batch's at ZeRO stage 2 beside the
    // running sum, or the only set of a step without accumulation. (At stages 0 and 1 with
    // accumulation the sum is reduced once the last micro-batch's set is gone.)
    let reduced_beside = match zero {
        ZeroStage::Gradients => true,
        _ => peers > 1 && !summing,
    };
    let buckets = match reduced_beside {
        true => per_param(params.min(crate::peers::BUCKET as u64)),
        false => 0,
    };
    MemoryPlan {
        weights: per_param(params),
        gradients: per_param(made),
        accumulator: if summing {
            per_param(sharded(params, ZeroStage::Gradients))
        } else {
            0
        },
        optimizer: 2 * per_param(sharded(params, ZeroStage::Optimizer)),
        // AdamW works one parameter at a time: its new moments, the squared gradient, the
        // update and the new value exist beside the old ones for the tensor being updated.
        temporaries: 5 * per_param(largest) + buckets,
        masks,
        activations,
        logits,
        workspace: SCORE_WORKSPACE_BYTES * score_cells,
        teacher: input
            .teacher
            .as_ref()
            .map_or(0, |t| teacher_bytes(t, input, tokens)),
    }
}

/// The teacher's bytes (see [`MemoryPlan::teacher`]): its weights; its forward without a graph,
/// where one layer at a time holds its input and output, its queries, keys and values (repeated
/// to every query head when grouped) and context, or its FFN's gate, up and product, and the
/// scores with their softmax; its final hidden states, kept for the loss; and its logits with
/// the tempered softmax of both models (`[tokens, vocab]` three times), or with the fused loss
/// one chunk's logits of both models.
fn teacher_bytes(t: &LlamaConfig, input: &PlanInput, tokens: u64) -> u64 {
    let d = t.hidden_size as u64;
    let q = (t.num_attention_heads * t.head_dim) as u64;
    let kv = (t.num_key_value_heads * t.head_dim) as u64;
    let kv_read = if kv == q { kv } else { q };
    let layer = (q + 2 * kv_read + q).max(3 * t.intermediate_size as u64);
    let scores =
        2 * input.micro_batch as u64 * t.num_attention_heads as u64 * (input.seq_len as u64).pow(2);
    let vocab = t.vocab_size as u64;
    let logits = match input.fused_loss {
        true => 2 * tokens.min(256) * vocab,
        false => 3 * tokens * vocab,
    };
    (t.param_counts().total() as u64 + tokens * (3 * d + layer) + logits) * F32 + scores * F32
}

/// A device a plan is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Card {
    pub name: &'static str,
    /// Memory as the driver reports it (`nvidia-smi`'s total), MiB.
    pub mib: u64,
}

impl Card {
    pub fn bytes(&self) -> u64 {
        self.mib << 20
    }

    /// The plan fits when it uses at most 95 % of the card: the rest goes to the CUDA context,
    /// kernels, temporaries between operations and allocator fragmentation.
    pub fn fits(&self, plan: &MemoryPlan) -> bool {
        plan.total() as f64 <= 0.95 * self.bytes() as f64
    }
}

/// Cards people prune on, by memory.
pub const CARDS: &[Card] = &[
    Card {
        name: "H200",
        mib: 143_771,
    },
    Card {
        name: "H100-80GB",
        mib: 81_559,
    },
    Card {
        name: "A100-80GB",
        mib: 81_920,
    },
    Card {
        name: "A100-40GB",
        mib: 40_960,
    },
    Card {
        name: "L40S",
        mib: 46_068,
    },
    Card {
        name: "RTX-4090",
        mib: 24_564,
    },
];

/// A card by name (case-insensitive).
pub fn card(name: &str) -> Option<Card> {
    CARDS
        .iter()
        .copied()
        .find(|c| c.name.eq_ignore_ascii_case(name))
}

/// `MemAvailable` of /proc/meminfo, in bytes (`None` where it cannot be read).
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Refuses a run of `copies` processes' worth of `plan` (the data-parallel peers that share
/// this machine's memory) that needs more host memory than is available now, before anything
/// is allocated: a run that would otherwise end in a failed allocation part way.
pub fn check_fits(plan: &MemoryPlan, copies: u64, what: &str) -> crate::Result<()> {
    let need = plan.total().saturating_mul(copies.max(1));
    let Some(have) = available_memory() else {
        return Ok(());
    };
    if need <= have {
        return Ok(());
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Err(crate::TrainError::Invalid(format!(
        "{what} needs about {:.1} GiB of memory (shear plan's estimate), {:.1} GiB is \
         available; choose a smaller model, batch or sequence, or --recompute",
        gib(need),
        gib(have)
    )))
}
