//! Data parallelism inside one optimizer step (docs/algorithm.md §4.2, "Workers"): the rows of
//! every micro-batch are split over `workers`, each worker runs the forward and backward passes
//! of its rows on its own copy of the module, and the gradients are summed.
//!
//! On the CPU this is what uses every core at small shapes, where one operation is too small for
//! the backend's own threads; on several devices it is the same split with one copy per device
//! (the copies are made from the module's values, so each has its own autodiff graph — burn
//! serialises backward passes through one graph — under the same parameter ids).
//!
//! The arithmetic is the unsplit step's: each part's mean loss is weighted by its share of its
//! micro-batch's rows, so the weighted parts sum to the micro-batch's mean, and everything a part
//! needs that is random (the pruning masks' `z`) is drawn by the caller per micro-batch, before the
//! split. Only the order of floating-point sums changes. Parts are summed in worker order, so a
//! step is deterministic whatever the threads' timing.

use std::cell::RefCell;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;
use shear_model::precision;

use crate::grads::{GradSum, Layout, Reduce};

/// Stack of a worker thread: a forward and backward pass as deep as the main thread's.
const WORKER_STACK: usize = 8 << 20;

thread_local! {
    /// The calling thread's worker pool, kept between steps.
    static POOL: RefCell<Option<rayon::ThreadPool>> = const { RefCell::new(None) };
}

/// Runs `f` on a rayon pool of `workers` threads owned by the calling thread.
///
/// Not the global pool: a worker whose backward pass is done waits in burn's graph cleanup for
/// the locks of the graphs still in a backward pass. On the global pool, another thread's
/// backward pass (tests run in parallel; a library user's own threads) then found every pool
/// thread blocked there, waiting for the lock it held, while it waited for them to run its
/// kernels: a deadlock. On its own pool a worker's kernels run on that pool (rayon runs
/// nested parallel work on the current pool), and every other thread's on the global one, so
/// no thread waits on one that waits on it. One pool per calling thread, so that two callers
/// never share one.
fn with_pool<R>(workers: usize, f: impl FnOnce(&rayon::ThreadPool) -> R) -> crate::Result<R> {
    POOL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let pool = match slot.take() {
            Some(pool) if pool.current_num_threads() == workers => pool,
            _ => rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .stack_size(WORKER_STACK)
                .thread_name(|i| format!("shear-worker-{i}"))
                .build()
                .map_err(|e| {
                    crate::TrainError::Invalid(format!(
                        "cannot start {workers} worker threads: {e}"
                    ))
                })?,
        };
        Ok(f(slot.insert(pool)))
    })
}

/// The mean-loss gradients of a step, and the mean of the `K` figures its parts report (each
/// part's figures weighted like its loss).
pub struct StepGradients<const K: usize> {
    pub grads: GradientsParams,
    pub figures: [f64; K],
    /// Whether the gradients went through the caller's `reduce` as they were made (only with
    /// one worker: the workers' sets are summed first otherwise).
    pub reduced: bool,
}

/// Rows `[start, end)` of part `w` out of `parts` (a worker's, a peer's) for a batch of `rows`
/// rows: as even as possible, the first parts taking one more.
pub fn share(rows: usize, parts: usize, w: usize) -> std::ops::Range<usize> {
    let (base, extra) = (rows / parts, rows % parts);
    let start = w * base + w.min(extra);
    start..start + base + usize::from(w < extra)
}

/// The gradients of the mean loss over `batches` (micro-batches `[rows, seq]`), computed by
/// `workers` (at most as many as the smallest micro-batch has rows; 1: on this thread, on
/// `module` itself).
///
/// `grads_of(module, m, ids, weight, sum)` adds to `sum` the gradients of `weight` times the
/// mean loss of `ids` (some rows of micro-batch `m`) under `module` (the worker's copy) —
/// [`backward`] of the loss, or a recomputing backward (recompute.rs) — and returns `K` host
/// figures to report (e.g. its cross-entropy, unweighted); it must depend on `m` and the rows
/// only, not on which worker asks. Every worker's micro-batches go into one running sum
/// ([`GradSum`]), so a step holds that sum and the one set being made. With one worker each
/// new set first goes through `reduce` (ZeRO stage 2, zero.rs).
pub fn mean_gradients<B, M, F, const K: usize>(
    module: &M,
    batches: &[Tensor<B, 2, Int>],
    workers: usize,
    reduce: Option<&Reduce<'_>>,
    grads_of: F,
) -> crate::Result<StepGradients<K>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    F: Fn(&M, usize, Tensor<B, 2, Int>, f64, &mut GradSum<'_>) -> crate::Result<[f64; K]> + Sync,
{
    let min_rows = batches.iter().map(|b| b.dims()[0]).min().unwrap_or(1);
    let workers = workers.clamp(1, min_rows.max(1));
    if workers == 1 {
        let mut sum = GradSum::reducing(reduce);
        let figures = part(module, batches, 0, 1, &grads_of, &mut sum)?;
        return Ok(StepGradients {
            grads: sum.into_grads(),
            figures,
            reduced: reduce.is_some(),
        });
    }
    // One `valid()` per worker rather than clones of one: cloning an inner module drops its
    // parameters' `require_grad` (burn 0.21's `Param::clone` re-derives it from the inner
    // tensor), and the copy would get no gradients.
    let copies: Vec<_> = (0..workers).map(|w| (w, module.valid())).collect();
    // The compute precision is per thread (autocast): the workers take the caller's.
    let compute = precision::compute();
    let parts: Vec<crate::Result<(GradientsParams, [f64; K])>> = with_pool(workers, |pool| {
        pool.install(|| {
            copies
                .into_par_iter()
                .map(|(w, inner)| {
                    let _autocast = precision::autocast(compute);
                    let copy = M::from_inner(inner);
                    let mut sum = GradSum::new();
                    let figures = part(&copy, batches, w, workers, &grads_of, &mut sum)?;
                    Ok((sum.into_grads(), figures))
                })
                .collect()
        })
    })?;
    let layout = Layout::of(module);
    let mut sum = GradSum::new();
    let mut figures = [0.0; K];
    for p in parts {
        let (grads, f) = p?;
        sum.add_laid_out::<B>(&layout, grads)?;
        figures.iter_mut().zip(f).for_each(|(a, b)| *a += b);
    }
    Ok(StepGradients {
        grads: sum.into_grads(),
        figures,
        reduced: false,
    })
}

/// The gradients of `weight · loss` for `module`'s parameters (one backward pass).
pub fn backward<B: AutodiffBackend, M: AutodiffModule<B>>(
    loss: Tensor<B, 1>,
    weight: f64,
    module: &M,
) -> GradientsParams {
    GradientsParams::from_grads((loss * weight).backward(), module)
}

/// Worker `w`'s share: its rows of every micro-batch, on `module`, added to `sum`.
fn part<B, M, F, const K: usize>(
    module: &M,
    batches: &[Tensor<B, 2, Int>],
    w: usize,
    workers: usize,
    grads_of: &F,
    sum: &mut GradSum<'_>,
) -> crate::Result<[f64; K]>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    F: Fn(&M, usize, Tensor<B, 2, Int>, f64, &mut GradSum<'_>) -> crate::Result<[f64; K]>,
{
    let n = batches.len().max(1) as f64;
    let mut figures = [0.0; K];
    for (m, ids) in batches.iter().enumerate() {
        let [rows, seq] = ids.dims();
        let std::ops::Range { start, end } = share(rows, workers, w);
        let ids = if workers == 1 {
            ids.clone()
        } else {
            ids.clone().slice([start..end, 0..seq])
        };
        let weight = (end - start) as f64 / rows as f64 / n;
        let f = grads_of(module, m, ids, weight, sum)?;
        figures
            .iter_mut()
            .zip(f)
            .for_each(|(a, b)| *a += b * weight);
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn rows_cover_the_batch_once_in_order() {
        for rows in 1..12 {
            for workers in 1..=rows {
                let mut next = 0;
                for w in 0..workers {
                    let std::ops::Range { start: s, end: e } = share(rows, workers, w);
                    assert_eq!(s, next);
                    assert!(e > s, "{rows} rows over {workers}: worker {w} empty");
                    next = e;
                }
                assert_eq!(next, rows);
            }
        }
    }
}
