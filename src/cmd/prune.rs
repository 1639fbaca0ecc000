use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use rand::SeedableRng;
use shear_data::stream::TokenStream;
use shear_data::{
    DynamicLoader, LoaderEvent, LoaderState, PreparedData, Proportions, ReferenceLoss, Split,
    Tokenizer, UpdateRule,
};
use shear_model::checkpoint::copy_tokenizer_files;
use shear_model::masks::{LayerMasks, TargetShape};
use shear_model::masks_file::{save_masks, MaskState};
use shear_model::LlamaConfig;
use shear_train::dynamic::{DynamicBatches, DynamicConfig};
use shear_train::prune::{finish, prune, PruneConfig};
use shear_train::prune::{FnBatches, PruneData};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Source model directory or hub id (owner/name).
    pub model: String,
    /// Target shape, e.g. `layers=24,hidden=2048,heads=16,intermediate=5504`.
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    pub target: Option<String>,
    /// Named target for a Llama-2-7B source: sheared-1.3b, sheared-2.7b or 370m.
    #[arg(long)]
    pub preset: Option<String>,
    /// Training data: a prepared data folder (`shear data prepare`; its prune split, with
    /// dynamic batch loading), or one .txt file (tokenized with the model's tokenizer) or file
    /// of token ids (random windows, one domain).
    #[arg(long)]
    pub data: PathBuf,
    /// Output directory: `model/` (the pruned Hugging Face checkpoint), `checkpoint/` (the
    /// full-size model with trained weights), `masks.safetensors`, `prune_log.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3200)]
    pub steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Tokens per sequence (default: the prepared data's, or 512 for a single file).
    #[arg(long)]
    pub seq: Option<usize>,
    #[arg(long, default_value_t = 1e-4)]
    pub lr_weights: f64,
    #[arg(long, default_value_t = 1.0)]
    pub lr_masks: f64,
    #[arg(long, default_value_t = 1.0)]
    pub lr_lambda: f64,
    /// Learning-rate warm-up steps (default: 10 % of the steps).
    #[arg(long)]
    pub lr_warmup: Option<usize>,
    /// Target-sparsity warm-up steps (default: 20 % of the steps).
    #[arg(long)]
    pub lagrangian_warmup: Option<usize>,
    /// Save masks.safetensors every this many steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Storage dtype of the pruned checkpoint (default: the source's).
    #[arg(long)]
    pub dtype: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Per-layer masks: `layer` (one per block, the released recipe) or `head-layer-mlp`
    /// (separate attention and FFN masks; layers are still removed whole).
    #[arg(long, value_enum, default_value_t = LayerMaskArg::Layer)]
    pub layer_masks: LayerMaskArg,
    /// Initial domain weights: redpajama | uniform | tokens | auto | NAME=W,... (prepared data).
    #[arg(long, default_value = "auto")]
    pub proportions: String,
    /// Domain-weight update: code (reference code), paper, or constant (static mixture).
    #[arg(long, default_value = "code")]
    pub update_rule: String,
    /// Update the domain weights after every this many steps (SPEC: 50).
    #[arg(long, default_value_t = 50)]
    pub update_every: usize,
    /// Reference losses: source (the source model's eval losses), llama2 (the Llama-2
    /// scaling-law fit of SPEC §6.4, RedPajama domains), NAME=LOSS,..., or a TOML file with
    /// `[reference.values]` or `[reference.scaling]` (NAME = [[params, loss], ...]).
    #[arg(long, default_value = "source")]
    pub reference: String,
    /// Sequences per evaluation batch (dynamic loading).
    #[arg(long, default_value_t = 8)]
    pub eval_batch: usize,
    /// At most this many eval sequences per domain (default: all).
    #[arg(long)]
    pub eval_sequences: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerMaskArg {
    Layer,
    HeadLayerMlp,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    // Everything that can be refused is checked before the model is loaded.
    let dir = super::resolve(&args.model, offline)?;
    let config = LlamaConfig::from_file(&dir)?;
    let target: TargetShape = match (&args.target, &args.preset) {
        (Some(t), _) => t
            .parse()
            .map_err(|e| anyhow::anyhow!("--target {t}: {e}"))?,
        (None, Some(p)) => {
            TargetShape::preset(p, &config).map_err(|e| anyhow::anyhow!("--preset: {e}"))?
        }
        (None, None) => bail!("give --target or --preset"),
    };
    target
        .validate(&config)
        .map_err(|e| anyhow::anyhow!("invalid target ({target}): {e}"))?;
    if args.steps == 0 || args.batch == 0 || args.grad_accum == 0 {
        bail!("--steps, --batch and --grad-accum must be positive");
    }
    if args.seq.is_some_and(|s| s < 2) {
        bail!(
            "--seq {}: need at least 2 tokens for a next-token loss",
            args.seq.unwrap_or(0)
        );
    }
    let dtype = match &args.dtype {
        Some(d) => d.parse()?,
        None => shear_model::SafetensorsSource::open(&dir)?.stored_dtype(),
    };
    let source = if PreparedData::is_prepared(&args.data) {
        Source::Prepared(super::eval::open_data(&args.data, &dir, &config)?)
    } else {
        let tokenizer = Tokenizer::from_file(&dir).ok();
        let stream = TokenStream::from_file(&args.data, tokenizer.as_ref())
            .with_context(|| format!("--data {}", args.data.display()))?;
        let seq = args.seq.unwrap_or(512);
        if stream.len() < seq {
            bail!(
                "--data {}: {} tokens, fewer than one sequence of --seq {seq}",
                args.data.display(),
                stream.len(),
            );
        }
        if let Some(max) = stream
            .max_token()
            .filter(|&m| m as usize >= config.vocab_size)
        {
            bail!(
                "--data {}: token id {max} is outside the model's vocabulary (size {})",
                args.data.display(),
                config.vocab_size
            );
        }
        Source::Stream(stream, seq)
    };
    // Everything about dynamic loading that can be refused, before the model is loaded.
    let mut dynamic = match &source {
        Source::Prepared(data) => Some(dynamic_setup::<Autodiff<B>>(
            &args, data, &target, &config, device,
        )?),
        Source::Stream(..) => None,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let bar = super::spinner(format!("loading {}", dir.display()));
    let model = shear_model::load_llama::<Autodiff<B>>(&dir, device)
        .with_context(|| format!("cannot load model {}", dir.display()))?;
    bar.finish_and_clear();

    let mut cfg = PruneConfig::new(target, args.steps);
    cfg.grad_accum = args.grad_accum;
    cfg.lr_weights = args.lr_weights;
    cfg.lr_masks = args.lr_masks;
    cfg.lr_lambda = args.lr_lambda;
    cfg.seed = args.seed;
    cfg.layer_masks = match args.layer_masks {
        LayerMaskArg::Layer => LayerMasks::Layer,
        LayerMaskArg::HeadLayerMlp => LayerMasks::HeadLayerMlp,
    };
    if let Some(w) = args.lr_warmup {
        cfg.lr_warmup_steps = w;
    }
    if let Some(w) = args.lagrangian_warmup {
        cfg.lagrangian_warmup_steps = w;
    }

    let log_path = args.out.join("prune_log.jsonl");
    let mut log = std::io::BufWriter::new(
        std::fs::File::create(&log_path)
            .with_context(|| format!("cannot write {}", log_path.display()))?,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let batch = args.batch;
    if let Some(d) = dynamic.as_mut() {
        if matches!(
            ReferenceLoss::parse(&args.reference),
            Ok(ReferenceLoss::Source)
        ) {
            let bar = super::spinner("reference losses: evaluating the source model".into());
            let losses = d.evaluate(&model.valid(), None);
            bar.finish_and_clear();
            d.reference = losses.iter().map(|l| l.loss).collect();
        }
        let show = |v: &[f64]| -> String {
            let names = d.loader.domains();
            names
                .iter()
                .zip(v)
                .map(|(n, x)| format!("{n} {x:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!("domain weights: {}", show(d.loader.weights()));
        eprintln!(
            "reference losses ({}): {}",
            args.reference,
            show(&d.reference)
        );
    }
    let loader_path = args.out.join("loader_state.json");
    let bar = indicatif::ProgressBar::new(args.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .expect("valid template"),
    );
    let mut write_err = None;
    let mut stream_batches = FnBatches(|_, _| {
        let Source::Stream(stream, seq) = &source else {
            unreachable!("prepared data uses the dynamic loader")
        };
        let ids: Vec<i64> = stream
            .sample(&mut rng, batch, *seq)
            .into_iter()
            .map(i64::from)
            .collect();
        Tensor::from_data(TensorData::new(ids, [batch, *seq]), device)
    });
    let data: &mut dyn PruneData<Autodiff<B>> = match dynamic.as_mut() {
        Some(d) => d,
        None => &mut stream_batches,
    };
    let pruner = prune(model, &cfg, data, |s, pruner| {
        if args.save_every > 0 && (s.step + 1) % args.save_every == 0 && s.step + 1 < args.steps {
            let (lambda_1, lambda_2) = pruner.lagrangian.values();
            let state = MaskState {
                step: s.step + 1,
                target,
                lambda_1,
                lambda_2,
            };
            let path = args.out.join("masks.safetensors");
            if let Err(e) = save_masks(&path, &pruner.l0.clone().clamp_log_alpha(), &state) {
                write_err.get_or_insert(anyhow::Error::from(e));
            }
            if let Some(st) = &s.loader_state {
                if let Err(e) = save_loader_state(&loader_path, st) {
                    write_err.get_or_insert(e);
                }
            }
        }
        if let Err(e) = serde_json::to_writer(&mut log, s)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                writeln!(log)?;
                Ok(())
            })
        {
            write_err.get_or_insert(e);
        }
        if let Some(u) = &s.domain_update {
            let w: Vec<String> = u
                .domains
                .iter()
                .zip(&u.weights)
                .map(|(d, w)| format!("{d} {w:.3}"))
                .collect();
            super::say(
                &bar,
                format!("step {}: domain weights {}", u.step, w.join(", ")),
            );
        }
        for e in &s.loader_events {
            let LoaderEvent::NewPass { domain, pass } = e;
            super::say(
                &bar,
                format!(
                    "step {}: domain `{domain}` used up, starting pass {} in a new order",
                    s.step + 1,
                    pass + 1
                ),
            );
        }
        let [l, d, h, m] = s.expected_shape;
        bar.set_message(format!(
            "ce {:.3}  shape L{l:.1} d{d:.0} H{h:.2} m{m:.0}",
            s.ce_loss
        ));
        bar.inc(1);
    });
    bar.finish_and_clear();
    if let Some(e) = write_err {
        return Err(e.context(format!("cannot write {}", log_path.display())));
    }
    log.flush()?;
    let (lambda_1, lambda_2) = pruner.lagrangian.values();
    let state = MaskState {
        step: args.steps,
        target,
        lambda_1,
        lambda_2,
    };
    save_masks(
        &args.out.join("masks.safetensors"),
        &pruner.l0.clone().clamp_log_alpha(),
        &state,
    )?;
    if let Some(d) = &dynamic {
        save_loader_state(&loader_path, &d.loader.state())?;
    }
    // The full-size model with its trained weights: with masks.safetensors it is the pruning
    // checkpoint (`shear materialize --source OUT/checkpoint --masks OUT/masks.safetensors`).
    let checkpoint = args.out.join("checkpoint");
    shear_model::save_llama(&pruner.model.valid(), &checkpoint, dtype)?;
    copy_tokenizer_files(&dir, &checkpoint)?;
    let small = finish(&pruner, &target)?;
    let model_dir = args.out.join("model");
    shear_model::save_llama(&small, &model_dir, dtype)?;
    copy_tokenizer_files(&dir, &model_dir)?;
    let c = &small.config;
    println!(
        "pruned to layers {} hidden {} heads {} intermediate {} ({} parameters) -> {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        c.param_counts().total(),
        model_dir.display()
    );
    Ok(())
}

/// Where the pruning batches come from.
enum Source {
    /// A prepared data folder: dynamic batch loading over its prune split.
    Prepared(PreparedData),
    /// One token stream and the sequence length.
    Stream(TokenStream, usize),
}

/// Dynamic batch loading for a prepared data folder: initial weights, update rule, reference
/// losses (`source` is filled in once the model is loaded). Refuses bad settings before any
/// model is loaded.
fn dynamic_setup<B: AutodiffBackend>(
    args: &Args,
    data: &PreparedData,
    target: &TargetShape,
    config: &LlamaConfig,
    device: &B::Device,
) -> anyhow::Result<DynamicBatches<B>> {
    let seq = data.manifest.seq_len;
    if let Some(s) = args.seq.filter(|&s| s != seq) {
        bail!(
            "--seq {s}: {} holds sequences of {seq} tokens (omit --seq to use them)",
            args.data.display()
        );
    }
    let domains = data.domains();
    let prune = data.shards(Split::Prune)?;
    let tokens: Vec<u64> = prune.iter().map(|s| (s.len() * seq) as u64).collect();
    let proportions: Proportions = args.proportions.parse().context("--proportions")?;
    let weights = proportions
        .resolve(&domains, &tokens)
        .with_context(|| format!("--proportions {}", args.proportions))?;
    let rule: UpdateRule = args.update_rule.parse().context("--update-rule")?;
    let n_target = target.config(config).param_counts().total() as f64;
    let reference = ReferenceLoss::parse(&args.reference)
        .and_then(|r| r.resolve(&domains, n_target))
        .with_context(|| format!("--reference {}", args.reference))?
        .unwrap_or_else(|| vec![f64::NAN; domains.len()]);
    let loader = DynamicLoader::new(domains, prune, weights, args.batch, args.seed)
        .with_context(|| format!("--data {}", args.data.display()))?;
    let cfg = DynamicConfig {
        rule,
        every: args.update_every,
        eval_batch: args.eval_batch.max(1),
        eval_sequences: args.eval_sequences,
    };
    Ok(DynamicBatches::new(
        loader,
        data.shards(Split::Eval)?,
        reference,
        cfg,
        device,
    )?)
}

/// Writes the loader state (weights, cursors, RNG position) as JSON, atomically.
fn save_loader_state(path: &std::path::Path, state: &LoaderState) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    shear_model::checkpoint::write_atomic(path, &json)
        .with_context(|| format!("cannot write {}", path.display()))
}
