#!/usr/bin/env bash
# Builds the test binaries (and, with --release, the gan-engine binary and the bench binaries) on this machine
# and copies them, stripped, into .gpu-bundle/ (git-ignored), so a GPU machine that has no Rust toolchain can
# run them with scripts/gpu_run.sh. Stripped binaries are a few MB each, well inside a device call's size limit.
#
#   scripts/gpu_bundle.sh              # test binaries (dev profile: debug assertions on, outputs NaN-poisoned)
#   scripts/gpu_bundle.sh --release    # + release gan-engine and benches (a full release build: slow here)
#   TESTS="emu_parity cuda_runtime" scripts/gpu_bundle.sh   # only these integration tests (+ the lib's)
#   (the first-light device call has its own, smaller bundle: scripts/first_light_bundle.sh)
#
# The binaries need only glibc, libstdc++ and, at run time, libcuda + libnvrtc (found by gpu_run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

release=0
for a in "$@"; do
    case "$a" in
        --release) release=1 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
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

echo
echo "bundle in $out ($(du -sh "$out" | cut -f1)):"
ls -l "$out/bin" | tail -n +2 | awk '{printf "  %-40s %6.1f MB\n", $NF, $5 / 1048576}'
echo "run it on a GPU machine from the checkout root: scripts/gpu_run.sh (or .gpu-bundle/gpu_run.sh)"
