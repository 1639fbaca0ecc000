//! `shear train`: arguments -> a [`TrainJob`]; the work is `shear_pipeline::train::train`. The
//! flags are the library's settings ([`TrainConfig`], [`DataOptions`]): their names, defaults
//! and help are defined there once.

use burn::tensor::backend::Backend;
use shear_model::precision::Compute;
use shear_pipeline::feed::DataOptions;
use shear_pipeline::train::{train, Init, TrainSettings};
use shear_train::trainer::TrainConfig;

use super::run_args::RunArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory or hub id: a Hugging Face LLaMA checkpoint (with `--init random`, only its
    /// config.json is used).
    pub model: String,
    #[command(flatten)]
    pub config: TrainConfig,
    #[command(flatten)]
    pub data: DataOptions,
    #[command(flatten)]
    pub run: RunArgs,
    /// `weights` (the checkpoint's) or `random` (from its config: a from-scratch baseline).
    #[arg(long, value_enum, default_value_t = Init::default())]
    pub init: Init,
    /// Distil from this teacher (directory or hub id): loss = CE + w · T² · KL
    /// (--distill-weight, --distill-temperature).
    #[arg(long)]
    pub distill_from: Option<String>,
    /// Matrix products in bf16 with f32 weights, norms, loss, gradients and optimizer (mixed
    /// precision, for GPUs; on the CPU backend bf16 is slower than f32).
    #[arg(long, default_value_t = Compute::default())]
    pub precision: Compute,
}

pub fn run<B: Backend>(
    args: Args,
    explicit: Vec<String>,
    offline: bool,
    kind: crate::backend::DeviceKind,
    device: &B::Device,
) -> anyhow::Result<()> {
    let distill_from = match &args.distill_from {
        Some(t) => Some(super::resolve(t, offline)?),
        None => None,
    };
    let settings = TrainSettings {
        model: super::resolve(&args.model, offline)?,
        init: args.init,
        config: args.config,
        data: super::data_options(args.data, offline)?,
        distill_from,
        precision: args.precision,
    };
    let job = args.run.job(settings, explicit, kind)?;
    let mut progress = crate::progress::Progress::default();
    let outcome = train::<B>(&job, device, &mut progress)?;
    drop(progress);
    match outcome.model_dir {
        Some(dir) => println!("trained {} steps -> {}", outcome.total, dir.display()),
        None => println!("{}", args.run.stopped(outcome.steps, outcome.total)),
    }
    Ok(())
}
