//! Prune the embedded tiny LLaMA through the library, without the CLI: prepare the four-domain
//! corpus, prune 4/128/4/352 -> 3/64/2/176 with dynamic batch loading, and evaluate the pruned
//! model. Run from the repository root:
//!
//! ```sh
//! cargo run --release --example prune_tiny -- /tmp/prune-tiny
//! ```

use std::path::{Path, PathBuf};

use shear_data::prepare::{prepare, PrepareRecipe};
use shear_data::{ReferenceLoss, Tokenizer};
use shear_pipeline::eval::{evaluate, EvalJob};
use shear_pipeline::feed::DataOptions;
use shear_pipeline::prune::{prune, PruneSettings};
use shear_pipeline::stage::Job;
use shear_train::prune::{PruneConfig, PruneHyper};
use shear_train::Silent;

type B = burn::backend::Flex;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("runs/prune-tiny".into()));
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let tiny = assets.join("tiny");
    let device = Default::default();

    // 1. Token shards from the corpus the default recipe names.
    let recipe = PrepareRecipe::from_toml_file(&assets.join("recipes/default.toml"))?;
    let data = out.join("data");
    prepare(&recipe, &Tokenizer::from_file(&tiny)?, &data, &mut |_| {})?;

    // 2. Prune to the Sheared-1.3B ratios: 40 steps of 4 x 8 sequences, the source's own eval
    //    losses as the reference of dynamic batch loading.
    let target = "layers=3,hidden=64,heads=2,kv_heads=2,intermediate=176".parse()?;
    let hyper = PruneHyper {
        steps: 40,
        batch: 4,
        grad_accum: 8,
        lr_weights: 1e-3,
        ..PruneHyper::default()
    };
    let mut options = DataOptions::new(&data);
    options.mixture.update_every = Some(10);
    options.dynamic.reference = ReferenceLoss::Source;
    options.dynamic.eval_sequences = Some(8);
    let settings = PruneSettings::new(&tiny, PruneConfig::new(target, hyper), options);
    let outcome = prune::<B>(&Job::new(settings, out.join("prune")), &device, &mut Silent)?;
    let model = outcome.model_dir.expect("a finished run has a model");
    let shape = shear_model::LlamaConfig::from_file(&model)?;
    println!(
        "pruned to {} ({} parameters): {}",
        shear_model::TargetShape::of(&shape),
        shape.param_counts().total(),
        model.display()
    );

    // 3. Per-domain loss of the source and the pruned model.
    for (name, dir) in [("source", tiny.as_path()), ("pruned", model.as_path())] {
        let job = EvalJob {
            data: Some(data.clone()),
            max_sequences: Some(8),
            ..EvalJob::new(dir)
        };
        let m = evaluate::<B>(&job, &device, &mut Silent)?;
        let losses: Vec<String> = m
            .domains
            .iter()
            .map(|d| format!("{} {:.3}", d.domain, d.loss))
            .collect();
        println!("{name:<7} {}", losses.join(", "));
    }
    Ok(())
}
