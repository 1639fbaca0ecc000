//! `shear train`: arguments -> a [`TrainJob`]; the work is `shear_pipeline::train::train`.

use burn::tensor::backend::Backend;
use shear_pipeline::train::{train, Init, TrainSettings};
use shear_train::trainer::{Distill, TrainConfig};

use super::data_args::DataArgs;
use super::run_args::RunArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id: a Hugging Face LLaMA checkpoint (with `--init random`, only its
    /// config.json is used).
    pub model: String,
    #[command(flatten)]
    pub feed: DataArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Micro-batches per optimizer step (global batch = batch × grad-accum).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate (docs/algorithm.md §7: 1e-4).
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
    /// `weights` (the checkpoint's) or `random` (from its config: a from-scratch baseline).
    #[arg(long, value_enum, default_value_t = InitArg::Weights)]
    pub init: InitArg,
    /// Distil from this teacher (directory or hub id): loss = CE + w · T² · KL.
    #[arg(long)]
    pub distill_from: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub distill_weight: f64,
    #[arg(long, default_value_t = 1.0)]
    pub distill_temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Matrix products in bf16 with f32 weights, norms, loss, gradients and optimizer (mixed
    /// precision, for GPUs; on the CPU backend bf16 is slower than f32).
    #[arg(long, default_value = "f32")]
    pub precision: shear_model::precision::Compute,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InitArg {
    Weights,
    Random,
}

/// Argument ids whose checkpoint setting has another name.
const RENAMED: &[(&str, &str)] = &[
    ("distill_weight", "distill"),
    ("distill_temperature", "distill"),
];

pub fn run<B: Backend>(
    args: Args,
    explicit: Vec<String>,
    offline: bool,
    kind: crate::backend::DeviceKind,
    device: &B::Device,
) -> anyhow::Result<()> {
    let dir = super::resolve(&args.model, offline)?;
    let distill_from = match &args.distill_from {
        Some(t) => Some(super::resolve(t, offline)?),
        None => None,
    };
    let config = TrainConfig::new(args.steps)
        .with_lr(args.lr)
        .with_warmup(args.warmup)
        .with_min_lr_ratio(args.min_lr_ratio)
        .with_weight_decay(args.weight_decay)
        .with_max_grad_norm(args.max_grad_norm)
        .with_grad_accum(args.grad_accum)
        .with_seed(args.seed)
        .with_distill(distill_from.as_ref().map(|_| Distill {
            weight: args.distill_weight,
            temperature: args.distill_temperature,
        }));
    if args.batch == 0 {
        anyhow::bail!("--batch must be positive");
    }
    let settings = TrainSettings {
        model: dir,
        init: match args.init {
            InitArg::Weights => Init::Weights,
            InitArg::Random => Init::Random,
        },
        config,
        batch: args.batch,
        data: args.feed.options(offline)?,
        distill_from,
        precision: args.precision,
    };
    let job = args.run.job(settings, explicit, RENAMED, kind)?;
    let mut progress = crate::progress::Progress::default();
    let outcome = train::<B>(&job, device, &mut progress)?;
    drop(progress);
    match outcome.model_dir {
        Some(dir) => println!("trained {} steps -> {}", outcome.total, dir.display()),
        None => println!("{}", args.run.stopped(outcome.steps, outcome.total)),
    }
    Ok(())
}
