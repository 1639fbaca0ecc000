//! shear-data: corpora, tokenization, token shards and dynamic batch loading (SPEC §6, §8).

pub mod error;
pub mod stream;
pub mod tokenizer;

pub use error::{DataError, Result};
pub use tokenizer::Tokenizer;
