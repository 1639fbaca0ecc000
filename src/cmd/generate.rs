use std::io::Write;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use shear_data::Tokenizer;
use shear_model::{generate, GenerateConfig, Sampling};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id (owner/name).
    pub model: String,
    /// Prompt text (tokenized with the model's tokenizer.json, BOS added as it says).
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids, used as given.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Always take the most likely token (ignores temperature, top-k, top-p).
    #[arg(long)]
    pub greedy: bool,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep going past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Recompute the whole sequence at every step instead of using the KV cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Print only the generated ids, space-separated on one line.
    #[arg(long)]
    pub ids_only: bool,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    if !args.temperature.is_finite() || args.temperature <= 0.0 {
        bail!("--temperature {}: must be positive", args.temperature);
    }
    if let Some(p) = args.top_p {
        if !(p > 0.0 && p <= 1.0) {
            bail!("--top-p {p}: must be in (0, 1]");
        }
    }
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens 0: must be positive");
    }
    if args.top_k == Some(0) {
        bail!("--top-k 0: must be positive (leave it out to sample from every token)");
    }
    let dir = super::resolve(&args.model, offline)?;
    let tokenizer = if args.prompt.is_some() || !args.ids_only {
        match Tokenizer::from_file(&dir) {
            Ok(t) => Some(t),
            Err(e) if args.prompt.is_some() => return Err(e).context("--prompt needs a tokenizer"),
            Err(_) => None,
        }
    } else {
        None
    };
    let prompt = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => tokenizer
            .as_ref()
            .expect("loaded above")
            .encode(text, true)?,
        (None, Some(ids)) => ids.clone(),
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    let vocab = shear_model::LlamaConfig::from_file(&dir)?.vocab_size;
    if let Some(id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        bail!("--prompt-ids: token id {id} is outside the model's vocabulary of {vocab} tokens");
    }
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    let bar = super::spinner(format!("loading {}", dir.display()));
    let model = shear_model::load_llama::<B>(&dir, device)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    bar.finish_and_clear();
    let cfg = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: if args.greedy {
            Sampling::Greedy
        } else {
            Sampling::Sample {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
            }
        },
        seed: args.seed,
        stop_tokens: if args.ignore_eos {
            vec![]
        } else {
            model.config.eos_token_ids.clone()
        },
        use_cache: !args.no_cache,
    };
    let mut out = std::io::stdout().lock();
    if args.ids_only {
        let ids = generate(&model, &prompt, &cfg, |_| {})?;
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "{}", line.join(" "))?;
        return Ok(());
    }
    match &tokenizer {
        Some(tok) => {
            // Stream text: decode everything generated so far and print what is new, so
            // multi-token characters appear once complete.
            write!(out, "{}", args.prompt.as_deref().unwrap_or(""))?;
            out.flush()?;
            let mut new = Vec::new();
            let mut printed = 0;
            let mut err = None;
            generate(&model, &prompt, &cfg, |id| {
                new.push(id);
                match tok.decode(&new) {
                    Ok(text) if text.len() > printed && text.is_char_boundary(printed) => {
                        let _ = write!(out, "{}", &text[printed..]);
                        let _ = out.flush();
                        printed = text.len();
                    }
                    Ok(_) => {}
                    Err(e) => err = Some(e),
                }
            })?;
            if let Some(e) = err {
                return Err(e.into());
            }
            writeln!(out)?;
        }
        None => {
            generate(&model, &prompt, &cfg, |id| {
                let _ = write!(out, "{id} ");
                let _ = out.flush();
            })?;
            writeln!(out)?;
        }
    }
    Ok(())
}
