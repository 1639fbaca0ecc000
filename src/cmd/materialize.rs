//! `shear materialize`: a source and a mask file to the smaller dense model
//! (`shear_pipeline::materialize::materialize_masks`).

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use shear_model::{Dtype, TargetShape};
use shear_pipeline::prune::shape_line;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model directory or hub id (owner/name).
    #[arg(long)]
    pub source: String,
    /// A pruning mask file (masks.safetensors) or deterministic masks (z_hidden, z_head,
    /// z_intermediate, z_layer; optionally z_kv_head, z_mlp).
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
    /// Also write the model as a llama.cpp GGUF file of this type (f32, f16, bf16, q8_0) next
    /// to OUT: `OUT.gguf`.
    #[arg(long, value_name = "TYPE")]
    pub gguf: Option<String>,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    let dtype: Dtype = args.dtype.parse()?;
    let gguf = args
        .gguf
        .as_deref()
        .map(|t| {
            t.parse::<shear_model::gguf::GgufType>()
                .map_err(|e| anyhow::anyhow!("--gguf {t}: {e}"))
        })
        .transpose()?;
    let target: Option<TargetShape> = match &args.target {
        Some(t) => Some(
            t.parse()
                .map_err(|e| anyhow::anyhow!("--target {t}: {e}"))?,
        ),
        None => None,
    };
    let dir = super::resolve(&args.source, offline)?;
    let c = shear_pipeline::materialize::materialize_masks::<B>(
        &dir,
        &args.masks,
        target,
        &args.out,
        dtype,
        device,
    )?;
    println!("materialized {} -> {}", shape_line(&c), args.out.display());
    if let Some(ty) = gguf {
        let (path, done) = shear_pipeline::export::export_next_to(&args.out, ty)?;
        for n in &done.notes {
            eprintln!("note: {n}");
        }
        println!("{}", shear_pipeline::export::export_line(&path, &done));
    }
    Ok(())
}
