//! shear-model: LLaMA as burn modules (generic over the backend), Hugging Face config and
//! checkpoint I/O, hub resolution and generation, and the pruning masks, target shapes and
//! materialization (docs/algorithm.md §1–§5, §11).

pub mod attention_blocks;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod distill_loss;
pub mod dtype;
pub mod error;
#[cfg(feature = "flex")]
mod flex_ops;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod importance;
pub mod kinds;
pub mod llama;
pub mod lm_loss;
pub mod masks;
pub mod masks_file;
pub mod materialize;
pub mod names;
pub mod obs;
pub mod precision;
pub mod rope;
pub mod target;
pub mod tensor_data;
pub mod weights;

pub use cache::KvCache;
pub use checkpoint::{load_llama, save_llama, SafetensorsSource};
pub use config::{LlamaConfig, ParamCounts, RopeConfig, RopeScaling};
pub use dtype::Dtype;
pub use error::{ModelError, Result};
pub use generate::{generate, GenerateConfig, Sampling};
pub use kinds::MaskSettingError;
pub use llama::{LayerZ, Llama, ZMasks};
pub use lm_loss::{cross_entropy, next_token_loss};
pub use masks::{
    ExpectedShape, HardConcrete, HardConcreteError, L0Masks, LayerMasks, Mask, MaskType, PerType,
    PruneModules,
};
pub use materialize::{materialize, DeterministicMasks};
pub use precision::UnknownPrecision;
pub use target::{Preset, TargetError, TargetShape, TargetSpec};
pub use tensor_data::to_vec_f32;
pub use weights::{RandomInit, WeightSource};

/// Whether backend `B` runs the CPU backend's fused operations (the LM-head loss, lm_loss.rs;
/// rotary embeddings, rope.rs) rather than their compositions: `Flex` and `Autodiff<Flex>` when
/// the `flex` feature is on.
pub fn fused_kernels<B: burn::tensor::backend::Backend>() -> bool {
    #[cfg(feature = "flex")]
    {
        use std::any::TypeId;
        let b = TypeId::of::<B>();
        b == TypeId::of::<burn::backend::Flex>() || b == TypeId::of::<flex_ops::AD>()
    }
    #[cfg(not(feature = "flex"))]
    false
}
