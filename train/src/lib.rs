//! shear-train: the pruning and continued pre-training loops, schedules, checkpoints and
//! evaluation; for now the throughput benchmark of a training step.

pub mod bench;
