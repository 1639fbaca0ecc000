use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use shear_data::Split;
use shear_model::checkpoint::copy_tokenizer_files;
use shear_model::masks::{LayerMasks, TargetShape};
use shear_model::masks_file::{save_masks, MaskState};
use shear_model::LlamaConfig;

use super::feed::{
    open_log, report, save_loader_state, stream_batch_at, write_jsonl, DataArgs, Source,
};
use shear_data::DynamicLoader;
use shear_train::prune::{finish, prune_until, PruneConfig, PruneRun};
use shear_train::prune::{FnBatches, PruneData};
use shear_train::trainer::latest_checkpoint;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model directory or hub id (owner/name).
    pub model: String,
    /// Target shape, e.g. `layers=24,hidden=2048,heads=16,intermediate=5504`.
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    pub target: Option<String>,
    /// Named target for a Llama-2-7B source: sheared-1.3b, sheared-2.7b or 370m.
    #[arg(long)]
    pub preset: Option<String>,
    #[command(flatten)]
    pub feed: DataArgs,
    /// Output directory: `model/` (the pruned Hugging Face checkpoint), `checkpoint/` (the
    /// full-size model with trained weights), `masks.safetensors`, `prune_log.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3200)]
    pub steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr_weights: f64,
    #[arg(long, default_value_t = 1.0)]
    pub lr_masks: f64,
    #[arg(long, default_value_t = 1.0)]
    pub lr_lambda: f64,
    /// Learning-rate warm-up steps (default: 10 % of the steps).
    #[arg(long)]
    pub lr_warmup: Option<usize>,
    /// Target-sparsity warm-up steps (default: 20 % of the steps).
    #[arg(long)]
    pub lagrangian_warmup: Option<usize>,
    /// Save masks.safetensors and a checkpoint (OUT/checkpoints/step-N: everything needed to
    /// resume exactly) every this many steps (0: masks only at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Continue from the newest checkpoint in OUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps in total (the schedules still follow --steps); a checkpoint is
    /// written so that --resume continues.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Storage dtype of the pruned checkpoint (default: the source's).
    #[arg(long)]
    pub dtype: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-layer masks: `layer` (one per block, the released recipe) or `head-layer-mlp`
    /// (separate attention and FFN masks; layers are still removed whole).
    #[arg(long, value_enum, default_value_t = LayerMaskArg::Layer)]
    pub layer_masks: LayerMaskArg,
    /// Matrix products in bf16 with f32 weights, norms, loss, gradients and optimizer (mixed
    /// precision, for GPUs; on the CPU backend bf16 is slower than f32).
    #[arg(long, default_value = "f32")]
    pub precision: shear_model::precision::Compute,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerMaskArg {
    Layer,
    HeadLayerMlp,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    let _precision = shear_model::precision::autocast(args.precision);
    // Everything that can be refused is checked before the model is loaded.
    let dir = super::resolve(&args.model, offline)?;
    let config = LlamaConfig::from_file(&dir)?;
    let target: TargetShape = match (&args.target, &args.preset) {
        (Some(t), _) => t
            .parse()
            .map_err(|e| anyhow::anyhow!("--target {t}: {e}"))?,
        (None, Some(p)) => {
            TargetShape::preset(p, &config).map_err(|e| anyhow::anyhow!("--preset: {e}"))?
        }
        (None, None) => bail!("give --target or --preset"),
    };
    target
        .validate(&config)
        .map_err(|e| anyhow::anyhow!("invalid target ({target}): {e}"))?;
    if args.steps == 0 || args.batch == 0 || args.grad_accum == 0 {
        bail!("--steps, --batch and --grad-accum must be positive");
    }
    let dtype = match &args.dtype {
        Some(d) => d.parse()?,
        None => shear_model::SafetensorsSource::open(&dir)?.stored_dtype(),
    };
    let source = args.feed.open(&dir, &config)?;
    // Everything about dynamic loading that can be refused, before the model is loaded.
    let n_target = target.config(&config).param_counts().total() as f64;
    let mut dynamic = match &source {
        Source::Prepared(data) => Some(args.feed.dynamic::<Autodiff<B>>(
            data,
            Split::Prune,
            n_target,
            args.batch,
            args.seed,
            50,
            device,
        )?),
        Source::Stream(..) => None,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let bar = super::spinner(format!("loading {}", dir.display()));
    let model = shear_model::load_llama::<Autodiff<B>>(&dir, device)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    bar.finish_and_clear();

    let mut cfg = PruneConfig::new(target, args.steps);
    cfg.grad_accum = args.grad_accum;
    cfg.lr_weights = args.lr_weights;
    cfg.lr_masks = args.lr_masks;
    cfg.lr_lambda = args.lr_lambda;
    cfg.seed = args.seed;
    cfg.layer_masks = match args.layer_masks {
        LayerMaskArg::Layer => LayerMasks::Layer,
        LayerMaskArg::HeadLayerMlp => LayerMasks::HeadLayerMlp,
    };
    if let Some(w) = args.lr_warmup {
        cfg.lr_warmup_steps = w;
    }
    if let Some(w) = args.lagrangian_warmup {
        cfg.lagrangian_warmup_steps = w;
    }

    if let Some(d) = dynamic.as_mut() {
        args.feed.fill_source_reference(d, &model.valid());
    }
    let ckpt_dir = args.out.join("checkpoints");
    let resume_from = if args.resume {
        latest_checkpoint(&ckpt_dir)
    } else {
        None
    };
    let run = match &resume_from {
        Some(ckpt) => {
            let (run, loader) = PruneRun::<Autodiff<B>>::load(ckpt, &cfg, device)
                .with_context(|| format!("cannot resume from {}", ckpt.display()))?;
            if let (Some(d), Some(state), Source::Prepared(data)) =
                (dynamic.as_mut(), loader, &source)
            {
                d.loader = DynamicLoader::restore(data.shards(Split::Prune)?, args.batch, state)?;
            }
            eprintln!("resuming from {} (step {})", ckpt.display(), run.step);
            run
        }
        None => PruneRun::new(model, &cfg),
    };
    let log_path = args.out.join("prune_log.jsonl");
    let mut log = open_log(&log_path, resume_from.is_some())?;
    let batch = args.batch;
    let until = args.stop_after.unwrap_or(args.steps).min(args.steps);
    let loader_path = args.out.join("loader_state.json");
    let bar = indicatif::ProgressBar::new(args.steps as u64);
    bar.set_position(run.step as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template"),
    );
    let mut write_err = None;
    let mut stream_batches = FnBatches(|step, micro| {
        let Source::Stream(stream, seq) = &source else {
            unreachable!("prepared data uses the dynamic loader")
        };
        stream_batch_at(stream, *seq, args.seed, step, micro, batch, device)
    });
    let data: &mut dyn PruneData<Autodiff<B>> = match dynamic.as_mut() {
        Some(d) => d,
        None => &mut stream_batches,
    };
    let run = prune_until(run, &cfg, data, until, |s, run| {
        let pruner = &run.pruner;
        let stopping = run.step == until && until < args.steps;
        if (args.save_every > 0 && run.step % args.save_every == 0 && run.step < args.steps)
            || stopping
        {
            if let Err(e) = run.save(&ckpt_dir, &cfg, s.loader_state.as_ref()) {
                write_err.get_or_insert(anyhow::Error::from(e));
            }
            let (lambda_1, lambda_2) = pruner.lagrangian.values();
            let state = MaskState {
                step: s.step + 1,
                target,
                lambda_1,
                lambda_2,
            };
            let path = args.out.join("masks.safetensors");
            if let Err(e) = save_masks(&path, &pruner.l0.clone().clamp_log_alpha(), &state) {
                write_err.get_or_insert(anyhow::Error::from(e));
            }
            if let Some(st) = &s.loader_state {
                if let Err(e) = save_loader_state(&loader_path, st) {
                    write_err.get_or_insert(e);
                }
            }
        }
        if let Err(e) = write_jsonl(&mut log, s) {
            write_err.get_or_insert(e);
        }
        report(&bar, s.step, s.domain_update.as_ref(), &s.loader_events);
        let [l, d, h, m] = s.expected_shape;
        bar.set_message(format!(
            "ce {:.3}  shape L{l:.1} d{d:.0} H{h:.2} m{m:.0}",
            s.ce_loss
        ));
        bar.inc(1);
    });
    bar.finish_and_clear();
    if let Some(e) = write_err {
        return Err(e.context(format!("cannot write {}", log_path.display())));
    }
    log.flush()?;
    if run.step < args.steps {
        println!(
            "stopped after step {} of {}; continue with --resume (checkpoint in {})",
            run.step,
            args.steps,
            ckpt_dir.display()
        );
        return Ok(());
    }
    let pruner = run.pruner;
    let (lambda_1, lambda_2) = pruner.lagrangian.values();
    let state = MaskState {
        step: args.steps,
        target,
        lambda_1,
        lambda_2,
    };
    save_masks(
        &args.out.join("masks.safetensors"),
        &pruner.l0.clone().clamp_log_alpha(),
        &state,
    )?;
    if let Some(d) = &dynamic {
        save_loader_state(&loader_path, &d.loader.state())?;
    }
    // The full-size model with its trained weights: with masks.safetensors it is the pruning
    // checkpoint (`shear materialize --source OUT/checkpoint --masks OUT/masks.safetensors`).
    let checkpoint = args.out.join("checkpoint");
    shear_model::save_llama(&pruner.model.valid(), &checkpoint, dtype)?;
    copy_tokenizer_files(&dir, &checkpoint)?;
    let small = finish(&pruner, &target)?;
    let model_dir = args.out.join("model");
    shear_model::save_llama(&small, &model_dir, dtype)?;
    copy_tokenizer_files(&dir, &model_dir)?;
    let c = &small.config;
    println!(
        "pruned to layers {} hidden {} heads {} intermediate {} ({} parameters) -> {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        c.param_counts().total(),
        model_dir.display()
    );
    Ok(())
}
