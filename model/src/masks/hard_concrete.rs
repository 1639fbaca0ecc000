//! The hard-concrete distribution (docs/algorithm.md §2) and one learnable mask: a `log_alpha`
//! per prunable unit, stored as rows `[rows, n]` (`head` [L, H], `intermediate` [L, m], and the
//! 1-D masks `layer` [1, L] and `hidden` [1, d]). Deterministic masks are computed row by row,
//! which is what makes the pruned architecture uniform across layers (§2.5).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::tensor_data::to_vec_f64;

/// Why constants do not define a hard-concrete distribution (docs/algorithm.md §2.1).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HardConcreteError {
    #[error("temperature {temperature} must be a positive number")]
    Temperature { temperature: f64 },
    #[error("stretch interval ({limit_l}, {limit_r}) must contain [0, 1]")]
    StretchInterval { limit_l: f64, limit_r: f64 },
    #[error("epsilon {epsilon} must be in (0, 0.5)")]
    Epsilon { epsilon: f64 },
}

/// Constants of the hard-concrete distribution (docs/algorithm.md §2.1; the defaults follow the
/// reference code, §0.1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The default constants with temperature β.
    pub fn with_temperature(temperature: f64) -> Self {
        HardConcrete {
            temperature,
            ..Self::default()
        }
    }

    /// Checks that the constants define a distribution (β > 0, γ < 0 < 1 < ζ, ε in (0, ½)).
    pub fn validate(&self) -> std::result::Result<(), HardConcreteError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(HardConcreteError::Temperature {
                temperature: self.temperature,
            });
        }
        if !(self.limit_l < 0.0 && self.limit_r > 1.0) {
            return Err(HardConcreteError::StretchInterval {
                limit_l: self.limit_l,
                limit_r: self.limit_r,
            });
        }
        if !(self.epsilon > 0.0 && self.epsilon < 0.5) {
            return Err(HardConcreteError::Epsilon {
                epsilon: self.epsilon,
            });
        }
        Ok(())
    }

    /// `ℓ0 · β` with `ℓ0 = logit((0 − γ)/(ζ − γ))`: `score = sigmoid(log_alpha − ℓ0·β)` (§2.4).
    fn score_shift(&self) -> f64 {
        let x = (0.0 - self.limit_l) / (self.limit_r - self.limit_l);
        (x.ln() - (1.0 - x).ln()) * self.temperature
    }

    /// Expected mask `P(z > 0) = 1 − Q(0)` of one entry, on the host (§2.4).
    pub fn score_of(&self, log_alpha: f64) -> f64 {
        let q0 =
            sigmoid_f64(self.score_shift() - log_alpha).clamp(self.epsilon, 1.0 - self.epsilon);
        1.0 - q0
    }

    /// Soft value of a kept entry in a deterministic mask (§2.5).
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
    /// A mask with `log_alpha ~ Normal(mean, std)` (§2.2: mean 5, std 0.01).
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

    /// `[rows, n]`
    pub fn dims(&self) -> [usize; 2] {
        self.log_alpha.val().dims()
    }

    /// Clamps `log_alpha` into `[-ln 100, ln 100]` in place, outside autodiff (the reference
    /// clamps the parameter's data before every use, §2.2): the gradient is untouched.
    pub fn clamp_log_alpha(self) -> Self {
        let c = self.hc.log_alpha_clamp;
        let hc = self.hc;
        let log_alpha = self.log_alpha.map(|t| {
            let requires_grad = t.is_require_grad();
            // Clamp, then cut the graph: the result is a fresh leaf.
            let clamped = t.clamp(-c, c).detach();
            if requires_grad {
                clamped.require_grad()
            } else {
                clamped
            }
        });
        Mask { log_alpha, hc }
    }

    /// A hard-concrete sample for the uniform draws `u` `[rows, n]`, differentiable in
    /// `log_alpha` (§2.3): `clamp(sigmoid((ln u − ln(1−u) + log_alpha)/β)·(ζ−γ) + γ, 0, 1)`.
    pub fn sample_with(&self, u: Tensor<B, 2>) -> Tensor<B, 2> {
        let hc = &self.hc;
        let logit_u = u.clone().log() - u.neg().add_scalar(1.0).log();
        let s = sigmoid((logit_u + self.log_alpha.val()) / hc.temperature);
        (s * (hc.limit_r - hc.limit_l) + hc.limit_l).clamp(0.0, 1.0)
    }

    /// A hard-concrete sample `[rows, n]` whose uniform draws come from `rng` (host side), so
    /// that a pruning run can save and restore its random stream exactly (§9).
    pub fn sample_from(&self, rng: &mut impl rand::Rng) -> Tensor<B, 2> {
        self.sample_noise(&self.noise_from(rng))
    }

    /// The uniform draws of one sample, `[rows · n]` row-major, from `rng` (host side).
    pub fn noise_from(&self, rng: &mut impl rand::Rng) -> Vec<f32> {
        let e = self.hc.epsilon;
        let [r, n] = self.dims();
        (0..r * n)
            .map(|_| rng.random_range(e..1.0 - e) as f32)
            .collect()
    }

    /// The sample for uniform draws made by [`Mask::noise_from`].
    pub fn sample_noise(&self, u: &[f32]) -> Tensor<B, 2> {
        let device = self.log_alpha.val().device();
        self.sample_with(Tensor::from_data(
            TensorData::new(u.to_vec(), self.dims()),
            &device,
        ))
    }

    /// Expected mask `P(z > 0)` per entry `[rows, n]`, differentiable (§2.4).
    pub fn score(&self) -> Tensor<B, 2> {
        self.q0().neg().add_scalar(1.0)
    }

    /// `Q(0) = P(z = 0)` per entry `[rows, n]`.
    fn q0(&self) -> Tensor<B, 2> {
        let hc = &self.hc;
        sigmoid(self.log_alpha.val().neg().add_scalar(hc.score_shift()))
            .clamp(hc.epsilon, 1.0 - hc.epsilon)
    }

    /// Expected sparsity per row `[rows]`: `1 − Σ score / n` (§2.4), computed as `Σ Q(0) / n`
    /// (the same value) so that small sparsities keep their relative precision.
    pub fn expected_sparsity(&self) -> Tensor<B, 1> {
        let n = self.dims()[1] as f64;
        self.q0().sum_dim(1).squeeze_dim::<1>(1) / n
    }

    /// Expected sparsity of every run of `chunk` consecutive entries of a row
    /// `[rows · n / chunk]` (row-major): a grouped source's query heads per key/value group (§11).
    pub fn expected_sparsity_per(&self, chunk: usize) -> Tensor<B, 1> {
        let [rows, n] = self.dims();
        assert!(
            chunk > 0 && n.is_multiple_of(chunk),
            "chunks of {chunk} in rows of {n}"
        );
        let groups = rows * n / chunk;
        self.q0()
            .reshape([groups, chunk])
            .sum_dim(1)
            .reshape([groups])
            / chunk as f64
    }

    /// The `log_alpha` values on the host, row-major; a non-finite value is an error naming
    /// the mask (`what`) and the entry.
    pub fn host_log_alpha(&self, what: &str) -> Result<Vec<f64>> {
        let [_, n] = self.dims();
        let la = to_vec_f64(self.log_alpha.val().into_data());
        if let Some(i) = la.iter().position(|x| !x.is_finite()) {
            return Err(ModelError::NonFinite {
                what: format!(
                    "log_alpha of the `{what}` mask, row {}, entry {}",
                    i / n,
                    i % n
                ),
                value: la[i],
            });
        }
        Ok(la)
    }

    /// Deterministic mask (§2.5, tie rule §0.3), row by row: each row keeps `keep` entries when
    /// given (materialization at the target shape), else `n − round(n − Σ score)` (half to even,
    /// as Python's `round`). Kept entries hold `sigmoid(log_alpha/β · 0.8)`, dropped ones 0.
    /// A non-finite `log_alpha` is an error (it would otherwise decide nothing).
    pub fn deterministic(&self, what: &str, keep: Option<usize>) -> Result<Vec<Vec<f64>>> {
        let [rows, n] = self.dims();
        let la = self.host_log_alpha(what)?;
        Ok((0..rows)
            .map(|r| deterministic_row(&la[r * n..(r + 1) * n], keep, &self.hc))
            .collect())
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
    let mut out = soft.clone();
    for i in smallest_first(&soft).into_iter().take(num_zeros) {
        out[i] = 0.0;
    }
    out
}

/// Indices ordered from the smallest value up; on equal values the lower index first (§0.3).
pub fn smallest_first(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    order
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_the_hand_computed_anchors() {
        // score(a) = sigmoid(a + 2/3 · ln 11) for β = 2/3 (docs/algorithm.md §2.4).
        let hc = HardConcrete::default();
        for (a, want) in [(4.60517, 0.99798), (0.0, 0.83182), (-4.60517, 0.04713)] {
            assert!((hc.score_of(a) - want).abs() < 1e-5, "score({a})");
        }
        assert!((hc.score_of(-(2.0 / 3.0) * 11f64.ln()) - 0.5).abs() < 1e-12);
        // The paper's β = 0.83 moves the midpoint to −0.83 · ln 11.
        let p = HardConcrete::with_temperature(0.83);
        assert!((p.score_of(-0.83 * 11f64.ln()) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn deterministic_rows_round_half_to_even_and_drop_lower_indices_on_ties() {
        let hc = HardConcrete::default();
        // Four equal values and a target of two: indices 0 and 1 are dropped.
        let row = deterministic_row(&[1.0; 4], Some(2), &hc);
        assert_eq!(row[0], 0.0);
        assert_eq!(row[1], 0.0);
        assert!((row[2] - hc.soft_of(1.0)).abs() < 1e-15);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(-0.5), 0.0);
    }

    #[test]
    fn invalid_constants_are_named() {
        assert_eq!(
            HardConcrete::with_temperature(0.0)
                .validate()
                .unwrap_err()
                .to_string(),
            "temperature 0 must be a positive number"
        );
        assert!(HardConcrete::with_temperature(f64::NAN).validate().is_err());
        let wide = HardConcrete {
            limit_l: 0.1,
            ..HardConcrete::default()
        };
        assert_eq!(
            wide.validate().unwrap_err().to_string(),
            "stretch interval (0.1, 1.1) must contain [0, 1]"
        );
        assert!(HardConcrete::default().validate().is_ok());
    }
}
