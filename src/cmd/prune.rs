//! `shear prune`: arguments -> a [`PruneJob`]; the work is `shear_pipeline::prune::prune`. The
//! flags are the library's settings ([`PruneHyper`], [`DataOptions`]): their names, defaults and
//! help are defined there once.

use burn::tensor::backend::Backend;
use clap::ValueEnum;
use shear_model::precision::Compute;
use shear_model::{LlamaConfig, TargetShape, TargetSpec};
use shear_pipeline::feed::DataOptions;
use shear_pipeline::importance::{importance, ImportanceJob, PruneMethod};
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
    /// `learned`: masks and weights trained under the Lagrangian (the paper's method);
    /// `importance`: one-shot scores from calibration batches of the prune data, then the cut
    /// to the same target (Minitron's; seconds, docs/algorithm.md §15); `obs`: the same
    /// calibration, heads and FFN channels ranked by structured Optimal Brain Surgeon and the
    /// output projections refitted to the cut (§15.1).
    #[arg(long, value_enum, default_value_t = PruneMethod::default())]
    pub method: PruneMethod,
    /// With `--method importance|obs`: calibration batches of `--batch` sequences.
    #[arg(long, default_value_t = 32)]
    pub calibration_batches: usize,
    /// Distil from this teacher (directory or hub id; usually the source itself) while pruning:
    /// loss = CE + w · T² · KL (--distill-weight, --distill-temperature).
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
    let source = super::resolve(&args.source, offline)?;
    let config = LlamaConfig::from_file(&source)?;
    let target = args
        .target
        .resolve(&config)
        .map_err(|e| anyhow::anyhow!("--target {}: {e}", args.target))?;
    if args.method.is_one_shot() {
        return importance_run::<B>(args, target, offline, device);
    }
    let distill_from = match &args.distill_from {
        Some(t) => Some(super::resolve(t, offline)?),
        None => None,
    };
    let settings = PruneSettings {
        source,
        config: PruneConfig::new(target, args.hyper),
        data: super::data_options(args.data, offline)?,
        distill_from,
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

/// `--method importance|obs`: the one-shot path (no steps, no checkpoints).
fn importance_run<B: Backend>(
    args: Args,
    target: TargetShape,
    offline: bool,
    device: &B::Device,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.run.resume && args.run.stop_after.is_none(),
        "--method {} runs in seconds and has no steps: --resume and --stop-after do not apply",
        args.method
            .to_possible_value()
            .expect("a named value")
            .get_name()
    );
    anyhow::ensure!(
        args.distill_from.is_none(),
        "--distill-from: --method {} trains nothing (distil in `shear train`)",
        args.method
            .to_possible_value()
            .expect("a named value")
            .get_name()
    );
    let job = ImportanceJob {
        source: super::resolve(&args.source, offline)?,
        target,
        prune: args.hyper.prune,
        data: super::data_options(args.data, offline)?,
        batches: args.calibration_batches,
        batch: args.hyper.batch,
        seed: args.hyper.seed,
        out: args.run.out.clone(),
        dtype: args.run.dtype,
        obs: args.method == PruneMethod::Obs,
    };
    let mut progress = crate::progress::Progress::default();
    let outcome = importance::<B>(&job, device, &mut progress)?;
    drop(progress);
    let c = LlamaConfig::from_file(&outcome.model_dir)?;
    let r = &outcome.report;
    println!(
        "pruned by {} to {} ({} parameters) -> {} ({} calibration tokens in {:.2} s)",
        args.method.label(),
        shape_line(&c),
        c.param_counts().total(),
        outcome.model_dir.display(),
        r.tokens,
        r.seconds
    );
    Ok(())
}
