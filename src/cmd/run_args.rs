//! The run-control options shared by `shear prune` and `shear train`: where the run goes, how
//! often it checkpoints, resuming, stopping early, and the output dtype.

use std::path::PathBuf;

use shear_pipeline::stage::Job;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Output directory (the model, the step log, checkpoints/).
    #[arg(long)]
    pub out: PathBuf,
    /// Write a checkpoint (OUT/checkpoints/step-N: everything needed to resume exactly) every
    /// this many steps (0: only when stopping early).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Keep the newest K checkpoints; older ones are removed once a newer one is complete (at
    /// least 1; may change on --resume).
    #[arg(long, value_name = "K", default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Continue from the newest checkpoint in OUT/checkpoints, with its settings.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps in total (the schedules still follow --steps); a checkpoint is
    /// written so that --resume continues.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Storage dtype of the model written at the end: f32, bf16 or f16 (default: the input
    /// model's; f32 for random weights).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Workers per step: the rows of every batch are split over this many copies of the model
    /// and their gradients summed (default: one per core on the CPU, 1 on a GPU).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub peers: super::peer_args::PeerArgs,
    /// Keep only the blocks' inputs for the backward pass and recompute each block there: less
    /// memory (docs/algorithm.md §13.2), one more forward pass per step.
    #[arg(long)]
    pub recompute: bool,
    /// Steps whose loss or gradient norm is not finite are skipped (no update; recorded with
    /// their rows in OUT/skipped.jsonl); the run stops once more than this many were.
    #[arg(long, default_value_t = 10)]
    pub max_skipped: usize,
}

impl RunArgs {
    /// `settings` as a job in OUT with these options; `explicit` are the argument ids given on
    /// the command line, `renamed` maps ids to the settings they set.
    pub fn job<S>(
        &self,
        settings: S,
        explicit: Vec<String>,
        renamed: &[(&str, &str)],
        kind: crate::backend::DeviceKind,
    ) -> anyhow::Result<Job<S>> {
        if self.stop_after == Some(0) {
            anyhow::bail!("--stop-after 0: must be positive (a run stops after a step)");
        }
        let dtype = self
            .dtype
            .as_deref()
            .map(|d| {
                d.parse::<shear_model::Dtype>()
                    .map_err(|e| anyhow::anyhow!("--dtype {d}: {e}"))
            })
            .transpose()?;
        anyhow::ensure!(
            self.keep_checkpoints > 0,
            "--keep-checkpoints 0: must be at least 1 (the checkpoint to resume from)"
        );
        Ok(Job {
            settings,
            out: self.out.clone(),
            save_every: self.save_every,
            keep_checkpoints: self.keep_checkpoints,
            stop_after: self.stop_after,
            resume: super::resume(self.resume, explicit, renamed),
            dtype,
            workers: self.workers.unwrap_or(1),
            topology: self.peers.topology(kind)?,
            recompute: self.recompute,
            stop: Some(crate::signals::stop_flag()?),
            max_skipped: self.max_skipped,
        })
    }

    /// The line printed when the run stopped early.
    pub fn stopped(&self, steps: usize, total: usize) -> String {
        format!(
            "stopped after step {steps} of {total}; continue with --resume (checkpoint in {})",
            self.out.join("checkpoints").display()
        )
    }
}
