#!/usr/bin/env bash
# First light: one device call that proves the kernels on a real GPU and times them against PyTorch.
#
# Runs on the GPU machine from the checkout root, over the bundle that scripts/first_light_bundle.sh made here
# (.gpu-bundle/, carried). Phases run in order of value; each prints a one-line summary as it ends, appends it to
# $OUT/summary.txt and packs its logs into $OUT/pN-NAME.tgz, so a failure or a timeout in one phase still
# returns the others (a device call brings back at most 8 files: summary.txt and these seven):
#   0 probe     nvidia-smi, driver, NVRTC, glibc / libstdc++ against what the binaries need, `gan-engine info`
#   1 smoke     20 training steps each in fp32, tf32, bf16, fp16 and --cuda-graph
#   2 parity    the parity suites on the real GPU (parity_half: bf16 / fp16), one test thread; failures rerun
#               one by one
#   3 timing    DCGAN-64 iteration at batch 128, the targets' precisions first: ours bf16 / tf32 / fp32 / fp16,
#               eager, and bf16 / tf32 / fp32 graphed, and bf16, tf32 and fp32 with the NCHW kernels only
#               (GAN_ENGINE_CONV_LAYOUT=nchw: the channels-last kernels' A/B), and last bf16 converting every
#               GEMM's operands afresh (GAN_ENGINE_CONV_REUSE=off: the kept copies' A/B); PyTorch (scripts/torch_dcgan_step.py) eager and graphed under
#               autocast(bf16), TF32 on and off, and eager under autocast(fp16) with a GradScaler, all with CUDA
#               events; then the measured peak (scripts/gpu_peak.py: cuBLAS matmul per precision, copy
#               bandwidth) that "% of peak" divides by; our kernel launches per iteration at that batch, as the
#               runtime counted them
#   4 sanitize  compute-sanitizer memcheck, racecheck, initcheck, synccheck on a 2-step training run in fp32 and
#               tf32, then memcheck on the parity suite
#   5 ncu       Nsight Compute (--clock-control none) on the conv kernels of one iteration in bf16 and tf32:
#               speed of light, instruction mix, occupancy; then every kernel of one bf16 iteration, its duration
#               only, summed by kernel (scripts/ncu_kernel_times.py)
#   6 bench     per-layer benches, ours and PyTorch, with whatever time is left
#   7 train     (only when asked: PHASES=7, a call of its own) DCGAN-28 on MNIST, TRAIN_STEPS steps in each of
#               TRAIN_PRECISIONS (bf16 fp32) from one seed, each run capped by TRAIN_SECONDS; the runs (config,
#               metrics, samples, generator) packed for FID here; needs a bundle made with --mnist
#   8 sweep     (only when asked) the DCGAN-64 iteration at batch 128, graphed, at SWEEP_PRECISIONS (bf16 tf32)
#               under each GEMM launch override of src/cuda/tuning.rs: the tensor-core tile (the rule, 64, 128
#               rows) by the split-K target (the rule, 132, 528 blocks, 1 = never split); two rounds, the second in
#               reverse order, so that drift shows; what tunes the rules in src/cuda/conv.rs
#
#   DEADLINE=450 bash scripts/first_light.sh            # on the GPU machine (device call timeout_s 480)
#   FIRST_LIGHT_DEVICE=emu bash scripts/first_light.sh  # the dry run here, against the emulated backend
#   PHASES="0 1 3" bash scripts/first_light.sh          # a subset (a rerun inside the same lease)
#   PARITY="emu_parity" PHASES=2 bash ...               # phase 2 on some of the parity binaries only
#   TORCH=0 PHASES=3 bash ...                           # phase 3 without PyTorch and the peak (ours only)
#   PHASES="5 8 6" bash ...                             # the second call: ncu, the sweep, then the benches
set -uo pipefail
cd "$(dirname "$0")/.."
bundle="${BUNDLE:-.gpu-bundle}"
bin=$bundle/bin
OUT="${OUT:-$bundle/out}"
mkdir -p "$OUT"
dev="${FIRST_LIGHT_DEVICE:-cuda}"
deadline="${DEADLINE:-450}"
phases="${PHASES:-0 1 2 3 4 5 6}"
work=/tmp/first-light
rm -rf "$work"
mkdir -p "$work"
export GAN_ENGINE_CACHE_DIR="$work/kernel-cache" RUST_BACKTRACE=1
# PyTorch runs with the library path it came with; ours gets libcuda's folder added where the loader lacks it.
torch_ld="${LD_LIBRARY_PATH-}"
source scripts/gpu_env.sh
summary="$OUT/summary.txt"
: >"$summary"

say() { echo "$*" | tee -a "$summary"; }
left() { echo $((deadline - SECONDS)); }

# run NAME LIMIT CMD...: runs CMD with its output in $log_dir/NAME.log, capped by LIMIT and by the deadline.
# Sets $rc and $took; prints the log's tail on failure.
run() {
    local name=$1 limit=$2
    shift 2
    local l
    l=$(left)
    if ((l < 10)); then
        rc=124 took=0
        echo "  $name: SKIPPED (deadline)" | tee -a "$log_dir/phase.txt"
        return
    fi
    ((limit > l)) && limit=$l
    local t0=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >"$log_dir/$name.log" 2>&1
    rc=$? took=$((SECONDS - t0))
    local st=ok
    ((rc == 124 || rc == 137)) && st=TIMEOUT
    ((rc != 0 && rc != 124 && rc != 137)) && st="FAIL($rc)"
    echo "  $name: $st ${took}s" | tee -a "$log_dir/phase.txt"
    if [[ $st != ok ]]; then
        tail -15 "$log_dir/$name.log" | sed 's/^/    | /'
    fi
}

begin() {
    phase_name=$1
    log_dir="$work/$1"
    mkdir -p "$log_dir"
    phase_t0=$SECONDS
    echo "== phase $1 (at ${SECONDS}s, $(left)s left)"
}
# end "one-line summary": the phase's line in summary.txt, and its logs packed for the return trip.
end() {
    say "$(printf '%-10s %4ss  %s' "$phase_name" $((SECONDS - phase_t0)) "$1")"
    tar czf "$OUT/$phase_name.tgz" -C "$work" "$phase_name" 2>/dev/null
}

# ---- the bundle -----------------------------------------------------------------------------------------------
[[ -d $bin ]] || { say "no $bin: run scripts/first_light_bundle.sh here first"; exit 2; }
for f in "$bin"/*.xz; do
    [[ -e $f ]] || continue
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' "$f" "${f%.xz}" &&
        chmod +x "${f%.xz}" && rm "$f"
done
# Tests find their fixtures under the build machine's checkout path.
if [[ -f $bundle/manifest_dir ]]; then
    md=$(cat "$bundle/manifest_dir")
    [[ -e $md ]] || { mkdir -p "$(dirname "$md")" && ln -s "$PWD" "$md"; }
fi
ge="$bin/gan-engine"
commit=$(cat "$bundle/commit" 2>/dev/null || echo '?')
say "first light: commit $commit, device $dev, deadline ${deadline}s, $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# Tiny shapes for the emulated dry run (one fiber per CUDA thread: full-size runs take hours there).
if [[ $dev == emu ]]; then
    small=(--image-size 32 --batch-size 4 --ngf 8 --ndf 8)
    smoke_steps=2 bench_batch=4
else
    small=()
    smoke_steps=20 bench_batch=128
fi

phase_probe() {
    begin p0-probe
    {
        command -v nvidia-smi >/dev/null &&
            nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,compute_cap --format=csv
        echo "kernel: $(uname -r)"
        echo "glibc here: $(ldd --version 2>&1 | head -1)"
        local cxx
        cxx=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 /{print $NF; exit}')
        echo "libstdc++ here: ${cxx:-?} newest $(grep -ao 'GLIBCXX_3\.4\.[0-9]*' "${cxx:-/dev/null}" 2>/dev/null | sort -uV | tail -1)"
        echo "the binaries need: $(cat "$bundle/requires.txt" 2>/dev/null)"
        for t in compute-sanitizer ncu nvcc; do echo "$t: $(command -v $t || echo missing) $($t --version 2>/dev/null | tail -1)"; done
    } >"$log_dir/host.txt" 2>&1
    cat "$log_dir/host.txt"
    # The binaries' newest glibc / libstdc++ symbol versions against the host's: a mismatch stops everything.
    local need_glibc have_glibc ok=yes
    need_glibc=$(sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' "$bundle/requires.txt" 2>/dev/null)
    have_glibc=$(ldd --version 2>&1 | head -1 | grep -o '[0-9]\+\.[0-9]\+$')
    if [[ -n $need_glibc && -n $have_glibc ]] &&
        [[ $(printf '%s\n%s\n' "$need_glibc" "$have_glibc" | sort -V | tail -1) != "$have_glibc" ]]; then
        ok="NO: binaries need GLIBC_$need_glibc, host has $have_glibc"
    fi
    run info 30 "$ge" info
    cat "$log_dir/info.log" | head -8
    local gpu nv
    gpu=$(grep -m1 "^  $dev:" "$log_dir/info.log" | cut -c1-110)
    nv=$(grep -m1 '^nvrtc:' "$log_dir/info.log" | cut -c1-100)
    end "glibc ok: $ok; ${gpu:-no $dev line}; ${nv:-no nvrtc line}"
    [[ $ok == yes && $rc == 0 ]]
}

phase_smoke() {
    begin p1-smoke
    local res=()
    for mode in fp32 tf32 bf16 fp16 graph; do
        local extra=(--precision "${mode/graph/fp32}")
        [[ $mode == graph ]] && extra+=(--cuda-graph)
        run "train-$mode" 120 "$ge" train --device "$dev" --steps "$smoke_steps" "${small[@]}" "${extra[@]}" \
            --out "$work/runs/smoke-$mode" --overwrite --log-every 1 --sample-every "$smoke_steps" --seed 1
        local last
        last=$(grep -o 'trained [0-9]* steps in [0-9.]* [a-z]*' "$log_dir/train-$mode.log" | tail -1)
        res+=("$mode $([[ $rc == 0 ]] && echo ok || echo "FAIL($rc)") ${took}s")
        tail -3 "$work/runs/smoke-$mode/metrics.csv" >"$log_dir/metrics-$mode.txt" 2>/dev/null
        [[ -n $last ]] && echo "  $mode: $last"
    done
    # The three runs start from one seed: fp32 eager and graph must agree bit for bit (metrics.csv without time).
    local same="graph==fp32: n/a"
    if [[ -f $work/runs/smoke-fp32/metrics.csv && -f $work/runs/smoke-graph/metrics.csv ]]; then
        if cmp -s <(cut -d, -f1-6 "$work/runs/smoke-fp32/metrics.csv") <(cut -d, -f1-6 "$work/runs/smoke-graph/metrics.csv"); then
            same="graph==fp32: identical losses"
        else
            same="graph==fp32: DIFFERENT losses"
        fi
    fi
    end "$(IFS=';'; echo "${res[*]}"); $same"
}

# One test binary on the device, one thread; a failing binary's failed tests are rerun one by one, so that one
# sticky kernel fault does not hide whether the others pass.
test_binary() {
    local name=$1 limit=$2
    local exe=$bin/test-$name
    [[ -x $exe ]] || { echo "  $name: not in the bundle"; return; }
    local args=(--test-threads=1)
    [[ $dev == cuda ]] && args+=(--include-ignored)
    run "$name" "$limit" env GAN_ENGINE_TEST_DEVICE="$dev" GAN_ENGINE_POISON=1 GAN_ENGINE_CUDA_SYNC=1 CI=1 \
        "$exe" "${args[@]}"
    local line
    line=$(grep -E '^test result:' "$log_dir/$name.log" | tail -1 | sed -E 's/test result: ([A-Za-z]+)\. ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 passed \3 failed \4 ignored/')
    if ((rc != 0)); then
        local failed
        failed=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log_dir/$name.log")
        for t in $failed; do
            run "$name--$t" 60 env GAN_ENGINE_TEST_DEVICE="$dev" GAN_ENGINE_POISON=1 GAN_ENGINE_CUDA_SYNC=1 CI=1 \
                "$exe" --exact "$t" --include-ignored
            [[ $rc == 0 ]] && line+=" ($t passes alone)"
        done
    fi
    parity+=("$name: ${line:-no result (rc $rc)}")
}

phase_parity() {
    begin p2-parity
    parity=()
    for b in ${PARITY:-cuda_runtime parity_tf32 parity_half emu_parity emu_parity_conv emu_parity_conv_narrow emu_conv_epilogue \
        emu_conv_nhwc emu_parity_pool emu_graph emu_gemm_tuning emu_operand_reuse nvrtc_compile}; do
        # parity_tf32 / parity_half check the DCGAN shapes against the CPU reference on the host: about 90 s
        # (parity_half: two precisions, not measured yet). nvrtc_compile compiles every kernel file for three
        # targets, one test at a time: 139 s in the dry run on the 2-core development machine (2026-12-05).
        local limit=90
        case $b in parity_tf32) limit=150 ;; nvrtc_compile) limit=180 ;; parity_half) limit=240 ;; esac
        test_binary "$b" "$limit"
    done
    printf '  %s\n' "${parity[@]}"
    local bad
    bad=$(printf '%s\n' "${parity[@]}" | grep -cv ' 0 failed')
    end "$((${#parity[@]} - bad))/${#parity[@]} binaries clean; $(printf '%s\n' "${parity[@]}" | grep -v ' 0 failed' | cut -c1-60 | tr '\n' ';')"
}

# ours_timing MODE...: our iteration per mode (a precision, "-graph" for --cuda-graph), into $rows / $launch_rows.
ours_timing() {
    local mode
    for mode in "$@"; do
        # MODE is PRECISION[-nchw|-noreuse][-graph]; -nchw keeps the tensor-core convolutions off the channels-last
        # kernels, -noreuse converts their operands for every GEMM instead of keeping the copies (src/cuda/tuning.rs):
        # the A/B of that layout and of that reuse.
        local prec=${mode%-graph} env=()
        [[ $prec == *-nchw ]] && prec=${prec%-nchw} && env=(GAN_ENGINE_CONV_LAYOUT=nchw)
        [[ $prec == *-noreuse ]] && prec=${prec%-noreuse} && env=(GAN_ENGINE_CONV_REUSE=off)
        local extra=(--precision "$prec")
        [[ $mode == *graph ]] && extra+=(--cuda-graph)
        local shape=(--batch-size "$bench_batch")
        [[ $dev == emu ]] && shape=("${small[@]}") && extra+=(--warmup 1 --steps 1 --repeat 2)
        run "ours-$mode" 60 env "${env[@]}" "$ge" benchmark --device "$dev" "${shape[@]}" "${extra[@]}" --json "$log_dir/ours-$mode.json"
        rows+=("ours $mode $(grep -o '[0-9.]* ms per iteration' "$log_dir/ours-$mode.log" | head -1 | cut -d' ' -f1)")
        # Counted by the runtime at this batch (the JSON has them by kernel).
        launch_rows+=("$mode$(grep -o 'kernel launches per iteration: .*' "$log_dir/ours-$mode.log" | head -1 | cut -d: -f2-)")
    done
}

phase_timing() {
    begin p3-timing
    local rows=() launch_rows=()
    # The targets' precisions first, then PyTorch, then the rest: a deadline cuts the least useful rows.
    ours_timing bf16 bf16-graph tf32 tf32-graph bf16-nchw bf16-nchw-graph tf32-nchw
    if [[ $dev == cuda && ${TORCH:-1} != 0 ]]; then
        # PyTorch with its own libraries: nothing of ours on its library path.
        run torch 180 env LD_LIBRARY_PATH="$torch_ld" PYTHONUNBUFFERED=1 python3 scripts/torch_dcgan_step.py \
            --batch "$bench_batch" --modes eager,graph --precisions bf16,tf32,fp32,fp16 --out "$log_dir/torch.json"
        while read -r l; do rows+=("$l"); done < <(grep -oE 'torch [a-z]+ +(fp32|tf32|bf16|fp16): *[0-9.]* ms' \
            "$log_dir/torch.log" | sed -E 's/ +/ /g; s/: / /; s/ ms$//')
    fi
    ours_timing fp32 fp32-graph fp32-nchw fp16 bf16-noreuse
    if [[ $dev == cuda && ${TORCH:-1} != 0 ]]; then
        run peak 60 env LD_LIBRARY_PATH="$torch_ld" python3 scripts/gpu_peak.py --out "$log_dir/peak.json"
        while read -r l; do rows+=("$l"); done < <(grep -o 'peak .*' "$log_dir/peak.log" | sed -E 's/ +/ /g')
    fi
    printf '  %s\n' "${rows[@]}"
    printf '  kernel launches per iteration: %s\n' "$(IFS=';'; echo "${launch_rows[*]}")"
    end "b$bench_batch ms/iteration: $(IFS=';'; echo "${rows[*]}")"
}

# The error count of a compute-sanitizer log: "ERROR SUMMARY: E errors", or racecheck's
# "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)"; "?" when the log has neither.
sanitizer_errors() {
    local e
    e=$(grep -oE 'ERROR SUMMARY: [0-9]+ error|SUMMARY: [0-9]+ hazards? displayed \([0-9]+ error' "$1" | tail -1 |
        grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
    echo "${e:-?}"
}

phase_sanitize() {
    begin p4-sanitize
    local res=()
    if [[ $dev != cuda ]] || ! command -v compute-sanitizer >/dev/null; then
        end "skipped (no compute-sanitizer or no GPU)"
        return
    fi
    for prec in fp32 tf32; do
        for tool in memcheck racecheck initcheck synccheck; do
            run "$tool-$prec" 30 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 50 \
                "$ge" train --device cuda --steps 2 --batch-size 8 --image-size 32 --ngf 16 --ndf 16 \
                --precision "$prec" --out "$work/runs/san-$tool-$prec" --overwrite --sample-every 2 --seed 1
            local errs
            res+=("$tool/$prec $(sanitizer_errors "$log_dir/$tool-$prec.log")err rc$rc")
        done
    done
    run memcheck-parity 60 env GAN_ENGINE_TEST_DEVICE=cuda compute-sanitizer --tool memcheck --error-exitcode 99 \
        --print-limit 50 "$bin/test-emu_parity" --test-threads=1
    res+=("memcheck/emu_parity $(sanitizer_errors "$log_dir/memcheck-parity.log")err rc$rc")
    end "$(IFS=';'; echo "${res[*]}")"
}

phase_ncu() {
    begin p5-ncu
    if [[ $dev != cuda ]] || ! command -v ncu >/dev/null; then
        end "skipped (no ncu or no GPU)"
        return
    fi
    for prec in bf16 tf32; do
        # The conv kernel launches of the first iteration (each of the kernels at each of its DCGAN shapes).
        run "ncu-$prec" 75 ncu --clock-control none --kernel-name regex:conv2d --launch-count 40 \
            --section SpeedOfLight --section InstructionStats --section Occupancy --section LaunchStats \
            --csv --page details "$ge" benchmark --device cuda --batch-size "$bench_batch" --precision "$prec" \
            --warmup 1 --steps 1 --repeat 1
    done
    local n
    n=$(grep -c 'SM Busy\|Compute (SM) Throughput' "$log_dir"/ncu-*.log 2>/dev/null | awk -F: '{s += $2} END {print s + 0}')
    # Every kernel of one bf16 iteration, its duration only (one pass each): where the step's time goes.
    run ncu-step-bf16 60 ncu --clock-control none --metrics gpu__time_duration.sum --csv "$ge" benchmark \
        --device cuda --batch-size "$bench_batch" --precision bf16 --warmup 0 --steps 1 --repeat 1
    python3 scripts/ncu_kernel_times.py "$log_dir/ncu-step-bf16.log" --top 30 --out "$log_dir/ncu-step-bf16.json" \
        >"$log_dir/step-kernels-bf16.txt" 2>&1
    sed 's/^/  /' "$log_dir/step-kernels-bf16.txt"
    end "profiled rows: $n; bf16 step: $(head -1 "$log_dir/step-kernels-bf16.txt")"
}

phase_bench() {
    begin p6-bench
    if [[ $dev != cuda ]]; then
        run bench-ops 60 env GAN_BENCH_DEVICES=cuda GAN_BENCH_CUDA=emu CRITERION_HOME="$work/criterion" \
            "$bin/bench-ops" --bench 'cuda leaky' --warm-up-time 0.1 --measurement-time 0.2
        end "dry run: bench-ops rc $rc"
        return
    fi
    # bf16 first: "the largest conv layers at >= 50 % of the measured dense bf16 peak" is read off these rows.
    for prec in bf16 tf32 fp32; do
        run "ops-$prec" 90 env GAN_BENCH_DEVICES=cuda GAN_ENGINE_PRECISION="$prec" CRITERION_HOME="$work/criterion-$prec" \
            "$bin/bench-ops" --bench 'cuda conv' --warm-up-time 0.2 --measurement-time 0.5
    done
    # Each batch-normed layer's forward with and without the convolution gathering batch norm's statistics.
    run layers-bf16 60 env GAN_BENCH_DEVICES=cuda GAN_ENGINE_PRECISION=bf16 CRITERION_HOME="$work/criterion-layers" \
        "$bin/bench-ops" --bench 'cuda layer' --warm-up-time 0.2 --measurement-time 0.5
    run torch-layers 90 env LD_LIBRARY_PATH="$torch_ld" python3 scripts/bench_torch_gpu.py --tf32 off --samples 5 \
        --out "$log_dir/torch_fp32.json"
    # What scripts/benchmarks_md.py reads: the group ids (benchmark.json), estimates and samples.
    (cd "$work" && find criterion-bf16 criterion-fp32 criterion-tf32 criterion-layers -path '*new*' \
        \( -name estimates.json -o -name benchmark.json -o -name sample.json \) 2>/dev/null |
        tar czf "$log_dir/criterion.tgz" -T -) 2>/dev/null
    end "ops bf16/tf32/fp32, bf16 conv+bn+act layers and torch per-layer rows written (see logs)"
}

# One sweep point: the iteration under the overrides TILE and BLOCKS ("rule" leaves one unset), its median ms.
sweep_point() {
    local prec=$1 tile=$2 blocks=$3 round=$4 env=() shape=(--batch-size "$bench_batch") ms
    [[ $tile != rule ]] && env+=(GAN_ENGINE_CONV_TILE="$tile")
    [[ $blocks != rule ]] && env+=(GAN_ENGINE_SPLIT_K_BLOCKS="$blocks")
    local steps=(--warmup 3 --steps 10 --repeat 3)
    [[ $dev == emu ]] && shape=("${small[@]}") && steps=(--warmup 1 --steps 1 --repeat 1)
    local name="$prec-tile$tile-split$blocks-r$round"
    run "$name" 60 env "${env[@]}" "$ge" benchmark --device "$dev" "${shape[@]}" --precision "$prec" \
        --cuda-graph "${steps[@]}" --json "$log_dir/$name.json"
    ms=$(grep -o '[0-9.]* ms per iteration' "$log_dir/$name.log" | head -1 | cut -d' ' -f1)
    rows+=("$(printf '%-5s tile %-4s split-K target %-4s round %s: %s ms' "$prec" "$tile" "$blocks" "$round" \
        "${ms:-rc$rc}")")
}

phase_sweep() {
    begin p8-sweep
    local rows=() prec points=() p i
    for tile in rule 64 128; do
        for blocks in rule 132 528 1; do points+=("$tile $blocks"); done
    done
    # Every precision's first round before any second round: a deadline then cuts repeats, not precisions.
    for prec in ${SWEEP_PRECISIONS:-bf16 tf32}; do
        for p in "${points[@]}"; do sweep_point "$prec" $p 1; done
    done
    for prec in ${SWEEP_PRECISIONS:-bf16 tf32}; do
        for ((i = ${#points[@]} - 1; i >= 0; i--)); do sweep_point "$prec" ${points[i]} 2; done
    done
    printf '  %s\n' "${rows[@]}" | tee "$log_dir/sweep.txt"
    local best=()
    for prec in ${SWEEP_PRECISIONS:-bf16 tf32}; do
        best+=("$(grep -E "^ *$prec " "$log_dir/sweep.txt" | grep -v 'rc[0-9]' | sort -t: -k2 -g | head -1 |
            sed 's/^ *//')")
    done
    end "b$bench_batch graphed, ${#rows[@]} points; fastest: $(IFS=';'; echo "${best[*]}") (see sweep.txt)"
}

phase_train() {
    begin p7-train
    local data=$bundle/data/mnist secs=${TRAIN_SECONDS:-150} steps=${TRAIN_STEPS:-8000} res=()
    [[ -d $data ]] || { end "no $data: make the bundle with --mnist"; return; }
    # One run per precision, each the same number of steps from the same seed: the FID target compares bf16 with
    # fp32 at equal steps. The paper's G and rates, as in the CPU FID runs of BENCHMARKS.md, so that the scores
    # compare. The clock only guards: a run it stops keeps its last checkpoint (every 500 steps) and generator.
    local prec shape=(--ngf 64 --ndf 64)
    [[ $dev == emu ]] && shape=(--ngf 8 --ndf 8 --batch-size 4)
    for prec in ${TRAIN_PRECISIONS:-bf16 fp32}; do
        run "mnist-$prec" "$((secs + 30))" timeout --signal=INT "$secs" "$ge" train --dataset "mnist:$data" \
            --device "$dev" --precision "$prec" --steps "$steps" --g-upsample convt --lr-d 2e-4 --lr-g 2e-4 \
            "${shape[@]}" --checkpoint-every 500 --sample-every 2000 --log-every 100 --seed 1 \
            --g-ema 0.999 --out "$work/runs/mnist-$prec" --overwrite
        local done_steps
        done_steps=$(tail -1 "$work/runs/mnist-$prec/metrics.csv" 2>/dev/null | cut -d, -f1)
        res+=("$prec ${done_steps:-no} steps in ${took}s rc $rc")
        # One archive per run: a DCGAN-28 run's two generators pack to ~13 MB, and a file that comes back from a
        # device call may not exceed 16 MiB.
        [[ -d $work/runs/mnist-$prec ]] && tar czf "$OUT/run-mnist-$prec.tgz" -C "$work/runs" \
            --exclude=checkpoint.safetensors --exclude='*.tmp' "mnist-$prec"
    done
    end "MNIST: $(IFS=';'; echo "${res[*]}"); run-mnist-*.tgz (generators, samples, metrics) to score here"
}

for p in $phases; do
    case $p in
        0) phase_probe || { say "probe failed: stopping (see p0-probe.tgz)"; exit 1; } ;;
        1) phase_smoke ;;
        2) phase_parity ;;
        3) phase_timing ;;
        4) phase_sanitize ;;
        5) phase_ncu ;;
        6) phase_bench ;;
        7) phase_train ;;
        8) phase_sweep ;;
        *) echo "unknown phase $p" >&2 ;;
    esac
done
say "done at ${SECONDS}s"
