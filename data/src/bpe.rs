//! Training a small byte-level BPE tokenizer on a corpus (the embedded default's tokenizer), with
//! the `tokenizers` crate's trainer. The result is laid out like Llama-2's: `<unk>`, `<s>`, `</s>`
//! at ids 0, 1, 2, BOS added by the post-processor, and byte-level pre-tokenization and decoding,
//! so every text round-trips without unknown tokens.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, TokenizerBuilder};

use crate::error::{DataError, Result};

/// Special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// Trains a byte-level BPE of (at most) `vocab_size` tokens, special tokens and the 256 byte
/// symbols included, on `docs`. Merges need at least `min_frequency` occurrences.
pub fn train_bpe(
    docs: &[String],
    vocab_size: usize,
    min_frequency: u64,
) -> Result<tokenizers::Tokenizer> {
    let base = SPECIAL_TOKENS.len() + ByteLevel::alphabet().len();
    if vocab_size <= base {
        return Err(DataError::Recipe(format!(
            "vocab size {vocab_size} must exceed {base} (special tokens + 256 bytes)"
        )));
    }
    let err = |e: tokenizers::Error| DataError::Encode(format!("training the tokenizer: {e}"));
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let bos = TemplateProcessing::builder()
        .try_single("<s> $A")
        .and_then(|b| b.try_pair("<s> $A <s> $B"))
        .map_err(|e| DataError::Encode(e.to_string()))?
        .special_tokens(vec![("<s>", 1)])
        .build()
        .map_err(|e| DataError::Encode(e.to_string()))?;
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        NormalizerWrapper,
        ByteLevel,
        TemplateProcessing,
        ByteLevelDecoder,
    >::new()
    .with_model(BPE::default())
    .with_normalizer(None)
    .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
    .with_post_processor(Some(bos))
    .with_decoder(Some(ByteLevelDecoder::default()))
    .build()
    .map_err(err)?;
    tokenizer.train(&mut trainer, docs.iter()).map_err(err)?;
    let tokenizer: tokenizers::Tokenizer = tokenizer.into();
    for (id, t) in SPECIAL_TOKENS.iter().enumerate() {
        if tokenizer.token_to_id(t) != Some(id as u32) {
            return Err(DataError::Encode(format!(
                "special token {t} did not get id {id}"
            )));
        }
    }
    Ok(tokenizer)
}

/// Writes `tokenizer.json` and a `tokenizer_config.json` naming BOS/EOS into `dir` (each under a
/// temporary name, then renamed).
pub fn save_tokenizer(tokenizer: &tokenizers::Tokenizer, dir: &Path) -> Result<()> {
    let io = |path: &Path, source| {
        DataError::File(shear_io::IoError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let json = tokenizer
        .to_string(true)
        .map_err(|e| DataError::Encode(e.to_string()))?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": true,
        "add_eos_token": false,
    });
    let config = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
    for (name, text) in [("tokenizer.json", json), ("tokenizer_config.json", config)] {
        shear_io::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}
