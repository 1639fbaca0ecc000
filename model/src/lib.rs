//! shear-model: LLaMA as burn modules (generic over the backend), Hugging Face config and
//! checkpoint I/O, hub resolution and generation. Pruning masks join here (SPEC §1–§5).

pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod dtype;
pub mod error;
pub mod generate;
pub mod hub;
pub mod llama;
pub mod masks;
pub mod masks_file;
pub mod materialize;
pub mod precision;
pub mod rope;
pub mod weights;

pub use cache::KvCache;
pub use checkpoint::{load_llama, save_llama, SafetensorsSource};
pub use config::{LlamaConfig, ParamCounts, RopeConfig, RopeScaling};
pub use dtype::Dtype;
pub use error::{ModelError, Result};
pub use generate::{generate, GenerateConfig, Sampling};
pub use llama::{cross_entropy, next_token_loss, LayerZ, Llama, ZMasks};
pub use masks::{HardConcrete, L0Masks, Mask, PerType, TargetShape};
pub use materialize::{materialize, DeterministicMasks};
pub use weights::{RandomInit, WeightSource};
