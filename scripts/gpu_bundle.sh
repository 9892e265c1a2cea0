#!/usr/bin/env bash
# Builds the test binaries (and, with --release, the gan-engine binary and the bench binaries) on this machine
# and copies them, stripped, into .gpu-bundle/ (git-ignored), so a GPU machine that has no Rust toolchain can
# run them with scripts/gpu_run.sh. Stripped binaries are a few MB each, well inside a device call's size limit.
#
#   scripts/gpu_bundle.sh              # test binaries (dev profile: debug assertions on, outputs NaN-poisoned)
#   scripts/gpu_bundle.sh --release    # + release gan-engine and benches (a full release build: slow here)
#   TESTS="emu_parity cuda_runtime" scripts/gpu_bundle.sh   # only these integration tests (+ the lib's)
#   scripts/gpu_bundle.sh --session    # what scripts/gpu_session.sh needs, sized for the device tool's 64 MiB:
#                                      # --release, the parity tests only, binaries xz-compressed, MNIST and
#                                      # Fashion-MNIST (gzipped IDX) in .gpu-bundle/data, and the FID weights
#                                      # split into .gpu-wa/ and .gpu-wb/ (one later call each)
#
# The binaries need only glibc, libstdc++ and, at run time, libcuda + libnvrtc (found by gpu_run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

release=0
session=0
for a in "$@"; do
    case "$a" in
        --release) release=1 ;;
        --session) release=1; session=1 ;;
        -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

out=.gpu-bundle
rm -rf "$out"
mkdir -p "$out/bin"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Lists "kind name executable" for every test / bench executable in cargo's JSON messages.
executables() {
    jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test == true)
           | "\(.target.kind[0]) \(.target.name) \(.executable)"'
}

test_args=(--tests)
((session)) && TESTS="emu_parity emu_parity_conv emu_parity_pool emu_graph parity_tf32 cuda_runtime nvrtc_compile"
if [[ -n "${TESTS:-}" ]]; then
    test_args=(--lib)
    for t in $TESTS; do test_args+=(--test "$t"); done
fi
echo "building test binaries (cargo test --no-run ${test_args[*]}) ..."
cargo test --no-run --message-format=json "${test_args[@]}" >"$log"
while read -r kind name exe; do
    dest="$out/bin/test-$name"
    [[ "$kind" == lib ]] && dest="$out/bin/test-lib-$name"
    cp "$exe" "$dest"
    strip "$dest"
done < <(executables <"$log")

if ((release)); then
    echo "building release gan-engine ..."
    cargo build --release --bin gan-engine
    cp target/release/gan-engine "$out/bin/gan-engine"
    strip "$out/bin/gan-engine"
    if [[ -d benches ]]; then
        echo "building bench binaries (cargo bench --no-run) ..."
        cargo bench --no-run --message-format=json >"$log"
        while read -r kind name exe; do
            [[ "$kind" == bench ]] || continue
            cp "$exe" "$out/bin/bench-$name"
            strip "$out/bin/bench-$name"
        done < <(executables <"$log")
    fi
fi

# Tests that locate fixtures through CARGO_MANIFEST_DIR carry this build's absolute path; gpu_run.sh links it
# to the checkout it runs in when that path does not exist there.
pwd >"$out/manifest_dir"
git rev-parse --short HEAD >"$out/commit" 2>/dev/null || true
date -u +%Y-%m-%dT%H:%M:%SZ >"$out/built_at"
cp scripts/gpu_run.sh "$out/"

if ((session)); then
    # The session runs neither the lib's unit tests (CPU-only, CI runs them) nor the CPU-only bench.
    rm -f "$out"/bin/test-lib-* "$out"/bin/bench-cpu_conv
    xz -T0 -9 "$out"/bin/*
    for ds in mnist fashion; do
        [[ -d data/$ds ]] || scripts/fetch_mnist.sh
        mkdir -p "$out/data/$ds"
        for f in data/$ds/*; do
            case "$f" in
                *.gz) cp "$f" "$out/data/$ds/" ;;
                *) gzip -9 -c "$f" >"$out/data/$ds/$(basename "$f").gz" ;;
            esac
        done
    done
    weights="${GAN_ENGINE_INCEPTION:-$HOME/.cache/gan-engine/inception_fid.safetensors}"
    [[ -f "$weights" ]] || bash scripts/fetch_fid_weights.sh
    rm -rf .gpu-wa .gpu-wb
    mkdir -p .gpu-wa .gpu-wb
    split -b 55000000 -d -a 1 "$weights" .gpu-wa/inception_fid.safetensors.part
    mv .gpu-wa/inception_fid.safetensors.part1 .gpu-wb/
    for d in .gpu-wa .gpu-wb; do
        grep -qx "/$d/" .git/info/exclude 2>/dev/null || echo "/$d/" >>.git/info/exclude
    done
fi

echo
echo "bundle in $out ($(du -sh "$out" | cut -f1)):"
ls -l "$out/bin" | tail -n +2 | awk '{printf "  %-40s %6.1f MB\n", $NF, $5 / 1048576}'
if ((session)); then
    # Sized for the 15 minutes of device time a drawn session has (device README, 2026-11-30), counted from
    # the machine's start (1-2 min) to its return, transfers included: ~120 + 370 + 40 + 280 s + transfers.
    echo "device calls (see scripts/gpu_session.sh): carry .gpu-bundle:"
    echo "  DEADLINE=330 bash scripts/gpu_session.sh smoke train tests bench   (timeout_s 370)"
    echo "  then at once, carry .gpu-wa: bash scripts/gpu_session.sh stage .gpu-wa"
    echo "  then at once, carry .gpu-wb: DEADLINE=240 bash scripts/gpu_session.sh stage .gpu-wb fid   (timeout_s 280)"
else
    echo "run it on a GPU machine from the checkout root: scripts/gpu_run.sh (or .gpu-bundle/gpu_run.sh)"
fi
