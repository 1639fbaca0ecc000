use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use shear_model::LlamaConfig;
use shear_train::bench::{self, BenchConfig, Steps};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Only {
    Train,
    Prune,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Key/value heads (default: as many as heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long, default_value_t = 688)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 32000)]
    pub vocab: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Untimed steps before measuring.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured steps (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Workers per training and pruning step (default: one per core on the CPU, 1 on a GPU).
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: Option<usize>,
    /// Recompute each block in the backward pass of the training and pruning steps (keeps only
    /// the blocks' inputs between the passes; docs/algorithm.md §13.2).
    #[arg(long)]
    pub recompute: bool,
    /// Data-parallel peers on this machine (threads sharing its cores or GPUs, each on its
    /// share of the batch's rows): times the training and pruning steps only.
    #[arg(long, default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub devices: usize,
    /// ZeRO stage of the peers (`--devices`): 0, 1 or 2 (docs/algorithm.md §4.5).
    #[arg(long, default_value_t = 0, value_name = "0|1|2",
          value_parser = clap::builder::RangedU64ValueParser::<u8>::new().range(0..=2))]
    pub zero_stage: u8,
    /// Generation: prompt tokens before the new ones.
    #[arg(long, default_value_t = 128)]
    pub gen_prompt: usize,
    /// Generation: new tokens (greedy, KV cache, batch 1; 0: skip).
    #[arg(long, default_value_t = 128)]
    pub gen_new: usize,
    /// Time only this step (one model in memory; for shapes near the device's memory).
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// `f32`, or `bf16` (mixed precision: bf16 matrix products, f32 weights and optimizer).
    #[arg(long, default_value = "f32")]
    pub precision: shear_model::precision::Compute,
}

pub fn run<B: Backend>(args: Args, cpu: bool, device: &B::Device) -> anyhow::Result<()> {
    let _precision = shear_model::precision::autocast(args.precision);
    let model = LlamaConfig::new(
        args.vocab,
        args.hidden,
        args.intermediate,
        args.layers,
        args.heads,
        args.kv_heads.unwrap_or(args.heads),
    );
    model.validate()?;
    for (name, v) in [
        ("--batch", args.batch),
        ("--steps", args.steps),
        ("--layers", args.layers),
        ("--gen-prompt", args.gen_prompt),
        ("--gen-new", args.gen_new),
    ] {
        if v == 0 {
            anyhow::bail!("{name} 0: must be positive");
        }
    }
    if !args.hidden.is_multiple_of(args.heads) {
        anyhow::bail!(
            "--hidden {} is not a multiple of --heads {}",
            args.hidden,
            args.heads
        );
    }
    if cpu {
        check_memory(&model, &args)?;
    }
    if args.seq < 2 {
        anyhow::bail!(
            "--seq {}: need at least 2 tokens for a next-token loss",
            args.seq
        );
    }
    let cfg = BenchConfig {
        model,
        batch: args.batch,
        seq: args.seq,
        warmup: args.warmup,
        steps: args.steps,
        seed: 0,
        workers: args.workers.unwrap_or(1),
        recompute: args.recompute,
        gen_prompt: args.gen_prompt,
        gen_new: args.gen_new,
        steps_kind: match args.only {
            None => Steps::All,
            Some(Only::Train) => Steps::Train,
            Some(Only::Prune) => Steps::Prune,
        },
    };
    let r = match args.devices {
        1 => bench::run::<Autodiff<B>>(&cfg, device)?,
        n => {
            let zero =
                shear_train::zero::ZeroStage::from_level(args.zero_stage).expect("checked by clap");
            bench::run_peers::<Autodiff<B>>(&cfg, n, zero, device)?
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "backend": std::any::type_name::<B>(),
                "layers": args.layers, "hidden": args.hidden, "heads": args.heads,
                "intermediate": args.intermediate, "vocab": args.vocab,
                "seq": args.seq, "batch": args.batch, "params": r.params,
                "forward_tokens_per_s": r.forward_tps,
                "forward_backward_tokens_per_s": r.forward_backward_tps,
                "train_step_tokens_per_s": r.train_step_tps,
                "prune_step_tokens_per_s": r.prune_step_tps,
                "prune_over_train_step_time": r.prune_over_train,
                "workers": cfg.workers, "recompute": cfg.recompute,
                "devices": args.devices, "zero_stage": args.zero_stage,
                "train_flops_per_token": r.train_flops_per_token,
                "generate_tokens_per_s": r.generate_tps,
                "gen_prompt": args.gen_prompt, "gen_new": args.gen_new,
            })
        );
    } else {
        println!(
            "L{} d{} H{} I{} V{}  seq {} batch {}  ({} params, median of {} steps)",
            args.layers,
            args.hidden,
            args.heads,
            args.intermediate,
            args.vocab,
            args.seq,
            args.batch,
            r.params,
            args.steps
        );
        let tflops = |tps: f64| tps * r.train_flops_per_token / 1e12;
        if let Some(t) = r.forward_tps {
            println!("forward                    {t:>10.0} tokens/s");
        }
        if let Some(t) = r.forward_backward_tps {
            println!("forward+backward           {t:>10.0} tokens/s");
        }
        if let Some(t) = r.train_step_tps {
            println!(
                "train step (+clip, AdamW)  {t:>10.0} tokens/s  ({:.2} TFLOP/s of matrix products)",
                tflops(t)
            );
        }
        if let Some(t) = r.prune_step_tps {
            let ratio = r
                .prune_over_train
                .map(|x| format!(", time: {x:.2}x the train step (median of pairs)"))
                .unwrap_or_default();
            println!(
                "pruning step (masks+Lagr.) {t:>10.0} tokens/s  ({:.2} TFLOP/s{ratio})",
                tflops(t)
            );
        }
        if let Some(g) = r.generate_tps {
            println!(
                "generation                 {g:>10.0} new tokens/s  (batch 1, {}-token prompt, {} new, KV cache)",
                args.gen_prompt, args.gen_new
            );
        }
    }
    Ok(())
}

/// Refuses a shape whose pruning step would not fit in the memory available now (by `shear
/// plan`'s estimate), rather than aborting on a failed allocation part way.
fn check_memory(model: &LlamaConfig, args: &Args) -> anyhow::Result<()> {
    let plan = shear_train::memory::plan(&shear_train::memory::PlanInput {
        model: model.clone(),
        pruning: !matches!(args.only, Some(Only::Train)),
        micro_batch: args.batch,
        seq_len: args.seq,
        grad_accum: 1,
        fused_loss: true,
        recompute: args.recompute,
        peers: 1,
        zero: shear_train::zero::ZeroStage::Off,
        teacher: None,
    });
    Ok(shear_train::memory::check_fits(&plan, 1, "this shape")?)
}
