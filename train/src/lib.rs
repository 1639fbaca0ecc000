//! shear-train: the pruning loop with its Lagrangian (SPEC §4), schedules, gradient
//! bookkeeping, and the throughput benchmark.

pub mod bench;
pub mod dynamic;
pub mod eval;
pub mod grads;
pub mod lagrangian;
pub mod prune;
pub mod recipe;
pub mod report;
pub mod schedule;
pub mod trainer;
