//! `tokenizer.json` (the `tokenizers` library's serialization) and a minimal
//! `tokenizer_config.json` from a GGUF's `tokenizer.ggml.*` metadata.
//!
//! Metadata keys and token types follow llama.cpp (`gguf-py/gguf/constants.py`: `Keys.Tokenizer`,
//! `TokenType`: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte). Two
//! vocabularies are handled:
//!
//! * `gpt2`: byte-level BPE. Vocabulary and merges as stored; the pre-tokenizer's split regex is
//!   chosen from `tokenizer.ggml.pre` the way llama.cpp's `llama-vocab.cpp` does.
//! * `llama`: SentencePiece BPE. The merges are not stored; they are rebuilt from the scores as
//!   SentencePiece's BPE applies them (the piece with the highest score merges first), the same
//!   rule transformers' GGUF converter uses (`generate_merges`), with SentencePiece's `▁` for
//!   spaces, a `▁` prefix (`tokenizer.ggml.add_space_prefix`, default on) and byte fallback to
//!   the `<0xNN>` tokens.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::reader::Gguf;

const NORMAL: i64 = 1;
const UNKNOWN: i64 = 2;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Llama 3's split regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
pub(crate) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
pub(crate) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(g: &Gguf, message: String) -> Error {
    Error::Tokenizer {
        file: g.file_name().to_string(),
        message,
    }
}

/// The token with id `key`'s value, if the key is present.
fn special(g: &Gguf, tokens: &[String], key: &str) -> Result<Option<(u64, String)>> {
    match g.get_u64(key)? {
        None => Ok(None),
        Some(id) => match tokens.get(id as usize) {
            Some(t) => Ok(Some((id, t.clone()))),
            None => Err(Error::BadValue {
                file: g.file_name().to_string(),
                key: key.to_string(),
                message: format!("token id {id} is past the {} tokens", tokens.len()),
            }),
        },
    }
}

fn added_token(id: usize, content: &str, special: bool) -> Json {
    json!({
        "id": id, "content": content, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": special,
    })
}

/// `tokenizers`' TemplateProcessing adding BOS and/or EOS around each sequence.
fn template(bos: Option<&(u64, String)>, eos: Option<&(u64, String)>) -> Json {
    let mut special_tokens = Map::new();
    let piece =
        |t: &(u64, String), type_id: u32| json!({"SpecialToken": {"id": t.1, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (seq_id, type_id) in [("A", 0u32), ("B", 1)] {
        let out = if seq_id == "A" {
            &mut single
        } else {
            &mut pair
        };
        if let Some(b) = bos {
            out.push(piece(b, type_id));
        }
        out.push(seq(seq_id, type_id));
        if let Some(e) = eos {
            out.push(piece(e, type_id));
        }
    }
    let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
    for t in bos.into_iter().chain(eos) {
        special_tokens.insert(
            t.1.clone(),
            json!({"id": t.1, "ids": [t.0], "tokens": [t.1]}),
        );
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens})
}

/// The pre-tokenizer for llama.cpp pre-tokenizer name `pre` (`tokenizer.ggml.pre`).
fn byte_level_pre_tokenizer(pre: Option<&str>, notes: &mut Vec<String>) -> (Json, bool) {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]})
    };
    match pre {
        // llama.cpp: "\p{N}" (each digit alone), then GPT-2's regex.
        Some(
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b",
        ) => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            false,
        ),
        Some(
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
            | "lfm2" | "dbrx" | "smaug-bpe",
        ) => (split(LLAMA3_SPLIT), true),
        Some("qwen2" | "deepseek-r1-qwen" | "megrez") => (split(QWEN2_SPLIT), false),
        None | Some("default" | "gpt2" | "gpt-2" | "phi-2" | "roberta-bpe" | "olmo") => {
            (byte_level(true), false)
        }
        Some(other) => {
            notes.push(format!(
                "tokenizer.ggml.pre `{other}` is not known here; GPT-2's split regex is used, \
                 which may split text differently than llama.cpp does"
            ));
            (byte_level(true), false)
        }
    }
}

/// Merges for a SentencePiece vocabulary, from its scores: every split of a token into two
/// tokens is a merge ranked by the token's score (higher first; ties by longer left piece, then
/// longer right piece, then token order, then piece ids), the order SentencePiece's BPE applies
/// them. Only normal tokens (type 1) take part: SentencePiece never produces control, unknown,
/// byte or unused pieces by merging, and user-defined ones are matched whole beforehand.
fn merges_from_scores(tokens: &[String], scores: &[f32], types: &[i64]) -> Vec<(String, String)> {
    let normal = |i: usize| types.get(i).copied().unwrap_or(NORMAL) == NORMAL;
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if normal(i) {
            ids.entry(t.as_str()).or_insert(i);
        }
    }
    struct M<'a> {
        left: &'a str,
        right: &'a str,
        score: f32,
    }
    let mut merges: Vec<M> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if !normal(i) || ids.get(t.as_str()) != Some(&i) {
            continue;
        }
        let mut local: Vec<(usize, usize, M)> = Vec::new();
        for (cut, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(cut);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                local.push((
                    li,
                    ri,
                    M {
                        left: l,
                        right: r,
                        score: scores[i],
                    },
                ));
            }
        }
        local.sort_by_key(|&(li, ri, _)| (li, ri));
        merges.extend(local.into_iter().map(|(_, _, m)| m));
    }
    // Stable sort, descending; equal keys keep their order.
    merges.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| b.left.chars().count().cmp(&a.left.chars().count()))
            .then_with(|| b.right.chars().count().cmp(&a.right.chars().count()))
    });
    merges
        .into_iter()
        .map(|m| (m.left.to_string(), m.right.to_string()))
        .collect()
}

/// `(tokenizer.json, tokenizer_config.json)` for the GGUF's tokenizer; `None` (with a note) when
/// it has none or one of a kind this crate does not build.
pub fn tokenizer_json(g: &Gguf, notes: &mut Vec<String>) -> Result<Option<(Json, Json)>> {
    let Some(model) = g.get_str("tokenizer.ggml.model")? else {
        notes.push("the GGUF has no tokenizer (tokenizer.ggml.model)".into());
        return Ok(None);
    };
    if model != "gpt2" && model != "llama" {
        notes.push(format!(
            "tokenizer.ggml.model `{model}` is not supported (only gpt2 and llama); no tokenizer written"
        ));
        return Ok(None);
    }
    let tokens = g
        .get_str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::MissingKey {
            file: g.file_name().to_string(),
            key: "tokenizer.ggml.tokens".into(),
        })?;
    let types = g
        .get_i64_array("tokenizer.ggml.token_type")?
        .unwrap_or_else(|| vec![NORMAL; tokens.len()]);
    if types.len() != tokens.len() {
        return Err(tok_err(
            g,
            format!("{} token types for {} tokens", types.len(), tokens.len()),
        ));
    }
    let bos = special(g, tokens, "tokenizer.ggml.bos_token_id")?;
    let eos = special(g, tokens, "tokenizer.ggml.eos_token_id")?;
    let unk = special(g, tokens, "tokenizer.ggml.unknown_token_id")?;
    let pad = special(g, tokens, "tokenizer.ggml.padding_token_id")?;
    let spm = model == "llama";
    // llama.cpp adds BOS to a SentencePiece vocabulary unless told otherwise.
    let add_bos = g.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(spm) && bos.is_some();
    let add_eos = g.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false) && eos.is_some();

    let mut vocab = Map::new();
    let mut duplicates = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        if vocab.contains_key(t) {
            duplicates += 1;
        } else {
            vocab.insert(t.clone(), json!(i));
        }
    }
    if duplicates > 0 {
        notes.push(format!(
            "{duplicates} tokens repeat an earlier token's text; the vocabulary keeps the first id"
        ));
    }

    let mut added = Vec::new();
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        match ty {
            CONTROL => added.push(added_token(i, t, true)),
            UNKNOWN if spm => added.push(added_token(i, t, true)),
            USER_DEFINED => added.push(added_token(i, t, false)),
            _ => {}
        }
    }

    let post_processor = template(
        bos.as_ref().filter(|_| add_bos),
        eos.as_ref().filter(|_| add_eos),
    );

    let tokenizer = if spm {
        let scores =
            g.get_f64_array("tokenizer.ggml.scores")?
                .ok_or_else(|| Error::MissingKey {
                    file: g.file_name().to_string(),
                    key: "tokenizer.ggml.scores".into(),
                })?;
        if scores.len() != tokens.len() {
            return Err(tok_err(
                g,
                format!("{} scores for {} tokens", scores.len(), tokens.len()),
            ));
        }
        let scores: Vec<f32> = scores.iter().map(|&s| s as f32).collect();
        let merges: Vec<Json> = merges_from_scores(tokens, &scores, &types)
            .into_iter()
            .map(|(l, r)| json!([l, r]))
            .collect();
        let byte_fallback = (0..=255u8).all(|b| vocab.contains_key(&format!("<0x{b:02X}>")));
        if !byte_fallback {
            notes.push(
                "the SentencePiece vocabulary lacks some <0xNN> byte tokens; characters outside \
                 it become the unknown token"
                    .into(),
            );
        }
        let add_prefix = g
            .get_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        let replace_space =
            json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
        let normalizer = if add_prefix {
            json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"}, replace_space]})
        } else {
            replace_space
        };
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if add_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": null,
            "post_processor": post_processor,
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {
                "type": "BPE", "dropout": null,
                "unk_token": unk.as_ref().map(|u| u.1.clone()),
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": byte_fallback, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        })
    } else {
        let stored =
            g.get_str_array("tokenizer.ggml.merges")?
                .ok_or_else(|| Error::MissingKey {
                    file: g.file_name().to_string(),
                    key: "tokenizer.ggml.merges".into(),
                })?;
        let mut merges = Vec::with_capacity(stored.len());
        for m in stored {
            let Some((l, r)) = m.split_once(' ') else {
                return Err(tok_err(
                    g,
                    format!("merge `{m}` is not two tokens separated by a space"),
                ));
            };
            for part in [l, r] {
                if !vocab.contains_key(part) {
                    return Err(tok_err(g, format!("merge `{m}`: `{part}` is not a token")));
                }
            }
            merges.push(json!([l, r]));
        }
        let (pre_tokenizer, ignore_merges) =
            byte_level_pre_tokenizer(g.get_str("tokenizer.ggml.pre")?, notes);
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                "vocab": vocab, "merges": merges,
            },
        })
    };

    let mut config = Map::new();
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    config.insert("add_bos_token".into(), json!(add_bos));
    config.insert("add_eos_token".into(), json!(add_eos));
    for (key, t) in [
        ("bos_token", &bos),
        ("eos_token", &eos),
        ("unk_token", &unk),
        ("pad_token", &pad),
    ] {
        if let Some((_, s)) = t {
            config.insert(key.into(), json!(s));
        }
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(t) = g.get_str("tokenizer.chat_template")? {
        config.insert("chat_template".into(), json!(t));
    }
    Ok(Some((tokenizer, Json::Object(config))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_rank_by_merged_token_score() {
        // "ab" (score -1) merges before "bc" (score -2); "abc" splits two ways, ids decide
        // the order within its own score.
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0];
        let m = merges_from_scores(&tokens, &scores, &[1; 6]);
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(m, vec![("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
    }

    #[test]
    fn control_and_byte_tokens_do_not_merge() {
        let tokens: Vec<String> = ["<", "s", ">", "<s>", "<s", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = merges_from_scores(&tokens, &[0.0; 6], &[1, 1, 1, 3, 1, 6]);
        // "<s>" is control: only "<s" = "<" + "s" remains.
        assert_eq!(m, vec![("<".to_string(), "s".to_string())]);
    }
}
