//! Structured Optimal Brain Surgeon for the one-shot path (docs/algorithm.md §15.1): the units
//! that the output projections read (an attention head's context, `o_proj`'s input; an FFN
//! channel's gated activation, `down_proj`'s input) are ranked by what removing them costs when
//! the remaining units' output weights are refitted to make up for it, and after the cut those
//! weights are refitted by least squares on the calibration activations.
//!
//! With `A` the calibration activations `[tokens, n]` of a layer's units and `W` `[n, d]` the
//! projection reading them, the refitted error of removing a set `S` is
//! `tr(W_Sᵀ [H_SS]⁻¹ W_S)` with `H = (AᵀA + λI)⁻¹` (Hassibi & Stork's saliency, per block of
//! columns). Removing units greedily, one at a time, each time the cheapest given those already
//! removed, ranks a zero unit and one unit of every duplicated pair (or of any linearly
//! dependent set) last: its output is already in the span of the others'. Magnitude scores
//! (importance.rs) rank a duplicate as high as its twin.
//!
//! Linear algebra is faer's (Cholesky, inverse, matrix products): a well-kept pure-Rust crate;
//! burn has no factorisations. Everything here is f64 on the host: the Gram matrices are
//! `n × n` per layer (n = heads·head_dim or the intermediate size).

use burn::prelude::*;
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Accum, Mat, Par, Side};

use crate::error::{ModelError, Result};
use crate::tensor_data::to_vec_f32;

/// The damping added to a Gram matrix's diagonal for the ranking, relative to the diagonal's
/// mean (GPTQ's `percdamp`, smaller): it keeps `H` defined when units are dependent (a
/// duplicate, a dead unit) and far below a live unit's residual variance.
pub const DAMP: f64 = 1e-3;

/// The damping of the refit's least squares, relative to the diagonal's mean: a ridge that only
/// guards against a singular `G_KK` (the Gram sums are f32 products, good to about 1e-7), so
/// that a removed duplicate is made up for almost exactly.
pub const REFIT_DAMP: f64 = 1e-6;

/// Units removed between two full updates of `H` in [`greedy_channels`].
const ROUND: usize = 64;

/// `Σ aᵀa` over the calibration tokens of one layer's `n` units (row-major `n × n`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gram {
    pub n: usize,
    pub sum: Vec<f64>,
}

impl Gram {
    pub fn new(n: usize) -> Self {
        Gram {
            n,
            sum: vec![0.0; n * n],
        }
    }

    /// Adds the activations `a` `[tokens, n]`.
    pub fn add<B: Backend>(&mut self, a: Tensor<B, 2>) {
        let g = a.clone().transpose().matmul(a);
        let v = to_vec_f32(g.into_data());
        self.sum
            .iter_mut()
            .zip(v)
            .for_each(|(s, x)| *s += f64::from(x));
    }

    /// `λ` for this matrix: `damp` times the mean diagonal (1e-12 for an all-zero one).
    fn lambda(&self, damp: f64) -> f64 {
        let n = self.n.max(1);
        let mean = (0..self.n).map(|i| self.sum[i * self.n + i]).sum::<f64>() / n as f64;
        (damp * mean).max(1e-12)
    }

    /// `G[rows, cols] + λ I` where rows and cols meet.
    fn damped(&self, rows: &[usize], cols: &[usize], damp: f64) -> Mat<f64> {
        let lambda = self.lambda(damp);
        Mat::from_fn(rows.len(), cols.len(), |i, j| {
            let (r, c) = (rows[i], cols[j]);
            self.sum[r * self.n + c] + if r == c { lambda } else { 0.0 }
        })
    }

    /// `H = (G + λI)⁻¹`.
    fn inverse(&self, what: &str) -> Result<Mat<f64>> {
        let all: Vec<usize> = (0..self.n).collect();
        let llt = self
            .damped(&all, &all, DAMP)
            .llt(Side::Lower)
            .map_err(|e| ModelError::Obs(format!("{what}: the Gram matrix {e:?}")))?;
        Ok(llt.inverse())
    }
}

/// The order in which greedy removal takes out `remove` of the Gram's units (each one column of
/// `A`), `w_sq[v]` being `‖W_v‖²`, the squared norm of unit `v`'s output weights: each time the
/// unit of least `‖W_v‖² / H_vv` with `H` the inverse of the damped Gram of the units still
/// there (ties: the lower index first, as §0.3 keeps the higher). Exact greedy: removing `p`
/// turns `H` into `H − H[:,p] H[p,:] / H_pp`, applied here as a partial pivoted Cholesky
/// factor of [`ROUND`] columns at a time, then once to the whole matrix as a product.
pub fn greedy_channels(gram: &Gram, w_sq: &[f64], remove: usize, what: &str) -> Result<Vec<usize>> {
    let n = gram.n;
    let remove = remove.min(n);
    let mut h = gram.inverse(what)?;
    let mut diag: Vec<f64> = (0..n).map(|i| h[(i, i)]).collect();
    let mut alive = vec![true; n];
    let mut order = Vec::with_capacity(remove);
    let mut col = vec![0.0; n];
    while order.len() < remove {
        let b = ROUND.min(remove - order.len());
        let mut l = Mat::<f64>::zeros(n, b);
        for k in 0..b {
            let cost = |v: usize| w_sq[v] / diag[v].max(f64::MIN_POSITIVE);
            let p = (0..n)
                .filter(|&v| alive[v])
                .min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)))
                .expect("fewer removals than units");
            for (i, c) in col.iter_mut().enumerate() {
                *c = h[(i, p)] - (0..k).map(|j| l[(i, j)] * l[(p, j)]).sum::<f64>();
            }
            let s = col[p].max(f64::MIN_POSITIVE).sqrt();
            for i in 0..n {
                l[(i, k)] = col[i] / s;
                diag[i] -= l[(i, k)] * l[(i, k)];
            }
            alive[p] = false;
            order.push(p);
        }
        matmul(
            h.as_mut(),
            Accum::Add,
            l.as_ref(),
            l.transpose(),
            -1.0,
            Par::rayon(0),
        );
    }
    Ok(order)
}

/// [`greedy_channels`] for units of `block` consecutive columns (attention heads): `w` is the
/// projection `[n, d]` row-major; the cost of unit `u` is `tr(W_uᵀ [H_uu]⁻¹ W_u)`, and removing
/// it turns `H` into `H − H[:,u] [H_uu]⁻¹ H[u,:]`.
pub fn greedy_blocks(
    gram: &Gram,
    w: &[f64],
    d: usize,
    block: usize,
    remove: usize,
    what: &str,
) -> Result<Vec<usize>> {
    let n = gram.n;
    let units = n / block;
    let remove = remove.min(units);
    let mut h = gram.inverse(what)?;
    let mut alive = vec![true; units];
    let mut order = Vec::with_capacity(remove);
    let bad = |e: faer::linalg::solvers::LltError| {
        ModelError::Obs(format!("{what}: a head's block of H {e:?}"))
    };
    for _ in 0..remove {
        let mut best: Option<(f64, usize)> = None;
        for u in (0..units).filter(|&u| alive[u]) {
            let r = u * block..(u + 1) * block;
            let huu = h
                .as_ref()
                .submatrix(r.start, r.start, block, block)
                .to_owned();
            let wu = Mat::from_fn(block, d, |i, j| w[(r.start + i) * d + j]);
            let x = huu.llt(Side::Lower).map_err(bad)?.solve(&wu);
            let cost: f64 = (0..block)
                .flat_map(|i| (0..d).map(move |j| (i, j)))
                .map(|(i, j)| wu[(i, j)] * x[(i, j)])
                .sum();
            if best.is_none_or(|(c, _)| cost < c) {
                best = Some((cost, u));
            }
        }
        let (_, u) = best.expect("fewer removals than units");
        let s = u * block;
        let hs = h.as_ref().subcols(s, block).to_owned(); // [n, block]
        let hss = hs.as_ref().subrows(s, block).to_owned();
        let x = hss.llt(Side::Lower).map_err(bad)?.solve(hs.transpose()); // [block, n]
        matmul(
            h.as_mut(),
            Accum::Add,
            hs.as_ref(),
            x.as_ref(),
            -1.0,
            Par::rayon(0),
        );
        alive[u] = false;
        order.push(u);
    }
    Ok(order)
}

/// Scores from a removal order over `units` units: the `r`-th removed scores `r + 1`, the
/// others `remove + 1 + ` their rank by `rest` (lowest first), so that keeping the
/// highest-scoring units keeps what greedy removal kept.
pub fn order_scores(order: &[usize], units: usize, rest: &[f64]) -> Vec<f64> {
    let mut score = vec![0.0; units];
    for (r, &u) in order.iter().enumerate() {
        score[u] = (r + 1) as f64;
    }
    let mut others: Vec<usize> = (0..units).filter(|u| !order.contains(u)).collect();
    others.sort_by(|&a, &b| rest[a].total_cmp(&rest[b]).then(a.cmp(&b)));
    for (r, u) in others.into_iter().enumerate() {
        score[u] = (order.len() + 1 + r) as f64;
    }
    score
}

/// The output weights `w` (`[n, d]` row-major) refitted onto the kept columns: rows `K` become
/// `W_K + (G_KK + λI)⁻¹ G_KR W_R`, the least-squares fit (ridge toward `W_K`) of the layer's
/// full output `A W` from the kept activations `A_K`; the removed rows `R` are left as they
/// are (their inputs are masked). Nothing is removed: `w` unchanged.
pub fn refit(gram: &Gram, w: &[f64], d: usize, keep: &[bool], what: &str) -> Result<Vec<f64>> {
    let kept: Vec<usize> = (0..gram.n).filter(|&i| keep[i]).collect();
    let gone: Vec<usize> = (0..gram.n).filter(|&i| !keep[i]).collect();
    let mut out = w.to_vec();
    if gone.is_empty() || kept.is_empty() {
        return Ok(out);
    }
    let gkk = gram.damped(&kept, &kept, REFIT_DAMP);
    let gkr = Mat::from_fn(kept.len(), gone.len(), |i, j| {
        gram.sum[kept[i] * gram.n + gone[j]]
    });
    let wr = Mat::from_fn(gone.len(), d, |i, j| w[gone[i] * d + j]);
    let mut rhs = Mat::<f64>::zeros(kept.len(), d);
    matmul(
        rhs.as_mut(),
        Accum::Replace,
        gkr.as_ref(),
        wr.as_ref(),
        1.0,
        Par::rayon(0),
    );
    let delta = gkk
        .llt(Side::Lower)
        .map_err(|e| ModelError::Obs(format!("{what}: the kept units' Gram matrix {e:?}")))?
        .solve(&rhs);
    for (i, &k) in kept.iter().enumerate() {
        for j in 0..d {
            out[k * d + j] += delta[(i, j)];
        }
    }
    Ok(out)
}
