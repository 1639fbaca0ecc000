pub mod bench;
pub mod convert;
pub mod data;
pub mod data_args;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod materialize;
pub mod peer_args;
pub mod plan;
pub mod prune;
pub mod run;
pub mod run_args;
pub mod train;

use std::path::PathBuf;

use anyhow::Context;
use shear_pipeline::Resume;

/// Resolves a MODEL argument (directory or hub id) to a local directory.
pub fn resolve(model: &str, offline: bool) -> anyhow::Result<PathBuf> {
    shear_model::hub::resolve_model(model, offline).context("cannot open model")
}

/// `--resume` as the pipeline takes it: the options given on the command line (`explicit`
/// argument ids, renamed to their checkpoint setting by `renamed`) must agree with the
/// checkpoint's; without a checkpoint the run starts from step 0 with a warning.
pub fn resume(resume: bool, explicit: Vec<String>, renamed: &[(&str, &str)]) -> Resume {
    if !resume {
        return Resume::Fresh;
    }
    let explicit = explicit
        .into_iter()
        .map(|id| match renamed.iter().find(|(a, _)| *a == id) {
            Some((_, key)) => key.to_string(),
            None => id,
        })
        .collect();
    Resume::Newest {
        explicit,
        warn_if_none: true,
    }
}

/// A spinner on stderr while something slow happens (hidden when stderr is not a terminal).
pub fn spinner(msg: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
