//! `shear plan`: the memory a pruning or training run needs on each device, and the cards it
//! fits, before anything is loaded (shear_train::memory; docs/algorithm.md §13).

use shear_model::{LlamaConfig, PruneModules};
use shear_train::memory::{self, Card, MemoryPlan, PlanInput, CARDS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Pruning the model (masks, multipliers, the masked forward).
    Prune,
    /// Continued pre-training: of the model, or of the target shape when one is given.
    Train,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model: a config.json, a model directory, or a hub id (only its config.json is read).
    pub model: String,
    #[arg(long, value_enum, default_value_t = Stage::Prune)]
    pub stage: Stage,
    /// Target shape or preset, as `shear prune --target` takes it (checked against the model;
    /// with `--stage train`, the model trained).
    #[arg(long, visible_alias = "preset")]
    pub target: Option<shear_model::TargetSpec>,
    /// Sequences per optimizer step, over all devices.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Sequences per forward/backward on one device.
    #[arg(long, default_value_t = 1)]
    pub micro_batch: usize,
    #[arg(long, default_value_t = 4096)]
    pub seq: usize,
    /// Data-parallel devices, each holding the whole model (and a share of the state with
    /// `--zero-stage`).
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Plan a run with `--recompute` (blocks recomputed in the backward pass).
    #[arg(long)]
    pub recompute: bool,
    /// Plan a run with `--zero-stage` (the state sharded over the `--devices`: 1 the AdamW
    /// moments, 2 the summed gradients as well).
    #[arg(long, default_value_t = 0, value_name = "0|1|2",
          value_parser = clap::builder::RangedU64ValueParser::<u8>::new().range(0..=2))]
    pub zero_stage: u8,
    /// Only this card (H200, H100-80GB, A100-80GB, A100-40GB, L40S, RTX-4090); default: all.
    #[arg(long)]
    pub card: Option<String>,
    /// Plan a run distilled from this teacher (a config.json, a model directory or a hub id;
    /// only its config.json is read): its frozen weights, forward and logits on every device.
    #[arg(long, value_name = "MODEL")]
    pub distill_from: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// `fused_loss`: the CPU backend's fused LM-head loss keeps no logits (`--device cpu`).
pub fn run(args: Args, offline: bool, fused_loss: bool) -> anyhow::Result<()> {
    let path = shear_model::hub::resolve_config(&args.model, offline)
        .map_err(|e| anyhow::anyhow!("cannot read the model's config: {e}"))?;
    let source = LlamaConfig::from_file(&path)?;
    let target = match &args.target {
        Some(t) => Some(
            t.resolve(&source)
                .map_err(|e| anyhow::anyhow!("--target {t}: {e}"))?,
        ),
        None => None,
    };
    if let Some(t) = &target {
        t.validate(&source, PruneModules::default())
            .map_err(|e| anyhow::anyhow!("target {t}: {e}"))?;
    }
    for (name, v) in [
        ("--batch", args.batch),
        ("--micro-batch", args.micro_batch),
        ("--devices", args.devices),
    ] {
        anyhow::ensure!(v > 0, "{name} {v}: must be at least 1");
    }
    anyhow::ensure!(args.seq >= 2, "--seq {}: must be at least 2", args.seq);
    let per_step = args.devices * args.micro_batch;
    anyhow::ensure!(
        args.batch.is_multiple_of(per_step),
        "--batch {}: must be a multiple of --devices {} × --micro-batch {} = {per_step}",
        args.batch,
        args.devices,
        args.micro_batch
    );
    let cards: Vec<Card> = match &args.card {
        Some(name) => vec![memory::card(name).ok_or_else(|| {
            let known: Vec<&str> = CARDS.iter().map(|c| c.name).collect();
            anyhow::anyhow!("--card {name}: unknown (known: {})", known.join(", "))
        })?],
        None => CARDS.to_vec(),
    };
    let teacher = match &args.distill_from {
        Some(t) => {
            let path = shear_model::hub::resolve_config(t, offline)
                .map_err(|e| anyhow::anyhow!("cannot read the teacher's config: {e}"))?;
            let config = LlamaConfig::from_file(&path)?;
            anyhow::ensure!(
                config.vocab_size == source.vocab_size,
                "--distill-from {t}: vocabulary {} differs from the model's {}",
                config.vocab_size,
                source.vocab_size
            );
            Some(config)
        }
        None => None,
    };
    let pruning = args.stage == Stage::Prune;
    let model = match (&target, pruning) {
        (Some(t), false) => t.config(&source),
        _ => source.clone(),
    };
    let input = PlanInput {
        model,
        pruning,
        micro_batch: args.micro_batch,
        seq_len: args.seq,
        grad_accum: args.batch / per_step,
        fused_loss,
        recompute: args.recompute,
        peers: args.devices,
        zero: shear_train::zero::ZeroStage::from_level(args.zero_stage).expect("checked by clap"),
        teacher,
    };
    let plan = memory::plan(&input);
    if args.json {
        let fits: serde_json::Map<String, serde_json::Value> = cards
            .iter()
            .map(|c| (c.name.to_string(), c.fits(&plan).into()))
            .collect();
        let v = serde_json::json!({
            "stage": if pruning { "prune" } else { "train" },
            "params": input.model.param_counts().total(),
            "devices": args.devices,
            "micro_batch": args.micro_batch,
            "grad_accum": input.grad_accum,
            "seq": args.seq,
            "bytes_per_device": plan,
            "total_bytes_per_device": plan.total(),
            "fits": fits,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print_plan(&args, &input, &plan, &cards);
    Ok(())
}

fn print_plan(args: &Args, input: &PlanInput, plan: &MemoryPlan, cards: &[Card]) {
    let c = &input.model;
    println!(
        "{} a {:.2} B-parameter model (layers {}, hidden {}, heads {} / kv {}, intermediate {}, vocab {})",
        if input.pruning { "pruning" } else { "training" },
        c.param_counts().total() as f64 / 1e9,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.intermediate_size,
        c.vocab_size
    );
    if let Some(t) = &input.teacher {
        println!(
            "distilled from a frozen {:.2} B-parameter teacher (layers {}, hidden {})",
            t.param_counts().total() as f64 / 1e9,
            t.num_hidden_layers,
            t.hidden_size
        );
    }
    println!(
        "batch {} = {} device(s) × micro-batch {} × {} accumulation step(s), sequences of {}{}{}",
        args.batch,
        args.devices,
        args.micro_batch,
        input.grad_accum,
        args.seq,
        if args.recompute { ", --recompute" } else { "" },
        match args.zero_stage {
            0 => String::new(),
            z => format!(", --zero-stage {z}"),
        }
    );
    println!("per device:");
    for (name, bytes) in plan.rows() {
        println!("  {name:<22}{:>10.2} GiB", gib(bytes));
    }
    println!("  {:<22}{:>10.2} GiB", "total", gib(plan.total()));
    for card in cards {
        println!(
            "{:<10} {:>7.1} GiB: {}",
            card.name,
            gib(card.bytes()),
            if card.fits(plan) {
                "fits"
            } else {
                "does not fit"
            }
        );
    }
}
