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
    /// A bias `[d]`.
    fn bias(&mut self, name: &str, d: usize, device: &B::Device) -> Result<Tensor<B, 1>>;
}

/// Named tensors in Hugging Face layout (linear weights `[d_out, d_in]`) read to the host as
/// f32; every such source supplies a model's weights, transposed to burn's layout on the way.
pub trait HfTensors {
    /// Tensor `name`, which must have exactly `shape`.
    fn read_hf(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
}

/// `[rows, cols]` row-major -> `[cols, rows]` row-major.
pub fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

impl<B: Backend, T: HfTensors> WeightSource<B> for T {
    fn linear(
        &mut self,
        name: &str,
        d_in: usize,
        d_out: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let v = transpose(&self.read_hf(name, &[d_out, d_in])?, d_out, d_in);
        Ok(Tensor::from_data(TensorData::new(v, [d_in, d_out]), device))
    }
    fn embedding(
        &mut self,
        name: &str,
        vocab: usize,
        d: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let v = self.read_hf(name, &[vocab, d])?;
        Ok(Tensor::from_data(TensorData::new(v, [vocab, d]), device))
    }
    fn norm(&mut self, name: &str, d: usize, device: &B::Device) -> Result<Tensor<B, 1>> {
        let v = self.read_hf(name, &[d])?;
        Ok(Tensor::from_data(TensorData::new(v, [d]), device))
    }
    fn bias(&mut self, name: &str, d: usize, device: &B::Device) -> Result<Tensor<B, 1>> {
        self.norm(name, d, device)
    }
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
    /// Biases start at 0, as transformers initializes them.
    fn bias(&mut self, _: &str, d: usize, device: &B::Device) -> Result<Tensor<B, 1>> {
        Ok(Tensor::zeros([d], device))
    }
}
