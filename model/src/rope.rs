//! Rotary position embeddings in the Hugging Face `rotate_half` layout (the first and second half
//! of each head's channels form the rotated pairs; burn's `RotaryEncoding` rotates interleaved
//! pairs instead, docs/algorithm.md §0.5).

use burn::prelude::*;

use crate::config::{RopeConfig, RopeScaling};

/// Positions covered by the precomputed table; positions past it are computed on demand.
const MAX_TABLE: usize = 16384;

/// Inverse frequencies `theta^(-2i/d)`, scaled as the config says. Computed like transformers
/// (`1 / base^(arange(0, d, 2) / d)` rounded to f32, then the scaling rule).
pub fn inv_freq(head_dim: usize, rope: &RopeConfig) -> Vec<f32> {
    let base: Vec<f32> = (0..head_dim / 2)
        .map(|i| (1.0 / rope.theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
        .collect();
    match rope.scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_ctx,
        } => {
            let low_freq_wavelen = old_ctx / low_freq_factor;
            let high_freq_wavelen = old_ctx / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let f = f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen > low_freq_wavelen {
                        (f / factor) as f32
                    } else if wavelen < high_freq_wavelen {
                        f as f32
                    } else {
                        let smooth = (old_ctx / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        ((1.0 - smooth) * f / factor + smooth * f) as f32
                    }
                })
                .collect()
        }
    }
}

/// cos/sin tables `[positions, head_dim]` (each frequency repeated for both halves).
fn tables(inv_freq: &[f32], start: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let half = inv_freq.len();
    let mut cos = vec![0f32; len * 2 * half];
    let mut sin = vec![0f32; len * 2 * half];
    for p in 0..len {
        for (i, f) in inv_freq.iter().enumerate() {
            // transformers multiplies in f32, then takes cos/sin of that f32 angle.
            let angle = ((start + p) as f32 * f) as f64;
            let (s, c) = angle.sin_cos();
            let row = p * 2 * half;
            cos[row + i] = c as f32;
            cos[row + half + i] = c as f32;
            sin[row + i] = s as f32;
            sin[row + half + i] = s as f32;
        }
    }
    (cos, sin)
}

/// Precomputed rotary tables for one model.
#[derive(Module, Debug)]
pub struct Rotary<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    #[module(skip)]
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl<B: Backend> Rotary<B> {
    pub fn new(
        head_dim: usize,
        rope: &RopeConfig,
        max_positions: usize,
        device: &B::Device,
    ) -> Self {
        let inv_freq = inv_freq(head_dim, rope);
        let n = max_positions.clamp(1, MAX_TABLE);
        let (cos, sin) = tables(&inv_freq, 0, n);
        Rotary {
            cos: Tensor::from_data(TensorData::new(cos, [n, head_dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [n, head_dim]), device),
            inv_freq,
            head_dim,
        }
    }

    fn cos_sin(
        &self,
        start: usize,
        len: usize,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let n = self.cos.dims()[0];
        if start + len <= n {
            (
                self.cos.clone().narrow(0, start, len),
                self.sin.clone().narrow(0, start, len),
            )
        } else {
            let (cos, sin) = tables(&self.inv_freq, start, len);
            (
                Tensor::from_data(TensorData::new(cos, [len, self.head_dim]), device),
                Tensor::from_data(TensorData::new(sin, [len, self.head_dim]), device),
            )
        }
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` whose first position is `start`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let [_, _, seq, d] = x.dims();
        let (cos, sin) = self.cos_sin(start, seq, &x.device());
        let cos = cos.unsqueeze::<4>(); // [1, 1, seq, d]
        let sin = sin.unsqueeze::<4>();
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }
}
