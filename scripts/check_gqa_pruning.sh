#!/usr/bin/env bash
# Checks, outside CI, that models pruned from grouped-query sources load in Hugging Face
# transformers and give shear's logits: prunes the tied GQA fixture (8 heads in 2 groups) and the
# Llama-3-style fixture (llama3 RoPE, head_dim 16 != 48/4, attention biases) to grouped-query
# targets with `shear prune`, writes shear's logits of 40 fixed token ids with `shear eval
# --logits-out`, and runs scripts/check_transformers.py on each pruned model (tolerance 1e-4).
#
#   scripts/check_gqa_pruning.sh [SHEAR_BINARY] [PYTHON]
#
# PYTHON needs torch, transformers and safetensors (a throwaway virtualenv; not a project
# dependency). Extra pruned model directories may be checked the same way by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
SHEAR="${1:-target/release/shear}"
PY="${2:-python3}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
seq 0 3999 | awk '{print ($1 * 7919 + 13) % 1000}' > "$TMP/tokens.ids"
seq 0 39 | awk '{print ($1 * 37 + 11) % 1000}' > "$TMP/probe.ids"
status=0
for case in \
    "gqa-tied tests/fixtures/llama-gqa-tied-bf16-sharded layers=2,hidden=40,heads=4,kv_heads=2,intermediate=64" \
    "llama3-bias tests/fixtures/llama3-bias layers=1,hidden=40,heads=2,kv_heads=1,intermediate=80"; do
    read -r name source target <<< "$case"
    out="$TMP/$name"
    "$SHEAR" prune "$source" --target "$target" --data "$TMP/tokens.ids" --seq 16 --steps 20 \
        --batch 2 --grad-accum 1 --out "$out" > /dev/null
    "$SHEAR" eval "$out/model" --text "$TMP/probe.ids" --logits-out "$out/logits.safetensors" \
        > /dev/null
    echo "$name -> $target:"
    "$PY" scripts/check_transformers.py "$out/model" "$out/logits.safetensors" 1e-4 || status=1
done
exit $status
