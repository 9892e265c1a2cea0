#!/usr/bin/env python3
"""Ours against PyTorch as users run it, on the CPU: separate processes, default environments, rounds alternating.

Each round runs, one process after the other (the order flips every round, so neither side always runs on a
machine the other has just warmed or heated):
- ours:    gan-engine benchmark --device cpu (one DCGAN training iteration with the progress line's scalars read
           back; warm-up, then --repeat samples of --steps iterations, median);
- PyTorch: scripts/torch_dcgan_step.py --device cpu in the torch venv's python: the DCGAN example's iteration
           with its five .item() reads, timed the same way, with PyTorch's default threads and environment
           (nothing of ours is set: no OMP_* variables, its own process).
The ratio torch / ours is taken round by round (above 1: ours is faster), and the median of the rounds is the
result.

Quiet machine: before every process the script samples /proc/stat for --idle-probe seconds while it sleeps; if
other processes used more than --busy-threshold of one core, the process is not started: the script waits (up to
--wait seconds) for the machine to go quiet, and a round that ran anyway is flagged "busy" and left out of the
median. The 1-minute load average is recorded before and after each round.

    scripts/bench_cpu_vs_torch.py --torch-python /work/venv-torch/bin/python --rounds 3 --out target/bench/cpu_vs_torch.json
    # cases (repeat --case): dcgan64-b64 (default), dcgan64-b128, dcgan28-b64, and dcgan64-g-b64 (G inference:
    # `benchmark --g-inference` against the same script's --g-inference)

--busy-core: every timed process runs beside a spin loop (another program keeping one core busy), started after
the quiet check and stopped when the process ends. The rounds then measure the engine on a machine with one core
taken, the condition where a static work split waits for its slowest thread.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    # name: (image size, channels, batch, G inference instead of the training iteration)
    "dcgan64-b64": (64, 3, 64, False),
    "dcgan64-b128": (64, 3, 128, False),
    "dcgan28-b64": (28, 1, 64, False),
    "dcgan64-g-b64": (64, 3, 64, True),
}


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v), idle


def others_busy(seconds):
    """Cores' worth of CPU used by other processes while this one sleeps for `seconds`."""
    t0, i0 = cpu_times()
    time.sleep(seconds)
    t1, i1 = cpu_times()
    ncpu = os.cpu_count() or 1
    return ncpu * (1 - (i1 - i0) / max(1, t1 - t0))


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_quiet(args):
    """Waits until other processes use under the threshold; returns (cores busy at start, quiet?)."""
    t_end = time.time() + args.wait
    while True:
        busy = others_busy(args.idle_probe)
        if busy <= args.busy_threshold or time.time() >= t_end:
            return busy, busy <= args.busy_threshold
        print(f"  machine busy ({busy:.2f} cores used by others): waiting", flush=True)


def run_json(cmd, out, env=None, busy_core=False):
    """Runs one timed process (beside a one-core spin loop if `busy_core`) and reads the JSON it wrote."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy_core else None
    try:
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default=os.path.join(ROOT, "target/release/gan-engine"))
    ap.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "python3"))
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="repeatable; default dcgan64-b64")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--idle-probe", type=float, default=2.0)
    ap.add_argument("--busy-threshold", type=float, default=0.15, help="cores used by others that count as busy")
    ap.add_argument("--wait", type=float, default=120.0)
    ap.add_argument("--busy-core", action="store_true", help="run every timed process beside a one-core spin loop")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench/cpu_vs_torch.json"))
    args = ap.parse_args()
    cases = args.case or ["dcgan64-b64"]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = os.path.abspath(args.out) + ".d"
    os.makedirs(tmp, exist_ok=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode != 0
    # PyTorch's environment as a user has it: ours may have set OMP/MKL knobs for other benches.
    torch_env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "KMP_", "GOMP_"))}
    results = []
    for case in cases:
        size, channels, batch, g_only = CASES[case]
        ours_cmd = [args.engine, "benchmark", "--device", "cpu", "--image-size", str(size), "--channels",
                    str(channels), "--batch-size", str(batch), "--ngf", "64", "--ndf", "64", "--warmup",
                    str(args.warmup), "--steps", str(args.steps), "--repeat", str(args.repeat)] + (["--g-inference"] if g_only else [])
        torch_cmd = [args.torch_python, os.path.join(ROOT, "scripts/torch_dcgan_step.py"), "--device", "cpu",
                     "--image-size", str(size), "--batch", str(batch), "--warmup", str(args.warmup), "--steps",
                     str(args.steps), "--repeat", str(args.repeat)] + (["--g-inference"] if g_only else [])
        for r in range(args.rounds):
            row = {"case": case, "round": r + 1, "busy_core": args.busy_core, "load_before": loadavg()}
            order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
            quiet = True
            for side in order:
                busy, q = wait_quiet(args)
                quiet &= q
                row[f"{side}_others_busy_cores"] = round(busy, 3)
                out = os.path.join(tmp, f"{case}-{r}-{side}.json")
                if side == "ours":
                    doc = run_json(ours_cmd + ["--json", out], out, busy_core=args.busy_core)
                    row["ours_ms"] = doc["median_ms"]
                    row["ours_samples_ms"] = doc["samples_ms_per_iteration"]
                else:
                    doc = run_json(torch_cmd + ["--out", out], out, env=torch_env, busy_core=args.busy_core)
                    eager = doc["rows"][0]
                    row["torch_ms"] = eager["median_ms"]
                    row["torch_samples_ms"] = eager["samples_ms"]
                    row["torch_version"] = doc["meta"]["torch"]
                    row["torch_threads"] = doc["meta"]["threads"]
            row["load_after"] = loadavg()
            row["ratio"] = row["torch_ms"] / row["ours_ms"]
            row["quiet"] = quiet
            results.append(row)
            print(f"{case} round {r + 1} ({'/'.join(order)}): ours {row['ours_ms']:.1f} ms, PyTorch "
                  f"{row['torch_ms']:.1f} ms, ratio {row['ratio']:.3f}x, load {row['load_before']:.2f} -> "
                  f"{row['load_after']:.2f}{'' if quiet else '  BUSY: not counted'}", flush=True)
    summary = {}
    for case in cases:
        rows = [r for r in results if r["case"] == case and r["quiet"]]
        if rows:
            ratios = [r["ratio"] for r in rows]
            summary[case] = {"rounds": len(rows), "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
                             "max_ratio": max(ratios),
                             "ours_ms_median": statistics.median(r["ours_ms"] for r in rows),
                             "torch_ms_median": statistics.median(r["torch_ms"] for r in rows)}
            s = summary[case]
            print(f"{case}: ours {s['ours_ms_median']:.1f} ms, PyTorch {s['torch_ms_median']:.1f} ms per iteration; "
                  f"ratio median {s['median_ratio']:.3f}x (min {s['min_ratio']:.3f}, max {s['max_ratio']:.3f}) over "
                  f"{s['rounds']} quiet rounds")
        else:
            print(f"{case}: no quiet round")
    meta = {"commit": commit + ("+dirty" if dirty else ""), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": platform.processor() or platform.machine(), "nproc": os.cpu_count(),
            "command": " ".join(sys.argv), "engine": args.engine, "busy_core": args.busy_core}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rounds": results, "summary": summary}, f, indent=1)
    return 0 if summary else 1


if __name__ == "__main__":
    sys.exit(main())
