#[cfg(test)]
mod agree;
pub mod bench;
pub mod convert;
pub mod data;
pub mod eval;
pub mod exec_args;
pub mod generate;
pub mod inspect;
pub mod materialize;
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
/// argument ids, which are the settings' field names) must agree with the checkpoint's; without
/// a checkpoint the run starts from step 0 with a warning.
pub fn resume(resume: bool, explicit: Vec<String>) -> Resume {
    match resume {
        false => Resume::Fresh,
        true => Resume::Newest {
            explicit,
            warn_if_none: true,
        },
    }
}

/// The data options with `--reference-model` resolved to a local directory (it may be a hub
/// id).
pub fn data_options(
    mut data: shear_pipeline::feed::DataOptions,
    offline: bool,
) -> anyhow::Result<shear_pipeline::feed::DataOptions> {
    if let Some(m) = &data.reference_model {
        data.reference_model = Some(resolve(&m.to_string_lossy(), offline)?);
    }
    Ok(data)
}

/// A spinner on stderr while something slow happens (hidden when stderr is not a terminal).
pub fn spinner(msg: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
