//! The run-control options shared by `shear prune` and `shear train`: where the run goes, its
//! checkpoints, resuming, stopping early, the output dtype, the non-finite guard, and how the
//! steps execute. The checkpoint and guard flags are the pipeline's own settings types.

use std::path::PathBuf;

use shear_model::Dtype;
use shear_pipeline::controls::{Checkpointing, Guard};
use shear_pipeline::stage::Job;

use super::exec_args::ExecArgs;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Output directory (the model, the step log, checkpoints/).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub checkpoints: Checkpointing,
    /// Continue from the newest checkpoint in OUT/checkpoints, with its settings.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps in total (the schedules still follow --steps); a checkpoint is
    /// written so that --resume continues.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub stop_after: Option<usize>,
    /// Storage dtype of the model written at the end: f32, bf16 or f16 (default: the input
    /// model's; f32 for random weights).
    #[arg(long)]
    pub dtype: Option<Dtype>,
    #[command(flatten)]
    pub guard: Guard,
    #[command(flatten)]
    pub exec: ExecArgs,
}

impl RunArgs {
    /// `settings` as a job in OUT with these options; `explicit` are the argument ids given on
    /// the command line (clap's ids are the settings' field names).
    pub fn job<S>(
        &self,
        settings: S,
        explicit: Vec<String>,
        kind: crate::backend::DeviceKind,
    ) -> anyhow::Result<Job<S>> {
        Ok(Job {
            checkpoints: self.checkpoints,
            stop_after: self.stop_after,
            resume: super::resume(self.resume, explicit),
            dtype: self.dtype,
            exec: self.exec.execution(),
            topology: self.exec.peers.topology(kind)?,
            stop: Some(crate::signals::stop_flag()?),
            guard: self.guard,
            on_lost: Some(crate::signals::peer_lost),
            ..Job::new(settings, &self.out)
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
