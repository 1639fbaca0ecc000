#!/usr/bin/env bash
# GPU checks for a session that is lent an NVIDIA machine (run there from the repo root).
# Expects a release `shear` built with `--features cuda` at $SHEAR (default .devbin/shear),
# and python3 with torch + transformers + safetensors for the transformers round trip.
# Writes its log to $OUT/device_check.log when $OUT is set.
set -uo pipefail
SHEAR=${SHEAR:-.devbin/shear}
LOG=${OUT:-/tmp}/device_check.log
exec > >(tee "$LOG") 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fail=0
ids() { python3 -c "import json,sys;d=json.load(open('$1'));print('$2'.join(map(str,d['$3'])))"; }
for f in llama-mha llama-gqa-tied-bf16-sharded; do
  g=tests/fixtures/$f/generate.json
  want=$(ids "$g" ' ' greedy_continuation)
  for cache in "" --no-cache; do
    got=$($SHEAR --device cuda generate tests/fixtures/$f --prompt-ids "$(ids "$g" , prompt_ids)" \
      --max-new-tokens 20 --greedy --ids-only $cache)
    if [ "$got" = "$want" ]; then echo "greedy parity OK on cuda: $f $cache"
    else echo "greedy parity FAILED on cuda: $f $cache: got '$got' want '$want'"; fail=1; fi
  done
done
# Checkpoints written by shear load in transformers and give the reference logits.
$SHEAR --device cuda convert tests/fixtures/llama-mha /tmp/saved-mha --dtype f32 || fail=1
$SHEAR convert tests/fixtures/llama-gqa-tied-bf16-sharded /tmp/saved-gqa --dtype bf16 || fail=1
python3 scripts/check_transformers.py /tmp/saved-mha tests/fixtures/llama-mha/expected.safetensors 1e-4 || fail=1
python3 scripts/check_transformers.py /tmp/saved-gqa tests/fixtures/llama-gqa-tied-bf16-sharded/expected.safetensors 1e-3 || fail=1
# Throughput on the GPU: the README shape, then a larger one.
$SHEAR --device cuda bench --steps 10 --warmup 3 || fail=1
$SHEAR --device cuda bench --layers 8 --hidden 1024 --heads 16 --intermediate 2752 --seq 512 --batch 8 --steps 10 --warmup 3 || fail=1
$SHEAR --device cuda bench --layers 8 --hidden 1024 --heads 16 --intermediate 2752 --seq 512 --batch 8 --steps 10 --warmup 3 --precision bf16 || fail=1
# Mixed precision: the embedded default's pipeline with bf16 products against f32 (a short run
# each; the final mean eval losses should agree to about 1e-2).
for prec in f32 bf16; do
  $SHEAR --device cuda run --out /tmp/run-$prec --set model.precision=$prec --set prune.steps=40 \
    --set train.steps=80 --set prune.save_every=0 --set train.save_every=0 || fail=1
  python3 -c "import json;m=json.load(open('/tmp/run-$prec/run.json'))['metrics']['final']['domains'];print('$prec', 'final mean eval loss', sum(d['loss'] for d in m)/len(m))"
done
echo "device_check: $([ $fail = 0 ] && echo PASSED || echo FAILED)"
exit $fail
