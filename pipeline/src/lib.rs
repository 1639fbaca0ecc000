//! shear-pipeline: shear's pipeline as a library. Each stage is a function of a typed job —
//! [`prune::prune`] ([`prune::PruneJob`]), [`train::train`] ([`train::TrainJob`]),
//! [`eval::evaluate`] ([`eval::EvalJob`]), [`materialize::materialize_masks`] — and
//! [`run::run`] drives a whole recipe ([`recipe::Recipe`]) through them, writing `run.json`
//! ([`summary::RunSummary`]) and the report. Progress reaches the caller through
//! [`shear_train::Observer`]; the `shear` binary renders it with a progress bar.
//!
//! ```no_run
//! use shear_pipeline::{feed::DataOptions, prune::{prune, PruneJob}};
//! use shear_train::prune::PruneConfig;
//! # fn main() -> shear_pipeline::Result<()> {
//! type B = burn::backend::Flex;
//! let target = "layers=3,hidden=64,heads=2,intermediate=176".parse().unwrap();
//! let job = PruneJob::new("assets/tiny", PruneConfig::new(target, 40), DataOptions::new("data/"), "out/");
//! let outcome = prune::<B>(&job, &Default::default(), &mut shear_train::Silent)?;
//! # Ok(()) }
//! ```

pub mod compare;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod feed;
pub mod materialize;
pub mod prune;
pub mod recipe;
mod reference;
pub mod report;
pub mod run;
pub mod stage;
pub mod summary;
pub mod train;

pub use error::{Context, PipelineError, Result};
pub use shear_train::{Event, Observer, Silent};
pub use stage::Resume;
