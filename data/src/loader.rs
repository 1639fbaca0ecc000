//! Dynamic batch loading as a burn [`DataLoader`] (docs/algorithm.md §6.2): the loops, and any
//! code written against burn's data API, read batches with `DataLoader::iter`.
//!
//! The loader is a stream over a run, not a pass over a dataset: its items are the rows of the
//! run's batches, numbered batch after batch (`num_items` = batches × rows per batch), each row
//! drawn from the domain weights current when its batch is drawn. Its state (weights, per-domain
//! cursors, the random stream's position) is shared by every iterator of one loader, so
//! `iter()` continues where the last one stopped, and a [`LoaderHandle`] changes the weights —
//! from the next batch an iterator yields: batches are drawn when yielded, never ahead — and saves
//! or restores the state exactly.
//!
//! `slice(start, end)` gives a data-parallel peer its share: of every global batch, the rows at
//! the same relative position as `[start, end)` in `[0, num_items)` (burn's `split_dataloader`
//! hands peer k of n the k-th n-th, so each peer takes `batch / n` rows of every batch). A slice
//! draws the whole global stream with its own copy of the state and keeps only its rows, so the
//! slices of one loader are disjoint, together yield exactly the unsliced loader's rows, and each
//! saves and restores the same state as the whole.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;

use crate::batch::{TokenBatch, TokenBatcher};
use crate::dynamic::{DynamicLoader, LoaderEvent, LoaderState};
use crate::error::Result;
use crate::stream::TokenStream;

/// The shared state of a [`DynamicDataLoader`]: reweighting, events, save and restore.
#[derive(Clone)]
pub struct LoaderHandle(Arc<Mutex<DynamicLoader>>);

impl LoaderHandle {
    fn lock(&self) -> MutexGuard<'_, DynamicLoader> {
        // A panic while drawing leaves nothing half-updated that later draws depend on.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn domains(&self) -> Vec<String> {
        self.lock().domains().to_vec()
    }

    /// (domain, index) of every row of the last global batch, all peers' shares included.
    pub fn last_drawn(&self) -> Vec<(usize, u64)> {
        self.lock().last_drawn().to_vec()
    }

    pub fn weights(&self) -> Vec<f64> {
        self.lock().weights().to_vec()
    }

    /// New weights, used from the next batch on (see [`DynamicLoader::set_weights`]).
    pub fn set_weights(&self, weights: Vec<f64>) -> Result<()> {
        self.lock().set_weights(weights)
    }

    /// `weights` with domains that have no data set to 0, renormalised.
    pub fn without_empty(&self, weights: Vec<f64>) -> Vec<f64> {
        self.lock().without_empty(weights)
    }

    /// Domains that ran out since the last call.
    pub fn take_events(&self) -> Vec<LoaderEvent> {
        self.lock().take_events()
    }

    /// A snapshot of the state (for checkpoints).
    pub fn state(&self) -> LoaderState {
        self.lock().state()
    }

    /// Continues from a saved state.
    pub fn restore(&self, state: LoaderState) -> Result<()> {
        self.lock().set_state(state)
    }

    /// Global batches drawn so far.
    pub fn batches(&self) -> u64 {
        self.lock().state().batches
    }
}

/// Dynamic batch loading as a burn [`DataLoader`] of [`TokenBatch`]es (see the module docs).
pub struct DynamicDataLoader<B: Backend> {
    handle: LoaderHandle,
    device: B::Device,
    /// The rows of every global batch this loader yields.
    rows: Range<usize>,
    /// Global batches of the run: iteration ends once this many have been drawn.
    batches: u64,
}

impl<B: Backend> Clone for DynamicDataLoader<B> {
    fn clone(&self) -> Self {
        DynamicDataLoader {
            handle: self.handle.clone(),
            device: self.device.clone(),
            rows: self.rows.clone(),
            batches: self.batches,
        }
    }
}

impl<B: Backend> DynamicDataLoader<B> {
    /// A loader yielding `batches` batches of `loader` (its whole batches) on `device`.
    pub fn new(loader: DynamicLoader, batches: u64, device: &B::Device) -> Self {
        let rows = 0..loader.batch_size();
        DynamicDataLoader {
            handle: LoaderHandle(Arc::new(Mutex::new(loader))),
            device: device.clone(),
            rows,
            batches,
        }
    }

    /// The handle to this loader's state (shared with every iterator and `to_device` copy).
    pub fn handle(&self) -> LoaderHandle {
        self.handle.clone()
    }

    /// The rows of every global batch this loader yields.
    pub fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// The next batch, or `None` once the run's batches are drawn.
    pub fn next_batch(&self) -> Option<TokenBatch<B>> {
        let items = {
            let mut l = self.handle.lock();
            if l.state().batches >= self.batches {
                return None;
            }
            l.next_rows(self.rows.clone())
        };
        Some(TokenBatcher.batch(items, &self.device))
    }
}

struct DynamicIter<'a, B: Backend> {
    loader: &'a DynamicDataLoader<B>,
}

impl<B: Backend> Iterator for DynamicIter<'_, B> {
    type Item = TokenBatch<B>;
    fn next(&mut self) -> Option<TokenBatch<B>> {
        self.loader.next_batch()
    }
}

impl<B: Backend> DataLoaderIterator<TokenBatch<B>> for DynamicIter<'_, B> {
    fn progress(&self) -> Progress {
        let rows = self.loader.rows.len();
        Progress::new(
            self.loader.handle.batches() as usize * rows,
            self.loader.batches as usize * rows,
        )
    }
}

impl<B: Backend> DataLoader<B, TokenBatch<B>> for DynamicDataLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<TokenBatch<B>> + 'a> {
        Box::new(DynamicIter { loader: self })
    }

    fn num_items(&self) -> usize {
        self.batches as usize * self.rows.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        Arc::new(DynamicDataLoader {
            device: device.clone(),
            ..self.clone()
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        Arc::new(self.share(start, end))
    }
}

impl<B: Backend> DynamicDataLoader<B> {
    /// A data-parallel peer's share: rows `rows` of every global batch, with its own copy of
    /// the state (every peer draws the whole global batch and keeps its rows, so N peers read
    /// exactly what one would, and each saves the same state as the whole).
    pub fn with_rows(&self, rows: Range<usize>) -> Self {
        let copy = self.handle.lock().clone();
        DynamicDataLoader {
            handle: LoaderHandle(Arc::new(Mutex::new(copy))),
            device: self.device.clone(),
            rows,
            batches: self.batches,
        }
    }

    /// The share `[start, end)` of `[0, num_items)` as rows of every batch, with its own copy of
    /// the state (see the module docs).
    pub fn share(&self, start: usize, end: usize) -> Self {
        let (n, len) = (self.num_items().max(1), self.rows.len());
        let at = |i: usize| self.rows.start + (i.min(n) * len).div_ceil(n).min(len);
        let copy = self.handle.lock().clone();
        DynamicDataLoader {
            handle: LoaderHandle(Arc::new(Mutex::new(copy))),
            device: self.device.clone(),
            rows: at(start)..at(end),
            batches: self.batches,
        }
    }
}

/// Random windows of one token stream as a burn [`DataLoader`]: batch `k` of the run is
/// micro-batch `k % grad_accum` of step `k / grad_accum`, drawn with an RNG seeded by (seed, step,
/// micro-batch), so any batch can be regenerated (a resumed run seeks to its step).
pub struct StreamDataLoader<B: Backend> {
    stream: Arc<TokenStream>,
    seq: usize,
    batch: usize,
    grad_accum: usize,
    seed: u64,
    batches: u64,
    next: Arc<std::sync::atomic::AtomicU64>,
    device: B::Device,
    /// The rows of every batch this loader yields (a data-parallel peer's share).
    rows: Range<usize>,
}

impl<B: Backend> Clone for StreamDataLoader<B> {
    fn clone(&self) -> Self {
        StreamDataLoader {
            stream: self.stream.clone(),
            seq: self.seq,
            batch: self.batch,
            grad_accum: self.grad_accum,
            seed: self.seed,
            batches: self.batches,
            next: self.next.clone(),
            device: self.device.clone(),
            rows: self.rows.clone(),
        }
    }
}

impl<B: Backend> StreamDataLoader<B> {
    /// `batches` batches of `batch` windows of `seq` tokens, `grad_accum` per step.
    pub fn new(
        stream: impl Into<Arc<TokenStream>>,
        seq: usize,
        batch: usize,
        grad_accum: usize,
        seed: u64,
        batches: u64,
        device: &B::Device,
    ) -> Self {
        StreamDataLoader {
            stream: stream.into(),
            seq,
            batch,
            grad_accum: grad_accum.max(1),
            seed,
            batches,
            next: Arc::new(0.into()),
            device: device.clone(),
            rows: 0..batch,
        }
    }

    /// Rows of every whole batch.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// A data-parallel peer's share: rows `rows` of every batch (each batch is drawn whole and
    /// the other rows dropped, so N peers read exactly what one would), at its own position.
    pub fn with_rows(&self, rows: Range<usize>) -> Self {
        StreamDataLoader {
            rows,
            next: Arc::new(self.next.load(std::sync::atomic::Ordering::SeqCst).into()),
            ..self.clone()
        }
    }

    /// Makes batch `k` the next one.
    pub fn seek(&self, k: u64) {
        self.next.store(k, std::sync::atomic::Ordering::SeqCst);
    }

    /// Batch `k` of the run: micro-batch `k % grad_accum` of step `k / grad_accum`.
    pub fn batch_at(&self, k: u64) -> TokenBatch<B> {
        use rand::SeedableRng;
        let (step, micro) = (k / self.grad_accum as u64, k % self.grad_accum as u64);
        let key = self.seed ^ ((step << 20) | micro).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = rand::rngs::StdRng::seed_from_u64(key);
        let items = self
            .stream
            .sample(&mut rng, self.batch, self.seq)
            .chunks(self.seq)
            .enumerate()
            .skip(self.rows.start)
            .take(self.rows.len())
            .map(|(r, w)| crate::batch::Sequence {
                tokens: w.to_vec(),
                domain: 0,
                index: k * self.batch as u64 + r as u64,
            })
            .collect();
        TokenBatcher.batch(items, &self.device)
    }
}

struct StreamIter<'a, B: Backend> {
    loader: &'a StreamDataLoader<B>,
}

impl<B: Backend> Iterator for StreamIter<'_, B> {
    type Item = TokenBatch<B>;
    fn next(&mut self) -> Option<TokenBatch<B>> {
        let k = self
            .loader
            .next
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (k < self.loader.batches).then(|| self.loader.batch_at(k))
    }
}

impl<B: Backend> DataLoaderIterator<TokenBatch<B>> for StreamIter<'_, B> {
    fn progress(&self) -> Progress {
        let k = self.loader.next.load(std::sync::atomic::Ordering::SeqCst);
        Progress::new(
            k.min(self.loader.batches) as usize * self.loader.batch,
            self.loader.num_items(),
        )
    }
}

impl<B: Backend> DataLoader<B, TokenBatch<B>> for StreamDataLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<TokenBatch<B>> + 'a> {
        Box::new(StreamIter { loader: self })
    }

    fn num_items(&self) -> usize {
        self.batches as usize * self.batch
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        Arc::new(StreamDataLoader {
            device: device.clone(),
            ..self.clone()
        })
    }

    /// Windows are independent draws: a peer's share is its own stream of windows (the seed
    /// offset by the share's start), `end - start` rows of the run in batches of the same
    /// size.
    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, TokenBatch<B>>> {
        Arc::new(StreamDataLoader {
            seed: self.seed ^ (start as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
            batches: (end.saturating_sub(start) / self.batch.max(1)) as u64,
            next: Arc::new(0.into()),
            ..self.clone()
        })
    }
}
