//! Hard-concrete (L0) masks, SPEC §2: one learnable `log_alpha` per prunable unit, sampled
//! masks during pruning, expected masks ("scores"), and deterministic masks for evaluation and
//! materialization.
//!
//! Every mask is stored as rows `[rows, n]`: `head` [L, H], `intermediate` [L, m], and the 1-D
//! masks `layer` [1, L] and `hidden` [1, d]. Deterministic masks are computed row by row, which
//! is what makes the pruned architecture uniform across layers (SPEC §2.5).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::Distribution;

/// Constants of the hard-concrete distribution (SPEC §2.1; defaults follow the reference code,
/// SPEC §0.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HardConcrete {
    /// β: 2/3 in the reference code, 0.83 in the paper.
    pub temperature: f64,
    /// γ, lower end of the stretch interval.
    pub limit_l: f64,
    /// ζ, upper end of the stretch interval.
    pub limit_r: f64,
    /// Clamp of the uniform draws and of the CDF.
    pub epsilon: f64,
    /// `log_alpha` is kept in `[-clamp, clamp]` (ln 100).
    pub log_alpha_clamp: f64,
    /// Soft value of a kept unit in a deterministic mask: `sigmoid(log_alpha / β · scale)`.
    pub deterministic_scale: f64,
}

impl Default for HardConcrete {
    fn default() -> Self {
        HardConcrete {
            temperature: 2.0 / 3.0,
            limit_l: -0.1,
            limit_r: 1.1,
            epsilon: 1e-6,
            log_alpha_clamp: 100f64.ln(),
            deterministic_scale: 0.8,
        }
    }
}

impl HardConcrete {
    /// The paper's variant (β = 0.83), selectable by name in a recipe.
    pub fn paper() -> Self {
        HardConcrete {
            temperature: 0.83,
            ..Self::default()
        }
    }

    /// `ℓ0 · β` with `ℓ0 = logit((0 − γ)/(ζ − γ))`: `score = sigmoid(log_alpha − ℓ0·β)` (SPEC §2.4).
    fn score_shift(&self) -> f64 {
        let x = (0.0 - self.limit_l) / (self.limit_r - self.limit_l);
        (x.ln() - (1.0 - x).ln()) * self.temperature
    }

    /// Expected mask `P(z > 0) = 1 − Q(0)` of one entry, on the host (SPEC §2.4).
    pub fn score_of(&self, log_alpha: f64) -> f64 {
        let q0 =
            sigmoid_f64(self.score_shift() - log_alpha).clamp(self.epsilon, 1.0 - self.epsilon);
        1.0 - q0
    }

    /// Soft value of a kept entry in a deterministic mask.
    pub fn soft_of(&self, log_alpha: f64) -> f64 {
        sigmoid_f64(log_alpha / self.temperature * self.deterministic_scale)
    }
}

fn sigmoid_f64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// One mask type: a learnable `log_alpha` of shape `[rows, n]`.
#[derive(Module, Debug)]
pub struct Mask<B: Backend> {
    pub log_alpha: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub hc: HardConcrete,
}

impl<B: Backend> Mask<B> {
    /// A mask with `log_alpha ~ Normal(mean, std)` (SPEC §2.2: mean 5, std 0.01).
    pub fn init(
        rows: usize,
        n: usize,
        mean: f64,
        std: f64,
        hc: HardConcrete,
        device: &B::Device,
    ) -> Self {
        Mask {
            log_alpha: Param::from_tensor(Tensor::random(
                [rows, n],
                Distribution::Normal(mean, std),
                device,
            )),
            hc,
        }
    }

    /// A mask with the given `log_alpha` values `[rows, n]`.
    pub fn from_log_alpha(log_alpha: Tensor<B, 2>, hc: HardConcrete) -> Self {
        Mask {
            log_alpha: Param::from_tensor(log_alpha),
            hc,
        }
    }

    pub fn dims(&self) -> [usize; 2] {
        self.log_alpha.val().dims()
    }

    /// Clamps `log_alpha` into `[-ln 100, ln 100]` in place, outside autodiff (the reference
    /// clamps the parameter's data before every use, SPEC §2.2): the gradient is untouched.
    pub fn clamp_log_alpha(self) -> Self {
        let c = self.hc.log_alpha_clamp;
        let hc = self.hc;
        let log_alpha = self.log_alpha.map(|t| {
            let requires_grad = t.is_require_grad();
            let clamped = t.detach().clamp(-c, c);
            if requires_grad {
                clamped.require_grad()
            } else {
                clamped
            }
        });
        Mask { log_alpha, hc }
    }

    /// A hard-concrete sample for the uniform draws `u` (same shape), differentiable in
    /// `log_alpha` (SPEC §2.3): `clamp(sigmoid((ln u − ln(1−u) + log_alpha)/β)·(ζ−γ) + γ, 0, 1)`.
    pub fn sample_with(&self, u: Tensor<B, 2>) -> Tensor<B, 2> {
        let hc = &self.hc;
        let logit_u = u.clone().log() - u.neg().add_scalar(1.0).log();
        let s = sigmoid((logit_u + self.log_alpha.val()) / hc.temperature);
        (s * (hc.limit_r - hc.limit_l) + hc.limit_l).clamp(0.0, 1.0)
    }

    /// A hard-concrete sample with fresh draws `u ~ Uniform(ε, 1 − ε)` from the backend RNG.
    pub fn sample(&self) -> Tensor<B, 2> {
        let e = self.hc.epsilon;
        let la = self.log_alpha.val();
        let u = Tensor::random(la.dims(), Distribution::Uniform(e, 1.0 - e), &la.device());
        self.sample_with(u)
    }

    /// Expected mask `P(z > 0)` per entry `[rows, n]`, differentiable (SPEC §2.4).
    pub fn score(&self) -> Tensor<B, 2> {
        let hc = &self.hc;
        let q0 = sigmoid(self.log_alpha.val().neg().add_scalar(hc.score_shift()))
            .clamp(hc.epsilon, 1.0 - hc.epsilon);
        q0.neg().add_scalar(1.0)
    }

    /// Expected sparsity per row `[rows]`: `1 − Σ score / n` (SPEC §2.4).
    pub fn expected_sparsity(&self) -> Tensor<B, 1> {
        let n = self.dims()[1] as f64;
        let kept = self.score().sum_dim(1).squeeze_dim::<1>(1) / n;
        kept.neg().add_scalar(1.0)
    }

    /// Deterministic mask (SPEC §2.5, tie rule §0.3), row by row: each row keeps `keep` entries
    /// when given (materialization at the target shape), else `n − round(n − Σ score)` (half to
    /// even, as Python's `round`). Kept entries hold `sigmoid(log_alpha/β · 0.8)`, dropped ones 0.
    pub fn deterministic(&self, keep: Option<usize>) -> Vec<Vec<f64>> {
        let [rows, n] = self.dims();
        let la: Vec<f64> = self
            .log_alpha
            .val()
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("f64 data after convert");
        (0..rows)
            .map(|r| deterministic_row(&la[r * n..(r + 1) * n], keep, &self.hc))
            .collect()
    }
}

/// One row of a deterministic mask (see [`Mask::deterministic`]).
pub fn deterministic_row(log_alpha: &[f64], keep: Option<usize>, hc: &HardConcrete) -> Vec<f64> {
    let n = log_alpha.len();
    let num_zeros = match keep {
        Some(k) => n.saturating_sub(k),
        None => {
            let expected_zeros = n as f64 - log_alpha.iter().map(|&a| hc.score_of(a)).sum::<f64>();
            (round_half_even(expected_zeros).max(0.0) as usize).min(n)
        }
    };
    let soft: Vec<f64> = log_alpha.iter().map(|&a| hc.soft_of(a)).collect();
    // Drop the smallest soft values; on equal values the lower index goes first.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| soft[a].total_cmp(&soft[b]).then(a.cmp(&b)));
    let mut out = soft;
    for &i in order.iter().take(num_zeros) {
        out[i] = 0.0;
    }
    out
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}
