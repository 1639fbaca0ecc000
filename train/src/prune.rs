//! The pruning step (docs/algorithm.md §4): weights, masks and Lagrange multipliers trained
//! jointly — `min over (θ, z) max over λ` of `CE(masked model) + Lagrangian(expected sparsity,
//! target)` — and the pruned model at the target shape (§5). The loop around the step is the
//! shared one ([`crate::driver`]).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use shear_data::UpdateRecord;
use shear_io::Stepped;
use shear_model::distill_loss::Distillation;
use shear_model::masks_file::{save_masks, MaskState};
use shear_model::{
    ExpectedShape, HardConcrete, L0Masks, LayerMasks, Llama, LlamaConfig, PerType, PruneModules,
    TargetShape,
};

use crate::checkpoint::{load_module, load_record, save_module, save_record};
use crate::distill::{distilled_head_loss, Teacher};
use crate::driver::{Position, Stepper};
use crate::error::TrainError;
use crate::execution::Execution;
use crate::grads::{self, Layout, Reduce};
use crate::lagrangian::Lagrangian;
use crate::optim::adamw;
use crate::peers::{Reduced, StepTokens};
use crate::recompute;
use crate::schedule::{target_warmup, warmup_cosine};
use crate::source::{DataReport, EvalView};
use crate::workers::{self, StepGradients};
use crate::zero::{self, device_of, ZeroStage};

/// Hyper-parameters of a pruning run, all but the target shape (defaults: docs/algorithm.md
/// §4.2–§4.3). Each is defined here once: with its default (the `Default` below), its check
/// ([`PruneHyper::validate`]) and its documentation, it is a key of a recipe's `[prune]`
/// table, a flag of `shear prune` (the `clap` feature) and a setting recorded in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default)]
pub struct PruneHyper {
    /// Optimizer steps (the schedules follow them).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().steps))]
    pub steps: usize,
    /// Sequences per micro-batch (the data loader's; a step reads `grad_accum` of them).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().batch))]
    pub batch: usize,
    /// Micro-batches per optimizer step: with `batch` 4, the paper's 32 sequences per step.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().grad_accum))]
    pub grad_accum: usize,
    /// Peak learning rate of the model's weights.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().lr_weights))]
    pub lr_weights: f64,
    /// Peak learning rate of the masks' `log_alpha`.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().lr_masks))]
    pub lr_masks: f64,
    /// Peak learning rate of the Lagrange multipliers (gradient ascent).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().lr_lambda))]
    pub lr_lambda: f64,
    /// Learning-rate warm-up steps (default: 10 % of the steps).
    #[cfg_attr(feature = "clap", arg(long))]
    pub lr_warmup: Option<usize>,
    /// Target-sparsity warm-up steps (default: 20 % of the steps).
    #[cfg_attr(feature = "clap", arg(long))]
    pub lagrangian_warmup: Option<usize>,
    /// Global gradient-norm clip over the three groups (0: off).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().max_grad_norm))]
    pub max_grad_norm: f64,
    /// Seed of the masks' samples and of the data order.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().seed))]
    pub seed: u64,
    /// Hard-concrete temperature β: 2/3 as the reference code, 0.83 as the paper.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().temperature))]
    pub temperature: f64,
    /// Per-layer masks: `layer` (one per block, the released recipe) or `head-layer-mlp`
    /// (separate attention and FFN masks; layers are still removed whole).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().layer_masks))]
    pub layer_masks: LayerMasks,
    /// What to prune: any of hidden, heads, intermediate, layers (comma-separated). A
    /// dimension left out has no mask and keeps its source size.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().prune))]
    pub prune: PruneModules,
    /// With a teacher (`--distill-from`): the masks and weights learn under
    /// CE + `distill_weight` · T² · KL(teacher_T ‖ student_T) (0: no distillation).
    #[cfg_attr(feature = "clap", arg(long, default_value_t = PruneHyper::default().distill_weight))]
    pub distill_weight: f64,
    /// With a teacher: the temperature T of the softened distributions.
    #[cfg_attr(
        feature = "clap",
        arg(long, default_value_t = PruneHyper::default().distill_temperature)
    )]
    pub distill_temperature: f64,
}

impl Default for PruneHyper {
    fn default() -> Self {
        PruneHyper {
            steps: 3200,
            batch: 4,
            grad_accum: 8,
            lr_weights: 1e-4,
            lr_masks: 1.0,
            lr_lambda: 1.0,
            lr_warmup: None,
            lagrangian_warmup: None,
            max_grad_norm: 1.0,
            seed: 0,
            temperature: 2.0 / 3.0,
            layer_masks: LayerMasks::Layer,
            prune: PruneModules::default(),
            distill_weight: 1.0,
            distill_temperature: 1.0,
        }
    }
}

impl PruneHyper {
    pub fn lr_warmup_steps(&self) -> usize {
        self.lr_warmup.unwrap_or(self.steps / 10)
    }

    pub fn lagrangian_warmup_steps(&self) -> usize {
        self.lagrangian_warmup.unwrap_or(self.steps / 5)
    }

    pub fn hard_concrete(&self) -> HardConcrete {
        HardConcrete::with_temperature(self.temperature)
    }

    /// The distillation term's weight and temperature (with a teacher).
    pub fn distillation(&self) -> Distillation {
        Distillation {
            weight: self.distill_weight,
            temperature: self.distill_temperature,
        }
    }

    /// Checks every setting: counts positive, rates finite and in range, warm-ups within the
    /// steps, a usable temperature. The message names the setting.
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
            ("lr_weights", self.lr_weights),
            ("lr_masks", self.lr_masks),
            ("lr_lambda", self.lr_lambda),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} {v}: must be a finite number ≥ 0"));
            }
        }
        // Beyond these the first update already overshoots (the defaults are 1e-4 and 1.0);
        // a typo such as 1e30 is refused instead of ending in skipped non-finite steps.
        for (name, v, most) in [
            ("lr_weights", self.lr_weights, 1.0),
            ("lr_masks", self.lr_masks, 1e3),
            ("lr_lambda", self.lr_lambda, 1e3),
        ] {
            if v > most {
                return bad(format!("{name} {v:?}: must be at most {most}"));
            }
        }
        for (name, v) in [
            ("lr_warmup", self.lr_warmup),
            ("lagrangian_warmup", self.lagrangian_warmup),
        ] {
            if let Some(w) = v.filter(|&w| w > self.steps) {
                return bad(format!("{name} {w}: more than the {} steps", self.steps));
            }
        }
        self.hard_concrete()
            .validate()
            .or_else(|e| bad(format!("hard-concrete {e}")))?;
        crate::distill::validate(self.distill_weight, self.distill_temperature)
    }
}

/// What a pruning run is: the target shape and the hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneConfig {
    pub target: TargetShape,
    #[serde(flatten)]
    pub hyper: PruneHyper,
}

impl PruneConfig {
    pub fn new(target: TargetShape, hyper: PruneHyper) -> Self {
        PruneConfig { target, hyper }
    }

    /// Checks every setting against the source before any work; the message names the setting.
    pub fn validate(&self, source: &LlamaConfig) -> crate::Result<()> {
        self.target
            .validate(source, self.hyper.prune)
            .map_err(|e| TrainError::Invalid(format!("target ({}): {e}", self.target)))?;
        self.hyper.validate()
    }
}

/// What is trained: the source model, its masks and the multipliers.
#[derive(Module, Debug)]
pub struct Pruner<B: Backend> {
    pub model: Llama<B>,
    pub l0: L0Masks<B>,
    pub lagrangian: Lagrangian<B>,
}

/// One line of the pruning log (JSONL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruneLog {
    pub step: usize,
    pub lr_mult: f64,
    pub ce_loss: f64,
    /// With a teacher: the mean `KL(teacher_T ‖ student_T)` over the step's predicting
    /// positions (the loss adds `distill_weight · T²` times it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    pub lagrangian: f64,
    pub grad_norm: f64,
    /// Tokens in this step (all micro-batches, all data-parallel peers).
    pub tokens: usize,
    /// Each data-parallel peer's tokens in this step (absent in a run of one peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_tokens: Option<Vec<usize>>,
    pub lambda_1: PerType<f64>,
    pub lambda_2: PerType<f64>,
    /// After this step's update.
    pub expected_shape: ExpectedShape,
    /// Per mask type (mean over layers for the per-layer types), after this step's update.
    pub expected_sparsity: PerType<f64>,
    /// The warmed-up target the Lagrangian used at this step (docs/algorithm.md §4.1).
    pub target_sparsity: PerType<f64>,
    pub expected_params: f64,
    #[serde(flatten)]
    pub data: DataReport,
}

impl Stepped for PruneLog {
    fn step(&self) -> usize {
        self.step
    }
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

type Adam<M, B> = OptimizerAdaptor<AdamW, M, B>;

/// A pruning run in progress: the trained module, the optimizers of the three groups, the
/// mask-sampling random stream, and the steps done. Saved and restored whole for an exact
/// resume (docs/algorithm.md §9).
pub struct PruneRun<B: AutodiffBackend> {
    /// `None` only while a step owns it (so no second reference keeps the old weights alive
    /// while the optimizers update them).
    pruner: Option<Pruner<B>>,
    pub cfg: PruneConfig,
    pub step: usize,
    weights: Adam<Llama<B>, B>,
    masks: Adam<L0Masks<B>, B>,
    lambdas: Adam<Lagrangian<B>, B>,
    /// The uniform draws of hard-concrete sampling (host side, so it can be saved). Stream 1 of
    /// the seed: the data loader draws from stream 0.
    rng: rand_chacha::ChaCha8Rng,
    /// How the steps run (workers, data-parallel peer, recomputation; execution.rs): all
    /// peers draw the same mask sample (the same seeded stream).
    exec: Execution,
    /// Steps skipped so far (non-finite loss or gradient norm).
    skipped: usize,
    /// The teacher of distillation (the unpruned source, frozen), if any.
    teacher: Option<Teacher<B::InnerBackend>>,
    /// A checkpoint whose weights' optimizer state is to be read once the execution is known
    /// (its shards, or the share of this peer; [`Stepper::prepare`]).
    resume_optim: Option<std::path::PathBuf>,
}

/// `loop_state` of a pruning checkpoint.
#[derive(Serialize, Deserialize)]
struct PruneLoopState {
    rng_word_pos: u128,
    /// Steps skipped so far (absent in checkpoints from before the guard).
    #[serde(default)]
    skipped: usize,
    /// The source's config.json.
    model_config: serde_json::Value,
}

fn mask_rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

impl<B: AutodiffBackend> PruneRun<B> {
    /// A fresh run from `model`: masks initialised (§2.2) and multipliers at 0.
    pub fn new(model: Llama<B>, cfg: PruneConfig) -> Self {
        let device = model.embed_tokens.weight.device();
        let h = &cfg.hyper;
        B::seed(&device, h.seed);
        let l0 = L0Masks::new(
            &model.config,
            h.hard_concrete(),
            h.prune,
            h.layer_masks,
            &device,
        );
        PruneRun {
            pruner: Some(Pruner {
                l0,
                lagrangian: Lagrangian::new(&device),
                model,
            }),
            weights: adamw(0.0).init(),
            masks: adamw(0.0).init(),
            lambdas: adamw(0.0).init(),
            rng: mask_rng(h.seed),
            exec: Execution::default(),
            skipped: 0,
            teacher: None,
            resume_optim: None,
            step: 0,
            cfg,
        }
    }

    /// Distils from `teacher` as `cfg.hyper.distill_*` say (nothing at weight 0).
    pub fn with_teacher(mut self, teacher: Option<Llama<B::InnerBackend>>) -> Self {
        let d = self.cfg.hyper.distillation();
        self.teacher = teacher.and_then(|t| Teacher::active(t, d));
        self
    }

    /// The same run starting from other masks (their `log_alpha`; the shape must be the one
    /// `new` made for this source and configuration): a starting point other than §2.2's.
    pub fn with_masks(mut self, l0: L0Masks<B>) -> Self {
        let p = self.pruner.as_mut().expect("set");
        assert_eq!(
            (p.l0.types(), p.l0.source),
            (l0.types(), l0.source),
            "masks of another shape"
        );
        p.l0 = l0;
        self
    }

    /// Runs the steps as `exec` says (execution.rs).
    pub fn with_execution(mut self, exec: Execution) -> Self {
        self.exec = exec;
        self
    }

    /// Restores a run from checkpoint `dir` (written through [`Stepper::save_records`]) with the
    /// configuration it was saved with.
    pub fn load(
        dir: &Path,
        cfg: PruneConfig,
        step: usize,
        loop_state: serde_json::Value,
        device: &B::Device,
    ) -> crate::Result<Self> {
        let state: PruneLoopState =
            serde_json::from_value(loop_state).map_err(|e| TrainError::Checkpoint {
                path: dir.join("state.json"),
                msg: e.to_string(),
            })?;
        let config = LlamaConfig::from_json_str(&state.model_config.to_string(), dir)?;
        let model = Llama::from_source(&config, &mut shear_model::RandomInit::default(), device)?;
        let mut run = PruneRun::new(model, cfg);
        let skeleton = run.pruner.take().expect("set");
        run.pruner = Some(load_module(skeleton, dir, "pruner", device)?);
        // The state saved whole is read now; shards, or a share of it, once the peers are
        // known (`prepare`).
        if dir.join("optim_weights.mpk").is_file() {
            run.weights = run
                .weights
                .load_record(load_record(dir, "optim_weights", device)?);
        }
        run.resume_optim = Some(dir.to_path_buf());
        run.masks = run
            .masks
            .load_record(load_record(dir, "optim_masks", device)?);
        run.lambdas = run
            .lambdas
            .load_record(load_record(dir, "optim_lambdas", device)?);
        run.rng.set_word_pos(state.rng_word_pos);
        run.skipped = state.skipped;
        run.step = step;
        Ok(run)
    }

    /// The model, masks and multipliers.
    pub fn pruner(&self) -> &Pruner<B> {
        self.pruner
            .as_ref()
            .expect("a step owns the pruner only while it runs")
    }

    /// The masks with `log_alpha` clamped (as every use sees them).
    pub fn masks(&self) -> L0Masks<B> {
        self.pruner().l0.clone().clamp_log_alpha()
    }

    /// `(lambda_1, lambda_2)` of the mask types of this run.
    pub fn multipliers(&self) -> (PerType<f64>, PerType<f64>) {
        let p = self.pruner();
        p.lagrangian.values(&p.l0.types())
    }

    /// Writes the mask file (every `log_alpha`, the multipliers, the step, the target and the
    /// temperature), as `shear materialize` reads it.
    pub fn save_masks(&self, path: &Path) -> crate::Result<()> {
        let (lambda_1, lambda_2) = self.multipliers();
        let state = MaskState {
            step: self.step,
            target: self.cfg.target,
            lambda_1,
            lambda_2,
        };
        Ok(save_masks(path, &self.masks(), &state)?)
    }

    /// The pruned model at exactly the target shape (§5), on the inner backend.
    pub fn finish(&self) -> crate::Result<Llama<B::InnerBackend>> {
        let model = self.pruner().model.valid();
        let z = self.masks().deterministic(Some(&self.cfg.target))?;
        let device = model.embed_tokens.weight.device();
        Ok(shear_model::materialize(&model, &z, &device)?)
    }

    fn log_line(&self, step: usize, figures: StepFigures) -> crate::Result<PruneLog> {
        let l0 = self.masks();
        let (lambda_1, lambda_2) = self.multipliers();
        let expected_sparsity = l0.expected_sparsity().map(|t| scalar(t.mean()));
        if let Some((k, v)) = expected_sparsity.iter().find(|(_, v)| !v.is_finite()) {
            return Err(TrainError::Invalid(format!(
                "step {step}: the expected sparsity of the `{k}` mask is {v}"
            )));
        }
        Ok(PruneLog {
            step,
            lr_mult: figures.lr_mult,
            ce_loss: figures.ce,
            kl: figures.kl,
            lagrangian: figures.lagrangian,
            grad_norm: figures.grad_norm,
            tokens: figures.tokens.total,
            peer_tokens: figures.tokens.per_peer,
            lambda_1,
            lambda_2,
            expected_shape: l0.expected_shape(),
            expected_sparsity,
            target_sparsity: figures.target,
            expected_params: scalar(l0.expected_params()),
            data: DataReport::default(),
        })
    }
}

struct StepFigures {
    lr_mult: f64,
    ce: f64,
    kl: Option<f64>,
    lagrangian: f64,
    grad_norm: f64,
    tokens: StepTokens,
    target: PerType<f64>,
}

impl<B: AutodiffBackend> Stepper<B> for PruneRun<B> {
    type Log = PruneLog;

    fn position(&self) -> Position {
        Position {
            done: self.step,
            total: self.cfg.hyper.steps,
            grad_accum: self.cfg.hyper.grad_accum,
        }
    }

    /// One optimizer step (§4): a fresh mask sample per micro-batch, CE of the masked model
    /// plus the Lagrangian at the warmed-up target, one global clip over the three groups, and
    /// the three AdamW updates with the multipliers' gradients negated (ascent).
    fn step(&mut self, batches: &[Tensor<B, 2, Int>]) -> crate::Result<PruneLog> {
        let step = self.step;
        let pruner = self.pruner.take().expect("set between steps");
        let types = pruner.l0.types();
        let target = self
            .cfg
            .target
            .sparsity(&pruner.model.config)
            .filter(|k| types.contains(&k))
            .map(|t| target_warmup(t, step, self.cfg.hyper.lagrangian_warmup_steps()));
        // The step works on clamped `log_alpha` (as every use sees it); a step that changes
        // nothing (skipped, or failed) puts the parameters back as they were.
        let unclamped = pruner.l0.clone();
        let pruner = Pruner {
            l0: pruner.l0.clamp_log_alpha(),
            ..pruner
        };
        let restore = |p: Pruner<B>| Pruner { l0: unclamped, ..p };
        let tokens: usize = batches
            .iter()
            .map(|b| b.dims().iter().product::<usize>())
            .sum();
        // A fresh mask sample per micro-batch (§1.2), drawn here from the run's saved random
        // stream so that every worker's rows of a micro-batch see the same `z`.
        let noise: Vec<_> = batches
            .iter()
            .map(|_| pruner.l0.noise_from(&mut self.rng))
            .collect();
        let (recompute, poisoned) = (self.exec.recompute, self.exec.poisons(step));
        let teacher = self.teacher.as_ref();
        // Under ZeRO (zero.rs) this peer keeps only its share of the model's gradients (the
        // masks' and multipliers' whole); at stage 2 it reduces them as they are made.
        let peer = self.exec.peer.clone();
        let shards = self.exec.shards(&Layout::of(&pruner.model));
        let keep = |id| shards.as_ref().is_none_or(|s| s.keeps(id));
        let reduce_made = |g, l: &Layout| peer.reduce_grads::<B::InnerBackend>(g, l, &keep);
        let reduce: Option<&Reduce<'_>> = match self.exec.zero() {
            ZeroStage::Gradients => Some(&reduce_made),
            _ => None,
        };
        let all = workers::mean_gradients(
            &pruner,
            batches,
            self.exec.workers(),
            reduce,
            |p: &Pruner<B>, m, ids, weight, sum| {
                let z = p.l0.sample_noise(&noise[m]);
                let lag = p.lagrangian.value(&p.l0.expected_sparsity(), &target);
                let lag_v = scalar(lag.clone().detach());
                // A non-finite loss is checked after the peers' figures are reduced, so that
                // every peer skips the same steps.
                let poison = |ce: Tensor<B, 1>| match poisoned {
                    true => ce * f64::NAN,
                    false => ce,
                };
                // The model's loss from final hidden states, and [loss, CE, KL] read back.
                let head = |h: Tensor<B, 3>| {
                    let (loss, ce, kl) = match teacher {
                        Some(t) => {
                            let (loss, f) = distilled_head_loss(&p.model, h, &ids, t);
                            (loss, Some(f.ce), f.kl)
                        }
                        None => (p.model.head_loss(h, ids.clone()), None, 0.0),
                    };
                    let loss = poison(loss);
                    let loss_v = scalar(loss.clone().detach());
                    Ok((loss, [loss_v, ce.unwrap_or(loss_v), kl]))
                };
                if !recompute {
                    let (loss, [loss_v, ce_v, kl_v]) = match teacher {
                        Some(_) => head(p.model.hidden_masked(ids.clone(), Some(&z)))?,
                        None => {
                            let ce = poison(p.model.loss_masked(ids, Some(&z)));
                            let v = scalar(ce.clone().detach());
                            (ce, [v, v, 0.0])
                        }
                    };
                    sum.add(p, workers::backward(loss + lag, weight, p))?;
                    return Ok([loss_v, lag_v, ce_v, kl_v]);
                }
                // The model's gradients block by block; those that reached the mask values
                // then go back into `log_alpha` with the Lagrangian's in one more backward.
                let r = recompute::gradients(&p.model, ids.clone(), Some(&z), weight, sum, head)?;
                let z_grads = r.z.expect("masks were given");
                let rest = recompute::z_surrogate(&z, &z_grads) + lag * weight;
                sum.add(p, GradientsParams::from_grads(rest.backward(), p))?;
                let [loss_v, ce_v, kl_v] = r.head;
                Ok([loss_v, lag_v, ce_v, kl_v])
            },
        );
        let layout = Layout::of(&pruner);
        let all = all.and_then(
            |StepGradients {
                 grads,
                 figures,
                 reduced,
             }| {
                let mut figures = figures;
                let reduced = match reduced {
                    true => Reduced::Already,
                    false => Reduced::No,
                };
                let keeping = shards.as_ref().map(|_| (&keep as _, reduced));
                let (grads, tokens) =
                    peer.reduce_step_keeping::<B>(grads, &layout, &mut figures, tokens, keeping)?;
                Ok((grads, figures, tokens))
            },
        );
        let (mut all, [loss, lag, ce, kl], tokens) = match all {
            Ok(g) => g,
            Err(e) => {
                self.pruner = Some(restore(pruner));
                return Err(e);
            }
        };
        // Global norm over every group, then clip.
        let norm = match &shards {
            None => grads::sumsq::<B, _>(&all, &pruner).sqrt(),
            Some(_) => {
                let local = grads::sumsq::<B, _>(&all, &pruner.model);
                let whole = grads::sumsq::<B, _>(&all, &pruner.l0)
                    + grads::sumsq::<B, _>(&all, &pruner.lagrangian);
                let device = device_of(&pruner.model);
                zero::global_norm::<B::InnerBackend>(local, whole, &peer, &device)?
            }
        };
        if !(loss.is_finite() && lag.is_finite() && norm.is_finite()) {
            // Skipped: nothing changes but the step count (the run's schedules and random
            // streams move on as for any step).
            self.pruner = Some(restore(pruner));
            self.step += 1;
            self.skipped += 1;
            return Err(TrainError::NonFinite {
                step,
                what: format!(
                    "not finite: {} {loss}, Lagrangian {lag}, gradient norm {norm}",
                    match self.teacher {
                        Some(_) => "distilled loss",
                        None => "cross-entropy",
                    }
                ),
            });
        }
        let clip = if self.cfg.hyper.max_grad_norm > 0.0 && norm > self.cfg.hyper.max_grad_norm {
            self.cfg.hyper.max_grad_norm / (norm + 1e-6)
        } else {
            1.0
        };
        let Pruner {
            model,
            l0,
            lagrangian,
        } = pruner;
        let g_model = grads::take::<B, _>(&mut all, &model, clip);
        let g_masks = grads::take::<B, _>(&mut all, &l0, clip);
        // Gradient ascent for the multipliers: Adam is sign-equivariant, so negating the gradient
        // equals a negative learning rate (§4.2).
        let g_lambda = grads::take::<B, _>(&mut all, &lagrangian, -clip);
        let mult = warmup_cosine(
            step,
            self.cfg.hyper.lr_warmup_steps(),
            self.cfg.hyper.steps,
            0.1,
        );
        let model = self
            .weights
            .step(self.cfg.hyper.lr_weights * mult, model, g_model);
        let model = match &shards {
            Some(s) => zero::gather(model, s, &peer)?,
            None => model,
        };
        self.pruner = Some(Pruner {
            model,
            l0: self.masks.step(self.cfg.hyper.lr_masks * mult, l0, g_masks),
            lagrangian: self
                .lambdas
                .step(self.cfg.hyper.lr_lambda * mult, lagrangian, g_lambda),
        });
        self.step += 1;
        self.log_line(
            step,
            StepFigures {
                lr_mult: mult,
                ce,
                kl: self.teacher.is_some().then_some(kl),
                lagrangian: lag,
                grad_norm: norm,
                tokens,
                target,
            },
        )
    }

    /// The masked model with deterministic masks at the expected number of zeros (§10.8).
    fn eval_view(&self) -> crate::Result<EvalView<B::InnerBackend>> {
        let model = self.pruner().model.valid();
        let z = self
            .masks()
            .deterministic(None)?
            .to_z::<B::InnerBackend>(&model.embed_tokens.weight.device());
        Ok(EvalView { model, z: Some(z) })
    }

    fn attach(log: &mut PruneLog, data: DataReport, _eval_first: Option<UpdateRecord>) {
        log.data = data;
    }

    fn skipped(&self) -> usize {
        self.skipped
    }

    fn summary(log: &PruneLog) -> String {
        let e = &log.expected_shape;
        format!(
            "ce {:.3}  shape L{:.1} d{:.0} H{:.2} m{:.0}",
            log.ce_loss, e.layers, e.hidden, e.heads, e.intermediate
        )
    }

    fn prepare(&mut self) -> crate::Result<Vec<String>> {
        let Some(dir) = self.resume_optim.take() else {
            return Ok(Vec::new());
        };
        let model = &self.pruner().model;
        let layout = Layout::of(model);
        let shards = self.exec.shards(&layout);
        let device = model.devices()[0].clone();
        let (record, line) = match (dir.join("optim_weights.mpk").is_file(), &shards) {
            (true, None) => return Ok(Vec::new()),
            (true, Some(s)) => {
                let (r, line) = zero::keep_share(self.weights.to_record(), s, &dir);
                (r, Some(line))
            }
            (false, s) => {
                zero::load_shards::<B, _>(&dir, "optim_weights", &layout, s.as_ref(), &device)?
            }
        };
        self.weights = std::mem::replace(&mut self.weights, adamw(0.0).init()).load_record(record);
        Ok(line.into_iter().collect())
    }

    fn save_shard(&self, staging: &Path) -> crate::Result<Vec<String>> {
        let model = &self.pruner().model;
        let Some(shards) = self.exec.shards(&Layout::of(model)) else {
            return Ok(Vec::new());
        };
        let (peer, device) = (&self.exec.peer, device_of(model));
        zero::save_shard::<B, _>(
            self.weights.to_record(),
            &shards,
            staging,
            "optim_weights",
            peer,
            &device,
        )
    }

    fn save_records(&self, dir: &Path) -> crate::Result<serde_json::Value> {
        save_module(self.pruner(), dir, "pruner")?;
        self.save_masks(&dir.join("masks.safetensors"))?;
        // Under ZeRO the peers' shards are the weights' optimizer state (moved in by the loop).
        if self.exec.zero() == ZeroStage::Off {
            save_record::<B, _>(self.weights.to_record(), dir, "optim_weights")?;
        }
        save_record::<B, _>(self.masks.to_record(), dir, "optim_masks")?;
        save_record::<B, _>(self.lambdas.to_record(), dir, "optim_lambdas")?;
        let state = PruneLoopState {
            rng_word_pos: self.rng.get_word_pos(),
            skipped: self.skipped,
            model_config: self
                .pruner()
                .model
                .config
                .to_hf_json(shear_model::Dtype::F32),
        };
        Ok(serde_json::to_value(state).expect("serialises"))
    }
}
