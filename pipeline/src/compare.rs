//! `run` with `compare`: the baselines of the mini reproduction, run after the main stages in
//! `OUT/compare/`, each skipped when already complete:
//!
//! - `scratch/`: the target shape trained from random weights on as many tokens as pruning and
//!   continued training used together (same data loading, same batch);
//! - `static/`: pruning and continued training again with a static mixture (update rule
//!   `constant`, the recipe's initial proportions) instead of dynamic batch loading.

use std::path::Path;

use burn::tensor::backend::Backend;
use shear_data::UpdateRule;
use shear_model::{LlamaConfig, TargetShape};
use shear_train::prune::PruneLog;
use shear_train::Observer;

use crate::error::{invalid, Result};
use crate::stages::{Stages, TrainStageSpec};
use crate::summary::{CompareSummary, ModelMetrics, Shape, ShapeReached, StageTiming};
use crate::train::Init;

pub(crate) fn compare<B: Backend>(
    stage: &Stages<'_>,
    source: &ModelMetrics,
    out: &Path,
    prune_dir: &Path,
    stages: &mut Vec<StageTiming>,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<CompareSummary> {
    let recipe = stage.recipe;
    let (p, tr) = (&recipe.prune, &recipe.train);
    let Some(reference) = stage.reference_losses.clone() else {
        return invalid!("compare needs the reference losses per domain before the stages run");
    };
    let dir = out.join("compare");
    let train_tokens = if tr.enabled {
        stage.train_tokens(tr.config.steps)
    } else {
        0
    };
    let tokens = stage.prune_tokens() + train_tokens;
    let per_step = stage.train_tokens(1);
    let scratch_steps = tokens.div_ceil(per_step) as usize;

    // (a) From scratch, same total tokens.
    let scratch_dir = dir.join("scratch");
    let plan = TrainStageSpec {
        init: Init::Random,
        steps: scratch_steps,
        lr: recipe.compare.scratch_lr.unwrap_or(tr.config.lr),
        warmup: recipe.compare.scratch_warmup,
        proportions: p.mixture.proportions.clone(),
        update_rule: recipe.dynamic.update_rule,
        distill: false,
    };
    let pruned = prune_dir.join("model");
    stages.push(stage.train::<B>("scratch", &scratch_dir, &pruned, plan, device, observer)?);
    let scratch = stage.eval::<B>("scratch", &scratch_dir.join("model"), device, observer)?;

    // (b) Static mixture instead of dynamic batch loading, same budget.
    let static_prune = dir.join("static").join("prune");
    stages.push(stage.prune::<B>(
        "static prune",
        &static_prune,
        UpdateRule::Constant,
        device,
        observer,
    )?);
    let static_final = if tr.enabled {
        let d = dir.join("static").join("train");
        let initial = p.mixture.proportions.clone();
        let plan = TrainStageSpec::continued(recipe, initial, UpdateRule::Constant);
        let model = static_prune.join("model");
        stages.push(stage.train::<B>("static train", &d, &model, plan, device, observer)?);
        d.join("model")
    } else {
        static_prune.join("model")
    };
    let static_ = stage.eval::<B>("static", &static_final, device, observer)?;

    // (c) The materialized shape against the target, and the last expected shape.
    let got = LlamaConfig::from_file(&pruned)?;
    let log = shear_io::read_jsonl::<PruneLog>(&prune_dir.join("prune_log.jsonl"))?;
    Ok(CompareSummary {
        tokens,
        scratch_steps,
        reference,
        reference_kind: recipe.dynamic.reference.kind().into(),
        source_reference: source.losses(),
        scratch,
        static_,
        shape: ShapeReached {
            shape: Shape::of(&got),
            reached: TargetShape::of(&got) == stage.resolved.target,
            final_expected: log.last().map(|l| l.expected_shape),
        },
    })
}
