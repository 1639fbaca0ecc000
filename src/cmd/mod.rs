pub mod bench;
pub mod compare;
pub mod convert;
pub mod data;
pub mod eval;
pub mod feed;
pub mod generate;
pub mod inspect;
pub mod materialize;
pub mod prune;
pub mod run;
pub mod train;

use std::path::PathBuf;

use anyhow::Context;

/// Resolves a MODEL argument (directory or hub id) to a local directory.
pub fn resolve(model: &str, offline: bool) -> anyhow::Result<PathBuf> {
    shear_model::hub::resolve_model(model, offline).context("cannot open model")
}

/// A spinner on stderr while something slow happens (hidden when stderr is not a terminal).
pub fn spinner(msg: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Prints a line above a progress bar (or plainly on stderr when the bar is hidden, e.g. when
/// stderr is not a terminal).
pub fn say(bar: &indicatif::ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}
