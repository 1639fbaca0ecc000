//! Llama-3-style rope scaling, which llama.cpp stores not as metadata but as a `rope_freqs.weight`
//! tensor of per-frequency divisors, turned back into Hugging Face's `rope_scaling` parameters.
//!
//! Hugging Face (`_compute_llama3_parameters` in transformers' `modeling_rope_utils.py`) and
//! llama.cpp's converter (`LlamaModel.generate_extra_tensors`) agree on the definition: for
//! rotary frequency `freq_i = theta^(-2i/d)` with wavelength `w_i = 2 pi / freq_i` and
//! `x_i = original_max_position_embeddings / w_i`,
//!
//! ```text
//! divisor_i = 1                          if x_i > high_freq_factor
//!           = factor                     if x_i < low_freq_factor
//!           = 1 / ((1 - s) / factor + s)  otherwise, s = (x_i - low) / (high - low)
//! ```
//!
//! The divisors fix `factor` (their maximum) and, through the smooth band, `low` and `high` as
//! functions of `original_max_position_embeddings`, which the file may give
//! (`llama.rope.scaling.original_context_length`) and otherwise defaults to Llama 3's 8192. The
//! fitted parameters are checked by recomputing every divisor.

use serde_json::{json, Value as Json};

/// Relative tolerance of the recomputed divisors (the tensor is stored as `f32`).
const TOL: f64 = 1e-4;

/// The divisors `rope_scaling` gives, per the definition above.
pub(crate) fn llama3_divisors(
    d: usize,
    theta: f64,
    factor: f64,
    low: f64,
    high: f64,
    original: f64,
) -> Vec<f64> {
    (0..d / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / d as f64);
            let x = original * freq / (2.0 * std::f64::consts::PI);
            if x > high {
                1.0
            } else if x < low {
                factor
            } else {
                let s = (x - low) / (high - low);
                1.0 / ((1.0 - s) / factor + s)
            }
        })
        .collect()
}

/// Rounds to 4 decimals when that is within 1e-6 of `v` (so 0.99999994 reads 1).
fn tidy(v: f64) -> f64 {
    let r = (v * 1e4).round() / 1e4;
    if (r - v).abs() <= 1e-6 * v.abs().max(1.0) {
        r
    } else {
        v
    }
}

/// `rope_scaling` (`rope_type: "llama3"`) reproducing `divisors` (the `rope_freqs.weight`
/// values), or `None` when every divisor is 1; `Err` when no Llama-3 parameters reproduce them.
pub(crate) fn fit_llama3(
    divisors: &[f32],
    head_dim: usize,
    theta: f64,
    original: Option<u64>,
) -> Result<Option<Json>, String> {
    if divisors.len() != head_dim / 2 {
        return Err(format!(
            "{} rope factors for head_dim {head_dim} (expected {})",
            divisors.len(),
            head_dim / 2
        ));
    }
    if divisors.iter().any(|v| !v.is_finite() || *v < 1.0 - 1e-6) {
        return Err("rope factors are not Llama-3 rope scaling (some are below 1)".into());
    }
    let r: Vec<f64> = divisors.iter().map(|&v| v as f64).collect();
    let factor = r.iter().cloned().fold(1.0, f64::max);
    if factor <= 1.0 + 1e-6 {
        return Ok(None);
    }
    let factor = tidy(factor);
    let orig = original.unwrap_or(8192) as f64;
    let x: Vec<f64> = (0..r.len())
        .map(|i| {
            orig * theta.powf((2 * i) as f64 / head_dim as f64).recip()
                / (2.0 * std::f64::consts::PI)
        })
        .collect();
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b;
    let mut low_x_max = f64::NEG_INFINITY; // largest x whose divisor is `factor`
    let mut high_x_min = f64::INFINITY; // smallest x whose divisor is 1
    let mut mid = Vec::new(); // (x, s) in the smooth band
    for (&xi, &ri) in x.iter().zip(&r) {
        if near(ri, factor) {
            low_x_max = low_x_max.max(xi);
        } else if near(ri, 1.0) {
            high_x_min = high_x_min.min(xi);
        } else {
            mid.push((xi, (1.0 / ri - 1.0 / factor) / (1.0 - 1.0 / factor)));
        }
    }
    let (low, high) = if mid.len() >= 2 {
        // Least squares s = a x + b; then low = -b / a and high = low + 1 / a.
        let n = mid.len() as f64;
        let (sx, ss) = mid
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, s)| (a + x, b + s));
        let (mx, ms) = (sx / n, ss / n);
        let cov: f64 = mid.iter().map(|&(x, s)| (x - mx) * (s - ms)).sum();
        let var: f64 = mid.iter().map(|&(x, _)| (x - mx) * (x - mx)).sum();
        let a = cov / var;
        if a.is_nan() || a <= 0.0 {
            return Err(
                "rope factors are not Llama-3 rope scaling (their smooth band does not rise)"
                    .into(),
            );
        }
        let low = (ms - a * mx) / -a;
        (tidy(low), tidy(low + 1.0 / a))
    } else {
        // Too few smooth-band samples to pin the band down: any band that sorts the samples
        // the same way reproduces the tensor; take one inside the gap.
        let lo = if low_x_max.is_finite() {
            low_x_max
        } else {
            0.0
        };
        let hi = if high_x_min.is_finite() {
            high_x_min
        } else {
            lo * 2.0 + 1.0
        };
        match mid.first() {
            None => (lo + (hi - lo) / 3.0, lo + 2.0 * (hi - lo) / 3.0),
            Some(&(xm, s)) => {
                let mut w = f64::INFINITY;
                if s > 0.0 {
                    w = w.min((xm - lo) / s);
                }
                if s < 1.0 {
                    w = w.min((hi - xm) / (1.0 - s));
                }
                let w = w / 2.0;
                (xm - s * w, xm - s * w + w)
            }
        }
    };
    if !(low > 0.0 && high > low) {
        return Err(format!(
            "rope factors are not Llama-3 rope scaling (no valid band: low {low}, high {high})"
        ));
    }
    let again = llama3_divisors(head_dim, theta, factor, low, high, orig);
    if let Some((i, (a, b))) = again
        .iter()
        .zip(&r)
        .enumerate()
        .find(|(_, (a, b))| (*a - *b).abs() > TOL * b.abs())
    {
        return Err(format!(
            "rope factors are not Llama-3 rope scaling: factor {i} is {b}, the best fit \
             (factor {factor}, low {low}, high {high}, original context {orig}) gives {a}"
        ));
    }
    Ok(Some(json!({
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low,
        "high_freq_factor": high,
        "original_max_position_embeddings": orig as u64,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's converter, from its definition: wavelength thresholds instead of `x`.
    fn llama_cpp_rope_freqs(
        d: usize,
        base: f64,
        factor: f64,
        low: f64,
        high: f64,
        old: f64,
    ) -> Vec<f32> {
        let low_wavelen = old / low;
        let high_wavelen = old / high;
        (0..d)
            .step_by(2)
            .map(|i| {
                let freq = 1.0 / base.powf(i as f64 / d as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let f = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                f as f32
            })
            .collect()
    }

    #[test]
    fn recovers_llama_3_1_and_3_2_parameters() {
        // Llama 3.1 8B: factor 8, low 1, high 4, 8192, theta 500000, head_dim 128.
        // Llama 3.2 1B: factor 32, head_dim 64.
        for (d, factor) in [(128usize, 8.0), (64, 32.0)] {
            let f = llama_cpp_rope_freqs(d, 500000.0, factor, 1.0, 4.0, 8192.0);
            let got = fit_llama3(&f, d, 500000.0, None).unwrap().unwrap();
            assert_eq!(
                got,
                json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
            );
        }
    }

    #[test]
    fn all_ones_is_no_scaling_and_garbage_is_refused() {
        assert_eq!(fit_llama3(&[1.0; 4], 8, 10000.0, None).unwrap(), None);
        assert!(fit_llama3(&[1.0; 3], 8, 10000.0, None).is_err());
        assert!(fit_llama3(&[2.0, 1.0, 3.0, 1.0], 8, 10000.0, None).is_err());
        assert!(fit_llama3(&[0.5; 4], 8, 10000.0, None).is_err());
    }
}
