//! `shear run [RECIPE]`: the whole pipeline (`shear_pipeline::run::run`) from a recipe, or from
//! the embedded default; prints the summary.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use shear_pipeline::run::{run as run_recipe, RunOptions};
use shear_pipeline::seeds::{run_seeds, SeedsSummary};
use shear_pipeline::summary::RunSummary;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe (TOML). Without one: the embedded default (the tiny source model and the
    /// four-domain corpus of assets/, unpacked into OUT/inputs).
    pub recipe: Option<PathBuf>,
    /// Run directory: data/, prune/, train/, run.json, report.md, charts/.
    #[arg(long)]
    pub out: PathBuf,
    /// Also run the baselines (in OUT/compare): the target shape trained from scratch on the
    /// same number of tokens, and pruning + continued training with a static mixture.
    #[arg(long)]
    pub compare: bool,
    /// Run the whole recipe (with --compare, every arm) once per seed, in OUT/seed-K, moving the
    /// pruning and training seeds by K; OUT/run.json and OUT/report.md then give every figure
    /// as mean and range over the seeds, with the paper's claims judged over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Override a recipe key, e.g. `--set train.steps=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub exec: super::exec_args::ExecArgs,
}

pub fn run<B: Backend>(
    args: Args,
    offline: bool,
    kind: crate::backend::DeviceKind,
    device: &B::Device,
) -> anyhow::Result<()> {
    let recipe = match &args.recipe {
        Some(p) => p.clone(),
        None => {
            let path = shear_pipeline::embedded::unpack(&args.out.join("inputs"))?;
            eprintln!("recipe: the embedded default ({})", path.display());
            path
        }
    };
    let opts = RunOptions {
        out: args.out.clone(),
        compare: args.compare,
        overrides: args.set,
        offline,
        exec: args.exec.execution(),
        devices: args.exec.peers.devices,
        physical: crate::backend::physical_devices(kind),
        nodes: args.exec.peers.nodes()?,
        stop: Some(crate::signals::stop_flag()?),
        on_lost: Some(crate::signals::peer_lost),
    };
    let mut progress = crate::progress::Progress::default();
    if args.seeds > 1 {
        let summary = run_seeds::<B>(&recipe, &opts, args.seeds as usize, device, &mut progress)?;
        drop(progress);
        print_seeds(&summary);
        println!("report: {}", args.out.join("report.md").display());
        println!(
            "-> {} (run.json, seed-0 .. seed-{})",
            args.out.display(),
            args.seeds - 1
        );
        return Ok(());
    }
    let summary = run_recipe::<B>(&recipe, &opts, device, &mut progress)?;
    drop(progress);
    print_summary(&summary);
    println!("report: {}", args.out.join("report.md").display());
    println!(
        "-> {} (run.json, {})",
        args.out.display(),
        summary.final_model.display()
    );
    Ok(())
}

fn print_summary(run: &RunSummary) {
    println!("{:<8} {:>14} {:>10}", "model", "parameters", "mean loss");
    let m = &run.metrics;
    let mut rows = vec![("source", &m.source), ("pruned", &m.pruned)];
    if let Some(f) = &m.final_ {
        rows.push(("final", f));
    }
    if let Some(c) = &run.compare {
        rows.push(("scratch", &c.scratch));
        rows.push(("static", &c.static_));
    }
    for (name, x) in rows {
        println!("{name:<8} {:>14} {:>10.4}", x.params, x.mean_loss());
    }
}

fn print_seeds(sum: &SeedsSummary) {
    println!(
        "{:<8} {:>26}   (mean [min, max] over {} seeds)",
        "arm",
        "mean loss",
        sum.runs.len()
    );
    for a in &sum.arms {
        let m = &a.mean_loss;
        println!("{:<8} {:>8.4} [{:.4}, {:.4}]", a.arm, m.mean, m.min, m.max);
    }
    for v in &sum.verdicts {
        let holds = if v.holds { "holds" } else { "does not hold" };
        println!("{}: {holds} ({})", v.claim, v.detail);
    }
}
