use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use shear_model::checkpoint::copy_tokenizer_files;
use shear_model::{Dtype, SafetensorsSource};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory, hub id (owner/name), or a GGUF file (llama.cpp; dequantized).
    pub model: String,
    /// Output directory (config.json, model.safetensors and the tokenizer files), or a file
    /// ending in `.gguf`: the model as llama.cpp loads it.
    pub out_dir: PathBuf,
    /// Storage dtype of the saved tensors: f32, bf16 or f16, and for a `.gguf` output also q8_0
    /// (default: as stored in MODEL; f32 for a GGUF file, which holds its dequantized values
    /// exactly).
    #[arg(long)]
    pub dtype: Option<String>,
}

/// Whether `path` names a GGUF file to write.
fn is_gguf_out(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// `shear convert MODEL OUT.gguf`: a Hugging Face checkpoint written as a llama.cpp GGUF file.
fn export(args: Args, offline: bool) -> anyhow::Result<()> {
    let ty = args
        .dtype
        .as_deref()
        .map(|d| {
            d.parse::<shear_model::gguf::GgufType>()
                .map_err(|e| anyhow::anyhow!("--dtype {d}: {e}"))
        })
        .transpose()?;
    let path = std::path::Path::new(&args.model);
    let dir = if shear_model::gguf::is_gguf(path) {
        shear_model::gguf::gguf_model_dir(path)?
    } else {
        super::resolve(&args.model, offline)?
    };
    let bar = super::spinner(format!("writing {}", args.out_dir.display()));
    let start = std::time::Instant::now();
    let done = shear_model::gguf::export_gguf(&dir, &args.out_dir, ty)?;
    bar.finish_and_clear();
    for n in &done.notes {
        eprintln!("note: {n}");
    }
    println!(
        "exported {} ({}, {} parameters) -> {} ({}, {} tensors, {:.1} MiB, {:.1} s)",
        dir.display(),
        shear_model::TargetShape::of(&done.config),
        done.config.param_counts().total(),
        args.out_dir.display(),
        done.ty,
        done.tensors,
        done.bytes as f64 / (1024.0 * 1024.0),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    if is_gguf_out(&args.out_dir) {
        return export(args, offline);
    }
    let dtype: Option<Dtype> = args
        .dtype
        .as_deref()
        .map(|d| {
            d.parse::<Dtype>()
                .map_err(|e| anyhow::anyhow!("--dtype {d}: {e}"))
        })
        .transpose()?;
    let path = std::path::Path::new(&args.model);
    if shear_model::gguf::is_gguf(path) {
        let bar = super::spinner(format!("converting {}", path.display()));
        let (config, notes) =
            shear_model::gguf::convert_gguf(path, &args.out_dir, dtype.unwrap_or(Dtype::F32))?;
        bar.finish_and_clear();
        for n in notes {
            eprintln!("note: {n}");
        }
        println!(
            "converted {} ({}, {} parameters) -> {}",
            path.display(),
            shear_model::TargetShape::of(&config),
            config.param_counts().total(),
            args.out_dir.display()
        );
        return Ok(());
    }
    let dir = super::resolve(&args.model, offline)?;
    let same = match (dir.canonicalize(), args.out_dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "{}: OUT_DIR is the model's own directory; choose another",
            args.out_dir.display()
        );
    }
    let dtype = match dtype {
        Some(d) => d,
        // Keep the storage dtype of the source's weights.
        None => SafetensorsSource::open(&dir)?.stored_dtype(),
    };
    let bar = super::spinner(format!("loading {}", dir.display()));
    let model = shear_model::load_llama::<B>(&dir, device)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    let _lock = shear_pipeline::out::create_locked(&args.out_dir)?;
    bar.set_message(format!("writing {}", args.out_dir.display()));
    shear_model::save_llama(&model, &args.out_dir, dtype)
        .with_context(|| format!("cannot save to {}", args.out_dir.display()))?;
    copy_tokenizer_files(&dir, &args.out_dir)?;
    bar.finish_and_clear();
    println!("saved {} ({dtype})", args.out_dir.display());
    Ok(())
}
