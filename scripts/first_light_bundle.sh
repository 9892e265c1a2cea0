#!/usr/bin/env bash
# Builds what scripts/first_light.sh runs on a GPU machine (which has no Rust toolchain) into .gpu-bundle/
# (git-ignored): the release gan-engine, the parity test binaries (dev profile: debug assertions, NaN-poisoned
# outputs) and the per-layer bench, stripped and xz-compressed. Checks the bundle against the device call's
# 64 MiB, records the newest glibc / libstdc++ symbol versions the binaries need (phase 0 compares them with the
# host's), and prints the exact device call.
#
#   scripts/first_light_bundle.sh             # build the bundle, print the call
#   scripts/first_light_bundle.sh --dry-run   # also run every phase here against --device emu (tiny shapes), so
#                                             # script bugs show up before a GPU minute is spent
#   scripts/first_light_bundle.sh --mnist     # also MNIST (gzipped IDX, ~11 MB) for phase 7
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
mnist=0
for a in "$@"; do
    case "$a" in
        --dry-run) dry=1 ;;
        --mnist) mnist=1 ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

out=.gpu-bundle
tests=(cuda_runtime parity_tf32 parity_half emu_parity emu_parity_conv emu_parity_conv_narrow emu_conv_epilogue emu_conv_nhwc
    emu_parity_pool emu_graph emu_gemm_tuning emu_operand_reuse nvrtc_compile)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# "kind name executable" for every test / bench executable in cargo's JSON messages.
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])'
}

rm -rf "$out"
mkdir -p "$out/bin"
echo "== test binaries (cargo test --no-run ${tests[*]})"
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
cargo test --no-run --message-format=json "${args[@]}" >"$log"
while read -r kind name exe; do
    [[ $kind == test ]] && cp "$exe" "$out/bin/test-$name"
done < <(executables <"$log")
echo "== release gan-engine"
cargo build --release --bin gan-engine
cp target/release/gan-engine "$out/bin/gan-engine"
echo "== bench-ops (cargo bench --no-run --bench ops)"
cargo bench --no-run --bench ops --message-format=json >"$log"
while read -r kind name exe; do
    [[ $kind == bench ]] && cp "$exe" "$out/bin/bench-$name"
done < <(executables <"$log")
strip "$out"/bin/*

# The newest symbol versions the binaries ask of glibc and libstdc++ (the host must have at least these).
need() { objdump -T "$out"/bin/* 2>/dev/null | grep -o "$1_[0-9.]*" | sort -uV | tail -1; }
echo "$(need GLIBC) $(need GLIBCXX)" >"$out/requires.txt"
missing=()
for t in "${tests[@]}" ; do [[ -x $out/bin/test-$t ]] || missing+=("test-$t"); done
[[ -x $out/bin/bench-ops ]] || missing+=(bench-ops)
((${#missing[@]} == 0)) || { echo "missing from the bundle: ${missing[*]}" >&2; exit 1; }

xz -T0 -9 "$out"/bin/*
if ((mnist)); then
    [[ -d data/mnist ]] || bash scripts/fetch_mnist.sh
    mkdir -p "$out/data/mnist"
    for f in data/mnist/*; do
        case "$f" in
            *.gz) cp "$f" "$out/data/mnist/" ;;
            *) gzip -9 -c "$f" >"$out/data/mnist/$(basename "$f").gz" ;;
        esac
    done
fi
pwd >"$out/manifest_dir"
git rev-parse --short HEAD >"$out/commit"
git diff --quiet HEAD || echo "$(cat "$out/commit")+dirty" >"$out/commit"
date -u +%Y-%m-%dT%H:%M:%SZ >"$out/built_at"

# What a device call carries: the tracked and untracked-not-ignored files, plus the bundle.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
bundle_bytes=$(du -sb "$out" | cut -f1)
total=$((tree_bytes + bundle_bytes))
limit=$((64 * 1024 * 1024))
printf 'working tree %.1f MiB + bundle %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
    "$(bc -l <<<"$tree_bytes/1048576")" "$(bc -l <<<"$bundle_bytes/1048576")" "$(bc -l <<<"$total/1048576")"
ls -l "$out/bin" | tail -n +2 | awk '{printf "  %-32s %6.1f MiB\n", $NF, $5 / 1048576}'
echo "the binaries need: $(cat "$out/requires.txt") (this machine: $(ldd --version | head -1))"
((total <= limit)) || { echo "the bundle is over the device call's 64 MiB" >&2; exit 1; }

if ((dry)); then
    echo "== dry run: every phase against --device emu"
    dry_dir=$(mktemp -d)
    cp -r "$out" "$dry_dir/bundle"
    # The NVRTC and nvdisasm that scripts/test.sh installs, so the compile tests run here as on the GPU host
    # (whose CUDA toolkit has its own nvdisasm).
    if [[ -x .venv-nvrtc/bin/python ]]; then
        site=$(.venv-nvrtc/bin/python -c 'import site; print(site.getsitepackages()[0])')
        export GAN_ENGINE_NVRTC_LIB_DIR="$site/nvidia/cuda_nvrtc/lib" GAN_ENGINE_CUDA_INCLUDE="$site/nvidia/cuda_runtime/include"
        nvdisasm=$(ls "$site"/nvidia/cu*/bin/nvdisasm 2>/dev/null | sort -V | tail -n 1 || true)
        [[ -n $nvdisasm ]] && export GAN_ENGINE_NVDISASM="$nvdisasm"
    fi
    BUNDLE="$dry_dir/bundle" OUT="$dry_dir/out" FIRST_LIGHT_DEVICE=emu DEADLINE="${DRY_DEADLINE:-900}" \
        bash scripts/first_light.sh
    echo "== dry run: what came back ($dry_dir/out)"
    ls -l "$dry_dir/out"
    n=$(find "$dry_dir/out" -type f | wc -l)
    ((n <= 8)) || { echo "the run left $n files under \$OUT; a device call brings back 8" >&2; exit 1; }
    echo "== dry run: the sweep, a call of its own (phase 8)"
    BUNDLE="$dry_dir/bundle" OUT="$dry_dir/out-sweep" FIRST_LIGHT_DEVICE=emu DEADLINE="${DRY_DEADLINE:-900}" \
        PHASES=8 SWEEP_PRECISIONS=bf16 bash scripts/first_light.sh
    grep -q '^p8-sweep .* 24 points' "$dry_dir/out-sweep/summary.txt" ||
        { echo "the sweep did not time its 24 points" >&2; exit 1; }
fi

echo
echo "device call (timeout_s 480 leaves the 15-minute lease time for the machine's start and a rerun):"
echo "  run(command=\"DEADLINE=450 bash scripts/first_light.sh\", carry=[\"$out\"], timeout_s=480)"
echo "then, if status gives budget_left_s B of at least 120, the second call (S = B - 15, D = S - 30):"
echo "  run(command=\"PHASES=\\\"5 8 6\\\" DEADLINE=D bash scripts/first_light.sh\", carry=[\"$out\"], timeout_s=S)"
echo "then give_back, unless a rerun of some phases follows at once: PHASES=\"1 3\" DEADLINE=... bash scripts/first_light.sh"
