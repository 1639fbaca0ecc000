//! Mixed precision for training on GPUs: under bf16 autocast the matrix products of the linear
//! layers and the LM head run in bf16 (inputs and weights cast, the product cast back to f32),
//! while the weights themselves, norms, RoPE, attention softmax, the loss, gradients and the
//! optimizer stay in f32 — the recipe of PyTorch's `torch.autocast(dtype=torch.bfloat16)`.
//! Gradients flow through the casts (burn's autodiff casts them back to f32).
//!
//! The setting is per thread, like autocast, and scoped by [`autocast`]'s guard, so model code
//! does not carry it through every call.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::FloatDType;

/// The precision matrix products are computed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compute {
    #[default]
    F32,
    /// bf16 products, f32 everything else (mixed precision).
    Bf16,
}

/// A precision name [`Compute`] does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{name}` (expected f32 or bf16)")]
pub struct UnknownPrecision {
    pub name: String,
}

impl FromStr for Compute {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, UnknownPrecision> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Compute::F32),
            "bf16" | "bfloat16" => Ok(Compute::Bf16),
            other => Err(UnknownPrecision {
                name: other.to_string(),
            }),
        }
    }
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
        })
    }
}

thread_local! {
    static COMPUTE: Cell<Compute> = const { Cell::new(Compute::F32) };
}

/// This thread's current compute precision.
pub fn compute() -> Compute {
    COMPUTE.with(|c| c.get())
}

/// Restores the previous precision when dropped.
#[must_use = "the precision is reset when the guard drops"]
pub struct AutocastGuard(Compute);

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.0));
    }
}

/// Computes this thread's matrix products in `precision` until the guard drops.
pub fn autocast(precision: Compute) -> AutocastGuard {
    AutocastGuard(COMPUTE.with(|c| c.replace(precision)))
}

/// `x · W` (+ bias) of a linear layer: `[batch, seq, in] -> [batch, seq, out]`, in f32 out.
pub fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    match compute() {
        Compute::F32 => layer.forward(x),
        Compute::Bf16 => {
            let y = matmul_bf16(x, layer.weight.val());
            match &layer.bias {
                Some(b) => y + b.val().unsqueeze::<3>(),
                None => y,
            }
        }
    }
}

/// `x · w` for `x: [batch, seq, in]`, `w: [in, out]`, in the current precision; f32 out.
pub fn matmul<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 3> {
    match compute() {
        Compute::F32 => x.matmul(w.unsqueeze::<3>()),
        Compute::Bf16 => matmul_bf16(x, w),
    }
}

fn matmul_bf16<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 3> {
    let x = x.cast(FloatDType::BF16);
    let w = w.cast(FloatDType::BF16).unsqueeze::<3>();
    x.matmul(w).cast(FloatDType::F32)
}
