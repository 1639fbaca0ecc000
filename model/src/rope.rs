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

/// cos/sin tables `[positions, head_dim]`: each frequency repeated for both halves, the sine's
/// first half negated (so that `rotate_half(x) · sin = swap_halves(x) · signed_sin`, one pass
/// fewer than negating half of `x` on every call).
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
            sin[row + i] = -s as f32;
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

    /// The tables `[len, head_dim]` for positions `start..start + len`: cosine, and sine with
    /// its first half negated.
    pub fn cos_sin(
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

    /// Rotates `x` `[batch, seq, heads, head_dim]` whose first position is `start`:
    /// `x · cos + rotate_half(x) · sin`, as transformers does.
    ///
    /// It takes the projections' own layout (contiguous) rather than `[batch, heads, seq, ..]`.
    /// On the CPU backend it is one fused operation (forward and backward one pass each);
    /// elsewhere the composition [`rotate`].
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let seq = x.dims()[1];
        let (cos, sin) = self.cos_sin(start, seq, &x.device());
        #[cfg(feature = "flex")]
        let (x, cos, sin) = match flex::rotate(x, cos, sin) {
            Ok(y) => return y,
            Err(args) => args,
        };
        rotate(x, cos, sin)
    }
}

/// `x · cos + rotate_half(x) · sin` for `x [batch, seq, heads, head_dim]` and tables
/// `[seq, head_dim]` whose sine has its first half negated (`tables`):
/// `rotate_half(x) · sin = swap_halves(x) · signed_sin`.
pub fn rotate<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let [_, seq, _, d] = x.dims();
    let cos = cos.reshape([1, seq, 1, d]);
    let sin = sin.reshape([1, seq, 1, d]);
    let half = d / 2;
    let swapped = Tensor::cat(
        vec![
            x.clone().narrow(3, half, half),
            x.clone().narrow(3, 0, half),
        ],
        3,
    );
    x * cos + swapped * sin
}

/// The rotation as one operation of the CPU backend, with its own backward pass
/// (docs/algorithm.md §12). Broadcasting
/// the `[seq, head_dim]` tables over batch and heads is not one of the patterns burn-flex's
/// element-wise kernels vectorise, so the composition walked every element through its generic
/// strided iterator, in both passes (README, "Benchmarks").
#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn::backend::Flex;
    use burn::prelude::*;
    use burn::tensor::{DType, TensorData, TensorPrimitive};
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::flex_ops::{cast, contiguous, elements, flex_float, from_flex, same, AD};

    type Args<B> = (Tensor<B, 4>, Tensor<B, 2>, Tensor<B, 2>);

    /// The fused rotation when `B` is `Autodiff<Flex>` or `Flex` (and the tensors are f32);
    /// the arguments back otherwise.
    pub(super) fn rotate<B: Backend>(
        x: Tensor<B, 4>,
        cos: Tensor<B, 2>,
        sin: Tensor<B, 2>,
    ) -> Result<Tensor<B, 4>, Args<B>> {
        if x.dtype() != DType::F32 {
            return Err((x, cos, sin));
        }
        let args = match cast::<Args<B>, Args<AD>>((x, cos, sin)) {
            Ok((x, cos, sin)) => return Ok(same(autodiff(x, cos.inner(), sin.inner()))),
            Err(args) => args,
        };
        match cast::<Args<B>, Args<Flex>>(args) {
            Ok((x, cos, sin)) => {
                let y = kernel(&flex_float(x), &flex_float(cos), &flex_float(sin), false);
                Ok(same(from_flex::<4>(y)))
            }
            Err(args) => Err(args),
        }
    }

    #[derive(Debug)]
    struct Rotate;

    impl Backward<Flex, 1> for Rotate {
        /// The tables `[seq, head_dim]`.
        type State = (FlexTensor, FlexTensor);

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (cos, sin) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
                kernel(&g, &cos, &sin, true)
            });
        }
    }

    fn autodiff(x: Tensor<AD, 4>, cos: Tensor<Flex, 2>, sin: Tensor<Flex, 2>) -> Tensor<AD, 4> {
        let x = x.into_primitive().tensor();
        let (cos, sin) = (flex_float(cos), flex_float(sin));
        let y = kernel(&x.primitive, &cos, &sin, false);
        let out = match Rotate
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((cos, sin), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    /// Rows of `[heads · head_dim]` per parallel task.
    const ROWS_PER_TASK: usize = 16;

    /// Forward: `y_j = x_j c_j + x_π(j) s_j`; backward (`transpose`), the same linear map's
    /// transpose applied to the gradient: `dx_j = g_j c_j + g_π(j) s_π(j)`, where π swaps the
    /// two halves of a head and `s` is the signed sine.
    fn kernel(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor, transpose: bool) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let [_, seq, heads, d] = [shape[0], shape[1], shape[2], shape[3]];
        let half = d / 2;
        let (x, xo) = contiguous(x.clone());
        let (cos, co) = contiguous(cos.clone());
        let (sin, so) = contiguous(sin.clone());
        let (xs, cs, ss) = (elements(&x, xo), elements(&cos, co), elements(&sin, so));
        let row = heads * d;
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(row * ROWS_PER_TASK)
            .zip(xs.par_chunks(row * ROWS_PER_TASK))
            .enumerate()
            .for_each(|(task, (o, xr))| {
                for (r, (o, xr)) in o.chunks_mut(row).zip(xr.chunks(row)).enumerate() {
                    let pos = (task * ROWS_PER_TASK + r) % seq;
                    let (c, s) = (&cs[pos * d..(pos + 1) * d], &ss[pos * d..(pos + 1) * d]);
                    for (o, x) in o.chunks_mut(d).zip(xr.chunks(d)) {
                        for j in 0..half {
                            let (a, b) = (x[j], x[j + half]);
                            if transpose {
                                o[j] = a * c[j] + b * s[j + half];
                                o[j + half] = b * c[j + half] + a * s[j];
                            } else {
                                o[j] = a * c[j] + b * s[j];
                                o[j + half] = b * c[j + half] + a * s[j + half];
                            }
                        }
                    }
                }
            });
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}
