//! `shear train`: continued pre-training (or training from scratch) of a LLaMA checkpoint, with
//! dynamic batch loading over a prepared folder's train split, checkpoints and `--resume`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::*;
use shear_data::{DynamicLoader, Split};
use shear_model::checkpoint::copy_tokenizer_files;
use shear_model::{Dtype, Llama, LlamaConfig, RandomInit};
use shear_train::trainer::{latest_checkpoint, train, Distill, TrainConfig, TrainData, Trainer};

use super::feed::{
    open_log, report, save_loader_state, stream_batch_at, write_jsonl, DataArgs, Source,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id: a Hugging Face LLaMA checkpoint (with `--init random`, only its
    /// config.json is used).
    pub model: String,
    #[command(flatten)]
    pub feed: DataArgs,
    /// Output directory: `model/` (the trained Hugging Face checkpoint), `checkpoints/step-N/`
    /// (for --resume), `train_log.jsonl`, `loader_state.json`.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Micro-batches per optimizer step (global batch = batch × grad-accum).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate (SPEC §7: 1e-4).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Warm-up steps (default: 3 % of the steps).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// The cosine ends at lr × this.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Write a checkpoint every this many steps (0: only when stopping early).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Continue from the newest checkpoint in OUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps in total (the schedule still follows --steps); a checkpoint
    /// is written so that --resume continues.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// `weights` (the checkpoint's) or `random` (from its config: a from-scratch baseline).
    #[arg(long, value_enum, default_value_t = Init::Weights)]
    pub init: Init,
    /// Distil from this teacher (directory or hub id): loss = CE + w · T² · KL.
    #[arg(long)]
    pub distill_from: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub distill_weight: f64,
    #[arg(long, default_value_t = 1.0)]
    pub distill_temperature: f64,
    /// Storage dtype of the final checkpoint (default: the model's; f32 with --init random).
    #[arg(long)]
    pub dtype: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Matrix products in bf16 with f32 weights, norms, loss, gradients and optimizer (mixed
    /// precision, for GPUs; on the CPU backend bf16 is slower than f32).
    #[arg(long, default_value = "f32")]
    pub precision: shear_model::precision::Compute,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Init {
    Weights,
    Random,
}

/// Token-stream batches: windows drawn with an RNG seeded by (seed, step, micro-batch), so a
/// resumed run draws what the uninterrupted one would have.
struct StreamData<'a, B: Backend> {
    source: &'a Source,
    seed: u64,
    batch: usize,
    device: B::Device,
}

impl<B: burn::tensor::backend::AutodiffBackend> TrainData<B> for StreamData<'_, B> {
    fn batch(&mut self, step: usize, micro: usize) -> Tensor<B, 2, Int> {
        let Source::Stream(stream, seq) = self.source else {
            unreachable!("prepared data uses the dynamic loader")
        };
        stream_batch_at(
            stream,
            *seq,
            self.seed,
            step,
            micro,
            self.batch,
            &self.device,
        )
    }
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    let _precision = shear_model::precision::autocast(args.precision);
    type AD<B> = Autodiff<B>;
    let dir = super::resolve(&args.model, offline)?;
    let config = LlamaConfig::from_file(&dir)?;
    if args.steps == 0 || args.batch == 0 || args.grad_accum == 0 {
        bail!("--steps, --batch and --grad-accum must be positive");
    }
    if !(0.0..=1.0).contains(&args.min_lr_ratio) {
        bail!("--min-lr-ratio {}: between 0 and 1", args.min_lr_ratio);
    }
    let dtype: Dtype = match (&args.dtype, args.init) {
        (Some(d), _) => d.parse()?,
        (None, Init::Random) => Dtype::F32,
        (None, Init::Weights) => shear_model::SafetensorsSource::open(&dir)?.stored_dtype(),
    };
    let source = args.feed.open(&dir, &config)?;
    let n_params = config.param_counts().total() as f64;
    let mut dynamic = match &source {
        Source::Prepared(data) => Some(args.feed.dynamic::<AD<B>>(
            data,
            Split::Train,
            n_params,
            args.batch,
            args.seed,
            400,
            device,
        )?),
        Source::Stream(..) => None,
    };
    let teacher = match &args.distill_from {
        Some(t) => {
            let tdir = super::resolve(t, offline)?;
            let tconf = LlamaConfig::from_file(&tdir)?;
            if tconf.vocab_size != config.vocab_size {
                bail!(
                    "--distill-from {t}: vocabulary {} differs from the student's {}",
                    tconf.vocab_size,
                    config.vocab_size
                );
            }
            Some(
                shear_model::load_llama::<B>(&tdir, device)
                    .with_context(|| format!("cannot load teacher {}", tdir.display()))?,
            )
        }
        None => None,
    };
    let ckpt_dir = args.out.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir)
        .with_context(|| format!("cannot create {}", ckpt_dir.display()))?;

    let resume_from = if args.resume {
        latest_checkpoint(&ckpt_dir)
    } else {
        None
    };
    let bar = super::spinner(format!("loading {}", dir.display()));
    let initial: Llama<AD<B>> = match args.init {
        Init::Weights => shear_model::load_llama::<AD<B>>(&dir, device)
            .with_context(|| format!("cannot load model {}", dir.display()))?,
        Init::Random => {
            <AD<B> as burn::tensor::backend::Backend>::seed(device, args.seed);
            Llama::from_source(&config, &mut RandomInit::default(), device)?
        }
    };
    bar.finish_and_clear();
    if let Some(d) = dynamic.as_mut() {
        args.feed.fill_source_reference(d, &initial.valid());
    }
    let mut trainer = match &resume_from {
        Some(ckpt) => {
            let (t, loader) = Trainer::<AD<B>>::load(ckpt, device)
                .with_context(|| format!("cannot resume from {}", ckpt.display()))?;
            if let (Some(d), Some(state), Source::Prepared(data)) =
                (dynamic.as_mut(), loader, &source)
            {
                d.loader = DynamicLoader::restore(data.shards(Split::Train)?, args.batch, state)?;
            }
            eprintln!("resuming from {} (step {})", ckpt.display(), t.step);
            t
        }
        None => {
            let mut cfg = TrainConfig::new(args.steps);
            cfg.lr = args.lr;
            if let Some(w) = args.warmup {
                cfg.warmup_steps = w;
            }
            cfg.min_lr_ratio = args.min_lr_ratio;
            cfg.weight_decay = args.weight_decay;
            cfg.max_grad_norm = args.max_grad_norm;
            cfg.grad_accum = args.grad_accum;
            cfg.distill = teacher.as_ref().map(|_| Distill {
                weight: args.distill_weight,
                temperature: args.distill_temperature,
            });
            Trainer::new(initial, cfg)
        }
    };

    let log_path = args.out.join("train_log.jsonl");
    let mut log = open_log(&log_path, resume_from.is_some())?;
    let loader_path = args.out.join("loader_state.json");
    let steps = trainer.cfg.steps;
    let until = args.stop_after.unwrap_or(steps).min(steps);
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_position(trainer.step as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template"),
    );
    let mut stream = StreamData::<AD<B>> {
        source: &source,
        seed: args.seed,
        batch: args.batch,
        device: device.clone(),
    };
    let data: &mut dyn TrainData<AD<B>> = match dynamic.as_mut() {
        Some(d) => d,
        None => &mut stream,
    };
    let mut write_err: Option<anyhow::Error> = None;
    let mut last_state = None;
    train(&mut trainer, data, teacher.as_ref(), until, |s, t| {
        if let Err(e) = write_jsonl(&mut log, s) {
            write_err.get_or_insert(e);
        }
        let stopping = t.step == until && until < steps;
        if (args.save_every > 0 && t.step % args.save_every == 0 && t.step < steps) || stopping {
            if let Err(e) = t.save(&ckpt_dir, s.loader_state.as_ref()) {
                write_err.get_or_insert(e.into());
            }
        }
        report(&bar, s.step, s.domain_update.as_ref(), &s.loader_events);
        bar.set_message(format!("loss {:.3} lr {:.2e}", s.loss, s.lr));
        bar.inc(1);
        last_state = s.loader_state.clone();
    });
    bar.finish_and_clear();
    log.flush()?;
    if let Some(e) = write_err {
        return Err(e.context(format!("cannot write to {}", args.out.display())));
    }
    if let Some(st) = &last_state {
        save_loader_state(&loader_path, st)?;
    }
    if trainer.step < steps {
        println!(
            "stopped after step {} of {steps}; continue with --resume (checkpoint in {})",
            trainer.step,
            ckpt_dir.display()
        );
        return Ok(());
    }
    let model_dir = args.out.join("model");
    shear_model::save_llama(&trainer.inference_model(), &model_dir, dtype)?;
    copy_tokenizer_files(&dir, &model_dir)?;
    println!("trained {steps} steps -> {}", model_dir.display());
    Ok(())
}
