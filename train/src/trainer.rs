//! Continued pre-training (SPEC §7): AdamW (β 0.9/0.95, ε 1e-8), warm-up + cosine to a floor,
//! global-norm clipping, gradient accumulation, optional knowledge distillation from a teacher,
//! and checkpoints that hold everything needed for a bit-identical resume: model and optimizer
//! records (burn's recorder, parameter ids kept), step, and the data loader's state.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use serde::{Deserialize, Serialize};
use shear_data::LoaderState;
use shear_model::{next_token_loss, Llama, LlamaConfig, RandomInit};

use crate::dynamic::DataReport;
use crate::grads::clip_global_norm;
use crate::schedule::warmup_cosine;

/// Hyper-parameters of continued pre-training (defaults: SPEC §7, scaled by `steps`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Warm-up steps (SPEC: 3 % of the steps).
    pub warmup_steps: usize,
    /// The cosine ends at `lr · min_lr_ratio` (SPEC: 0.1).
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Knowledge distillation (off when `None`).
    pub distill: Option<Distill>,
}

/// `loss = CE + weight · T² · KL(teacher_T ‖ student_T)`, the softened next-token
/// distributions at temperature `T` (Hinton et al.; the recovery loss of Minitron).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distill {
    pub weight: f64,
    pub temperature: f64,
}

impl TrainConfig {
    pub fn new(steps: usize) -> Self {
        TrainConfig {
            steps,
            lr: 1e-4,
            warmup_steps: (steps * 3).div_ceil(100),
            min_lr_ratio: 0.1,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            grad_accum: 1,
            distill: None,
        }
    }
}

/// Where the trainer's batches come from.
pub trait TrainData<B: AutodiffBackend> {
    /// Micro-batch `micro` of optimizer step `step`: token ids `[batch, seq]`.
    fn batch(&mut self, step: usize, micro: usize) -> Tensor<B, 2, Int>;
    /// Called before step 0 and after every step with the current model (dynamic batch
    /// loading evaluates and updates its weights here).
    fn after_step(&mut self, _step: usize, _model: &Llama<B>) -> DataReport {
        DataReport::default()
    }
}

/// One line of the training log (JSONL).
#[derive(Clone, Debug, Serialize)]
pub struct TrainLog {
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    /// Cross-entropy part of the loss (equal to `loss` without distillation).
    pub ce_loss: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_update: Option<shear_data::UpdateRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loader_events: Vec<shear_data::LoaderEvent>,
    /// On the first step of a run from step 0: the weight update of the evaluation before
    /// training (SPEC §6.2, `eval_first`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_first_update: Option<shear_data::UpdateRecord>,
    #[serde(skip)]
    pub loader_state: Option<LoaderState>,
}

/// The model being trained, its optimizer, and the number of steps done.
pub struct Trainer<B: AutodiffBackend> {
    pub model: Llama<B>,
    optim: OptimizerAdaptor<AdamW, Llama<B>, B>,
    pub step: usize,
    pub cfg: TrainConfig,
}

fn adamw(weight_decay: f64) -> AdamWConfig {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay as f32)
}

/// Mean over tokens of `T² · KL(softmax(t/T) ‖ softmax(s/T))`; `student`/`teacher` `[b, n, V]`.
pub fn distill_loss<B: Backend>(
    student: Tensor<B, 3>,
    teacher: Tensor<B, 3>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [b, n, _] = student.dims();
    let log_s = log_softmax(student / temperature, 2);
    let t = teacher / temperature;
    let p_t = softmax(t.clone(), 2);
    let log_t = log_softmax(t, 2);
    let kl = (p_t * (log_t - log_s)).sum_dim(2); // [b, n, 1]
    kl.sum() / (b * n) as f64 * (temperature * temperature)
}

impl<B: AutodiffBackend> Trainer<B> {
    pub fn new(model: Llama<B>, cfg: TrainConfig) -> Self {
        Trainer {
            optim: adamw(cfg.weight_decay).init(),
            model,
            step: 0,
            cfg,
        }
    }

    /// The learning rate of step `step` (warm-up + cosine to `min_lr_ratio`).
    pub fn lr(&self, step: usize) -> f64 {
        self.cfg.lr
            * warmup_cosine(
                step,
                self.cfg.warmup_steps,
                self.cfg.steps,
                self.cfg.min_lr_ratio,
            )
    }

    /// One optimizer step on `batches` (one per micro-batch); `teacher` for distillation.
    pub fn train_step(
        &mut self,
        batches: &[Tensor<B, 2, Int>],
        teacher: Option<&Llama<B::InnerBackend>>,
    ) -> TrainLog {
        let n = batches.len().max(1) as f64;
        let mut acc = GradientsAccumulator::<Llama<B>>::new();
        let mut single = None;
        let (mut loss_sum, mut ce_sum, mut tokens) = (0.0, 0.0, 0);
        for ids in batches {
            let [b, s] = ids.dims();
            tokens += b * s;
            // `ce` is `Some` only with distillation; otherwise the loss is the CE (one host read).
            let (loss, ce) = match (self.cfg.distill, teacher) {
                (Some(d), Some(t)) => {
                    let logits = self.model.forward(ids.clone());
                    let ce = next_token_loss(logits.clone(), ids.clone());
                    let t_logits = Tensor::<B, 3>::from_inner(t.forward(ids.clone().inner()));
                    let kd = distill_loss(logits, t_logits, d.temperature);
                    (ce.clone() + kd * d.weight, Some(ce))
                }
                _ => (self.model.loss(ids.clone()), None),
            };
            let value = loss.clone().detach().into_scalar().elem::<f64>();
            loss_sum += value;
            ce_sum += ce.map_or(value, |c| c.detach().into_scalar().elem::<f64>());
            let grads = GradientsParams::from_grads((loss / n).backward(), &self.model);
            if batches.len() == 1 {
                single = Some(grads);
            } else {
                acc.accumulate(&self.model, grads);
            }
        }
        let grads = single.unwrap_or_else(|| acc.grads());
        let (grads, norm) = clip_global_norm::<B, _>(grads, &self.model, self.cfg.max_grad_norm);
        let lr = self.lr(self.step);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        let log = TrainLog {
            step: self.step,
            lr,
            loss: loss_sum / n,
            ce_loss: ce_sum / n,
            grad_norm: norm,
            tokens,
            domain_update: None,
            loader_events: Vec::new(),
            eval_first_update: None,
            loader_state: None,
        };
        self.step += 1;
        log
    }

    /// Writes a checkpoint folder `dir/step-NNNNNNNN` (model and optimizer records, state.json
    /// with the step, config and loader state), under a temporary name renamed when complete.
    pub fn save(
        &self,
        dir: &Path,
        loader: Option<&LoaderState>,
    ) -> Result<PathBuf, CheckpointError> {
        let final_dir = dir.join(format!("step-{:08}", self.step));
        let tmp = dir.join(format!(".step-{:08}.tmp", self.step));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| CheckpointError::io(&tmp, e))?;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        self.model
            .clone()
            .save_file(tmp.join("model"), &rec)
            .map_err(|e| CheckpointError::Record {
                path: tmp.join("model.mpk"),
                msg: e.to_string(),
            })?;
        rec.record(self.optim.to_record(), tmp.join("optim"))
            .map_err(|e| CheckpointError::Record {
                path: tmp.join("optim.mpk"),
                msg: e.to_string(),
            })?;
        let state = CheckpointState {
            step: self.step,
            config: self.cfg.clone(),
            model_config: self.model.config.to_hf_json(shear_model::Dtype::F32),
            loader: loader.cloned(),
        };
        let json = serde_json::to_vec_pretty(&state).expect("state serialises");
        std::fs::write(tmp.join("state.json"), json).map_err(|e| CheckpointError::io(&tmp, e))?;
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&tmp, &final_dir).map_err(|e| CheckpointError::io(&final_dir, e))?;
        Ok(final_dir)
    }

    /// Restores a trainer from a checkpoint folder written by [`Trainer::save`]; returns it with
    /// the loader state that was saved.
    pub fn load(
        ckpt: &Path,
        device: &B::Device,
    ) -> Result<(Self, Option<LoaderState>), CheckpointError> {
        let path = ckpt.join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|e| CheckpointError::io(&path, e))?;
        let state: CheckpointState =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Record {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let config =
            LlamaConfig::from_json_str(&state.model_config.to_string(), &path).map_err(|e| {
                CheckpointError::Record {
                    path: path.clone(),
                    msg: e.to_string(),
                }
            })?;
        let skeleton: Llama<B> = Llama::from_source(&config, &mut RandomInit::default(), device)
            .map_err(|e| CheckpointError::Record {
                path: ckpt.to_path_buf(),
                msg: e.to_string(),
            })?;
        let model = skeleton
            .load_file(ckpt.join("model"), &rec, device)
            .map_err(|e| CheckpointError::Record {
                path: ckpt.join("model.mpk"),
                msg: e.to_string(),
            })?;
        let optim_rec = rec
            .load(ckpt.join("optim").with_extension("mpk"), device)
            .map_err(|e| CheckpointError::Record {
                path: ckpt.join("optim.mpk"),
                msg: e.to_string(),
            })?;
        let optim = adamw(state.config.weight_decay)
            .init::<B, Llama<B>>()
            .load_record(optim_rec);
        Ok((
            Trainer {
                model,
                optim,
                step: state.step,
                cfg: state.config,
            },
            state.loader,
        ))
    }

    /// The trained model on the inner backend (for saving as a Hugging Face checkpoint).
    pub fn inference_model(&self) -> Llama<B::InnerBackend> {
        self.model.valid()
    }
}

/// The newest complete checkpoint folder under `dir` (`step-NNNNNNNN` with a state.json).
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && p.join("state.json").is_file()
        })
        .collect();
    found.sort();
    found.pop()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    config: TrainConfig,
    /// The model's config.json.
    model_config: serde_json::Value,
    loader: Option<LoaderState>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {msg}", path.display())]
    Record { path: PathBuf, msg: String },
}

impl CheckpointError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Runs the trainer from its current step to `until` (normally `cfg.steps`; the schedule
/// always follows `cfg.steps`): before the first step (when starting
/// at 0) and after every step, `data.after_step` may update the domain weights; `on_step` sees
/// every step's log and the trainer (to save checkpoints).
pub fn train<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    data: &mut dyn TrainData<B>,
    teacher: Option<&Llama<B::InnerBackend>>,
    until: usize,
    mut on_step: impl FnMut(&TrainLog, &Trainer<B>),
) {
    // SPEC §6.2: continued pre-training evaluates before step 0 (eval_first).
    let mut first = (trainer.step == 0)
        .then(|| data.after_step(usize::MAX, &trainer.model).update)
        .flatten();
    while trainer.step < until.min(trainer.cfg.steps) {
        let step = trainer.step;
        let batches: Vec<_> = (0..trainer.cfg.grad_accum.max(1))
            .map(|m| data.batch(step, m))
            .collect();
        let mut log = trainer.train_step(&batches, teacher);
        let report = data.after_step(step, &trainer.model);
        log.domain_update = report.update;
        log.loader_events = report.events;
        log.loader_state = report.state;
        log.eval_first_update = first.take();
        on_step(&log, trainer);
    }
}
