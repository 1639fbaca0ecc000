//! `shear run RECIPE`: data prepare → prune (with materialization) → continued pre-training →
//! evaluation, in one run directory. A stage whose output is complete is skipped; an interrupted
//! pruning or training stage resumes from its newest checkpoint. `run.json` records the resolved recipe,
//! versions, stage timings and the final metrics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::tensor::backend::Backend;
use shear_data::prepare::prepare;
use shear_data::{PreparedData, Proportions, Split, Tokenizer};
use shear_model::LlamaConfig;
use shear_train::recipe::{Recipe, ReferenceSpec};

use super::feed::DataArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    /// Run directory: data/, prune/, train/, eval.json, run.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Marks a finished stage.
const DONE: &str = ".complete";

fn done(dir: &Path) -> bool {
    dir.join(DONE).is_file()
}

fn mark_done(dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join(DONE), b"")
        .with_context(|| format!("cannot write {}", dir.join(DONE).display()))
}

#[derive(serde::Serialize)]
struct Stage {
    name: &'static str,
    seconds: f64,
    skipped: bool,
}

pub fn run<B: Backend>(args: Args, offline: bool, device: &B::Device) -> anyhow::Result<()> {
    let recipe = Recipe::from_toml_file(&args.recipe)?;
    let source = super::resolve(&recipe.model.source, offline)?;
    let config = LlamaConfig::from_file(&source)?;
    // Everything the recipe says is checked before any work (token counts are not known yet:
    // proportions by tokens are checked again once the data is prepared).
    recipe
        .resolve(&config, &vec![1; recipe.data.domains.len()])
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.recipe.display()))?;
    let tokenizer = Tokenizer::from_file(&source).with_context(|| {
        format!(
            "the recipe's source {} needs a tokenizer.json",
            source.display()
        )
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut stages = Vec::new();
    let started = Instant::now();

    // 1. Data.
    let data_dir = args.out.join("data");
    let t = Instant::now();
    let report = prepare(&recipe.data, &tokenizer, &data_dir, &mut |_| {})?;
    eprintln!(
        "data: {}",
        if report.up_to_date {
            "up to date".to_string()
        } else {
            format!(
                "{} tokens at {:.0} tokens/s",
                report.tokens,
                report.tokens_per_second()
            )
        }
    );
    stages.push(Stage {
        name: "data",
        seconds: t.elapsed().as_secs_f64(),
        skipped: report.up_to_date,
    });
    let data = PreparedData::open(&data_dir)?;
    let tokens: Vec<u64> = data
        .shards(Split::Prune)?
        .iter()
        .map(|s| (s.len() * data.manifest.seq_len) as u64)
        .collect();
    let resolved = recipe
        .resolve(&config, &tokens)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.recipe.display()))?;

    // The reference losses as something `--reference` reads.
    let reference = match &recipe.dynamic.reference {
        ReferenceSpec::Named(n) => n.clone(),
        ReferenceSpec::Table(t) => {
            let path = args.out.join("reference.toml");
            let mut table = toml::Table::new();
            table.insert("reference".into(), toml::Value::try_from(t)?);
            std::fs::write(&path, toml::to_string(&table)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
            path.to_string_lossy().into_owned()
        }
    };
    let feed = |proportions: String, update_every: usize| DataArgs {
        data: data_dir.clone(),
        seq: None,
        proportions,
        update_rule: recipe.dynamic.update_rule.clone(),
        update_every: Some(update_every),
        reference: reference.clone(),
        eval_batch: recipe.dynamic.eval_batch,
        eval_sequences: recipe.dynamic.eval_sequences,
    };

    // 2. Prune (and materialize).
    let prune_dir = args.out.join("prune");
    let t = Instant::now();
    let skipped = done(&prune_dir);
    if !skipped {
        let p = &recipe.prune;
        super::prune::run::<B>(
            super::prune::Args {
                model: source.to_string_lossy().into_owned(),
                target: Some(format!(
                    "layers={},hidden={},heads={},intermediate={}",
                    resolved.target.layers,
                    resolved.target.hidden,
                    resolved.target.heads,
                    resolved.target.intermediate
                )),
                preset: None,
                feed: feed(p.proportions.to_string(), p.update_every),
                out: prune_dir.clone(),
                steps: p.steps,
                batch: p.batch,
                grad_accum: p.grad_accum,
                lr_weights: p.lr_weights,
                lr_masks: p.lr_masks,
                lr_lambda: p.lr_lambda,
                lr_warmup: p.lr_warmup,
                lagrangian_warmup: p.lagrangian_warmup,
                save_every: p.save_every,
                resume: true,
                stop_after: None,
                dtype: recipe.model.dtype.clone(),
                seed: p.seed,
                layer_masks: match recipe.model.layer_masks.as_str() {
                    "head-layer-mlp" => super::prune::LayerMaskArg::HeadLayerMlp,
                    _ => super::prune::LayerMaskArg::Layer,
                },
            },
            offline,
            device,
        )
        .context("prune stage")?;
        mark_done(&prune_dir)?;
    }
    stages.push(Stage {
        name: "prune",
        seconds: t.elapsed().as_secs_f64(),
        skipped,
    });
    let pruned = prune_dir.join("model");

    // 3. Continued pre-training.
    let train_dir = args.out.join("train");
    let tr = &recipe.train;
    let final_model = if tr.enabled {
        let t = Instant::now();
        let skipped = done(&train_dir);
        if !skipped {
            let proportions = match &resolved.train_weights {
                Some(_) => tr.proportions.to_string(),
                None => final_pruning_weights(&prune_dir, &data.domains())?,
            };
            super::train::run::<B>(
                super::train::Args {
                    model: pruned.to_string_lossy().into_owned(),
                    feed: feed(proportions, tr.update_every),
                    out: train_dir.clone(),
                    steps: tr.steps,
                    batch: tr.batch,
                    grad_accum: tr.grad_accum,
                    lr: tr.lr,
                    warmup: tr.warmup,
                    min_lr_ratio: tr.min_lr_ratio,
                    weight_decay: tr.weight_decay,
                    max_grad_norm: tr.max_grad_norm,
                    save_every: tr.save_every,
                    resume: true,
                    stop_after: None,
                    init: super::train::Init::Weights,
                    distill_from: tr.distill.map(|_| source.to_string_lossy().into_owned()),
                    distill_weight: tr.distill.map_or(1.0, |d| d.weight),
                    distill_temperature: tr.distill.map_or(1.0, |d| d.temperature),
                    dtype: recipe.model.dtype.clone(),
                    seed: tr.seed,
                },
                offline,
                device,
            )
            .context("train stage")?;
            mark_done(&train_dir)?;
        }
        stages.push(Stage {
            name: "train",
            seconds: t.elapsed().as_secs_f64(),
            skipped,
        });
        train_dir.join("model")
    } else {
        pruned.clone()
    };

    // 4. Evaluation of the source, the pruned and the final model.
    let t = Instant::now();
    let e = &recipe.eval;
    let mut metrics = serde_json::Map::new();
    for (name, dir) in [
        ("source", &source),
        ("pruned", &pruned),
        ("final", &final_model),
    ] {
        if name == "final" && !tr.enabled {
            continue;
        }
        let (losses, scores) = super::eval::evaluate::<B>(
            dir,
            Some(&data_dir),
            Split::Eval,
            &e.tasks,
            e.batch,
            e.max_sequences,
            device,
        )
        .with_context(|| format!("eval stage ({name})"))?;
        let params = LlamaConfig::from_file(dir)?.param_counts().total();
        metrics.insert(
            name.into(),
            serde_json::json!({ "params": params, "domains": losses, "tasks": scores }),
        );
    }
    stages.push(Stage {
        name: "eval",
        seconds: t.elapsed().as_secs_f64(),
        skipped: false,
    });
    let run = serde_json::json!({
        "shear_version": env!("CARGO_PKG_VERSION"),
        "recipe_file": args.recipe,
        "recipe": recipe,
        "source": source,
        "target": {
            "layers": resolved.target.layers, "hidden": resolved.target.hidden,
            "heads": resolved.target.heads, "intermediate": resolved.target.intermediate,
            "params": resolved.target_params,
        },
        "source_shape": {
            "layers": config.num_hidden_layers, "hidden": config.hidden_size,
            "heads": config.num_attention_heads, "intermediate": config.intermediate_size,
            "params": config.param_counts().total(),
        },
        "tokens": {
            "data": report.tokens,
            "prune": recipe.prune.steps * recipe.prune.batch * recipe.prune.grad_accum
                * data.manifest.seq_len,
            "train": if tr.enabled {
                tr.steps * tr.batch * tr.grad_accum * data.manifest.seq_len
            } else { 0 },
        },
        "stages": stages,
        "wall_seconds": started.elapsed().as_secs_f64(),
        "metrics": metrics,
        "final_model": final_model,
    });
    let path = args.out.join("run.json");
    shear_model::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&run)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let report_path = shear_train::report::write_report(&args.out, &run)?;
    print_summary(&metrics);
    println!("report: {}", report_path.display());
    println!(
        "-> {} (run.json, {})",
        args.out.display(),
        final_model.display()
    );
    Ok(())
}

/// The pruning stage's final domain weights (from its loader state) as `name=w,...`.
fn final_pruning_weights(prune_dir: &Path, domains: &[String]) -> anyhow::Result<String> {
    let path = prune_dir.join("loader_state.json");
    let state: shear_data::LoaderState = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{}", path.display()))?;
    if state.domains != domains {
        bail!(
            "{}: domains differ from the prepared data's",
            path.display()
        );
    }
    // Exact weights: the explicit map is checked to sum to 1 within 1e-6.
    let map = state
        .domains
        .iter()
        .cloned()
        .zip(state.weights.iter().copied())
        .collect();
    Ok(Proportions::Explicit(map).to_string())
}

fn print_summary(metrics: &serde_json::Map<String, serde_json::Value>) {
    println!("{:<8} {:>14} {:>10}", "model", "parameters", "mean loss");
    for name in ["source", "pruned", "final"] {
        let Some(m) = metrics.get(name) else {
            continue;
        };
        let losses: Vec<f64> = m["domains"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d["loss"].as_f64()).collect())
            .unwrap_or_default();
        let mean = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        println!("{name:<8} {:>14} {mean:>10.4}", m["params"]);
    }
}
