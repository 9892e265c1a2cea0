#!/usr/bin/env python3
"""Where one iteration's GPU time goes, kernel by kernel, from an Nsight Compute CSV log.

first_light.sh phase 5 runs `ncu --metrics gpu__time_duration.sum --csv` over one training iteration; this sums
the durations by kernel name and prints the total, then the kernels by time taken (launches, total µs, share),
then the same by kernel family (conv forward, batch norm, ...), and writes them as JSON beside the log when --out
is given. Lines of the program's own output before the CSV header are skipped.

    python3 scripts/ncu_kernel_times.py ncu-step-bf16.log --top 25 --out ncu-step-bf16.json
"""

import argparse
import csv
import json
import sys

# Kernel families for the summary by family: (label, name prefixes), first match wins.
FAMILIES = [
    ("conv forward", ("conv2d_fwd",)),
    ("conv backward data", ("conv2d_bwd_data",)),
    ("conv backward weight", ("conv2d_bwd_weight",)),
    ("split-K reductions", ("conv2d_splitk", "linear_splitk")),
    ("batch norm", ("bn_",)),
    ("linear", ("linear_",)),
    ("optimizer and gradient lists", ("adam_", "rmsprop_", "add_list", "unscale_list")),
    ("activations", ("leaky_relu", "relu", "tanh", "sigmoid")),
    ("loss", ("bce_",)),
]

# ncu's unit names (as --print-units prints them) in microseconds.
UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}


def read(path):
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        raise SystemExit(f"{path}: no ncu CSV header (a line starting with \"ID\") found")
    rows = list(csv.DictReader(lines[start:]))
    need = {"Kernel Name", "Metric Name", "Metric Unit", "Metric Value"}
    if rows and not need <= set(rows[0]):
        raise SystemExit(f"{path}: CSV columns {sorted(rows[0])} lack {sorted(need - set(rows[0]))}")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--metric", default="gpu__time_duration.sum")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out")
    args = ap.parse_args()
    by_kernel = {}
    for r in read(args.log):
        if r["Metric Name"] != args.metric:
            continue
        unit = r["Metric Unit"].strip()
        if unit not in UNITS:
            raise SystemExit(f"{args.log}: unknown unit {unit!r} for {args.metric}")
        us = float(r["Metric Value"].replace(",", "")) * UNITS[unit]
        k = by_kernel.setdefault(r["Kernel Name"], {"launches": 0, "us": 0.0})
        k["launches"] += 1
        k["us"] += us
    if not by_kernel:
        raise SystemExit(f"{args.log}: no {args.metric} rows")
    total = sum(k["us"] for k in by_kernel.values())
    launches = sum(k["launches"] for k in by_kernel.values())
    ranked = sorted(by_kernel.items(), key=lambda kv: -kv[1]["us"])
    print(f"{launches} launches, {total:.1f} us of kernel time ({args.metric}, summed)")
    for name, k in ranked[: args.top]:
        print(f"  {k['us']:10.1f} us {100 * k['us'] / total:5.1f} %  {k['launches']:4d} x  {name}")
    families = {}
    for name, k in by_kernel.items():
        label = next((lab for lab, pre in FAMILIES if name.startswith(pre)), "other")
        f = families.setdefault(label, {"launches": 0, "us": 0.0})
        f["launches"] += k["launches"]
        f["us"] += k["us"]
    print("by family:")
    for label, f in sorted(families.items(), key=lambda kv: -kv[1]["us"]):
        print(f"  {f['us']:10.1f} us {100 * f['us'] / total:5.1f} %  {f['launches']:4d} x  {label}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"metric": args.metric, "total_us": total, "launches": launches,
                       "kernels": [{"name": n, **k} for n, k in ranked],
                       "families": families}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
