#!/usr/bin/env bash
# `shear plan` against the peak resident memory of `shear bench` on this machine's CPU, for
# shapes where the LM head, the weights, the scores or the recomputed attention come first
# (README, "Memory"). Prints a markdown table.
#
#   scripts/plan_vs_rss.sh            (builds target/release/shear if it is not there)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SHEAR:-target/release/shear}
[ -x "$BIN" ] || cargo build --release --locked
tmp=$(mktemp -d)
echo "| shape (L/d/H/I/V) | batch × seq | stage | plan (MiB) | peak RSS (MiB) | RSS / plan |"
echo "|---|---|---|---:|---:|---:|"
# L D H I V SEQ BATCH [--recompute]
while read -r L D H I V S B R; do
  printf '{"vocab_size":%s,"hidden_size":%s,"intermediate_size":%s,"num_hidden_layers":%s,"num_attention_heads":%s,"num_key_value_heads":%s,"max_position_embeddings":%s,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false,"architectures":["LlamaForCausalLM"],"model_type":"llama"}' \
    "$V" "$D" "$I" "$L" "$H" "$H" "$S" >"$tmp/config.json"
  for stage in train prune; do
    rss=$( { /usr/bin/time -f "%M" "$BIN" bench --layers "$L" --hidden "$D" --heads "$H" \
      --intermediate "$I" --vocab "$V" --seq "$S" --batch "$B" --only "$stage" --workers 1 \
      --warmup 1 --steps 3 --gen-new 1 ${R:-} >/dev/null; } 2>&1 | tail -1)
    plan=$("$BIN" plan "$tmp/config.json" --stage "$stage" --batch "$B" --micro-batch "$B" \
      --seq "$S" ${R:-} --json | python3 -c "import json,sys; print(json.load(sys.stdin)['total_bytes_per_device'])")
    python3 - "$L/$D/$H/$I/$V" "$B × $S${R:+ $R}" "$stage" "$plan" "$rss" <<'EOF'
import sys
shape, run, stage, plan, rss = sys.argv[1:]
plan, rss = int(plan) / 2**20, int(rss) / 1024
print(f"| {shape} | {run} | {stage} | {plan:,.0f} | {rss:,.0f} | {rss / plan:.2f} |")
EOF
  done
done <<'SHAPES'
4 256 4 688 32000 128 4
16 512 8 1376 1024 16 1
8 256 4 688 4096 1024 1
8 256 4 688 4096 2048 1
8 256 4 688 4096 2048 1 --recompute
SHAPES
rm -rf "$tmp"
