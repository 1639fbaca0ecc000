#!/usr/bin/env python3
"""A local multi-domain corpus for `shear data bench` (not committed, not redistributed): text
that any Debian-like machine has — package documentation (/usr/share/doc, gzip'd files
decompressed), licence texts, and the Python standard library's sources — as one JSONL file per
domain, one document per source file.

usage: make_bench_corpus.py OUT_DIR [MEGABYTES_PER_DOMAIN]
"""
import gzip, json, os, sys, sysconfig

out = sys.argv[1]
limit = int(float(sys.argv[2]) * 1e6) if len(sys.argv) > 2 else 4_000_000
os.makedirs(out, exist_ok=True)

def files(root, exts):
    for d, _, fs in sorted(os.walk(root)):
        for f in sorted(fs):
            if f.endswith(exts):
                yield os.path.join(d, f)

def read(path):
    try:
        raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
        return raw.decode("utf-8")
    except Exception:
        return None

domains = {
    "docs": files("/usr/share/doc", ("changelog.gz", "README", "README.md", "NEWS.gz", ".txt")),
    "licenses": files("/usr/share/doc", ("copyright",)),
    "python": files(sysconfig.get_paths()["stdlib"], (".py",)),
}
for name, paths in domains.items():
    size = 0
    with open(os.path.join(out, f"{name}.jsonl"), "w") as f:
        for p in paths:
            text = read(p)
            if not text or not text.strip():
                continue
            f.write(json.dumps({"text": text}) + "\n")
            size += len(text)
            if size >= limit:
                break
    print(f"{name}: {size / 1e6:.1f} MB")
