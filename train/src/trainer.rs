//! Continued pre-training (docs/algorithm.md §7): AdamW (β 0.9/0.95, ε 1e-8), warm-up + cosine to
//! a floor, global-norm clipping, gradient accumulation, and optional knowledge distillation
//! from a teacher. The loop around the step is the shared one ([`crate::driver`]).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use serde::{Deserialize, Serialize};
use shear_data::UpdateRecord;
use shear_io::Stepped;
use shear_model::distill_loss::Distillation;
use shear_model::{Llama, LlamaConfig, RandomInit};

use crate::checkpoint::{load_module, load_record, save_module, save_record};
use crate::distill::{distilled_head_loss, Teacher};
use crate::driver::{Position, Stepper};
use crate::error::TrainError;
use crate::execution::Execution;
use crate::grads::clip_global_norm;
use crate::grads::{self, Layout, Reduce};
use crate::optim::adamw;
use crate::peers::Reduced;
use crate::recompute;
use crate::schedule::warmup_cosine;
use crate::source::{DataReport, EvalView};
use crate::workers::{backward, mean_gradients};
use crate::zero::{self, device_of, ZeroStage};

/// Hyper-parameters of continued pre-training (defaults: docs/algorithm.md §7). Each is defined
/// here once: with its default (the `Default` below), its check ([`TrainConfig::validate`]) and
/// its documentation, it is a key of a recipe's `[train]` table, a flag of `shear train` (the
/// `clap` feature) and a setting recorded in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct TrainConfig {
    /// Optimizer steps (the schedule follows them).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().steps))]
    pub steps: usize,
    /// Sequences per micro-batch (the data loader's; a step reads `grad_accum` of them).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().batch))]
    pub batch: usize,
    /// Micro-batches per optimizer step: with `batch` 16, the paper's 256 sequences per step.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().grad_accum))]
    pub grad_accum: usize,
    /// Peak learning rate.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().lr))]
    pub lr: f64,
    /// Warm-up steps (default: 3 % of the steps).
    #[cfg_attr(feature = "clap", arg(long))]
    pub warmup: Option<usize>,
    /// The cosine ends at `lr` times this.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().min_lr_ratio))]
    pub min_lr_ratio: f64,
    /// AdamW's decoupled weight decay.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().weight_decay))]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().max_grad_norm))]
    pub max_grad_norm: f64,
    /// Seed of the data order (and of random initial weights).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().seed))]
    pub seed: u64,
    /// With a teacher: loss = CE + `distill_weight` · T² · KL(teacher_T ‖ student_T).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = TrainConfig::default().distill_weight))]
    pub distill_weight: f64,
    /// With a teacher: the temperature T of the softened distributions.
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = TrainConfig::default().distill_temperature)
    )]
    pub distill_temperature: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 48_000,
            batch: 16,
            grad_accum: 16,
            lr: 1e-4,
            warmup: None,
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            seed: 0,
            distill_weight: 1.0,
            distill_temperature: 1.0,
        }
    }
}

impl TrainConfig {
    pub fn warmup_steps(&self) -> usize {
        self.warmup.unwrap_or((self.steps * 3).div_ceil(100))
    }

    /// The distillation term's weight and temperature.
    pub fn distillation(&self) -> Distillation {
        Distillation {
            weight: self.distill_weight,
            temperature: self.distill_temperature,
        }
    }

    /// Checks every setting before any work; the message names the setting.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(TrainError::Invalid(m));
        for (name, v) in [
            ("steps", self.steps),
            ("batch", self.batch),
            ("grad_accum", self.grad_accum),
        ] {
            if v == 0 {
                return bad(format!("{name} 0: must be positive"));
            }
        }
        for (name, v) in [
            ("lr", self.lr),
            ("weight_decay", self.weight_decay),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} {v}: must be a finite number ≥ 0"));
            }
        }
        // Beyond 1 the first update already overshoots (the default is 1e-4); a typo such as
        // 1e30 is refused instead of ending in skipped non-finite steps.
        if self.lr > 1.0 {
            return bad(format!("lr {:?}: must be at most 1", self.lr));
        }
        if let Some(w) = self.warmup.filter(|&w| w > self.steps) {
            return bad(format!("warmup {w}: more than the {} steps", self.steps));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "min_lr_ratio {}: must be between 0 and 1",
                self.min_lr_ratio
            ));
        }
        crate::distill::validate(self.distill_weight, self.distill_temperature)?;
        Ok(())
    }
}

/// One line of the training log (JSONL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainLog {
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    /// Cross-entropy part of the loss (equal to `loss` without distillation).
    pub ce_loss: f64,
    /// With a teacher: the mean `KL(teacher_T ‖ student_T)` over the step's predicting
    /// positions (the loss adds `distill_weight · T²` times it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    pub grad_norm: f64,
    /// Tokens in this step (all micro-batches, all data-parallel peers).
    pub tokens: usize,
    /// Each data-parallel peer's tokens in this step (absent in a run of one peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_tokens: Option<Vec<usize>>,
    #[serde(flatten)]
    pub data: DataReport,
    /// On the first step of a run from step 0: the weight update of the evaluation before
    /// training (§6.2, `eval_first`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_first_update: Option<UpdateRecord>,
}

impl Stepped for TrainLog {
    fn step(&self) -> usize {
        self.step
    }
}

/// The model being trained, its optimizer, the optional teacher, and the steps done.
pub struct Trainer<B: AutodiffBackend> {
    /// `None` only while a step owns it.
    model: Option<Llama<B>>,
    optim: OptimizerAdaptor<AdamW, Llama<B>, B>,
    teacher: Option<Teacher<B::InnerBackend>>,
    pub step: usize,
    pub cfg: TrainConfig,
    /// How the steps run (workers, data-parallel peer, recomputation; execution.rs).
    exec: Execution,
    /// Steps skipped so far (non-finite loss or gradient norm).
    skipped: usize,
    /// A checkpoint whose optimizer state is to be read once the execution is known (its
    /// shards, or the share of this peer; [`Stepper::prepare`]).
    resume_optim: Option<std::path::PathBuf>,
}

/// `loop_state` of a training checkpoint.
#[derive(Serialize, Deserialize)]
struct TrainLoopState {
    /// The model's config.json.
    model_config: serde_json::Value,
    /// Steps skipped so far (absent in checkpoints from before the guard).
    #[serde(default)]
    skipped: usize,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Starts training `model`; with a `teacher`, the loss adds the distillation term
    /// (`cfg.distill_weight`, `cfg.distill_temperature`; none at weight 0).
    pub fn new(model: Llama<B>, cfg: TrainConfig, teacher: Option<Llama<B::InnerBackend>>) -> Self {
        let teacher = teacher.and_then(|t| Teacher::active(t, cfg.distillation()));
        Trainer {
            optim: adamw(cfg.weight_decay).init(),
            model: Some(model),
            teacher,
            step: 0,
            cfg,
            exec: Execution::default(),
            skipped: 0,
            resume_optim: None,
        }
    }

    /// Runs the steps as `exec` says (execution.rs).
    pub fn with_execution(mut self, exec: Execution) -> Self {
        self.exec = exec;
        self
    }

    /// Restores a trainer from checkpoint `dir` (written through [`Stepper::save_records`]).
    pub fn load(
        dir: &Path,
        cfg: TrainConfig,
        step: usize,
        loop_state: serde_json::Value,
        teacher: Option<Llama<B::InnerBackend>>,
        device: &B::Device,
    ) -> crate::Result<Self> {
        let state: TrainLoopState =
            serde_json::from_value(loop_state).map_err(|e| TrainError::Checkpoint {
                path: dir.join("state.json"),
                msg: e.to_string(),
            })?;
        let config = LlamaConfig::from_json_str(&state.model_config.to_string(), dir)?;
        let skeleton = Llama::from_source(&config, &mut RandomInit::default(), device)?;
        let model = load_module(skeleton, dir, "model", device)?;
        let mut t = Trainer::new(model, cfg, teacher);
        // The state saved whole is read now; shards, or a share of it, once the peers are
        // known (`prepare`).
        if dir.join("optim.mpk").is_file() {
            t.optim = t.optim.load_record(load_record(dir, "optim", device)?);
        }
        t.resume_optim = Some(dir.to_path_buf());
        t.step = step;
        t.skipped = state.skipped;
        Ok(t)
    }

    pub fn model(&self) -> &Llama<B> {
        self.model
            .as_ref()
            .expect("a step owns the model only while it runs")
    }

    /// The learning rate of step `step` (warm-up + cosine to `min_lr_ratio`).
    pub fn lr(&self, step: usize) -> f64 {
        self.cfg.lr
            * warmup_cosine(
                step,
                self.cfg.warmup_steps(),
                self.cfg.steps,
                self.cfg.min_lr_ratio,
            )
    }

    /// The trained model on the inner backend (for saving as a Hugging Face checkpoint).
    pub fn inference_model(&self) -> Llama<B::InnerBackend> {
        self.model().valid()
    }
}

impl<B: AutodiffBackend> Stepper<B> for Trainer<B> {
    type Log = TrainLog;

    fn position(&self) -> Position {
        Position {
            done: self.step,
            total: self.cfg.steps,
            grad_accum: self.cfg.grad_accum,
        }
    }

    /// One optimizer step: the mean loss over the micro-batches (CE, plus the distillation term
    /// with a teacher), one global clip, one AdamW update.
    fn step(&mut self, batches: &[Tensor<B, 2, Int>]) -> crate::Result<TrainLog> {
        let model = self.model.take().expect("set between steps");
        let tokens: usize = batches
            .iter()
            .map(|b| b.dims().iter().product::<usize>())
            .sum();
        let (step, teacher) = (self.step, &self.teacher);
        let (recompute, poisoned) = (self.exec.recompute, self.exec.poisons(step));
        // Under ZeRO (zero.rs) this peer keeps only its share of the gradients; at stage 2 it
        // reduces them as they are made.
        let peer = self.exec.peer.clone();
        let layout = Layout::of(&model);
        let shards = self.exec.shards(&layout);
        let keep = |id| shards.as_ref().is_none_or(|s| s.keeps(id));
        let reduce_made = |g, l: &Layout| peer.reduce_grads::<B::InnerBackend>(g, l, &keep);
        let reduce: Option<&Reduce<'_>> = match self.exec.zero() {
            ZeroStage::Gradients => Some(&reduce_made),
            _ => None,
        };
        let grads = mean_gradients(
            &model,
            batches,
            self.exec.workers(),
            reduce,
            |model: &Llama<B>, _, ids, weight, sum| {
                // The loss of final hidden states `h`, and [loss, CE, KL] read back: with
                // distillation CE + weight · T² · KL, otherwise the CE (one host read).
                let head = |h: Tensor<B, 3>| {
                    let (loss, parts) = match teacher {
                        Some(t) => {
                            let (loss, f) = distilled_head_loss(model, h, &ids, t);
                            (loss, Some(f))
                        }
                        None => (model.head_loss(h, ids.clone()), None),
                    };
                    let loss = match poisoned {
                        true => loss * f64::NAN,
                        false => loss,
                    };
                    // A non-finite loss is checked after the peers' figures are reduced, so
                    // that every peer skips the same steps.
                    let value = loss.clone().detach().into_scalar().elem::<f64>();
                    let [ce, kl] = parts.map_or([value, 0.0], |f| [f.ce, f.kl]);
                    Ok((loss, [value, ce, kl]))
                };
                if recompute {
                    let r = recompute::gradients(model, ids.clone(), None, weight, sum, head)?;
                    return Ok(r.head);
                }
                let (loss, figures) = head(model.hidden_masked(ids.clone(), None))?;
                sum.add(model, backward(loss, weight, model))?;
                Ok(figures)
            },
        );
        let grads = grads.and_then(|g| {
            let mut figures = g.figures;
            let reduced = match g.reduced {
                true => Reduced::Already,
                false => Reduced::No,
            };
            let keeping = shards.as_ref().map(|_| (&keep as _, reduced));
            let (grads, tokens) =
                peer.reduce_step_keeping::<B>(g.grads, &layout, &mut figures, tokens, keeping)?;
            Ok((grads, figures, tokens))
        });
        let (grads, [loss, ce_loss, kl], tokens) = match grads {
            Ok(g) => g,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let (grads, norm) = match &shards {
            None => clip_global_norm::<B, _>(grads, &model, self.cfg.max_grad_norm),
            Some(_) => {
                let local = grads::sumsq::<B, _>(&grads, &model);
                let norm =
                    zero::global_norm::<B::InnerBackend>(local, 0.0, &peer, &device_of(&model))?;
                let max = self.cfg.max_grad_norm;
                let mut grads = grads;
                if max > 0.0 && norm > max {
                    grads = grads::take::<B, _>(&mut grads, &model, max / (norm + 1e-6));
                }
                (grads, norm)
            }
        };
        if !(loss.is_finite() && norm.is_finite()) {
            // Skipped: nothing changes but the step count (the schedule moves on).
            self.model = Some(model);
            self.step += 1;
            self.skipped += 1;
            return Err(TrainError::NonFinite {
                step,
                what: format!("not finite: loss {loss}, gradient norm {norm}"),
            });
        }
        let lr = self.lr(self.step);
        let model = self.optim.step(lr, model, grads);
        self.model = Some(match &shards {
            Some(s) => zero::gather(model, s, &peer)?,
            None => model,
        });
        let log = TrainLog {
            step: self.step,
            lr,
            loss,
            ce_loss,
            kl: self.teacher.is_some().then_some(kl),
            grad_norm: norm,
            tokens: tokens.total,
            peer_tokens: tokens.per_peer,
            data: DataReport::default(),
            eval_first_update: None,
        };
        self.step += 1;
        Ok(log)
    }

    fn eval_view(&self) -> crate::Result<EvalView<B::InnerBackend>> {
        Ok(EvalView {
            model: self.model().valid(),
            z: None,
        })
    }

    fn attach(log: &mut TrainLog, data: DataReport, eval_first: Option<UpdateRecord>) {
        log.data = data;
        log.eval_first_update = eval_first;
    }

    fn skipped(&self) -> usize {
        self.skipped
    }

    fn summary(log: &TrainLog) -> String {
        format!("loss {:.3} lr {:.2e}", log.loss, log.lr)
    }

    fn prepare(&mut self) -> crate::Result<Vec<String>> {
        let Some(dir) = self.resume_optim.take() else {
            return Ok(Vec::new());
        };
        let layout = Layout::of(self.model());
        let shards = self.exec.shards(&layout);
        let device = self.model().devices()[0].clone();
        let (record, line) = match (dir.join("optim.mpk").is_file(), &shards) {
            (true, None) => return Ok(Vec::new()),
            (true, Some(s)) => {
                let (r, line) = zero::keep_share(self.optim.to_record(), s, &dir);
                (r, Some(line))
            }
            (false, s) => zero::load_shards::<B, _>(&dir, "optim", &layout, s.as_ref(), &device)?,
        };
        self.optim = std::mem::replace(&mut self.optim, adamw(self.cfg.weight_decay).init())
            .load_record(record);
        Ok(line.into_iter().collect())
    }

    fn save_shard(&self, staging: &Path) -> crate::Result<Vec<String>> {
        let layout = Layout::of(self.model());
        let Some(shards) = self.exec.shards(&layout) else {
            return Ok(Vec::new());
        };
        let device = device_of(self.model());
        zero::save_shard::<B, _>(
            self.optim.to_record(),
            &shards,
            staging,
            "optim",
            &self.exec.peer,
            &device,
        )
    }

    fn save_records(&self, dir: &Path) -> crate::Result<serde_json::Value> {
        save_module(self.model(), dir, "model")?;
        // Under ZeRO the peers' shards are the optimizer's state (moved in by the loop).
        if self.exec.zero() == ZeroStage::Off {
            save_record::<B, _>(self.optim.to_record(), dir, "optim")?;
        }
        let state = TrainLoopState {
            model_config: self.model().config.to_hf_json(shear_model::Dtype::F32),
            skipped: self.skipped,
        };
        Ok(serde_json::to_value(state).expect("serialises"))
    }
}
