//! shear-pipeline: shear's pipeline as a library. Each stage is a function of a typed job —
//! [`prune::prune`] ([`prune::PruneJob`]), [`train::train`] ([`train::TrainJob`]),
//! [`eval::evaluate`] ([`eval::EvalJob`]), [`materialize::materialize_masks`],
//! [`export::export_next_to`] (a GGUF file for llama.cpp) — and
//! [`run::run`] drives a whole recipe ([`recipe::Recipe`]) through them, writing `run.json`
//! ([`summary::RunSummary`]) and the report. Progress reaches the caller through
//! [`shear_train::Observer`]; the `shear` binary renders it with a progress bar.
//!
//! ```no_run
//! use shear_pipeline::feed::DataOptions;
//! use shear_pipeline::prune::{prune, PruneSettings};
//! use shear_pipeline::stage::Job;
//! use shear_train::prune::{PruneConfig, PruneHyper};
//! # fn main() -> shear_pipeline::Result<()> {
//! type B = burn::backend::Flex;
//! let target = "layers=3,hidden=64,heads=2,intermediate=176".parse().unwrap();
//! let hyper = PruneHyper { steps: 40, ..PruneHyper::default() };
//! let settings = PruneSettings::new("assets/tiny", PruneConfig::new(target, hyper), DataOptions::new("data/"));
//! let outcome = prune::<B>(&Job::new(settings, "out/"), &Default::default(), &mut shear_train::Silent)?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod compare;
pub mod controls;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod export;
pub mod feed;
pub mod importance;
pub mod materialize;
pub mod out;
mod peers;
pub mod prune;
pub mod recipe;
mod reference;
pub mod report;
pub mod run;
pub mod runner;
pub mod seeds;
pub mod stage;
mod stages;
mod steps;
pub mod summary;
pub mod train;
pub mod watch;

pub use error::{Context, PipelineError, Result};
pub use shear_train::{Event, Observer, Silent};
pub use stage::Resume;
