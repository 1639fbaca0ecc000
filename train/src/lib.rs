//! shear-train: the loops. Pruning (masks + Lagrangian, docs/algorithm.md §4) and continued
//! pre-training (§7) are two [`driver::Stepper`]s driven by one loop skeleton
//! ([`driver::drive`]) over one batch-source trait ([`source::BatchSource`]), with one checkpoint
//! module ([`checkpoint`]); plus per-domain evaluation, the multiple-choice scorer, and the
//! throughput benchmark that times the real steps.

#![forbid(unsafe_code)]

pub mod bench;
pub mod checkpoint;
pub mod distill;
pub mod driver;
pub mod dynamic;
pub mod error;
pub mod eval;
pub mod execution;
pub mod grads;
pub mod lagrangian;
pub mod memory;
pub mod observer;
pub mod optim;
pub mod peers;
pub mod prune;
pub mod recompute;
pub mod schedule;
pub mod source;
pub mod trainer;
pub mod workers;
pub mod zero;

pub use error::{Result, TrainError};
pub use observer::{Event, Observer, Silent};
