#!/usr/bin/env bash
# Runs the side-by-side benchmarks (ours vs libtorch: benches/ops.rs, benches/train.rs) and writes the measured
# tables of BENCHMARKS.md (scripts/benchmarks_md.py).
#
# Usage: scripts/bench.sh [--no-libtorch] [--bench ops|train] [-- CRITERION_ARGS...]
#   e.g. scripts/bench.sh --bench ops -- 'cpu conv'     (only the groups whose id contains "cpu conv")
#
# libtorch comes from a Python venv holding PyTorch 2.13.0 (the only version tch 0.26 builds against):
# TORCH_VENV (default: .venv-torch in the repository root) is used if it has it, else created there with
# `pip install torch==2.13.0` (several GB). tch links that torch's libraries (LIBTORCH_USE_PYTORCH=1) and
# build.rs records their directory as the binaries' rpath.
#
# On a GPU machine the CUDA groups run too (ours on our kernels, libtorch on cuDNN/cuBLAS); without one they
# are skipped with a line saying so. Everything runs with the same thread count for both (rayon's, which
# RAYON_NUM_THREADS overrides). Other processes on the machine skew the timings: the load average before and
# after the run goes into the report.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

features=(--features libtorch)
benches=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-libtorch) features=(); shift ;;
        --bench) benches+=(--bench "$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "usage: scripts/bench.sh [--no-libtorch] [--bench ops|train] [-- CRITERION_ARGS...]" >&2; exit 2 ;;
    esac
done

[[ ${#benches[@]} -eq 0 ]] && benches=(--bench ops --bench train)

torch_version=""
if [[ ${#features[@]} -gt 0 ]]; then
    TORCH_VENV="${TORCH_VENV:-$ROOT/.venv-torch}"
    have="$("$TORCH_VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
    if [[ "$have" != "2.13.0" ]]; then
        echo "bench.sh: no PyTorch 2.13.0 in $TORCH_VENV (found '${have:-none}'); installing it (several GB)" >&2
        python3 -m venv "$TORCH_VENV"
        "$TORCH_VENV/bin/pip" install --quiet torch==2.13.0
    fi
    export PATH="$TORCH_VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1
    # libtorch's OpenMP workers spin while they wait for work. On a machine with more runnable threads than
    # cores (ours: 2 cores shared by several jobs) a spinning worker holds a core the thread doing the work
    # needs; measured here, that made a 64-element BCE take 11 ms instead of 0.2 ms and an Adam step 450 ms
    # instead of 24 ms. PASSIVE (sleep while idle) is libtorch's better setting on such a machine, so it is the
    # default; it does not touch our rayon pool. Set OMP_WAIT_POLICY to override.
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
    torch_version="$("$TORCH_VENV/bin/python" -c 'import torch; print(torch.__version__)')"
fi

mkdir -p target/criterion
meta=target/criterion/gan-bench-meta.json
command="scripts/bench.sh (= cargo bench ${features[*]} ${benches[*]}${*:+ -- $*})"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
threads="${RAYON_NUM_THREADS:-$(nproc)}"
python3 - "$meta" "$command" "$load_before" "$torch_version" "$threads" "${OMP_WAIT_POLICY:-}" <<'EOF'
import datetime, json, os, subprocess, sys, time
sys.path.insert(0, "scripts")
from benchmarks_md import cpu_model
path, command, load, torch, threads, omp = sys.argv[1:]
model, simd = cpu_model()
git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
meta = {
    "start_epoch": time.time(),
    "start_iso": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    "commit": git("rev-parse", "--short", "HEAD"),
    "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "command": command, "load_before": load, "torch": torch, "threads": int(threads),
    "nproc": os.cpu_count(), "omp_wait_policy": omp, "cpu_model": model, "simd": simd,
}
json.dump(meta, open(path, "w"), indent=1)
EOF

echo "bench.sh: load average before: $load_before" >&2
cargo bench "${features[@]}" "${benches[@]}" -- "$@" 2>&1 | tee target/criterion/gan-bench.log

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench.sh: load average after: $load_after" >&2
python3 - "$meta" "$load_after" <<'EOF'
import json, sys
path, load = sys.argv[1:]
meta = json.load(open(path))
meta["load_after"] = load
json.dump(meta, open(path, "w"), indent=1)
EOF
python3 scripts/benchmarks_md.py
