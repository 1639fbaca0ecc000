//! Every setting has one definition: the flags of `shear prune` / `shear train`, the keys of a
//! recipe's sections and the fields recorded in checkpoints are the same fields of the same
//! library types, with the same defaults. These tests hold the three against each other.

use std::collections::BTreeSet;
use std::path::Path;

use clap::{CommandFactory, Parser};
use shear_pipeline::controls::{Checkpointing, Guard};
use shear_pipeline::feed::{Dynamic, Mixture};
use shear_pipeline::recipe::Recipe;
use shear_train::prune::PruneHyper;
use shear_train::trainer::TrainConfig;

/// The keys of a value serialized as JSON (a struct's fields).
fn keys(v: impl serde::Serialize) -> BTreeSet<String> {
    match serde_json::to_value(v).unwrap() {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        other => panic!("not an object: {other}"),
    }
}

/// The ids of a subcommand's arguments (clap ids are field names).
fn arg_ids(sub: &str) -> BTreeSet<String> {
    let cmd = crate::Cli::command();
    let sub = cmd.find_subcommand(sub).unwrap();
    sub.get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

fn parse(args: &[&str]) -> crate::Cli {
    crate::Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

const RECIPE: &str = "[model]\nsource = \"m\"\ntarget = \"sheared-1.3b\"\n\n[data]\n\
                      [[data.domain]]\nname = \"a\"\npaths = [\"x\"]\n";

#[test]
fn a_command_line_without_options_has_the_library_defaults() {
    let cli = parse(&[
        "shear",
        "prune",
        "m",
        "--target",
        "sheared-1.3b",
        "--data",
        "d",
        "--out",
        "o",
    ]);
    let crate::Command::Prune(p) = cli.command else {
        panic!("prune")
    };
    // f64 defaults such as 2/3 survive clap's Display -> parse round trip exactly.
    assert_eq!(p.hyper, PruneHyper::default());
    assert_eq!(p.data.mixture, Mixture::default());
    assert_eq!(p.data.dynamic, Dynamic::default());
    assert_eq!(p.run.checkpoints, Checkpointing::default());
    assert_eq!(p.run.guard, Guard::default());
    let cli = parse(&["shear", "train", "m", "--data", "d", "--out", "o"]);
    let crate::Command::Train(t) = cli.command else {
        panic!("train")
    };
    assert_eq!(t.config, TrainConfig::default());
    assert_eq!(t.data.mixture, Mixture::default());
    assert_eq!(t.data.dynamic, Dynamic::default());
    assert_eq!(t.run.checkpoints, Checkpointing::default());
}

#[test]
fn a_recipe_without_keys_has_the_library_defaults() {
    let r = Recipe::from_toml_str(RECIPE, Path::new(".")).unwrap();
    assert_eq!(r.prune.hyper, PruneHyper::default());
    assert_eq!(r.prune.mixture, Mixture::default());
    assert_eq!(r.prune.checkpoints, Checkpointing::default());
    assert_eq!(r.train.config, TrainConfig::default());
    assert_eq!(r.train.mixture, Mixture::default());
    assert_eq!(r.train.checkpoints, Checkpointing::default());
    assert_eq!(r.dynamic, Dynamic::default());
    assert_eq!(r.run.guard, Guard::default());
}

#[test]
fn every_setting_is_a_flag_and_a_recipe_key_of_the_same_name() {
    let prune_ids = arg_ids("prune");
    let train_ids = arg_ids("train");
    let parts = [
        ("prune", keys(PruneHyper::default()), &prune_ids),
        ("train", keys(TrainConfig::default()), &train_ids),
    ];
    for (stage, settings, ids) in parts {
        let shared = [
            keys(Mixture::default()),
            keys(Dynamic::default()),
            keys(Checkpointing::default()),
            keys(Guard::default()),
        ];
        for key in settings.iter().chain(shared.iter().flatten()) {
            assert!(ids.contains(key), "`{key}` of {stage} is not a flag");
        }
    }
    // The recipe's sections take exactly those keys (and refuse others), so a key set in a
    // recipe and the flag of the same name set the same field.
    let r = Recipe::from_toml_str(RECIPE, Path::new(".")).unwrap();
    let recipe_prune = keys(&r.prune);
    let mut want = keys(PruneHyper::default());
    want.extend(keys(Mixture::default()));
    want.extend(keys(Checkpointing::default()));
    // The section's own key, as `[train] distill`: the teacher is then the source (the flag is
    // `--distill-from TEACHER`).
    want.insert("distill".to_string());
    want.extend(["method", "calibration_batches"].map(String::from));
    assert_eq!(recipe_prune, want);
    for key in recipe_prune.iter().filter(|k| *k != "distill") {
        assert!(
            prune_ids.contains(key),
            "[prune] {key} is not a flag of shear prune"
        );
    }
    for key in keys(&r.train.config) {
        assert!(
            train_ids.contains(&key),
            "[train] {key} is not a flag of shear train"
        );
    }
    let e = Recipe::from_toml_str(&format!("{RECIPE}\n[prune]\nstpes = 3\n"), Path::new("."))
        .unwrap_err();
    assert!(e.msg.contains("unknown key `prune.stpes`"), "{e}");
}

/// The ids of the arguments given on a command line are the keys a resume compares with the
/// checkpoint's settings: each setting flag's id is a key of the recorded settings.
#[test]
fn explicit_flags_name_recorded_settings() {
    use shear_pipeline::prune::PruneSettings;
    use shear_pipeline::train::TrainSettings;
    let target: shear_model::TargetShape =
        "layers=1,hidden=8,heads=1,intermediate=8".parse().unwrap();
    let data = shear_pipeline::feed::DataOptions::new("d");
    let config = shear_train::prune::PruneConfig::new(target, PruneHyper::default());
    let prune = keys(PruneSettings::new("m", config, data.clone()));
    let train = keys(TrainSettings::new("m", TrainConfig::default(), data));
    let runs = [
        "out",
        "save_every",
        "keep_checkpoints",
        "resume",
        "stop_after",
        "dtype",
    ];
    let exec = [
        "max_skipped",
        "workers",
        "recompute",
        "zero_stage",
        "devices",
        "nodes",
        "node_rank",
    ];
    let not_settings: BTreeSet<&str> = runs
        .iter()
        .chain(&exec)
        .chain(&["coordinator", "node_address", "device", "offline", "help"])
        // The one-shot importance path: it has no steps, so nothing records or resumes them.
        .chain(&["method", "calibration_batches"])
        .copied()
        .collect();
    for (ids, recorded, cmd) in [
        (arg_ids("prune"), prune, "prune"),
        (arg_ids("train"), train, "train"),
    ] {
        for id in ids.iter().filter(|id| !not_settings.contains(id.as_str())) {
            assert!(
                recorded.contains(id),
                "shear {cmd} --{id} is not a recorded setting"
            );
        }
    }
}
