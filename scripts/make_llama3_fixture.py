#!/usr/bin/env python3
"""Makes tests/fixtures/llama3-bias: a tiny random Llama with the Llama-3 details shear must read
like transformers does -- `llama3` RoPE scaling, grouped-query attention (4 heads in 2 groups),
a head_dim (16) that is not hidden / heads (48 / 4 = 12), and q/k/v/o biases (attention_bias) --
with transformers' logits and loss for fixed ids. (Llama-3's 128k vocabulary is tested on the
data side: token shards of u32 ids.)

Run in a throwaway virtualenv with torch, transformers and safetensors (never a project
dependency):  python scripts/make_llama3_fixture.py tests/fixtures/llama3-bias
"""
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
torch.manual_seed(3)
cfg = LlamaConfig(
    vocab_size=1000, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16, attention_bias=True,
    max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
    rope_theta=500000.0, bos_token_id=1, eos_token_id=2,
)
model = LlamaForCausalLM(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        # Random biases and norm weights (transformers starts them at 0 and 1), so that every
        # path is exercised.
        if name.endswith("bias"):
            p.normal_(0.0, 0.2)
        elif "norm" in name:
            p.uniform_(0.5, 1.5)
model.save_pretrained(out, safe_serialization=True)
# Positions past original_max_position_embeddings / low_freq_factor reach the scaled band.
ids = torch.randint(0, 1000, (2, 96))
with torch.no_grad():
    res = model(ids, labels=ids)
save_file({"input_ids": ids, "logits": res.logits.float().contiguous(),
           "loss": res.loss.reshape(1).float()}, f"{out}/expected.safetensors")
print(out, "loss", res.loss.item())
