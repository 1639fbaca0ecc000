//! Dynamic batch loading (docs/algorithm.md §6.2): every sequence's domain is drawn from the current domain
//! weights (multinomial, like the reference's `numpy.random.choice`), then that domain's next
//! sequence is taken from its own shuffled order. When a domain runs out, it starts a new
//! shuffled pass (the reference stops with an assertion) and an event says so.
//!
//! All state — weights, cursors, the RNG position — is in [`LoaderState`], which serialises;
//! a loader restored from it draws exactly the batches the uninterrupted one would have.

use burn::data::dataset::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::{Sequence, TokenBatch, TokenBatcher};
use crate::error::{DataError, Result};
use crate::proportions::check_weights;
use crate::shard::Shard;

/// Where a domain's reading stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCursor {
    /// Completed passes over the domain.
    pub pass: u64,
    /// Next position in this pass's shuffled order.
    pub position: u64,
    /// Sequences drawn from this domain so far (all passes).
    pub drawn: u64,
}

/// Everything needed to resume a loader exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderState {
    pub seed: u64,
    pub domains: Vec<String>,
    pub weights: Vec<f64>,
    pub cursors: Vec<DomainCursor>,
    /// Position of the domain-drawing ChaCha8 stream (in 32-bit words).
    pub rng_word_pos: u128,
    pub batches: u64,
}

/// Something the loader reports (to the training log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LoaderEvent {
    /// `domain` ran out of sequences and started pass `pass` (counted from 0) in a new order.
    NewPass { domain: String, pass: u64 },
}

/// The loader: shards (shared, memory-mapped), weights, per-domain cursors and the random stream.
/// Cloning gives an independent loader at the same position over the same shards.
#[derive(Clone)]
pub struct DynamicLoader {
    shards: std::sync::Arc<Vec<Shard>>,
    batch_size: usize,
    state: LoaderState,
    rng: ChaCha8Rng,
    /// This pass's order of each domain.
    orders: Vec<Vec<u32>>,
    events: Vec<LoaderEvent>,
    /// (domain, index) of every row of the last batch drawn, all data-parallel peers' shares
    /// included (what a skipped step names).
    drawn: Vec<(usize, u64)>,
}

impl DynamicLoader {
    /// A loader over one shard per domain (`domains[i]` ↔ `shards[i]`), starting at `weights`.
    /// A domain with a positive weight and no sequences is an error.
    pub fn new(
        domains: Vec<String>,
        shards: Vec<Shard>,
        weights: Vec<f64>,
        batch_size: usize,
        seed: u64,
    ) -> Result<Self> {
        let k = domains.len();
        let state = LoaderState {
            seed,
            domains,
            weights,
            cursors: vec![
                DomainCursor {
                    pass: 0,
                    position: 0,
                    drawn: 0
                };
                k
            ],
            rng_word_pos: 0,
            batches: 0,
        };
        Self::restore(shards, batch_size, state)
    }

    /// A loader that continues from `state` (saved by [`DynamicLoader::state`]).
    pub fn restore(shards: Vec<Shard>, batch_size: usize, state: LoaderState) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Recipe("batch size 0".into()));
        }
        if let Some(s) = shards.windows(2).find(|w| w[0].seq_len() != w[1].seq_len()) {
            return Err(DataError::Invalid {
                path: s[1].path().to_path_buf(),
                msg: "shards of one loader must have the same sequence length".into(),
            });
        }
        let k = shards.len();
        let mut loader = DynamicLoader {
            orders: vec![Vec::new(); k],
            shards: std::sync::Arc::new(shards),
            batch_size,
            rng: ChaCha8Rng::seed_from_u64(state.seed),
            state: state.clone(),
            events: Vec::new(),
            drawn: Vec::new(),
        };
        loader.set_state(state)?;
        Ok(loader)
    }

    /// Continues from `state` over the same shards (what a checkpoint restores).
    pub fn set_state(&mut self, state: LoaderState) -> Result<()> {
        let k = state.domains.len();
        if self.shards.len() != k || state.weights.len() != k || state.cursors.len() != k {
            return Err(DataError::Weights(format!(
                "{} domains, {} shards, {} weights, {} cursors",
                k,
                self.shards.len(),
                state.weights.len(),
                state.cursors.len()
            )));
        }
        self.rng = ChaCha8Rng::seed_from_u64(state.seed);
        self.rng.set_word_pos(state.rng_word_pos);
        let weights = state.weights.clone();
        self.state = state;
        self.set_weights(weights)?;
        self.orders = (0..k)
            .map(|d| self.order(d, self.state.cursors[d].pass))
            .collect();
        self.events.clear();
        Ok(())
    }

    /// The shuffled order of domain `d` in pass `pass`: a function of (seed, d, pass) only.
    fn order(&self, d: usize, pass: u64) -> Vec<u32> {
        let mut o: Vec<u32> = (0..self.shards[d].len() as u32).collect();
        let key = self.state.seed ^ (d as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        rng.set_stream(pass);
        o.shuffle(&mut rng);
        o
    }

    pub fn domains(&self) -> &[String] {
        &self.state.domains
    }

    pub fn weights(&self) -> &[f64] {
        &self.state.weights
    }

    pub fn seq_len(&self) -> usize {
        self.shards.first().map_or(0, Shard::seq_len)
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// New weights, used from the next draw on. They must sum to 1, and a domain without
    /// sequences must have weight 0.
    pub fn set_weights(&mut self, weights: Vec<f64>) -> Result<()> {
        if weights.len() != self.shards.len() {
            return Err(DataError::Weights(format!(
                "{} weights for {} domains",
                weights.len(),
                self.shards.len()
            )));
        }
        check_weights(&weights)?;
        for (i, w) in weights.iter().enumerate() {
            if *w > 0.0 && self.shards[i].is_empty() {
                return Err(DataError::Weights(format!(
                    "domain `{}` has weight {w} but no data in this split",
                    self.state.domains[i]
                )));
            }
        }
        self.state.weights = weights;
        Ok(())
    }

    /// `weights` with the domains that have no sequences here set to 0, renormalised: the code
    /// rule's uniform smoothing would otherwise give them weight.
    pub fn without_empty(&self, mut weights: Vec<f64>) -> Vec<f64> {
        for (w, s) in weights.iter_mut().zip(self.shards.iter()) {
            if s.is_empty() {
                *w = 0.0;
            }
        }
        let sum: f64 = weights.iter().sum();
        weights.into_iter().map(|w| w / sum).collect()
    }

    /// A snapshot of the state (for checkpoints).
    pub fn state(&self) -> LoaderState {
        LoaderState {
            rng_word_pos: self.rng.get_word_pos(),
            ..self.state.clone()
        }
    }

    /// Events since the last call (new passes over exhausted domains).
    pub fn take_events(&mut self) -> Vec<LoaderEvent> {
        std::mem::take(&mut self.events)
    }

    /// Draws a domain from the weights: inverse CDF of one uniform draw.
    fn draw_domain(&mut self) -> usize {
        let u: f64 = self.rng.random();
        let w = &self.state.weights;
        let mut acc = 0.0;
        for (i, x) in w.iter().enumerate() {
            acc += x;
            if u < acc && *x > 0.0 {
                return i;
            }
        }
        // Rounding left u above the last cumulative sum: the last domain with weight.
        w.iter().rposition(|x| *x > 0.0).expect("weights sum to 1")
    }

    /// The shard index of the next sequence of domain `d`, starting a new shuffled pass when it
    /// runs out.
    fn next_index(&mut self, d: usize) -> usize {
        let n = self.shards[d].len() as u64;
        if self.state.cursors[d].position >= n {
            let c = &mut self.state.cursors[d];
            c.pass += 1;
            c.position = 0;
            let pass = c.pass;
            self.orders[d] = self.order(d, pass);
            self.events.push(LoaderEvent::NewPass {
                domain: self.state.domains[d].clone(),
                pass,
            });
        }
        let c = &mut self.state.cursors[d];
        let index = self.orders[d][c.position as usize] as usize;
        c.position += 1;
        c.drawn += 1;
        index
    }

    /// The sequences of the next batch, with their domains.
    pub fn next_items(&mut self) -> Vec<Sequence> {
        self.next_rows(0..self.batch_size)
    }

    /// Draws the next whole batch (every row's domain and sequence, so the stream advances as for
    /// the whole batch) and returns the sequences of the rows in `rows` only: a data-parallel
    /// peer's share of a global batch.
    pub fn next_rows(&mut self, rows: std::ops::Range<usize>) -> Vec<Sequence> {
        self.state.batches += 1;
        let mut out = Vec::with_capacity(rows.len());
        self.drawn.clear();
        for row in 0..self.batch_size {
            let d = self.draw_domain();
            let index = self.next_index(d);
            self.drawn.push((d, index as u64));
            if rows.contains(&row) {
                out.push(Sequence {
                    tokens: self.shards[d].get(index).expect("index within the shard"),
                    domain: d,
                    index: index as u64,
                });
            }
        }
        out
    }

    /// (domain, index) of every row of the last batch drawn, over all peers' shares.
    pub fn last_drawn(&self) -> &[(usize, u64)] {
        &self.drawn
    }

    /// The next batch as tensors on `device` (through the burn [`TokenBatcher`]).
    pub fn next_batch<B: burn::tensor::backend::Backend>(
        &mut self,
        device: &B::Device,
    ) -> TokenBatch<B> {
        use burn::data::dataloader::batcher::Batcher;
        TokenBatcher.batch(self.next_items(), device)
    }
}
