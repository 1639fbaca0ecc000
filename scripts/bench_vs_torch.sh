#!/usr/bin/env bash
# shear against PyTorch on this machine's CPU, in one sitting, runs alternating: the training
# step, the pruning step and greedy generation at the benchmark shape (L4 d256 H4 I688 V32000,
# seq 128, batch 4) and the embedded model's shape (L4 d128 H4 I352 V4096, seq 128, batch 8).
# Both sides take 2 untimed warm-up steps (as scripts/torch_bench.py does), then $STEPS timed ones
# (default 20).
# Prints each round, then a markdown table of medians (README, "Benchmarks").
#
#   PYTHON=/tmp/torch-venv/bin/python scripts/bench_vs_torch.sh [ROUNDS]
#
# The PyTorch side is scripts/torch_bench.py (HF transformers' LlamaForCausalLM, AdamW, eager), run
# from a throwaway virtualenv; torch is not a dependency of this project:
#   python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch transformers
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
# Timed steps per measurement on both sides (a step at the embedded shape is ~0.1 s: 8 steps
# were within this machine's noise).
STEPS=${STEPS:-20}
PY=${PYTHON:?set PYTHON to a Python with torch and transformers}
TB=scripts/torch_bench.py
BIN=${SHEAR:-target/release/shear}
[ -x "$BIN" ] || cargo build --release --locked
OUT=$(mktemp)

shapes=("bench:4 256 4 688 32000 128 4" "embedded:4 128 4 352 4096 128 8")
for r in $(seq "$ROUNDS"); do
  for entry in "${shapes[@]}"; do
    name=${entry%%:*}
    read -r L D H I V S B <<<"${entry#*:}"
    s=$("$BIN" bench --layers "$L" --hidden "$D" --heads "$H" --intermediate "$I" --vocab "$V" \
      --seq "$S" --batch "$B" --warmup 2 --steps "$STEPS" --json)
    for key in train_step_tokens_per_s prune_step_tokens_per_s prune_over_train_step_time generate_tokens_per_s; do
      echo "$name shear $key $(echo "$s" | python3 -c "import json,sys; print(json.load(sys.stdin)['$key'])")" >>"$OUT"
    done
    for mode in cpt prune; do
      t=$("$PY" "$TB" "$mode" "$L" "$D" "$H" "$I" "$V" "$S" "$B" "$STEPS" 2>/dev/null | sed 's/tokens_per_s=//')
      key=$([ "$mode" = cpt ] && echo train_step_tokens_per_s || echo prune_step_tokens_per_s)
      echo "$name torch $key $t" >>"$OUT"
    done
    t=$("$PY" "$TB" generate "$L" "$D" "$H" "$I" "$V" 128 1 128 2>/dev/null | sed 's/tokens_per_s=//')
    echo "$name torch generate_tokens_per_s $t" >>"$OUT"
  done
  echo "round $r done" >&2
done

python3 - "$OUT" <<'EOF'
import sys, statistics, collections
v = collections.defaultdict(list)
for line in open(sys.argv[1]):
    shape, who, key, x = line.split()
    v[(shape, who, key)].append(float(x))
m = {k: statistics.median(x) for k, x in v.items()}
n = len(next(iter(v.values())))
print(f"medians of {n} alternating rounds")
print("| shape | step | shear tokens/s | PyTorch tokens/s | shear / PyTorch |")
print("|---|---|---:|---:|---:|")
for shape in ("bench", "embedded"):
    for key, label in (("train_step_tokens_per_s", "training step"),
                       ("prune_step_tokens_per_s", "pruning step"),
                       ("generate_tokens_per_s", "generation (batch 1, new tokens/s)")):
        s, t = m[(shape, "shear", key)], m[(shape, "torch", key)]
        print(f"| {shape} | {label} | {s:,.0f} | {t:,.0f} | {s / t:.2f}x |")
    print(f"| {shape} | pruning step time / training step time (shear) | | | "
          f"{m[(shape, 'shear', 'prune_over_train_step_time')]:.2f} |")
EOF
rm -f "$OUT"
