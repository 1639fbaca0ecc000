//! Learning-rate schedule (docs/algorithm.md §4.2): linear warm-up from 0, then cosine decay to `alpha_f` of
//! the peak; the same multiplier applies to weights, masks and multipliers.

/// Multiplier of the peak learning rate at `step` (0-based).
pub fn warmup_cosine(step: usize, warmup: usize, total: usize, alpha_f: f64) -> f64 {
    if step < warmup {
        return step as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let tau = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    alpha_f + (1.0 - alpha_f) * 0.5 * (1.0 + (std::f64::consts::PI * tau).cos())
}

/// Target sparsity after the linear warm-up of docs/algorithm.md §4.1 (from 0).
pub fn target_warmup(target: f64, step: usize, warmup: usize) -> f64 {
    if warmup == 0 {
        return target;
    }
    target * (step as f64 / warmup as f64).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_a_tenth() {
        assert_eq!(warmup_cosine(0, 10, 100, 0.1), 0.0);
        assert_eq!(warmup_cosine(5, 10, 100, 0.1), 0.5);
        assert!((warmup_cosine(10, 10, 100, 0.1) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(55, 10, 100, 0.1) - 0.55).abs() < 1e-12);
        assert!((warmup_cosine(100, 10, 100, 0.1) - 0.1).abs() < 1e-12);
        assert!((warmup_cosine(500, 10, 100, 0.1) - 0.1).abs() < 1e-12);
        assert_eq!(target_warmup(0.5, 320, 640), 0.25);
        assert_eq!(target_warmup(0.5, 1000, 640), 0.5);
    }
}
