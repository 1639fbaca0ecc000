#!/usr/bin/env python3
"""Checks shear's GGUF export against the real consumer, llama.cpp (through its Python
bindings): for each MODEL directory, `shear convert MODEL OUT.gguf --dtype TYPE`, then

1. the logits of a paragraph: shear's (`shear eval MODEL --text P --logits-out F`) against
   llama.cpp's on the same token ids (`Llama(..., logits_all=True).eval(ids)`), max |diff|;
   for types other than f32, shear evaluates the exported file itself (shear reads GGUF), so
   both sides hold the same rounded weights;
2. 20 greedy tokens after the paragraph's first 8 tokens: `shear generate MODEL --prompt-ids ...
   --greedy --max-new-tokens 20 --ignore-eos --ids-only` against llama.cpp's argmax loop;
3. llama.cpp's own tokenization of the paragraph against shear's (reported; a difference is
   a tokenizer-metadata problem, not a weights one);
4. the export time and size.

    check_gguf_llamacpp.py --shear BIN [--dtype f32] [--tol 1e-3] [--out DIR] NAME=MODEL ...

Prints a Markdown table (the README's) and exits 1 when a model's logits differ by more than
--tol (default 1e-3; use 1e-2 for f16) or a greedy token differs.

Needs llama-cpp-python, numpy and safetensors: run it in a throwaway virtualenv, never a
project dependency:
    python3 -m venv /tmp/llama-venv
    /tmp/llama-venv/bin/pip install llama-cpp-python numpy safetensors   # builds llama.cpp
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file
import llama_cpp

PARAGRAPH = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a can of "
    "oil and a cloth for the lens. From the top he could see the whole bay: the fishing boats "
    "coming home, the gulls over the harbour wall, and, far out, the grey line where the sea "
    "met the sky. In 1911 the light was automated, and he wrote in his log: 'Fine weather.'"
)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return p


def check(shear, name, model, dtype, out, tol):
    gguf = os.path.join(out, f"{name}.{dtype}.gguf")
    t = time.time()
    run([shear, "convert", model, gguf, "--dtype", dtype])
    export_s = time.time() - t
    mib = os.path.getsize(gguf) / 2**20

    para = os.path.join(out, "paragraph.txt")
    with open(para, "w") as f:
        f.write(PARAGRAPH)
    logits_file = os.path.join(out, f"{name}.logits.safetensors")
    # shear's side: the model itself for f32; for the other types the exported file (which
    # shear reads too), so that both sides hold the same rounded weights and the comparison
    # is of the file's meaning, not of the rounding.
    reference = model if dtype == "f32" else gguf
    run([shear, "eval", reference, "--text", para, "--logits-out", logits_file])
    ref = load_file(logits_file)
    ids = [int(i) for i in ref["input_ids"].reshape(-1)]
    ours = ref["logits"].reshape(len(ids), -1).astype(np.float64)

    # An f32 KV cache: llama.cpp's default f16 cache alone moves logits by ~3e-3.
    llm = llama_cpp.Llama(gguf, logits_all=True, n_ctx=len(ids) + 64, n_batch=512,
                          verbose=False, seed=0, type_k=llama_cpp.GGML_TYPE_F32,
                          type_v=llama_cpp.GGML_TYPE_F32)
    llm.eval(ids)
    theirs = np.array(llm.scores[: len(ids)], dtype=np.float64)
    logits_diff = float(np.abs(theirs - ours).max())
    argmax_same = int((theirs.argmax(-1) == ours.argmax(-1)).sum())

    prompt = ids[:8]
    g = run([shear, "generate", reference, "--prompt-ids", ",".join(map(str, prompt)), "--greedy",
             "--max-new-tokens", "20", "--ignore-eos", "--ids-only"])
    shear_greedy = [int(x) for x in g.stdout.split()]
    llm.reset()
    llm.eval(prompt)
    cpp_greedy = []
    for _ in range(20):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        cpp_greedy.append(nxt)
        llm.eval([nxt])

    # llama.cpp's tokenization of the text, BOS as the file says.
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    cpp_ids = llm.tokenize(PARAGRAPH.encode(), add_bos=add_bos, special=False)
    tok_same = cpp_ids == ids
    del llm
    ok = logits_diff <= tol and shear_greedy == cpp_greedy
    return {
        "name": name, "dtype": dtype, "tokens": len(ids), "vocab": ours.shape[1],
        "logits_diff": logits_diff, "argmax": f"{argmax_same}/{len(ids)}",
        "greedy": "20/20 identical" if shear_greedy == cpp_greedy else
        f"differ: shear {shear_greedy} llama.cpp {cpp_greedy}",
        "tokenization": "identical" if tok_same else
        f"differs at {next((i for i, (a, b) in enumerate(zip(ids, cpp_ids)) if a != b), min(len(ids), len(cpp_ids)))}"
        f" ({len(cpp_ids)} vs {len(ids)} ids)",
        "export_s": export_s, "mib": mib, "ok": ok,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shear", required=True, help="the shear binary")
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--out", default="/tmp/shear-gguf-llamacpp")
    ap.add_argument("models", nargs="+", help="NAME=MODEL_DIR")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for m in a.models:
        name, model = m.split("=", 1)
        r = check(a.shear, name, model, a.dtype, a.out, a.tol)
        rows.append(r)
        print(f"{name}: max |logits diff| {r['logits_diff']:.3g}, greedy {r['greedy']}, "
              f"tokenization {r['tokenization']}", file=sys.stderr)
    print(f"llama-cpp-python {llama_cpp.__version__} (llama.cpp it bundles), "
          f"{a.dtype}, tolerance {a.tol:g}\n")
    print("| model | GGUF | paragraph tokens | max \\|logits diff\\| | argmax agree | greedy 20 tokens "
          "| llama.cpp's tokenization | export |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- | ---: |")
    for r in rows:
        print(f"| {r['name']} | {r['dtype']}, {r['mib']:.1f} MiB | {r['tokens']} | "
              f"{r['logits_diff']:.2e} | {r['argmax']} | {r['greedy']} | {r['tokenization']} | "
              f"{r['export_s']:.2f} s |")
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
