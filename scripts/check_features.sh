#!/usr/bin/env bash
# Fails if the burn backends lose the features that make them fast: burn-flex's `rayon` (threads)
# and `simd` (vectorised element-wise kernels), and the GPU backends' `fusion` and `autotune`.
# The workspace builds burn with `default-features = false`, which drops all of them unless they
# are named again (Cargo.toml); this check keeps that from regressing silently.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { # need FEATURES-OF-CRATE CRATE FEATURE...
    local tree=$1 crate=$2; shift 2
    for f in "$@"; do
        if ! grep -q "^${crate} feature \"${f}\"" <<<"$tree"; then
            echo "check_features: ${crate} is built without its \`${f}\` feature" >&2
            exit 1
        fi
    done
}

# `cargo tree -e features -i CRATE` lists, for CRATE, one line per enabled feature.
features_of() { # features_of CRATE [cargo args...]
    local crate=$1; shift
    cargo tree --locked -e features -i "$crate" --prefix none "$@" 2>/dev/null |
        grep "^${crate} feature " | sort -u
}

need "$(features_of burn-flex)" burn-flex rayon simd
need "$(features_of burn-flex -p shear-model)" burn-flex rayon simd
need "$(features_of burn-flex -p shear-train)" burn-flex rayon simd
need "$(features_of burn-wgpu --features wgpu)" burn-wgpu fusion autotune
need "$(features_of burn-cuda --features cuda)" burn-cuda fusion autotune
echo "check_features: burn-flex has rayon + simd; burn-wgpu and burn-cuda have fusion + autotune"
