//! `run`: a whole recipe — data prepare → prune (with materialization) → continued pre-training
//! → evaluation, in one run directory — and, with `compare`, the baselines of the mini
//! reproduction. A stage whose output is complete is skipped; an interrupted pruning or training
//! stage resumes from its newest checkpoint (its settings must still be the recipe's).
//! `run.json` ([`RunSummary`]) records the resolved recipe, stage timings and the metrics, and
//! the report is drawn from it and the stage logs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use shear_data::prepare::prepare;
use shear_data::{LoaderState, PreparedData, Proportions, ReferenceLoss, Split, Tokenizer};
use shear_model::LlamaConfig;
use shear_train::execution::Execution;
use shear_train::peers::{Nodes, Topology};
use shear_train::{Event, Observer};

use crate::error::{invalid, Context, PipelineError, Result};
use crate::eval::{evaluate, EvalJob};
use crate::importance::PruneMethod;
use crate::recipe::{Recipe, Resolved};
use crate::stages::{Stages, TrainStageSpec};
use crate::summary::{Metrics, RunSummary, Shape, StageTiming};

/// How to run a recipe.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The run directory: data/, prune/, train/, run.json, report.md, charts/.
    pub out: PathBuf,
    /// Also run the baselines (in OUT/compare).
    pub compare: bool,
    /// `KEY=VALUE` overrides of recipe keys.
    pub overrides: Vec<String>,
    /// Only use models already in the Hugging Face cache.
    pub offline: bool,
    /// How the pruning and training stages' steps run (workers, recomputation).
    pub exec: Execution,
    /// Data-parallel peers per node of the pruning and training stages; `None`: the recipe's
    /// `[run] devices`.
    pub devices: Option<usize>,
    /// Distinct devices on this machine ([`Topology::physical`]; 0 counts as 1).
    pub physical: usize,
    /// The nodes of a multi-node run.
    pub nodes: Option<Nodes>,
    /// Set to stop the running stage after its current step, with a checkpoint (see
    /// [`crate::stage::Job::stop`]); running the recipe again continues it.
    pub stop: Option<Arc<AtomicBool>>,
    /// See [`crate::stage::Job::on_lost`].
    pub on_lost: Option<crate::watch::OnLost>,
}

/// Runs `recipe_file` as `opts` says; returns the summary written to `OUT/run.json` (the report
/// is `OUT/report.md`).
pub fn run<B: Backend>(
    recipe_file: &Path,
    opts: &RunOptions,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    let started = Instant::now();
    let recipe = Recipe::from_toml_file_with(recipe_file, &opts.overrides)?;
    let source = shear_model::hub::resolve_model(&recipe.model.source, opts.offline)
        .context("cannot open the recipe's source model")?;
    let config = LlamaConfig::from_file(&source)?;
    // Everything the recipe says is checked before any work (token counts are not known yet:
    // proportions by tokens are checked again once the data is prepared).
    let in_file = |e: crate::recipe::RecipeError| PipelineError::from(e.at(recipe_file));
    recipe
        .resolve(&config, &vec![1; recipe.data.domains.len()])
        .and_then(|_| recipe.check_data_present())
        .map_err(in_file)?;
    if opts.compare && recipe.prune.method.is_one_shot() {
        return invalid!(
            "{}: --compare runs the learned-mask baselines; with a one-shot [prune] method \
             (\"importance\", \"obs\") run the arms one by one (README, \"Distillation and importance pruning\")",
            recipe_file.display()
        );
    }
    let tokenizer = Tokenizer::from_file(&source).context(format!(
        "the recipe's source {} needs a tokenizer.json",
        source.display()
    ))?;
    // Node 0 writes the run directory (on a file system the nodes share).
    let _lock = match opts.nodes.as_ref().is_none_or(|n| n.rank == 0) {
        true => Some(crate::out::create_locked(&opts.out)?),
        false => None,
    };
    let mut timings = Vec::new();

    // 1. Data.
    let data_dir = opts.out.join("data");
    let (data, timing) = prepare_data(&recipe, &tokenizer, &data_dir, observer)?;
    timings.push(timing);
    let tokens: Vec<u64> = data
        .shards(Split::Prune)?
        .iter()
        .map(|s| (s.len() * data.manifest.seq_len) as u64)
        .collect();
    let resolved = recipe.resolve(&config, &tokens).map_err(in_file)?;
    let target_params = resolved.target.config(&config).param_counts().total();
    let (reference, reference_losses) = reference::<B>(
        &recipe,
        &resolved,
        (&source, target_params),
        &data_dir,
        device,
        observer,
    )?;
    let stages = Stages {
        recipe: &recipe,
        resolved: &resolved,
        data_dir,
        seq: data.manifest.seq_len,
        reference,
        reference_losses,
        source: source.clone(),
        exec: opts.exec.clone(),
        topology: Topology {
            devices: opts.devices.unwrap_or(recipe.run.devices),
            physical: opts.physical.max(1),
            nodes: opts.nodes.clone(),
        },
        stop: opts.stop.clone(),
        on_lost: opts.on_lost,
    };

    // 2. Prune (and materialize).
    let prune_dir = opts.out.join("prune");
    let rule = recipe.dynamic.update_rule;
    timings.push(stages.prune::<B>("prune", &prune_dir, rule, device, observer)?);
    let pruned = prune_dir.join("model");

    // 3. Continued pre-training, from the pruning stage's final domain weights unless the
    // recipe gives others.
    let final_model = match recipe.train.enabled {
        true => {
            let train_dir = opts.out.join("train");
            let learned = recipe.prune.method == PruneMethod::Learned;
            let proportions = match recipe.train.from_pruning() {
                true if learned => final_pruning_weights(&prune_dir, &data.domains())?,
                // Importance pruning draws at the prune split's initial proportions.
                true => recipe.prune.mixture.proportions.clone(),
                false => recipe.train.mixture.proportions.clone(),
            };
            let spec = TrainStageSpec::continued(&recipe, proportions, rule);
            timings.push(stages.train::<B>("train", &train_dir, &pruned, spec, device, observer)?);
            train_dir.join("model")
        }
        false => pruned.clone(),
    };

    // 4. Evaluation of the source, the pruned and the final model.
    let t = Instant::now();
    let metrics = Metrics {
        source: stages.eval::<B>("source", &source, device, observer)?,
        pruned: stages.eval::<B>("pruned", &pruned, device, observer)?,
        final_: match recipe.train.enabled {
            true => Some(stages.eval::<B>("final", &final_model, device, observer)?),
            false => None,
        },
    };
    timings.push(StageTiming {
        name: "eval".into(),
        seconds: t.elapsed().as_secs_f64(),
        skipped: false,
        tokens: None,
    });

    // 5. The final model for llama.cpp, next to its directory.
    let gguf = match recipe.export.gguf {
        Some(ty) => {
            let t = Instant::now();
            observer.event(Event::Busy("writing the GGUF file"));
            let (path, done) =
                crate::export::export_next_to(&final_model, ty).context("export stage (gguf)")?;
            for note in &done.notes {
                observer.event(Event::Message(&format!("gguf note: {note}")));
            }
            observer.event(Event::Message(&crate::export::export_line(&path, &done)));
            timings.push(StageTiming {
                name: "export".into(),
                seconds: t.elapsed().as_secs_f64(),
                skipped: false,
                tokens: None,
            });
            Some(path)
        }
        None => None,
    };

    // 6. Baselines.
    let compare = match opts.compare {
        true => Some(crate::compare::compare::<B>(
            &stages,
            &metrics.source,
            &opts.out,
            &prune_dir,
            &mut timings,
            device,
            observer,
        )?),
        false => None,
    };
    let summary = RunSummary {
        shear_version: env!("CARGO_PKG_VERSION").into(),
        recipe_file: recipe_file.to_path_buf(),
        recipe: recipe.clone(),
        source: source.clone(),
        source_shape: Shape::of(&config),
        target: Shape::of(&resolved.target.config(&config)),
        stages: timings,
        wall_seconds: started.elapsed().as_secs_f64(),
        metrics,
        compare,
        final_model,
        gguf,
    };
    shear_io::write_json_atomic(&opts.out.join("run.json"), &summary)?;
    crate::report::write_report(&opts.out, &summary)?;
    Ok(summary)
}

/// Stage 1: the recipe's domains tokenized into `dir` (skipped when up to date).
fn prepare_data(
    recipe: &Recipe,
    tokenizer: &Tokenizer,
    dir: &Path,
    observer: &mut dyn Observer,
) -> Result<(PreparedData, StageTiming)> {
    let t = Instant::now();
    observer.event(Event::Busy("preparing data"));
    let report = prepare(&recipe.data, tokenizer, dir, &mut |_| {})?;
    observer.event(Event::Message(&if report.up_to_date {
        "data: up to date".to_string()
    } else {
        format!(
            "data: {} tokens at {:.0} tokens/s",
            report.tokens,
            report.tokens_per_second()
        )
    }));
    let timing = StageTiming {
        name: "data".into(),
        seconds: t.elapsed().as_secs_f64(),
        skipped: report.up_to_date,
        tokens: Some(report.tokens),
    };
    Ok((PreparedData::open(dir)?, timing))
}

/// The reference losses every stage uses: the recipe's numbers or scaling law, or the source
/// model's eval losses computed once here (every stage, baselines included, measures its gaps
/// against the source, not against the model it trains). Also the losses per domain when known
/// now. A scaling law's prediction at the target's size (`source.1` parameters) is printed next
/// to the source's own losses before any stage runs, with the domains whose fit fell back to
/// the shared exponent.
fn reference<B: Backend>(
    recipe: &Recipe,
    resolved: &Resolved,
    (source, target_params): (&Path, usize),
    data_dir: &Path,
    device: &B::Device,
    observer: &mut dyn Observer,
) -> Result<(ReferenceLoss, Option<Vec<f64>>)> {
    let d = &recipe.dynamic;
    if matches!(d.reference, ReferenceLoss::Values(_)) {
        return Ok((d.reference.clone(), resolved.reference.clone()));
    }
    let job = EvalJob {
        data: Some(data_dir.to_path_buf()),
        batch: d.eval_batch,
        max_sequences: d.eval_sequences,
        ..EvalJob::new(source)
    };
    let m = evaluate::<B>(&job, device, observer)
        .context("reference losses: evaluating the source model")?;
    if d.reference.is_scaling() {
        let domains: Vec<String> = m.domains.iter().map(|x| x.domain.clone()).collect();
        let fits = d.reference.scaling_fits(&domains)?.unwrap_or_default();
        observer.event(Event::Message(&format!(
            "reference losses: the scaling law at the target's {target_params} parameters \
             (the source's own losses beside)"
        )));
        for (f, own) in fits.iter().zip(&m.domains) {
            let law = &f.law;
            let note = match &f.shared_exponent {
                Some(why) => format!("; shared exponent ({why})"),
                None => String::new(),
            };
            observer.event(Event::Message(&format!(
                "  {:<12} {:.4}  (source {:.4}; L(N) = {:.4} + {:.4}·N^-{:.4}{note})",
                f.domain,
                law.at(target_params as f64),
                own.loss,
                law.c,
                law.a,
                law.b
            )));
        }
        return Ok((d.reference.clone(), resolved.reference.clone()));
    }
    let values = m
        .domains
        .iter()
        .map(|d| (d.domain.clone(), d.loss))
        .collect();
    Ok((ReferenceLoss::Values(values), Some(m.losses())))
}

/// The pruning stage's final domain weights (from its loader state).
fn final_pruning_weights(prune_dir: &Path, domains: &[String]) -> Result<Proportions> {
    let path = prune_dir.join("loader_state.json");
    let state: LoaderState = shear_io::read_json(&path)?;
    if state.domains != domains {
        return invalid!(
            "{}: domains differ from the prepared data's",
            path.display()
        );
    }
    // Exact weights: the explicit map is checked to sum to 1 within 1e-6.
    Ok(Proportions::Explicit(
        state.domains.into_iter().zip(state.weights).collect(),
    ))
}
