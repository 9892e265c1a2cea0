#!/usr/bin/env bash
# Sourced by scripts/gpu_run.sh and scripts/gpu_session.sh on a GPU machine: puts libcuda and an NVRTC that
# cudarc can dlopen on LD_LIBRARY_PATH, and sets $nvrtc to the library found (empty if none).

# cudarc dlopens libcuda.so(.1) and libnvrtc.so / libnvrtc.so.12 by name.
libdirs=()
nvrtc=""
for d in ${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH//:/ }} /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    for f in "$d"/libnvrtc.so "$d"/libnvrtc.so.1[0-9]*; do
        [[ -e "$f" ]] && { nvrtc="$f"; break 2; }
    done
done
if [[ -z "$nvrtc" ]] && command -v python3 >/dev/null; then
    # pip's nvidia-cuda-nvrtc wheels (PyTorch depends on them): nvidia/cuda_nvrtc/lib or nvidia/cu13/lib.
    site=$(python3 -c 'import site, sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
    nvrtc=$(find $site -path '*nvidia*' -name 'libnvrtc.so*' ! -name '*builtins*' ! -name '*alt*' 2>/dev/null | sort | tail -1)
fi
if [[ -n "$nvrtc" ]]; then
    libdirs+=("$(dirname "$nvrtc")")
    # cudarc (built for CUDA 12) looks for libnvrtc.so, .so.12, ...: offer whatever version exists under those
    # names. NVRTC's API is stable across these versions.
    shim=$(mktemp -d)
    ln -sf "$(readlink -f "$nvrtc")" "$shim/libnvrtc.so"
    ln -sf "$(readlink -f "$nvrtc")" "$shim/libnvrtc.so.12"
    libdirs+=("$shim")
fi
for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
    [[ -e "$d/libcuda.so.1" || -e "$d/libcuda.so" ]] && libdirs+=("$d")
done
export LD_LIBRARY_PATH="$(IFS=:; echo "${libdirs[*]:-}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

