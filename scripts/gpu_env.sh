#!/usr/bin/env bash
# Sourced by scripts/gpu_run.sh and scripts/first_light.sh on a GPU machine. cudarc opens libcuda.so.1 by name;
# where the driver's folder is mounted outside the loader's cache (/usr/local/nvidia/lib64 on some container
# images), it goes on LD_LIBRARY_PATH. NVRTC needs nothing here: the engine finds libnvrtc.so.13 / .so.12 itself
# (src/cuda/nvrtc.rs); `gan-engine info` prints which one it loaded.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
    for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/local/cuda/compat; do
        if [[ -e $d/libcuda.so.1 ]]; then
            export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            break
        fi
    done
fi
