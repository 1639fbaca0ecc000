//! `shear run --compare`: the baselines of the mini reproduction, run after the main stages in
//! `OUT/compare/`, each skipped when already complete:
//!
//! - `scratch/`: the target shape trained from random weights on as many tokens as pruning and
//!   continued training used together (same data loading, same batch);
//! - `static/`: pruning and continued training again with a static mixture (update rule
//!   `constant`, the recipe's initial proportions) instead of dynamic batch loading.
//!
//! The returned JSON (run.json's `compare`) has both baselines' eval losses, the reference
//! losses the gaps are measured against, and whether the materialized shape is the target.

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use serde_json::{json, Value};
use shear_data::PreparedData;
use shear_model::LlamaConfig;

use super::run::{Stage, StageRunner, TrainPlan};
use super::train::Init;

pub fn run<B: Backend>(
    stage: &StageRunner<B>,
    out: &Path,
    prune_dir: &Path,
    stages: &mut Vec<Stage>,
) -> anyhow::Result<Value> {
    let recipe = stage.recipe;
    let (p, tr) = (&recipe.prune, &recipe.train);
    let dir = out.join("compare");
    let seq = PreparedData::open(&stage.data_dir)?.manifest.seq_len;
    let prune_tokens = p.steps * p.batch * p.grad_accum * seq;
    let train_tokens = if tr.enabled {
        tr.steps * tr.batch * tr.grad_accum * seq
    } else {
        0
    };
    let per_step = tr.batch * tr.grad_accum * seq;
    let scratch_steps = (prune_tokens + train_tokens).div_ceil(per_step);

    // (a) From scratch, same total tokens.
    let scratch_dir = dir.join("scratch");
    stages.push(stage.train(
        "scratch",
        &scratch_dir,
        &prune_dir.join("model"),
        TrainPlan {
            init: Init::Random,
            steps: scratch_steps,
            lr: recipe.compare.scratch_lr.unwrap_or(tr.lr),
            warmup: recipe.compare.scratch_warmup,
            proportions: p.proportions.to_string(),
            update_rule: recipe.dynamic.update_rule.clone(),
        },
    )?);
    let scratch = stage.eval("scratch", &scratch_dir.join("model"))?;

    // (b) Static mixture instead of dynamic batch loading, same budget.
    let static_prune = dir.join("static").join("prune");
    stages.push(stage.prune("static prune", &static_prune, "constant")?);
    let static_final = if tr.enabled {
        let d = dir.join("static").join("train");
        stages.push(stage.train(
            "static train",
            &d,
            &static_prune.join("model"),
            TrainPlan::continued(tr, p.proportions.to_string(), "constant"),
        )?);
        d.join("model")
    } else {
        static_prune.join("model")
    };
    let static_eval = stage.eval("static", &static_final)?;

    // The reference the gaps are measured against: what the stages used.
    let reference = stage
        .reference_losses
        .clone()
        .context("--compare needs reference losses per domain")?;

    // (c) The materialized shape against the target, and the last expected shape.
    let target = &stage.resolved.target;
    let got = LlamaConfig::from_file(prune_dir.join("model"))?;
    let reached = (
        got.num_hidden_layers,
        got.hidden_size,
        got.num_attention_heads,
        got.intermediate_size,
    ) == (
        target.layers,
        target.hidden,
        target.heads,
        target.intermediate,
    );
    let last_expected = std::fs::read_to_string(prune_dir.join("prune_log.jsonl"))
        .ok()
        .and_then(|t| t.lines().last().map(String::from))
        .and_then(|l| serde_json::from_str::<Value>(&l).ok())
        .map(|v| v["expected_shape"].clone())
        .unwrap_or(Value::Null);

    Ok(json!({
        "tokens": prune_tokens + train_tokens,
        "scratch_steps": scratch_steps,
        "reference": reference,
        "scratch": scratch,
        "static": static_eval,
        "shape": {
            "layers": got.num_hidden_layers,
            "hidden": got.hidden_size,
            "heads": got.num_attention_heads,
            "intermediate": got.intermediate_size,
            "params": got.param_counts().total(),
            "reached": reached,
            "final_expected": last_expected,
        },
    }))
}
