//! The pruning loop (SPEC §4): weights, masks and Lagrange multipliers trained jointly —
//! `min over (θ, z) max over λ` of `CE(masked model) + Lagrangian(expected sparsity, target)`.

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;
use shear_model::masks::{LayerMasks, TargetShape, MASK_TYPES};
use shear_model::{HardConcrete, L0Masks, Llama};

use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use rand::SeedableRng;

use crate::dynamic::DataReport;
use crate::grads;
use crate::lagrangian::Lagrangian;
use crate::schedule::{target_warmup, warmup_cosine};
pub use crate::trainer::CheckpointError;

/// Hyper-parameters of a pruning run (defaults: SPEC §4.2–4.3, scaled by `steps`).
#[derive(Clone, Debug)]
pub struct PruneConfig {
    pub target: TargetShape,
    pub steps: usize,
    /// Learning-rate warm-up (SPEC: 10 % of the steps).
    pub lr_warmup_steps: usize,
    /// Target-sparsity warm-up (SPEC: 20 % of the steps).
    pub lagrangian_warmup_steps: usize,
    pub lr_weights: f64,
    pub lr_masks: f64,
    pub lr_lambda: f64,
    /// Global gradient-norm clip (0: off).
    pub max_grad_norm: f64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub seed: u64,
    pub hard_concrete: HardConcrete,
    /// One `layer` mask (default) or separate `head_layer` + `mlp` masks.
    pub layer_masks: LayerMasks,
}

impl PruneConfig {
    pub fn new(target: TargetShape, steps: usize) -> Self {
        PruneConfig {
            target,
            steps,
            lr_warmup_steps: steps / 10,
            lagrangian_warmup_steps: steps / 5,
            lr_weights: 1e-4,
            lr_masks: 1.0,
            lr_lambda: 1.0,
            max_grad_norm: 1.0,
            grad_accum: 1,
            seed: 0,
            hard_concrete: HardConcrete::default(),
            layer_masks: LayerMasks::Layer,
        }
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
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepLog {
    pub step: usize,
    pub lr_mult: f64,
    pub ce_loss: f64,
    pub lagrangian: f64,
    pub grad_norm: f64,
    /// Per mask type in `MASK_TYPES` order (layer, hidden, head, intermediate, mlp).
    pub lambda_1: [f64; 5],
    pub lambda_2: [f64; 5],
    /// layers, hidden, heads per layer, intermediate per layer.
    pub expected_shape: [f64; 4],
    /// The mask types of this run, in `MASK_TYPES` order.
    pub mask_types: Vec<&'static str>,
    /// Per mask type of `mask_types` (mean over layers for head and intermediate).
    pub expected_sparsity: Vec<f64>,
    pub target_sparsity: Vec<f64>,
    pub expected_params: f64,
    /// Dynamic batch loading: the weight update after this step, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_update: Option<shear_data::UpdateRecord>,
    /// Domains that ran out during this step and started a new pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loader_events: Vec<shear_data::LoaderEvent>,
    /// The data loader's state after this step (saved with checkpoints, not logged).
    #[serde(skip)]
    pub loader_state: Option<shear_data::LoaderState>,
}

/// Where the pruning loop's batches come from.
pub trait PruneData<B: AutodiffBackend> {
    /// Micro-batch `micro` of optimizer step `step`: token ids `[batch, seq]`.
    fn batch(&mut self, step: usize, micro: usize) -> Tensor<B, 2, Int>;
    /// Called after every optimizer step with the updated pruner (dynamic batch loading
    /// updates its domain weights here).
    fn after_step(&mut self, _step: usize, _pruner: &Pruner<B>) -> DataReport {
        DataReport::default()
    }
}

/// A plain function of (step, micro-batch) as the data source.
pub struct FnBatches<F>(pub F);

impl<B: AutodiffBackend, F: FnMut(usize, usize) -> Tensor<B, 2, Int>> PruneData<B>
    for FnBatches<F>
{
    fn batch(&mut self, step: usize, micro: usize) -> Tensor<B, 2, Int> {
        (self.0)(step, micro)
    }
}

impl<B: AutodiffBackend, D: PruneData<B> + ?Sized> PruneData<B> for &mut D {
    fn batch(&mut self, step: usize, micro: usize) -> Tensor<B, 2, Int> {
        (**self).batch(step, micro)
    }
    fn after_step(&mut self, step: usize, pruner: &Pruner<B>) -> DataReport {
        (**self).after_step(step, pruner)
    }
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// The optimizers of the three groups (AdamW β (0.9, 0.95), ε 1e-8, no weight decay) and the
/// mask-sampling random stream: the loop's state besides the trained module.
pub struct PruneOptimizers<B: AutodiffBackend> {
    weights: burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, Llama<B>, B>,
    masks: burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, L0Masks<B>, B>,
    lambdas: burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, Lagrangian<B>, B>,
    /// The uniform draws of hard-concrete sampling (host side, so it can be saved).
    rng: rand_chacha::ChaCha8Rng,
}

impl<B: AutodiffBackend> PruneOptimizers<B> {
    /// Fresh optimizers; `seed` starts the mask-sampling random stream.
    pub fn new(seed: u64) -> Self {
        let adamw = || {
            AdamWConfig::new()
                .with_beta_1(0.9)
                .with_beta_2(0.95)
                .with_epsilon(1e-8)
                .with_weight_decay(0.0)
        };
        PruneOptimizers {
            weights: adamw().init(),
            masks: adamw().init(),
            lambdas: adamw().init(),
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

/// One optimizer step at `step` on the micro-batches `batches` (`[batch, seq]` token ids each).
pub fn prune_step<B: AutodiffBackend>(
    pruner: Pruner<B>,
    optim: &mut PruneOptimizers<B>,
    cfg: &PruneConfig,
    step: usize,
    batches: &[Tensor<B, 2, Int>],
) -> (Pruner<B>, StepLog) {
    let target = cfg.target.sparsity(&pruner.model.config);
    let t_now = target
        .clone()
        .map(|t| target_warmup(t, step, cfg.lagrangian_warmup_steps));
    let pruner = Pruner {
        l0: pruner.l0.clamp_log_alpha(),
        ..pruner
    };
    let n = batches.len().max(1) as f64;
    let mut acc = GradientsAccumulator::<Pruner<B>>::new();
    let mut single: Option<GradientsParams> = None;
    let (mut ce_sum, mut lag_sum) = (0.0, 0.0);
    for ids in batches {
        // A fresh mask sample per forward (SPEC §1.2), from the run's saved random stream.
        let z = pruner.l0.sample_from(&mut optim.rng);
        let ce = pruner.model.loss_masked(ids.clone(), Some(&z));
        let lag = pruner
            .lagrangian
            .value(&pruner.l0.expected_sparsity(), &t_now);
        ce_sum += scalar(ce.clone().detach());
        lag_sum += scalar(lag.clone().detach());
        let total = (ce + lag) / n;
        let grads = GradientsParams::from_grads(total.backward(), &pruner);
        if batches.len() == 1 {
            // No accumulation: skip the accumulator's copy of every gradient.
            single = Some(grads);
        } else {
            acc.accumulate(&pruner, grads);
        }
    }
    let mut all = single.unwrap_or_else(|| acc.grads());
    // Global norm over every group, then clip.
    let norm = grads::sumsq::<B, _>(&all, &pruner).sqrt();
    let clip = if cfg.max_grad_norm > 0.0 && norm > cfg.max_grad_norm {
        cfg.max_grad_norm / (norm + 1e-6)
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
    // equals a negative learning rate (SPEC §4.2).
    let g_lambda = grads::take::<B, _>(&mut all, &lagrangian, -clip);
    let mult = warmup_cosine(step, cfg.lr_warmup_steps, cfg.steps, 0.1);
    let pruner = Pruner {
        model: optim.weights.step(cfg.lr_weights * mult, model, g_model),
        l0: optim.masks.step(cfg.lr_masks * mult, l0, g_masks),
        lagrangian: optim
            .lambdas
            .step(cfg.lr_lambda * mult, lagrangian, g_lambda),
    };
    let log = step_log(&pruner, step, mult, ce_sum / n, lag_sum / n, norm, &target);
    (pruner, log)
}

fn step_log<B: Backend>(
    p: &Pruner<B>,
    step: usize,
    lr_mult: f64,
    ce_loss: f64,
    lagrangian: f64,
    grad_norm: f64,
    target: &shear_model::PerType<f64>,
) -> StepLog {
    let l0 = p.l0.clone().clamp_log_alpha();
    let (lambda_1, lambda_2) = p.lagrangian.values();
    let e = l0.expected_sparsity().map(|t| scalar(t.mean())).entries();
    StepLog {
        step,
        lr_mult,
        ce_loss,
        lagrangian,
        grad_norm,
        lambda_1,
        lambda_2,
        expected_shape: l0.expected_shape(),
        mask_types: e.iter().map(|(k, _)| MASK_TYPES[*k]).collect(),
        target_sparsity: e
            .iter()
            .map(|(k, _)| *target.get(*k).expect("target"))
            .collect(),
        expected_sparsity: e.iter().map(|(_, v)| *v).collect(),
        expected_params: scalar(l0.expected_params()),
        domain_update: None,
        loader_events: Vec::new(),
        loader_state: None,
    }
}

/// A pruning run in progress: the trained module, the optimizers and random stream, and the
/// number of steps done. Saved and restored whole for an exact resume.
pub struct PruneRun<B: AutodiffBackend> {
    pub pruner: Pruner<B>,
    pub optim: PruneOptimizers<B>,
    pub step: usize,
}

/// `state.json` of a pruning checkpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct PruneCheckpoint {
    step: usize,
    rng_word_pos: u128,
    target: String,
    layer_masks: String,
    model_config: serde_json::Value,
    loader: Option<shear_data::LoaderState>,
}

fn layer_masks_name(k: LayerMasks) -> &'static str {
    match k {
        LayerMasks::Layer => "layer",
        LayerMasks::HeadLayerMlp => "head-layer-mlp",
    }
}

impl<B: AutodiffBackend> PruneRun<B> {
    /// A fresh run: masks initialised (SPEC §2.2) and multipliers at 0.
    pub fn new(model: Llama<B>, cfg: &PruneConfig) -> Self {
        let device = model.embed_tokens.weight.device();
        B::seed(&device, cfg.seed);
        PruneRun {
            pruner: Pruner {
                l0: L0Masks::with_layer_masks(
                    &model.config,
                    cfg.hard_concrete,
                    cfg.layer_masks,
                    &device,
                ),
                lagrangian: Lagrangian::new(&device),
                model,
            },
            optim: PruneOptimizers::new(cfg.seed),
            step: 0,
        }
    }

    /// Writes `dir/step-NNNNNNNN` (module and optimizer records, random stream position, loader
    /// state) under a temporary name, renamed when complete.
    pub fn save(
        &self,
        dir: &std::path::Path,
        cfg: &PruneConfig,
        loader: Option<&shear_data::LoaderState>,
    ) -> Result<std::path::PathBuf, CheckpointError> {
        use burn::record::Recorder;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let final_dir = dir.join(format!("step-{:08}", self.step));
        let tmp = dir.join(format!(".step-{:08}.tmp", self.step));
        let io = |p: &std::path::Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| CheckpointError::Io { path: p, source: e }
        };
        let rec_err = |p: std::path::PathBuf| {
            move |e: burn::record::RecorderError| CheckpointError::Record {
                path: p,
                msg: e.to_string(),
            }
        };
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        self.pruner
            .clone()
            .save_file(tmp.join("pruner"), &rec)
            .map_err(rec_err(tmp.join("pruner.mpk")))?;
        rec.record(self.optim.weights.to_record(), tmp.join("optim_weights"))
            .map_err(rec_err(tmp.join("optim_weights.mpk")))?;
        rec.record(self.optim.masks.to_record(), tmp.join("optim_masks"))
            .map_err(rec_err(tmp.join("optim_masks.mpk")))?;
        rec.record(self.optim.lambdas.to_record(), tmp.join("optim_lambdas"))
            .map_err(rec_err(tmp.join("optim_lambdas.mpk")))?;
        let state = PruneCheckpoint {
            step: self.step,
            rng_word_pos: self.optim.rng.get_word_pos(),
            target: cfg.target.to_string(),
            layer_masks: layer_masks_name(cfg.layer_masks).into(),
            model_config: self.pruner.model.config.to_hf_json(shear_model::Dtype::F32),
            loader: loader.cloned(),
        };
        let json = serde_json::to_vec_pretty(&state).expect("state serialises");
        std::fs::write(tmp.join("state.json"), json).map_err(io(&tmp))?;
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        Ok(final_dir)
    }

    /// Restores a run saved by [`PruneRun::save`] for the same target and mask kind.
    pub fn load(
        ckpt: &std::path::Path,
        cfg: &PruneConfig,
        device: &B::Device,
    ) -> Result<(Self, Option<shear_data::LoaderState>), CheckpointError> {
        use burn::record::Recorder;
        let path = ckpt.join("state.json");
        let bad = |msg: String| CheckpointError::Record {
            path: path.clone(),
            msg,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| CheckpointError::Io {
            path: path.clone(),
            source: e,
        })?;
        let state: PruneCheckpoint = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if state.target != cfg.target.to_string()
            || state.layer_masks != layer_masks_name(cfg.layer_masks)
        {
            return Err(bad(format!(
                "made for target ({}) with {} masks, not ({}) with {} masks",
                state.target,
                state.layer_masks,
                cfg.target,
                layer_masks_name(cfg.layer_masks)
            )));
        }
        let config =
            shear_model::LlamaConfig::from_json_str(&state.model_config.to_string(), &path)
                .map_err(|e| bad(e.to_string()))?;
        let rec = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        let rec_err = |p: std::path::PathBuf| {
            move |e: burn::record::RecorderError| CheckpointError::Record {
                path: p,
                msg: e.to_string(),
            }
        };
        let model = Llama::from_source(&config, &mut shear_model::RandomInit::default(), device)
            .map_err(|e| bad(e.to_string()))?;
        let skeleton = Pruner {
            l0: L0Masks::with_layer_masks(&config, cfg.hard_concrete, cfg.layer_masks, device),
            lagrangian: Lagrangian::new(device),
            model,
        };
        let pruner = skeleton
            .load_file(ckpt.join("pruner"), &rec, device)
            .map_err(rec_err(ckpt.join("pruner.mpk")))?;
        let mut optim = PruneOptimizers::<B>::new(cfg.seed);
        optim.weights = optim.weights.load_record(
            rec.load(ckpt.join("optim_weights.mpk"), device)
                .map_err(rec_err(ckpt.join("optim_weights.mpk")))?,
        );
        optim.masks = optim.masks.load_record(
            rec.load(ckpt.join("optim_masks.mpk"), device)
                .map_err(rec_err(ckpt.join("optim_masks.mpk")))?,
        );
        optim.lambdas = optim.lambdas.load_record(
            rec.load(ckpt.join("optim_lambdas.mpk"), device)
                .map_err(rec_err(ckpt.join("optim_lambdas.mpk")))?,
        );
        optim.rng.set_word_pos(state.rng_word_pos);
        Ok((
            PruneRun {
                pruner,
                optim,
                step: state.step,
            },
            state.loader,
        ))
    }
}

/// Continues `run` up to step `until` (the schedules follow `cfg.steps`); `data` supplies token
/// ids and `on_step` sees every step's log and the run after it (to save checkpoints).
pub fn prune_until<B: AutodiffBackend>(
    mut run: PruneRun<B>,
    cfg: &PruneConfig,
    mut data: impl PruneData<B>,
    until: usize,
    mut on_step: impl FnMut(&StepLog, &PruneRun<B>),
) -> PruneRun<B> {
    while run.step < until.min(cfg.steps) {
        let step = run.step;
        let batches: Vec<_> = (0..cfg.grad_accum.max(1))
            .map(|m| data.batch(step, m))
            .collect();
        // The pruner moves through the step (no second reference keeps the old weights alive).
        let (p, mut log) = prune_step(run.pruner, &mut run.optim, cfg, step, &batches);
        run.pruner = p;
        run.step += 1;
        let report = data.after_step(step, &run.pruner);
        log.domain_update = report.update;
        log.loader_events = report.events;
        log.loader_state = report.state;
        on_step(&log, &run);
    }
    run
}

/// Runs `cfg.steps` pruning steps from `model`; `data` supplies token ids and `on_step` sees
/// every step's log and the pruner after it. Returns the trained pruner (its masks give the
/// target shape through [`L0Masks::deterministic`]).
pub fn prune<B: AutodiffBackend>(
    model: Llama<B>,
    cfg: &PruneConfig,
    data: impl PruneData<B>,
    mut on_step: impl FnMut(&StepLog, &Pruner<B>),
) -> Pruner<B> {
    let run = PruneRun::new(model, cfg);
    prune_until(run, cfg, data, cfg.steps, |log, r| on_step(log, &r.pruner)).pruner
}

/// The pruned model at exactly the target shape (SPEC §5), on the inner backend.
pub fn finish<B: AutodiffBackend>(
    pruner: &Pruner<B>,
    target: &TargetShape,
) -> shear_model::Result<Llama<B::InnerBackend>> {
    let model = pruner.model.valid();
    let z = pruner
        .l0
        .clone()
        .clamp_log_alpha()
        .deterministic(Some(target));
    let device = model.embed_tokens.weight.device();
    shear_model::materialize(&model, &z, &device)
}
