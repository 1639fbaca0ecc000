//! `shear`: the command-line program. Argument parsing, progress and printing only; the work is
//! done by the `shear-model`, `shear-data` and `shear-train` crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backend;
mod cmd;
mod embedded;

use backend::DeviceKind;

#[derive(Parser, Debug)]
#[command(
    name = "shear",
    version,
    about = "Sheared-LLaMA structured pruning on burn"
)]
struct Cli {
    /// Compute device (only backends compiled in are available).
    #[arg(long, global = true, value_enum, default_value_t = DeviceKind::Cpu)]
    device: DeviceKind,
    /// Only use models already in the Hugging Face cache (also: HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    offline: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a model's config and parameter counts by component.
    Inspect(cmd::inspect::Args),
    /// Generate text (or token ids) from a prompt.
    Generate(cmd::generate::Args),
    /// Re-save a model as a Hugging Face checkpoint in another dtype.
    Convert(cmd::convert::Args),
    /// Prune a model to a target shape (hard-concrete masks + Lagrangian), then materialize it.
    Prune(cmd::prune::Args),
    /// Continue pre-training a model (or train one from scratch), with dynamic batch loading.
    Train(cmd::train::Args),
    /// The whole pipeline from a recipe: data prepare, prune, continued pre-training, eval.
    Run(cmd::run::Args),
    /// Build the smaller dense model from a source and masks.
    Materialize(cmd::materialize::Args),
    /// Corpus → token shards (`data prepare`), data throughput (`data bench`).
    #[command(subcommand)]
    Data(cmd::data::Command),
    /// Per-domain loss and perplexity of a model on prepared data.
    Eval(cmd::eval::Args),
    /// Measure forward / forward+backward / training-step throughput of a LLaMA shape.
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let offline = cli.offline || shear_model::hub::offline_from_env();
    let result = match cli.command {
        Command::Inspect(args) => cmd::inspect::run(args, offline),
        Command::Generate(args) => backend::dispatch!(
            cli.device,
            |B, device| cmd::generate::run::<B>(args, offline, &device)
        ),
        Command::Convert(args) => backend::dispatch!(
            cli.device,
            |B, device| cmd::convert::run::<B>(args, offline, &device)
        ),
        Command::Prune(args) => backend::dispatch!(cli.device, |B, device| cmd::prune::run::<B>(
            args, offline, &device
        )),
        Command::Train(args) => backend::dispatch!(cli.device, |B, device| cmd::train::run::<B>(
            args, offline, &device
        )),
        Command::Run(args) => {
            backend::dispatch!(cli.device, |B, device| cmd::run::run::<B>(
                args, offline, &device
            ))
        }
        Command::Materialize(args) => backend::dispatch!(cli.device, |B, device| {
            cmd::materialize::run::<B>(args, offline, &device)
        }),
        Command::Data(c) => {
            backend::dispatch!(cli.device, |B, device| cmd::data::run::<B>(
                c, offline, &device
            ))
        }
        Command::Eval(args) => backend::dispatch!(cli.device, |B, device| cmd::eval::run::<B>(
            args, offline, &device
        )),
        Command::Bench(args) => {
            backend::dispatch!(cli.device, |B, device| cmd::bench::run::<B>(args, &device))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
