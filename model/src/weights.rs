//! Where a model's weights come from when it is built: a checkpoint, or a fresh initialization.

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::error::Result;

/// Supplies the weights of a model by Hugging Face tensor name, already in burn's layout.
pub trait WeightSource<B: Backend> {
    /// A linear weight; the checkpoint holds it as `[d_out, d_in]`, this returns `[d_in, d_out]`.
    fn linear(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>>;
    /// An embedding table `[vocab, d]`.
    fn embedding(
        &mut self,
        name: &str,
        vocab: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>>;
    /// A norm weight `[d]`.
    fn norm(&mut self, name: &str, d: usize, device: &B::Device) -> Result<Tensor<B, 1>>;
}

/// Fresh weights as transformers initializes a LLaMA: normal(0, `std`) matrices, unit norms.
/// Draws come from the backend's RNG; seed it with `B::seed` for reproducible models.
pub struct RandomInit {
    pub std: f64,
}

impl Default for RandomInit {
    fn default() -> Self {
        RandomInit { std: 0.02 }
    }
}

impl<B: Backend> WeightSource<B> for RandomInit {
    fn linear(
        &mut self,
        _: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(Tensor::random(
            [d_in, d_out],
            Distribution::Normal(0.0, self.std),
            device,
        ))
    }
    fn embedding(
        &mut self,
        _: &str,
        vocab: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        Ok(Tensor::random(
            [vocab, d],
            Distribution::Normal(0.0, self.std),
            device,
        ))
    }
    fn norm(&mut self, _: &str, d: usize, device: &B::Device) -> Result<Tensor<B, 1>> {
        Ok(Tensor::ones([d], device))
    }
}
