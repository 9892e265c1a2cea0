#!/usr/bin/env bash
# Runs the binaries of .gpu-bundle/ (made by scripts/gpu_bundle.sh) on a GPU machine and prints a summary
# table. Run it from the checkout root. Every test binary runs with
#   GAN_ENGINE_TEST_DEVICE=cuda   parity tests use the real GPU instead of the emulation
#   GAN_ENGINE_POISON=1           fresh outputs are NaN-filled even in release builds
#   GAN_ENGINE_CUDA_SYNC=1        synchronise after every launch, so a faulting kernel is named
#   CI=1                          nvrtc_compile fails instead of skipping without NVRTC
#
#   scripts/gpu_run.sh                    # all test binaries
#   scripts/gpu_run.sh emu_parity golden  # only test binaries whose name contains one of these words
#   RUN_BENCHES=1 scripts/gpu_run.sh      # also the bench binaries (criterion: --bench)
#   PER_BINARY_TIMEOUT=300 (default 240) seconds per binary; logs go to $OUT (if set) or .gpu-bundle/logs.
set -uo pipefail
cd "$(dirname "$0")/.."
[[ -d .gpu-bundle/bin ]] || cd ..  # also works when run as .gpu-bundle/gpu_run.sh
bundle=.gpu-bundle
[[ -d "$bundle/bin" ]] || { echo "no $bundle/bin: run scripts/gpu_bundle.sh first" >&2; exit 2; }
logs="${OUT:-$bundle/logs}"
mkdir -p "$logs"
timeout_s="${PER_BINARY_TIMEOUT:-240}"

# ---- libraries: libcuda for cudarc (NVRTC is found by the engine itself) ----------------------------------
source scripts/gpu_env.sh

# Tests that find fixtures via CARGO_MANIFEST_DIR look under the build machine's path.
if [[ -f "$bundle/manifest_dir" ]]; then
    md=$(cat "$bundle/manifest_dir")
    if [[ ! -e "$md" ]]; then
        mkdir -p "$(dirname "$md")" 2>/dev/null && ln -s "$PWD" "$md" 2>/dev/null &&
            echo "linked $md -> $PWD (fixtures)"
    fi
fi

export GAN_ENGINE_TEST_DEVICE=cuda GAN_ENGINE_POISON=1 GAN_ENGINE_CUDA_SYNC=1 CI=1
export GAN_ENGINE_CACHE_DIR="${GAN_ENGINE_CACHE_DIR:-/tmp/gan-engine-kernel-cache}"
export RUST_BACKTRACE=1

echo "bundle: commit $(cat $bundle/commit 2>/dev/null || echo '?'), built $(cat $bundle/built_at 2>/dev/null || echo '?')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$bundle/bin/gan-engine" info 2>/dev/null | grep "^nvrtc" || echo "nvrtc: (no gan-engine in the bundle to ask)"
echo

rows=()
fail=0
for bin in "$bundle"/bin/test-* "$bundle"/bin/bench-*; do
    [[ -x "$bin" ]] || continue
    name=$(basename "$bin")
    if [[ "$name" == bench-* && "${RUN_BENCHES:-0}" != 1 ]]; then continue; fi
    if (($#)); then
        keep=0
        for w in "$@"; do [[ "$name" == *"$w"* ]] && keep=1; done
        ((keep)) || continue
    fi
    args=()
    [[ "$name" == bench-* ]] && args=(--bench)
    [[ "$name" == test-* ]] && args=(--test-threads=4 --include-ignored)
    t0=$(date +%s%N)
    timeout "$timeout_s" "$bin" "${args[@]}" >"$logs/$name.log" 2>&1
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    summary=$(grep -E '^test result:' "$logs/$name.log" | tail -1)
    passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
    failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")
    ignored=$(sed -nE 's/.* ([0-9]+) ignored.*/\1/p' <<<"$summary")
    skipped=$(grep -c 'SKIPPED' "$logs/$name.log")
    status=ok
    ((rc == 124)) && status=TIMEOUT
    ((rc != 0 && rc != 124)) && status="FAIL($rc)"
    [[ "$status" != ok ]] && fail=1
    rows+=("$(printf '%-34s %-10s %6s %6s %7s %7s %6d.%d' "$name" "$status" "${passed:--}" "${failed:--}" \
        "${ignored:--}" "$skipped" $((ms / 1000)) $((ms % 1000 / 100)))")
    if [[ "$status" != ok ]]; then
        echo "---- $name: last lines of $logs/$name.log"
        grep -E 'panicked|FAILED|failed|error' "$logs/$name.log" | head -20
        tail -15 "$logs/$name.log"
    fi
done

echo
printf '%-34s %-10s %6s %6s %7s %7s %8s\n' binary status passed failed ignored skipped seconds
printf '%s\n' "${rows[@]}"
echo
echo "logs: $logs"
exit $fail
