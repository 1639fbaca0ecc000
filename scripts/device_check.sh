#!/usr/bin/env bash
# The GPU measurement, for a session that is lent an NVIDIA machine: one script, about 10 minutes.
#
#   here:   cargo build --release --features cuda && mkdir -p .devbin && cp target/release/shear .devbin/
#   there:  OUT=$OUT scripts/device_check.sh        (run from the repository root; carry .devbin)
#
# 1. CUDA parity: greedy continuations against the transformers fixtures, and the logits of the
#    CUDA backend against the CPU backend on the same model and text.
# 2. Checkpoints written by shear load in transformers with the reference logits (needs python3
#    with torch, transformers, safetensors; skipped with a note when they are missing).
# 3. Throughput of the training step and the pruning step, f32 and bf16 (mixed precision), at the
#    Sheared-LLaMA-1.3B shape (L24 d2048 H16 I5504 V32000, seq 4096):
#    tokens/s, MFU against the card's dense bf16 peak (PEAK_TFLOPS, else looked up by name) and
#    peak device memory (nvidia-smi sampled every 200 ms).
# 4. The embedded default's pipeline in f32 and in bf16 (final mean eval losses side by side).
# 5. Data parallelism on CUDA: 20 pruning and 20 training steps of the embedded model with one
#    peer and with N peers (`--devices N`, N = the GPUs, at least 2: several peers share a GPU
#    when there is one), the step logs compared within 1e-4 relative.
# 6. Memory and speed against `shear plan`: a few pruning steps (random init, bf16, 1 × 4 096,
#    --recompute: the mode the plan says fits one H200) of a Llama-2-7B shape and a ~1B shape:
#    measured peak device memory against the plan of the same run, tokens/s, MFU and the host's
#    CPU seconds per step (user + system of the bench process over its 7 steps, start included).
# Everything goes to $OUT/device_check.log (or /tmp) and a summary table at the end.
set -uo pipefail
SHEAR=${SHEAR:-.devbin/shear}
LOG=${OUT:-/tmp}/device_check.log
exec > >(tee "$LOG") 2>&1
fail=0
say() { echo "== $*"; }

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
peak=${PEAK_TFLOPS:-}
if [ -z "$peak" ]; then
  case "$gpu" in
    *H200*|*H100*SXM*|*"H100 80GB HBM3"*) peak=989 ;;
    *H100*) peak=756 ;;
    *A100*) peak=312 ;;
    *L40S*) peak=362 ;;
    *) peak=0 ;;
  esac
fi
say "GPU: $gpu; dense bf16 peak used for MFU: ${peak} TFLOP/s (0: unknown, set PEAK_TFLOPS)"

say "1. CUDA parity"
ids() { python3 -c "import json;d=json.load(open('$1'));print('$2'.join(map(str,d['$3'])))"; }
for f in llama-mha llama-gqa-tied-bf16-sharded llama3-bias; do
  g=tests/fixtures/$f/generate.json
  [ -f "$g" ] || continue
  want=$(ids "$g" ' ' greedy_continuation)
  for cache in "" --no-cache; do
    got=$($SHEAR --device cuda generate tests/fixtures/$f --prompt-ids "$(ids "$g" , prompt_ids)" \
      --max-new-tokens 20 --greedy --ids-only $cache)
    if [ "$got" = "$want" ]; then echo "greedy parity OK on cuda: $f $cache"
    else echo "greedy parity FAILED on cuda: $f $cache: got '$got' want '$want'"; fail=1; fi
  done
done
printf 'The quick brown fox jumps over the lazy dog. %.0s' {1..6} >/tmp/parity.txt
for f in llama-mha llama-gqa-tied-bf16-sharded; do
  $SHEAR --device cpu eval tests/fixtures/$f --text /tmp/parity.txt --logits-out /tmp/logits-cpu.safetensors >/dev/null || fail=1
  $SHEAR --device cuda eval tests/fixtures/$f --text /tmp/parity.txt --logits-out /tmp/logits-cuda.safetensors >/dev/null || fail=1
  python3 - "$f" <<'EOF' || fail=1
import json, struct, sys
def read(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n])
    s, e = h["logits"]["data_offsets"]
    raw = b[8 + n + s:8 + n + e]; return struct.unpack(f"<{len(raw) // 4}f", raw)
a, c = read("/tmp/logits-cpu.safetensors"), read("/tmp/logits-cuda.safetensors")
d = max(abs(x - y) for x, y in zip(a, c))
print(f"cuda vs cpu logits, {sys.argv[1]}: max |diff| {d:.2e} over {len(a)} values")
sys.exit(0 if d <= 1e-3 else 1)
EOF
done

say "2. transformers loads what shear writes"
if python3 -c "import torch, transformers, safetensors" 2>/dev/null; then
  $SHEAR --device cuda convert tests/fixtures/llama-mha /tmp/saved-mha --dtype f32 || fail=1
  $SHEAR --device cuda convert tests/fixtures/llama-gqa-tied-bf16-sharded /tmp/saved-gqa --dtype bf16 || fail=1
  python3 scripts/check_transformers.py /tmp/saved-mha tests/fixtures/llama-mha/expected.safetensors 1e-4 || fail=1
  python3 scripts/check_transformers.py /tmp/saved-gqa tests/fixtures/llama-gqa-tied-bf16-sharded/expected.safetensors 1e-3 || fail=1
else
  echo "skipped: no torch/transformers/safetensors in python3"
fi

say "3. throughput, MFU, peak memory"
ROWS=/tmp/device_rows.txt
: >"$ROWS"
# bench NAME ARGS...: one `shear bench --json` with nvidia-smi sampling the memory alongside.
bench() {
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >/tmp/mem.txt &
  local smi=$!
  local json
  json=$(timeout 240 $SHEAR --device cuda bench --json --gen-new 0 --warmup 2 --steps 5 "$@")
  local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  local mem
  mem=$(sort -n /tmp/mem.txt | tail -1)
  if [ $rc -ne 0 ]; then echo "$name: failed (exit $rc; peak memory ${mem} MiB)"; return 1; fi
  python3 - "$name" "$peak" "$mem" "$json" <<'EOF' | tee -a "$ROWS"
import json, sys
name, peak, mem, r = sys.argv[1], float(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
tps = r["train_step_tokens_per_s"] or r["prune_step_tokens_per_s"]
tflops = tps * r["train_flops_per_token"] / 1e12
mfu = f"{100 * tflops / peak:.1f} %" if peak > 0 else "n/a"
print(f"| {name} | {r['params'] / 1e9:.2f} B | {r['batch']} x {r['seq']} | {tps:,.0f} | {tflops:.1f} | {mfu} | {int(mem) / 1024:.1f} GiB |")
EOF
}
S13="--layers 24 --hidden 2048 --heads 16 --intermediate 5504 --vocab 32000 --seq 4096 --batch 2"
for prec in f32 bf16; do
  bench "1.3B-shape training step, $prec" $S13 --only train --precision $prec || fail=1
  bench "1.3B-shape pruning step, $prec" $S13 --only prune --precision $prec || fail=1
done
# (The Llama-2-7B-shaped pruning step is in section 6, with --recompute, as it fits one GPU.)

say "4. the embedded default in f32 and bf16"
for prec in f32 bf16; do
  timeout 180 $SHEAR --device cuda run --out /tmp/run-$prec --set model.precision=$prec || fail=1
  python3 -c "import json;m=json.load(open('/tmp/run-$prec/run.json'))['metrics']['final']['domains'];print('$prec', 'final mean eval loss', round(sum(d['loss'] for d in m)/len(m), 4))" || fail=1
done

say "5. one CUDA device vs N (--devices)"
ngpu=$(nvidia-smi -L | grep -c '^GPU ')
npeers=$(( ngpu < 2 ? 2 : ngpu ))
tiny=/tmp/run-f32/inputs/tiny
data=/tmp/run-f32/data
common="--data $data --steps 20 --batch 4 --grad-accum 2 --update-every 3"
for n in 1 $npeers; do
  rm -rf /tmp/dp-prune-$n /tmp/dp-train-$n
  timeout 120 $SHEAR --device cuda prune $tiny --target layers=2,hidden=64,heads=2,intermediate=128 \
    $common --out /tmp/dp-prune-$n --devices $n >/dev/null || fail=1
  timeout 120 $SHEAR --device cuda train $tiny --reference-model $tiny $common --lr 1e-3 \
    --out /tmp/dp-train-$n --devices $n >/dev/null || fail=1
done
python3 - "$npeers" "$ngpu" <<'EOF' || fail=1
import json, sys
n, gpus = sys.argv[1], sys.argv[2]
def figures(v, out):
    if isinstance(v, dict):
        for k in sorted(v): figures(v[k], out)
    elif isinstance(v, list):
        for x in v: figures(x, out)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        out.append(float(v))
    return out
worst = 0.0
for stage, log in (("prune", "prune_log.jsonl"), ("train", "train_log.jsonl")):
    a = [json.loads(l) for l in open(f"/tmp/dp-{stage}-1/{log}")]
    b = [json.loads(l) for l in open(f"/tmp/dp-{stage}-{n}/{log}")]
    assert len(a) == len(b) == 20, (stage, len(a), len(b))
    for x, y in zip(a, b):
        for p, q in zip(figures(x, []), figures(y, [])):
            worst = max(worst, abs(p - q) / max(abs(p), 1.0))
print(f"1 vs {n} CUDA peers on {gpus} GPU(s): largest relative difference over 20 steps {worst:.2e}")
sys.exit(0 if worst <= 1e-4 else 1)
EOF

say "6. memory and speed against shear plan (one GPU, --recompute, bf16, 4 096 tokens)"
# A few pruning steps of a Llama-2-7B-shaped and a ~1B-shaped model (random init) in the mode of
# least memory on one device; the measured peak against `shear --device cuda plan` for the same
# run, tokens/s, MFU and the host's CPU time per step. ZeRO needs several GPUs: with 2 or more,
# stage 2 over all of them as well.
PLAN_ROWS=/tmp/device_plan_rows.txt
: >"$PLAN_ROWS"
plan_row() { # NAME CONFIG BENCH-SHAPE... : bench, then the plan of the same run
  local name=$1 config=$2; shift 2



  TIMEFORMAT="%U %S"
  local cpu
  cpu=$( { time bench "$name" "$@" --only prune --precision bf16 --seq 4096 --batch 1 --recompute >/tmp/bench_row.txt; } 2>&1 | tail -1) || { echo "$name: bench failed"; return 1; }
  local measured
  measured=$(grep -o '[0-9.]* GiB |$' /tmp/bench_row.txt | grep -o '^[0-9.]*')
  local planned
  planned=$($SHEAR --device cuda plan "$config" --batch 1 --seq 4096 --recompute --json |
    python3 -c "import json,sys;print(round(json.load(sys.stdin)['total_bytes_per_device']/2**30,1))")
  python3 - "$name" "$measured" "$planned" "$cpu" <<'EOF2' | tee -a "$PLAN_ROWS"
import sys
name, m, p, cpu = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split()
host = (float(cpu[0]) + float(cpu[1])) / 7  # bench: 2 warm-up + 5 timed steps
print(f"| {name} | {m:.1f} GiB | {p:.1f} GiB | {m / p:.2f} | {host:.2f} s |")
EOF2
  cat /tmp/bench_row.txt
}
S7B="--layers 32 --hidden 4096 --heads 32 --intermediate 11008 --vocab 32000"
S1B="--layers 16 --hidden 2048 --heads 32 --intermediate 8192 --vocab 32000"
printf '{"vocab_size":32000,"hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":32,"max_position_embeddings":4096,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":false,"architectures":["LlamaForCausalLM"],"model_type":"llama"}' >/tmp/llama-1b.json
plan_row "7B shape, prune, --recompute" assets/configs/llama-2-7b.json $S7B || fail=1
plan_row "1B shape, prune, --recompute" /tmp/llama-1b.json $S1B || fail=1

say "summary ($gpu)"
echo "| step | params | batch x seq | tokens/s | model TFLOP/s | MFU (bf16 peak ${peak}) | peak memory |"
echo "|---|---:|---:|---:|---:|---:|---:|"
cat "$ROWS"
echo
echo "| run (one GPU, bf16, 1 x 4096) | measured peak | shear plan | measured / plan | host CPU per step |"
echo "|---|---:|---:|---:|---:|"
cat "$PLAN_ROWS"
echo "device_check: $([ $fail = 0 ] && echo PASSED || echo FAILED)"
exit $fail
