//! How a stage's loop runs around its step, as opposed to what it computes: checkpoint cadence
//! and retention, and how many non-finite steps it tolerates (docs/algorithm.md §9). These are
//! not recorded as a run's settings (they may change on resume). Each is defined once here:
//! with its default and its check, it is a key of a recipe (`[prune]`/`[train]`, `[run]`), a
//! flag of `shear prune`/`shear train` (the `clap` feature) and a field of a [`crate::stage::Job`].

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

/// Checkpoints of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct Checkpointing {
    /// Write a checkpoint (OUT/checkpoints/step-N: everything needed to resume exactly) every
    /// this many steps (0: only when stopping early).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Checkpointing::default().save_every))]
    pub save_every: usize,
    /// Keep the newest K checkpoints; older ones are removed once a newer one is complete (at
    /// least 1; may change on resume).
    #[cfg_attr(
        feature = "clap",
        arg(long, value_name = "K", default_value_t = Checkpointing::default().keep_checkpoints)
    )]
    pub keep_checkpoints: usize,
}

impl Default for Checkpointing {
    fn default() -> Self {
        Checkpointing {
            save_every: 400,
            keep_checkpoints: 2,
        }
    }
}

impl Checkpointing {
    pub fn validate(&self) -> Result<()> {
        if self.keep_checkpoints == 0 {
            return invalid!(
                "keep_checkpoints 0: must be at least 1 (the checkpoint to resume from)"
            );
        }
        Ok(())
    }
}

/// The non-finite guard of a stage's loop (docs/algorithm.md §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct Guard {
    /// Steps whose loss or gradient norm is not finite are skipped (no update; recorded with
    /// their rows in OUT/skipped.jsonl); the run stops once more than this many were.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = Guard::default().max_skipped))]
    pub max_skipped: usize,
}

impl Default for Guard {
    fn default() -> Self {
        Guard { max_skipped: 10 }
    }
}
