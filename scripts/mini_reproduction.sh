#!/usr/bin/env bash
# The mini reproduction of README ("Does dynamic batch loading work?"): the embedded default with
# --compare over 3 seeds (every arm: dynamic, static, scratch), then each ablation's dynamic arm
# over the same 3 seeds (the static and scratch arms do not read the ablated settings: a static
# mixture never compares losses with a reference, and its stages start from the recipe's
# proportions), then the ablation table (scripts/ablation_table.py, standard library only).
#
#   scripts/mini_reproduction.sh [SHEAR_BINARY] [OUT_DIR]
#
# About 25 minutes on 2 cores with a release build.
set -euo pipefail
shear=${1:-target/release/shear}
out=${2:-runs/mini}
seeds=${SEEDS:-3}
recipe=assets/recipes/default.toml
mkdir -p "$out"
"$shear" run "$recipe" --out "$out/default" --compare --seeds "$seeds"
ablation() {
    local name=$1
    shift
    local sets=()
    for kv in "$@"; do sets+=(--set "$kv"); done
    "$shear" run "$recipe" --out "$out/$name" --seeds "$seeds" "${sets[@]}"
}
ablation reference-source dynamic.reference=source
ablation cadence-today prune.update_every=20 train.update_every=50
ablation start-natural train.proportions=tokens
ablation rule-paper dynamic.update_rule=paper
ablation old-default dynamic.reference=source prune.update_every=20 train.update_every=50
python3 scripts/ablation_table.py "$out" default reference-source cadence-today start-natural \
    rule-paper old-default | tee "$out/ablations.md"
