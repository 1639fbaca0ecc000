#!/usr/bin/env python3
"""Checks that a checkpoint written by `shear convert` / `shear prune` loads in Hugging Face
transformers and gives the reference logits.

  check_transformers.py SAVED_DIR EXPECTED_SAFETENSORS TOL

Loads SAVED_DIR with LlamaForCausalLM (float32), runs `input_ids` from EXPECTED_SAFETENSORS and
prints the max |logits - expected logits|; exits 1 if it is above TOL or if any config key of the
saved config.json is not one transformers reads back.
Needs torch, transformers and safetensors (not project dependencies: run it where they exist).
"""
import json, sys
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, LlamaForCausalLM

saved, expected, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
ref = load_file(expected)
model = LlamaForCausalLM.from_pretrained(saved, torch_dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(ref["input_ids"]).logits
diff = (logits - ref["logits"]).abs().max().item()
cfg = json.load(open(f"{saved}/config.json"))
hf = AutoConfig.from_pretrained(saved).to_dict()
# transformers 5 reads a top-level `rope_theta` into `rope_parameters`.
read_back = set(hf) | set((hf.get("rope_parameters") or {}).keys())
missing = [k for k in cfg if k not in read_back and k not in ("torch_dtype", "dtype", "transformers_version")]
print(f"{saved}: transformers loaded it; max |logits diff| = {diff:.3e} (tol {tol}); "
      f"config keys not read back: {missing}")
sys.exit(0 if diff <= tol and not missing else 1)
