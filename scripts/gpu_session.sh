#!/usr/bin/env bash
# One lent-GPU session's checks, in phases, so they fit a short lease (see the device README: few, full calls).
# Runs on the GPU machine from the checkout root, over a bundle made here by `scripts/gpu_bundle.sh --session`
# (binaries xz-compressed, MNIST / Fashion-MNIST gzipped, the FID weights split into .gpu-wa/ and .gpu-wb/).
# Each phase logs under /tmp/gan-session/PHASE and packs that folder into $OUT/PHASE.tgz when it ends (a call
# brings back at most 8 files); the run's summary table is printed last.
#
#   scripts/gpu_session.sh smoke train tests bench
#                                              one CUDA training step (stops here if it fails); the two FID
#                                              training runs, started detached (they outlive the call); the parity
#                                              tests while they train; the benches (ours FP32 + TF32, PyTorch eager
#                                              TF32 off + on) with the training runs paused (SIGSTOP)
#   scripts/gpu_session.sh stage DIR           copy DIR (one part of the FID weights) to /tmp/gan-weights/
#   scripts/gpu_session.sh fid                 join the weight parts, end the training runs (after FID_WAIT
#                                              seconds), FID 10k vs the 10k test set for each run, pack the runs
#
# DEADLINE (seconds from the start) shortens or skips steps so that the call ends in time.
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=.gpu-bundle
OUT="${OUT:-$bundle/out}"
mkdir -p "$OUT"
out=""
bin="$bundle/bin"
runs=/tmp/gan-runs
weights=/tmp/gan-weights
source scripts/gpu_env.sh
# The bundle's binaries travel xz-compressed (a device call carries at most 64 MiB).
for f in "$bin"/*.xz; do
    [[ -e "$f" ]] || continue
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' "$f" "${f%.xz}" &&
        chmod +x "${f%.xz}" && rm "$f"
done
export GAN_ENGINE_CACHE_DIR=/tmp/gan-engine-kernel-cache RUST_BACKTRACE=1
summary=()

note() { summary+=("$(printf '%-44s %s' "$1" "$2")"); }

# Runs "$@" under a timeout, logging to $out/$name.log; notes status and seconds.
step() {
    local name=$1 limit=$2
    shift 2
    # Never run past DEADLINE (seconds since the script started): the phases after this one still get to run.
    local left=$((${DEADLINE:-100000} - SECONDS))
    if ((left < 15)); then
        note "$name" "SKIPPED (deadline)"
        return 1
    fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    local st=ok
    ((rc == 124)) && st=TIMEOUT
    ((rc != 0 && rc != 124)) && st="FAIL($rc)"
    note "$name" "$st $((SECONDS - t0)) s"
    if [[ $st != ok ]]; then
        echo "---- $name ($st): last lines"
        tail -12 "$out/$name.log"
    fi
    return $rc
}

smoke() {
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader |
        tee "$out/gpu.txt"
    echo "libnvrtc: ${nvrtc:-NOT FOUND}" | tee -a "$out/gpu.txt"
    # One CUDA step end to end before spending the lease: if this fails nothing else can work.
    step smoke 90 "$bin/gan-engine" train --device cuda --steps 3 --batch-size 8 --out /tmp/smoke \
        --overwrite --log-every 1 || { echo "smoke failed: stopping"; pack smoke; exit 1; }
    # The CUDA graph path (never run on a GPU before): eager, capture, replays; its failure stops nothing else.
    step smoke-graph 90 "$bin/gan-engine" train --device cuda --cuda-graph --steps 20 --batch-size 8 \
        --out /tmp/smoke-graph --overwrite --log-every 1 || echo "smoke-graph failed (see its log); going on"
}

bench() {
    pause_training
    export GAN_BENCH_DEVICES=cuda
    local gpu
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
    # What scripts/benchmarks_md.py puts in the table's header: when, which commit, which machine.
    mkdir -p /tmp/criterion-fp32
    python3 - /tmp/criterion-fp32/gan-bench-meta.json "$(cat "$bundle/commit" 2>/dev/null)" <<'EOF_META'
import datetime, json, os, sys, time
sys.path.insert(0, "scripts")
from benchmarks_md import cpu_model
model, simd = cpu_model()
json.dump({"start_epoch": time.time(), "start_iso": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "commit": sys.argv[2], "dirty": False, "nproc": os.cpu_count(), "cpu_model": model, "simd": simd,
           "command": "scripts/gpu_session.sh bench (bench-ops, bench-train: GAN_BENCH_DEVICES=cuda, "
                      "GAN_ENGINE_PRECISION=fp32 / tf32; scripts/bench_torch_gpu.py --tf32 off / on)"},
          open(sys.argv[1], "w"), indent=1)
EOF_META
    for prec in fp32 tf32; do
        local crit=/tmp/criterion-$prec filter=()
        mkdir -p "$crit"
        echo "$gpu" >"$crit/gan-bench-cuda.txt"
        # TF32 changes only the convolutions: the other op groups would repeat the FP32 run.
        [[ $prec == tf32 ]] && filter=(conv)
        CRITERION_HOME=$crit GAN_ENGINE_PRECISION=$prec step "bench-ops-$prec" 150 "$bin/bench-ops" --bench "${filter[@]}"
        CRITERION_HOME=$crit GAN_ENGINE_PRECISION=$prec step "bench-train-$prec" 90 "$bin/bench-train" --bench
    done
    step torch-tf32-off 100 python3 scripts/bench_torch_gpu.py --tf32 off --out "$out/torch_fp32.json"
    step torch-tf32-on 100 python3 scripts/bench_torch_gpu.py --tf32 on --out "$out/torch_tf32.json"
    # criterion's per-benchmark JSON only (its HTML reports are large).
    (cd /tmp && find criterion-fp32 criterion-tf32 \( -name '*.json' -o -name '*.txt' \) -path '*' |
        tar czf "$out/criterion.tgz" -T -) 2>/dev/null
    resume_training
}

train() {
    rm -rf "$runs"
    mkdir -p "$runs"
    for ds in mnist fashion; do
        # setsid: the run outlives this call (the device tool ends a call's own processes when it returns). It
        # stops at TRAIN_EPOCHS or when the fid phase ends it; --checkpoint-every bounds what that loses.
        setsid nohup "$bin/gan-engine" train --dataset "$ds:$bundle/data/$ds" --device cuda --ngf 64 --ndf 64 \
            --epochs "${TRAIN_EPOCHS:-25}" --checkpoint-every 250 --sample-every 2000 --log-every 100 --seed 1 \
            --out "$runs/$ds" --overwrite >"$runs/$ds.log" 2>&1 </dev/null &
    done
    date +%s >"$runs/started"
    sleep 15
    for ds in mnist fashion; do note "train $ds (after 15 s)" "$(progress "$ds")"; done
}

# The last progress line of a training run.
progress() { tail -c 400 "$runs/$1.log" 2>/dev/null | tr '\r' '\n' | grep -v '^$' | tail -1; }

# SIGSTOP / SIGCONT the training runs, so the benches time an otherwise idle GPU; the paused seconds are
# logged (the runs' elapsed_s counts them).
pause_training() {
    pkill -STOP -f "gan-engine train --dataset" && date +%s >"$runs/paused_at"
}
resume_training() {
    if [[ -f "$runs/paused_at" ]]; then
        pkill -CONT -f "gan-engine train --dataset"
        echo $(($(date +%s) - $(cat "$runs/paused_at"))) >>"$runs/paused_seconds"
        rm "$runs/paused_at"
    fi
}

tests() {
    step tests 200 env OUT="$out" PER_BINARY_TIMEOUT=100 bash scripts/gpu_run.sh emu_parity emu_graph parity_tf32 \
        cuda_runtime nvrtc_compile
    sed -n '/^binary /,$p' "$out/tests.log"
}

stage() {
    mkdir -p "$weights"
    cp "$1"/* "$weights"/
    ls -l "$weights"
    for ds in mnist fashion; do echo "$ds: $(progress "$ds")"; done
}

fid() {
    cat "$weights"/inception_fid.safetensors.part* >/tmp/inception_fid.safetensors
    sha1sum /tmp/inception_fid.safetensors | tee "$out/weights.sha1"
    # Let the training runs go on for FID_WAIT more seconds (default 0), then end them: FID reads the last
    # checkpoint (every 250 steps).
    local t0=$SECONDS
    while pgrep -f "gan-engine train --dataset" >/dev/null && ((SECONDS - t0 < ${FID_WAIT:-0})); do sleep 2; done
    pkill -KILL -f "gan-engine train --dataset"
    sleep 1
    echo "training: started $(cat "$runs/started"), ended $(date +%s), paused $(cat "$runs/paused_seconds" 2>/dev/null) s" |
        tee "$out/train_times.txt"
    for ds in mnist fashion; do
        echo "$ds: $(progress "$ds")" | tee -a "$out/train_times.txt"
        step "fid-$ds" 150 "$bin/gan-engine" fid --checkpoint "$runs/$ds" --real "$ds:$bundle/data/$ds" \
            --n 10000 --device cuda --inception /tmp/inception_fid.safetensors --batch-size 200 \
            --real-stats "/tmp/fid-stats-$ds.bin"
        tail -5 "$out/fid-$ds.log"
    done
    # The runs, without the large checkpoint (Adam state): config, metrics, samples, generator; one file each
    # (a file brought back is at most 16 MB).
    for ds in mnist fashion; do
        tar czf "$OUT/run-$ds.tgz" -C "$runs" --exclude=checkpoint.safetensors --exclude='*.tmp' "$ds" "$ds.log"
    done
}

# Logs of the phase that runs next go to $out; pack() brings them back.
begin() { out=/tmp/gan-session/$1; rm -rf "$out"; mkdir -p "$out"; }
pack() { tar czf "$OUT/$1.tgz" -C /tmp/gan-session "$1"; }

while (($#)); do
    phase=$1
    [[ $phase != stage ]] && begin "$phase"
    case "$phase" in
        smoke) smoke ;;
        bench) bench ;;
        train) train ;;
        tests) tests ;;
        stage) stage "$2"; shift ;;
        fid) fid ;;
        *) echo "unknown phase $1" >&2; exit 2 ;;
    esac
    [[ $phase != stage ]] && pack "$phase"
    shift
done
echo
printf '%s\n' "${summary[@]}"
