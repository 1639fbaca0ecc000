//! The one optimizer configuration of every loop: AdamW with β (0.9, 0.95), ε 1e-8
//! (docs/algorithm.md §4.2, §7). Weight decay is 0 while pruning and a setting of continued
//! pre-training.

use burn::optim::AdamWConfig;

/// AdamW as the reference trains with it (decoupled weight decay `weight_decay`).
pub fn adamw(weight_decay: f64) -> AdamWConfig {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay as f32)
}
