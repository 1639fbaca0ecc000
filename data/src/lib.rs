//! shear-data: corpora, tokenization, token shards and dynamic batch loading (docs/algorithm.md §6, §8).

// One `unsafe` block, the read-only memory map of a shard (shard.rs), allowed where it is.
#![deny(unsafe_code)]

pub mod batch;
pub mod bpe;
pub mod corpus;
pub mod dynamic;
pub mod error;
pub mod loader;
pub mod manifest;
pub mod prepare;
pub mod proportions;
pub mod reference;
pub mod shard;
pub mod stream;
pub mod tasks;
pub mod tokenizer;
pub mod update;

pub use batch::{Sequence, TokenBatch, TokenBatcher};
pub use dynamic::{DynamicLoader, LoaderEvent, LoaderState};
pub use error::{DataError, Result};
pub use loader::{DynamicDataLoader, LoaderHandle, StreamDataLoader};
pub use manifest::{Manifest, PreparedData, Split};
pub use prepare::{prepare, PrepareRecipe};
pub use proportions::Proportions;
pub use reference::{DomainFit, ReferenceLoss, ScalingLaw};
pub use tokenizer::Tokenizer;
pub use update::{UpdateRecord, UpdateRule};
