#!/usr/bin/env python3
"""Checks shear-gguf's conversion of a LLaMA GGUF against Hugging Face transformers' own GGUF
loader, and records the reference data of shear-gguf's real-file test.

    check_gguf_transformers.py GGUF [--converted DIR] [--fixture JSON] [--out DIR]

1. Loads GGUF with transformers (`AutoModelForCausalLM` / `AutoTokenizer`, `gguf_file=`): that
   loader dequantizes with gguf-py and un-permutes q/k itself.
2. Writes to --out (default /tmp/shear-gguf-check): `reference_logits.safetensors` (`input_ids`
   and float32 `logits` of PARAGRAPH; the format scripts/check_transformers.py reads) and
   `reference_state_dict.safetensors` (the dequantized float32 state dict).
3. With --fixture, writes the token ids of TEST_STRINGS and PARAGRAPH, the paragraph's
   perplexity and per-position argmax, and per-tensor sums and sampled values to that JSON (gguf/tests/fixtures/smollm2_reference.json).
4. With --converted DIR (a directory written from the same GGUF by shear-gguf, e.g. by
   `cargo run -p shear-gguf --release --example gguf_to_hf -- GGUF DIR`): loads it with
   `LlamaForCausalLM.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)` and reports
   the per-tensor max |diff| of the weights, the max |diff| of the logits, both perplexities and
   any token-id mismatch. Exits 1 when the logits differ by more than --tol (default 1e-3), a
   weight is missing, or a token id differs.

Needs torch, transformers, accelerate, gguf, safetensors, numpy, tokenizers: run it in a
throwaway virtualenv, e.g.
    python3 -m venv /tmp/venv-gguf
    /tmp/venv-gguf/bin/pip install torch transformers accelerate gguf safetensors numpy
"""
import argparse
import hashlib
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

TEST_STRINGS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    " leading space and  double  spaces",
    "Tabs\tand\nnewlines\n\n",
    "Naïve café — ünïcödé ✓ 日本語 🙂",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "In 1911, 12 sacks cost 345 pence; π ≈ 3.14159.",
    "def f(x):\n    return x**2  # square\n",
]

PARAGRAPH = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a can of "
    "oil and a cloth for the lens. From the top he could see the whole bay: the fishing boats "
    "returning to the harbour, the gulls circling above the market, and the dark line of the "
    "cliffs to the north. He wrote the weather in a small notebook, wound the clock that turned "
    "the lamp, and then sat down to watch the first beam sweep across the water."
)


def load_gguf(path):
    d, name = os.path.split(os.path.abspath(path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    return tok, model


def perplexity(logits, ids):
    """exp of the mean negative log-likelihood of ids[1:] given the prefixes."""
    logp = torch.log_softmax(logits[0, :-1].double(), dim=-1)
    nll = -logp.gather(1, ids[0, 1:, None]).mean().item()
    return math.exp(nll)


def tensor_checks(sd):
    """Per tensor: shape, float64 sum and sum of |x|, and 16 values at evenly spaced flat
    indices (i * (n // 16)), for a bit-exact spot check without storing the weights."""
    out = {}
    for name, t in sd.items():
        flat = t.reshape(-1)
        stride = max(1, flat.numel() // 16)
        idx = list(range(0, flat.numel(), stride))[:16]
        out[name] = {
            "shape": list(t.shape),
            "sum": flat.double().sum().item(),
            "abs_sum": flat.double().abs().sum().item(),
            "sample_stride": stride,
            "samples": [flat[i].item() for i in idx],
        }
    return out


def spm_extra_prefix(tok, got, want):
    """Whether `got` is `want` with one extra lone '\u2581' token: a SentencePiece vocabulary
    on text that starts with a space, where SentencePiece always prepends its '\u2581' and
    transformers' GGUF tokenizer does not."""
    if len(got) != len(want) + 1:
        return False
    return any(got[:i] + got[i + 1:] == want and tok.convert_ids_to_tokens(got[i]) == "\u2581"
               for i in range(len(got)))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--converted")
    ap.add_argument("--fixture")
    ap.add_argument("--out", default="/tmp/shear-gguf-check")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--shear", help="the shear binary: its own forward pass (`shear eval GGUF "
                    "--text PARAGRAPH --logits-out`) is compared with transformers-on-GGUF too")
    a = ap.parse_args()

    import transformers
    tok, ref_model = load_gguf(a.gguf)
    ids = {s: tok(s)["input_ids"] for s in TEST_STRINGS}
    para_ids = torch.tensor([tok(PARAGRAPH)["input_ids"]])
    with torch.no_grad():
        ref_logits = ref_model(para_ids).logits
    ref_ppl = perplexity(ref_logits, para_ids)
    print(f"transformers {transformers.__version__} on {a.gguf}: paragraph of {para_ids.shape[1]} "
          f"tokens, perplexity {ref_ppl:.4f}")

    os.makedirs(a.out, exist_ok=True)
    save_file({"input_ids": para_ids.contiguous(), "logits": ref_logits.contiguous()},
              os.path.join(a.out, "reference_logits.safetensors"))
    ref_sd = {k: v.detach().contiguous() for k, v in ref_model.state_dict().items()}
    if ref_model.config.tie_word_embeddings:
        ref_sd.pop("lm_head.weight", None)
    save_file(ref_sd, os.path.join(a.out, "reference_state_dict.safetensors"))
    print(f"wrote {a.out}/reference_logits.safetensors and reference_state_dict.safetensors")

    if a.fixture:
        with open(a.fixture, "w") as f:
            json.dump({
                "source": {"gguf": os.path.basename(a.gguf), "sha256": sha256(a.gguf),
                           "transformers": transformers.__version__,
                           "how": "scripts/check_gguf_transformers.py GGUF --fixture THIS"},
                "token_ids": ids,
                "paragraph": PARAGRAPH,
                "paragraph_ids": para_ids[0].tolist(),
                "paragraph_perplexity": ref_ppl,
                "paragraph_argmax": ref_logits[0].argmax(-1).tolist(),
                "paragraph_max_logit": [round(v, 4) for v in ref_logits[0].max(-1).values.tolist()],
                "tensors": tensor_checks(ref_sd),
            }, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"wrote {a.fixture}")

    failures = []
    if a.shear:
        import subprocess
        import tempfile
        from safetensors.torch import load_file
        with tempfile.TemporaryDirectory() as d:
            text = os.path.join(d, "paragraph.txt")
            with open(text, "w") as f:
                f.write(PARAGRAPH)
            out = os.path.join(d, "shear_logits.safetensors")
            subprocess.run([a.shear, "eval", a.gguf, "--text", text, "--logits-out", out],
                           check=True)
            got = load_file(out)
        if got["input_ids"].tolist() != para_ids.tolist():
            failures.append("shear tokenized the paragraph differently")
        sdiff = (got["logits"] - ref_logits).abs().max().item()
        sppl = perplexity(got["logits"], para_ids)
        print(f"shear's forward: logits max |diff| {sdiff:.3e} (tol {a.tol}); perplexity "
              f"{sppl:.4f} (transformers-on-GGUF {ref_ppl:.4f})")
        if not sdiff <= a.tol:
            failures.append(f"shear's logits differ by {sdiff:.3e}")
    if not a.converted:
        for f in failures:
            print("FAIL:", f)
        return 1 if failures else 0
    model = LlamaForCausalLM.from_pretrained(a.converted, dtype=torch.float32).eval()
    sd = model.state_dict()
    worst = 0.0
    exact = 0
    for name, ref in ref_sd.items():
        if name not in sd:
            failures.append(f"weight {name} missing from the conversion")
            continue
        d = (sd[name] - ref).abs().max().item()
        exact += d == 0.0
        if d > worst:
            worst = d
        if d != 0.0:
            print(f"  {name}: max |diff| {d:.3e}")
    print(f"weights: {exact}/{len(ref_sd)} tensors identical; max |diff| over all {worst:.3e}")
    with torch.no_grad():
        logits = model(para_ids).logits
    ldiff = (logits - ref_logits).abs().max().item()
    ppl = perplexity(logits, para_ids)
    print(f"logits: max |diff| {ldiff:.3e} (tol {a.tol}); perplexity {ppl:.4f} "
          f"(transformers-on-GGUF {ref_ppl:.4f})")
    if not ldiff <= a.tol:
        failures.append(f"logits differ by {ldiff:.3e}")

    ours = AutoTokenizer.from_pretrained(a.converted)
    import tokenizers
    raw = tokenizers.Tokenizer.from_file(os.path.join(a.converted, "tokenizer.json"))
    for s in TEST_STRINGS + [PARAGRAPH]:
        want = tok(s)["input_ids"]
        got = ours(s)["input_ids"]
        got_raw = raw.encode(s).ids
        if got == got_raw and s[:1].isspace() and spm_extra_prefix(ours, got, want):
            print(f"  known difference on {s!r}: ours (like SentencePiece and llama.cpp) keeps "
                  f"the '\u2581' prefix that transformers' Metaspace(prepend_scheme='first') drops")
        elif got != want or got_raw != want:
            failures.append(f"token ids of {s!r}: transformers-on-GGUF {want}, "
                            f"ours via AutoTokenizer {got}, via tokenizers {got_raw}")
    print(f"tokenizer: {len(TEST_STRINGS) + 1} strings compared")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
