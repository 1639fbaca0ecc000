//! `shear`: the command-line program. Arguments become typed jobs, progress is rendered and
//! results printed; the work is done by the `shear-pipeline` library and the crates below it.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod backend;
mod cmd;
mod progress;
mod signals;

/// mimalloc keeps freed pages for reuse: every step allocates the same large intermediates,
/// which the system allocator returns to the kernel and faults in (zeroed) again (README,
/// "Benchmarks").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e` of mimalloc v2's
/// `mimalloc.h`, which libmimalloc-sys 0.1.49 builds but does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hands freed memory back to the OS (unless `MIMALLOC_PURGE_DELAY` says otherwise): by
/// default mimalloc purges it after 10 ms, and a training step that frees and re-allocates the
/// same buffers then spends ~10 % of its time in page faults zeroing fresh pages (measured with
/// `perf stat -e page-faults`: 25 000 → 600 per benchmark). The process keeps its peak memory,
/// like PyTorch's caching allocator does on a GPU.
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide allocator option; mimalloc reads it on each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

use backend::DeviceKind;

/// Prints the `log` records of the libraries below (burn-collective's peers and coordinator) on
/// stderr, at the level `SHEAR_LOG` names (`error`, `warn`, `info`, `debug`, `trace`).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

fn init_log() {
    static LOGGER: StderrLog = StderrLog;
    if let Some(level) = std::env::var("SHEAR_LOG")
        .ok()
        .and_then(|v| v.parse::<log::LevelFilter>().ok())
    {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(level);
        }
    }
}

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
    /// Re-save a model as a Hugging Face checkpoint in another dtype, or as a llama.cpp GGUF file.
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
    /// Memory per device of a pruning or training run, and the cards it fits.
    Plan(cmd::plan::Args),
}

impl Command {
    /// Fills in `--workers` where the command has it and it was not given: `n` shared by the
    /// data-parallel peers of this machine.
    fn default_workers(&mut self, n: usize) {
        let (slot, devices) = match self {
            Command::Prune(a) => (&mut a.run.exec.workers, a.run.exec.peers.devices),
            Command::Train(a) => (&mut a.run.exec.workers, a.run.exec.peers.devices),
            Command::Run(a) => (&mut a.exec.workers, a.exec.peers.devices),
            Command::Bench(a) => (&mut a.workers, None),
            _ => return,
        };
        slot.get_or_insert((n / devices.unwrap_or(1)).max(1));
    }
}

/// The ids of the subcommand's arguments that were given on the command line (a resumed run
/// refuses those that conflict with its checkpoint).
fn explicit_args(matches: &clap::ArgMatches) -> Vec<String> {
    let Some((_, sub)) = matches.subcommand() else {
        return vec![];
    };
    sub.ids()
        .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// The command line, with negative numbers taken as values everywhere (`--lr -1` is then refused
/// by the option's own check, naming it, instead of clap's generic "unexpected argument").
fn command_line() -> clap::Command {
    fn negatives(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        names
            .iter()
            .fold(cmd.allow_negative_numbers(true), |cmd, name| {
                cmd.mut_subcommand(name, negatives)
            })
    }
    negatives(Cli::command())
}

/// Help and version go to stdout as clap prints them; a usage error is one line on stderr (clap's
/// first line, which names the argument and value) and exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    // clap's message runs up to the first blank line (a missing argument is named on the line
    // after "required arguments were not provided:"); usage and tips follow it.
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    eprintln!("{} (see --help)", message.join(" "));
    ExitCode::from(2)
}

/// An error and its causes on one line: a cause already quoted by the message before it (as
/// `path: {source}` messages do) is not repeated, and line breaks inside a message (a TOML
/// parser's excerpt) become single spaces.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    keep_freed_pages();
    init_log();
    signals::quiet_echo_panics();
    let matches = match command_line().try_get_matches() {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    let explicit = explicit_args(&matches);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let offline = cli.offline || shear_model::hub::offline_from_env();
    let mut command = cli.command;
    command.default_workers(backend::default_workers(cli.device));
    let resume = match &command {
        Command::Run(_) => "run the same command again to continue",
        _ => "continue with --resume",
    };
    let result = match command {
        Command::Inspect(args) => cmd::inspect::run(args, offline),
        // The CPU backend's fused LM-head loss keeps no logits.
        Command::Plan(args) => cmd::plan::run(args, offline, cli.device == DeviceKind::Cpu),
        Command::Generate(args) => backend::dispatch!(
            cli.device,
            |B, device| cmd::generate::run::<B>(args, offline, &device)
        ),
        Command::Convert(args) => backend::dispatch!(
            cli.device,
            |B, device| cmd::convert::run::<B>(args, offline, &device)
        ),
        Command::Prune(args) => backend::dispatch!(cli.device, |B, device| cmd::prune::run::<B>(
            args, explicit, offline, cli.device, &device
        )),
        Command::Train(args) => backend::dispatch!(cli.device, |B, device| cmd::train::run::<B>(
            args, explicit, offline, cli.device, &device
        )),
        Command::Run(args) => {
            backend::dispatch!(cli.device, |B, device| cmd::run::run::<B>(
                args, offline, cli.device, &device
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
            backend::dispatch!(cli.device, |B, device| cmd::bench::run::<B>(
                args,
                cli.device == DeviceKind::Cpu,
                &device
            ))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<shear_pipeline::PipelineError>() {
            // Not a failure: the run can continue (--resume, or `shear run` again).
            Some(p) if p.is_interrupted() => {
                eprintln!("{e:#}; {resume}");
                ExitCode::from(signals::RESUMABLE)
            }
            _ => {
                eprintln!("error: {}", one_line(&e));
                ExitCode::FAILURE
            }
        },
    }
}
