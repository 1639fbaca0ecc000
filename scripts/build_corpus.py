#!/usr/bin/env python3
"""Rebuilds assets/corpus/ (the embedded default's four domains) from Debian and crates.io packages.

    python3 scripts/build_corpus.py [--out assets/corpus] [--work /tmp/shear-corpus]

Needs `apt-get download` (Debian bookworm archives) and network access to static.crates.io.
Each domain is written as `<domain>.jsonl.gz`, one `{"text": ...}` document per line, gzip'd with
mtime 0 so the output is byte-for-byte reproducible. A domain larger than 2 MB keeps every k-th
document (k = ceil(size / 1.5 MB)), so the committed corpus stays small; see SOURCES.md.

Domains (chosen to differ the way RedPajama's do):
  code        Rust source files of the crates syn 2.0.119 and regex-syntax 0.8.12 (generated
              tables left out), one file per document            MIT OR Apache-2.0
  book        King James Bible, one chapter per document        public domain
  dictionary  FOLDOC, the Free On-line Dictionary of Computing, one entry per document  GFDL 1.1+
  quotes      fortune-mod's `fortunes` (quotations, jokes, dialogue), one fortune per document,
              ASCII-art files left out                           BSD
"""

import argparse
import base64
import gzip
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

DEBS = {
    "bible-kjv": "4.38",
    "bible-kjv-text": "4.38",
    "dict-foldoc": "20230119-1",
    "fortunes": "1:1.99.1-7.3",
}
CRATES = [("syn", "2.0.119", "src/gen/"), ("regex-syntax", "0.8.12", "src/unicode_tables/")]
CAP = 1_500_000
SAMPLE_ABOVE = 2_000_000


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def fetch_debs(work: Path) -> Path:
    root = work / "debs"
    root.mkdir(parents=True, exist_ok=True)
    for pkg, ver in DEBS.items():
        if not list(root.glob(f"{pkg}_*.deb")):
            sh("apt-get", "download", f"{pkg}={ver}", cwd=root)
    out = work / "root"
    for deb in sorted(root.glob("*.deb")):
        sh("dpkg-deb", "-x", str(deb), str(out))
    return out


def book(root: Path) -> list[str]:
    """One document per chapter, verses joined with spaces, the chapter's reference first."""
    bible = root / "usr/bin/bible"
    text = subprocess.run(
        [str(bible), "-f", "-d", "usr/lib/bible.data", "Ge1:1-Re22:21"],
        cwd=root,  # `-d` with an absolute path fails: the program prepends its search path
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    ).stdout
    if not text.rstrip().endswith("be with you all. Amen.") or text.count("\n") != 31102:
        raise SystemExit("bible: unexpected output (expected the 31102 verses of Ge1:1-Re22:21)")
    chapters: dict[str, list[str]] = {}
    order = []
    for line in text.splitlines():
        if not line.strip():
            continue
        ref, _, verse = line.partition(" ")
        chapter = ref.split(":")[0]
        if chapter not in chapters:
            chapters[chapter] = []
            order.append(chapter)
        chapters[chapter].append(verse.strip())
    return [f"{c}\n" + " ".join(chapters[c]) for c in order]


def b64(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def dictionary(root: Path) -> list[str]:
    """One document per FOLDOC entry, cut out with the dictd index (base64 offsets)."""
    d = root / "usr/share/dictd"
    body = gzip.decompress((d / "foldoc.dict.dz").read_bytes())
    seen = set()
    docs = []
    for line in (d / "foldoc.index").read_text(encoding="utf-8").splitlines():
        word, off, size = line.split("\t")[:3]
        if word.startswith("00-database"):
            continue
        key = (b64(off), b64(size))
        if key in seen:
            continue
        seen.add(key)
        entry = body[key[0] : key[0] + key[1]].decode("utf-8", "replace")
        docs.append("\n".join(l.strip() for l in entry.strip().splitlines()))
    docs.sort()
    return docs


def quotes(root: Path) -> list[str]:
    d = root / "usr/share/games/fortunes"
    docs = []
    for f in sorted(d.iterdir()):
        if f.suffix in (".dat", ".u8") or f.name in ("art", "ascii-art") or f.is_symlink():
            continue
        for fortune in f.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            fortune = fortune.strip("%\n").rstrip()
            if fortune.strip():
                docs.append(fortune)
    return docs


def code(work: Path) -> list[str]:
    docs = []
    for name, ver, skip in CRATES:
        path = work / f"{name}-{ver}.crate"
        if not path.exists():
            url = f"https://static.crates.io/crates/{name}/{name}-{ver}.crate"
            path.write_bytes(urllib.request.urlopen(url).read())
        with tarfile.open(path) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".rs")),
                key=lambda m: m.name,
            )
            for m in members:
                rel = m.name.split("/", 1)[1]
                if rel.startswith(skip) or not rel.startswith("src/"):
                    continue
                text = tar.extractfile(m).read().decode("utf-8")
                docs.append(f"// {name}/{rel}\n{text}")
    return docs


def sample(docs: list[str]) -> list[str]:
    size = sum(len(d.encode()) for d in docs)
    if size <= SAMPLE_ABOVE:
        return docs
    k = math.ceil(size / CAP)
    return docs[::k]


def write(out: Path, name: str, docs: list[str]) -> tuple[int, int]:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for doc in docs:
            gz.write((json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode())
    tmp = out / f".{name}.jsonl.gz.tmp"
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out / f"{name}.jsonl.gz")
    return sum(len(d.encode()) for d in docs), len(buf.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="assets/corpus")
    ap.add_argument("--work", default="/tmp/shear-corpus")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    root = fetch_debs(work)
    domains = {
        "code": code(work),
        "book": book(root),
        "dictionary": dictionary(root),
        "quotes": quotes(root),
    }
    for name, docs in domains.items():
        kept = sample(docs)
        text, packed = write(out, name, kept)
        print(f"{name:<11} {len(kept):>6} of {len(docs):>6} documents  {text:>9} bytes of text  {packed:>8} bytes gzip'd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
