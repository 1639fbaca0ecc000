//! The fuzz target `recipe` (fuzz/README.md) on stable: every seed and saved crash input through
//! the same harness, the seeds parse and pass the checks, and regression tests for what the
//! fuzzer found.

use shear_pipeline::recipe::Recipe;

#[path = "../../fuzz/src/recipe.rs"]
mod recipe;
#[path = "../../fuzz/seed_inputs.rs"]
mod seed_inputs;

#[test]
fn recipe_seeds_and_crash_inputs_run_clean() {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in seed_inputs::inputs("recipe") {
        eprintln!("{}", path.display());
        recipe::run(dir.path(), &bytes);
    }
}

#[test]
fn seeds_are_valid_recipes() {
    // The fuzzer starts from recipes that pass the checks, so it mutates deep paths.
    let dir = tempfile::tempdir().unwrap();
    let base = recipe::layout(dir.path());
    for (path, bytes) in seed_inputs::inputs("recipe") {
        if path.parent().unwrap().ends_with("seeds/recipe") {
            let r = Recipe::from_toml_str(std::str::from_utf8(&bytes).unwrap(), &base);
            r.unwrap()
                .check()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}
