//! `shear prune`: arguments -> a [`PruneJob`]; the work is `shear_pipeline::prune::prune`. The
//! flags are the library's settings ([`PruneHyper`], [`DataOptions`]): their names, defaults and
//! help are defined there once.

use burn::tensor::backend::Backend;
use shear_model::precision::Compute;
use shear_model::{LlamaConfig, TargetSpec};
use shear_pipeline::feed::DataOptions;
use shear_pipeline::prune::{prune, shape_line, PruneSettings};
use shear_train::prune::{PruneConfig, PruneHyper};

use super::run_args::RunArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model directory or hub id (owner/name).
    #[arg(value_name = "MODEL")]
    pub source: String,
    /// Target shape, e.g. `layers=24,hidden=2048,heads=16,kv_heads=16,intermediate=5504`
    /// (`kv_heads` defaults to `heads`), or a preset: sheared-1.3b, sheared-2.7b or 370m (for a
    /// Llama-2-7B-shaped source).
    #[arg(long, visible_alias = "preset")]
    pub target: TargetSpec,
    #[command(flatten)]
    pub hyper: PruneHyper,
    #[command(flatten)]
    pub data: DataOptions,
    #[command(flatten)]
    pub run: RunArgs,
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
    let source = super::resolve(&args.source, offline)?;
    let config = LlamaConfig::from_file(&source)?;
    let target = args
        .target
        .resolve(&config)
        .map_err(|e| anyhow::anyhow!("--target {}: {e}", args.target))?;
    let settings = PruneSettings {
        source,
        config: PruneConfig::new(target, args.hyper),
        data: super::data_options(args.data, offline)?,
        precision: args.precision,
    };
    let job = args.run.job(settings, explicit, kind)?;
    let mut progress = crate::progress::Progress::default();
    let outcome = prune::<B>(&job, device, &mut progress)?;
    drop(progress);
    match outcome.model_dir {
        Some(dir) => {
            let c = LlamaConfig::from_file(&dir)?;
            println!(
                "pruned to {} ({} parameters) -> {}",
                shape_line(&c),
                c.param_counts().total(),
                dir.display()
            )
        }
        None => println!("{}", args.run.stopped(outcome.steps, outcome.total)),
    }
    Ok(())
}
