use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use shear_model::checkpoint::copy_tokenizer_files;
use shear_model::masks::TargetShape;
use shear_model::masks_file::{load_masks, MaskFile};
use shear_model::{materialize, Dtype, LlamaConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model directory or hub id (owner/name).
    #[arg(long)]
    pub source: String,
    /// A pruning mask file (masks.safetensors) or deterministic masks (z_hidden, z_head,
    /// z_intermediate, z_layer).
    #[arg(long)]
    pub masks: PathBuf,
    /// Output directory for the smaller Hugging Face checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Override the target stored in a pruning mask file.
    #[arg(long)]
    pub target: Option<String>,
    /// Storage dtype (default f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    let dtype: Dtype = args.dtype.parse()?;
    let dir = super::resolve(&args.source, offline)?;
    let config = LlamaConfig::from_file(&dir)?;
    let masks = load_masks::<B>(&args.masks, &config, device)?;
    let z = match masks {
        MaskFile::Deterministic(z) => z,
        MaskFile::LogAlpha(l0, state) => {
            let target: TargetShape = match &args.target {
                Some(t) => t
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--target {t}: {e}"))?,
                None => state.target,
            };
            target
                .validate(&config)
                .map_err(|e| anyhow::anyhow!("invalid target ({target}): {e}"))?;
            l0.clamp_log_alpha().deterministic(Some(&target))
        }
    };
    let model = shear_model::load_llama::<B>(&dir, device)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    let small = materialize(&model, &z, device).context("cannot materialize")?;
    shear_model::save_llama(&small, &args.out, dtype)?;
    copy_tokenizer_files(&dir, &args.out)?;
    let c = &small.config;
    println!(
        "materialized layers {} hidden {} heads {} intermediate {} -> {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        args.out.display()
    );
    Ok(())
}
