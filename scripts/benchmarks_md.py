#!/usr/bin/env python3
"""Writes the measured tables of BENCHMARKS.md from criterion's output.

Reads target/criterion/**/new/{benchmark,estimates,sample}.json of the side-by-side benches (benches/ops.rs,
benches/train.rs: group ids "<cpu|cuda> <what>", functions "ours" / "libtorch") and the run's metadata that
scripts/bench.sh leaves in target/criterion/gan-bench-meta.json (command, commit, load average, torch version,
start time), and the alternating ours / libtorch timings of benches/common/paired.rs in
target/criterion/gan-bench-paired/*.json (CPU training iterations). Replaces the text between the markers

    <!-- bench:cpu:start --> ... <!-- bench:cpu:end -->
    <!-- bench:cuda:start --> ... <!-- bench:cuda:end -->

and leaves the rest of the file (the hand-written prose) alone; a missing file gets a skeleton.

Only measured numbers appear: a cell with no measurement stays empty. Per row: the median time per iteration
(criterion's median of its samples), ours and libtorch, ratio = libtorch time / our time (> 1: we are faster),
and achieved GFLOP/s where the FLOPs are known (the groups that declare a throughput in elements: conv FLOPs,
two per multiply-add).

Usage: python3 scripts/benchmarks_md.py [--criterion target/criterion] [--out BENCHMARKS.md] [--all]
(--all keeps results older than the last scripts/bench.sh run.)

GPU runs of scripts/first_light.sh phase 6 (no tch build runs on the lent GPU machines) give, instead of criterion's
`libtorch` functions: our criterion results at --precision fp32 (--criterion) and tf32 (--criterion-tf32, conv
and whole-model groups only), and PyTorch eager timed by scripts/bench_torch_gpu.py with TF32 off and on
(--torch-json, once per file). The CUDA table then pairs like with like: ours FP32 vs PyTorch with TF32 off,
ours TF32 vs PyTorch's defaults (cuDNN may use TF32).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
META = "gan-bench-meta.json"
PAIRED = "gan-bench-paired"

SECTIONS = [
    ("train_iter", "Training iteration (D step real + fake, G step, both Adam updates)"),
    ("g_inference", "Generator inference (eval mode, no gradients)"),
    ("conv", "DCGAN-64 convolution layers (G = ConvTranspose2d, D = Conv2d)"),
    ("batchnorm", "Batch norm, training mode, forward + backward"),
    ("batchnorm+leaky_relu", "Batch norm then LeakyReLU(0.2), training mode, forward + backward (ours: one fused op)"),
    ("leaky_relu", "LeakyReLU(0.2)"),
    ("bce_with_logits", "Fused BCE with logits (loss and gradient)"),
    ("adam", "Adam step (lr 2e-4, betas 0.5 / 0.999)"),
    ("gemm", "Reference GEMM (attainable matrix-multiply rate)"),
    ("peak", "Machine peak (f32 multiply-add throughput, measured: benches/common/peak.rs; the median here, the "
             "fastest sample for the % of peak columns)"),
]


def load_json(path):
    with open(path) as f:
        return json.load(f)


def collect(crit_dir, since, rename=None):
    """{(device, group): {"ours": row, "libtorch": row}} in run order, from criterion's 'new' results.
    `rename` maps function ids to the names they are stored under (e.g. ours -> ours_tf32)."""
    rows = []
    for dirpath, _dirs, files in os.walk(crit_dir):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        est_path = os.path.join(dirpath, "estimates.json")
        mtime = os.path.getmtime(est_path)
        if since is not None and mtime < since:
            continue
        try:
            bench = load_json(os.path.join(dirpath, "benchmark.json"))
            est = load_json(est_path)
        except (OSError, ValueError):
            continue
        group = bench.get("group_id", "")
        func = bench.get("function_id")
        m = re.match(r"^(cpu|cuda) (\S+)(.*)$", group)
        if not m or func not in ("ours", "ours_graph", "libtorch"):
            continue
        tp = bench.get("throughput") or {}
        flops = tp.get("Elements")
        samples, best_ns = None, None
        try:
            s = load_json(os.path.join(dirpath, "sample.json"))
            samples = len(s.get("iters", []))
            best_ns = min((t / i for t, i in zip(s["times"], s["iters"]) if i), default=None)
        except (OSError, ValueError, KeyError):
            pass
        rows.append(
            {
                "device": m.group(1),
                "kind": m.group(2),
                "name": (m.group(2) + m.group(3)).strip(),
                "group": group,
                "func": func,
                "median_ns": est["median"]["point_estimate"],
                "flops": flops,
                "samples": samples,
                "best_ns": best_ns,
                "mtime": mtime,
            }
        )
    rows.sort(key=lambda r: r["mtime"])
    groups = {}
    for r in rows:
        func = (rename or {}).get(r["func"], r["func"])
        groups.setdefault((r["device"], r["group"]), {})[func] = r
    return groups


def collect_paired(crit_dir, since):
    """{group: (ours_ns list, libtorch_ns list)} from benches/common/paired.rs (ours and libtorch alternating)."""
    found = {}
    pdir = os.path.join(crit_dir, PAIRED)
    if not os.path.isdir(pdir):
        return found
    for name in sorted(os.listdir(pdir)):
        path = os.path.join(pdir, name)
        if not name.endswith(".json") or (since is not None and os.path.getmtime(path) < since):
            continue
        try:
            d = load_json(path)
            found[d["group"]] = (d["ours_ns"], d["libtorch_ns"])
        except (OSError, ValueError, KeyError):
            continue
    return found


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def alternating_table(sec, paired):
    """The groups of one section that were also timed in alternation: per-pair ratios, median and range."""
    rows = [(g, paired[g]) for g, _fs in sec if g in paired]
    if not rows:
        return []
    out = ["The same, ours and libtorch timed in alternation (ours, libtorch, ours, ... one call each; "
           "`benches/common/paired.rs`): each pair's ratio is taken at one machine speed, so the median ratio "
           "holds when this shared machine's speed drifts between criterion's back-to-back samplings.\n",
           "| benchmark | pairs | ours (median) | libtorch (median) | ratio per pair: median | min | max |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for g, (o, t) in rows:
        ratios = [b / a for a, b in zip(o, t)]
        name = g.split(" ", 1)[1]
        out.append(f"| {name} | {len(ratios)} | {fmt_time(median(o))} | {fmt_time(median(t))} | "
                   f"{median(ratios):.2f} | {min(ratios):.2f} | {max(ratios):.2f} |")
    out.append("")
    return out


def merge_torch_json(groups, path):
    """Adds scripts/bench_torch_gpu.py's rows as functions torch_fp32 / torch_tf32 (its meta says which);
    returns its meta."""
    data = load_json(path)
    meta = data["meta"]
    func = "torch_tf32" if meta.get("tf32") == "on" else "torch_fp32"
    for r in data["results"]:
        group = r["group"]
        m = re.match(r"^(cpu|cuda) (\S+)(.*)$", group)
        if not m:
            continue
        groups.setdefault((m.group(1), group), {})[func] = {
            "device": m.group(1), "kind": m.group(2), "name": (m.group(2) + m.group(3)).strip(),
            "group": group, "func": func, "median_ns": r["median_ms"] * 1e6, "flops": r.get("flops"),
            "samples": r.get("samples"), "mtime": 0,
        }
    return meta


def fmt_time(ns):
    if ns is None:
        return ""
    if ns >= 1e9:
        return f"{ns / 1e9:.3f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def gflops(row):
    if not row or not row.get("flops"):
        return ""
    return f"{row['flops'] / row['median_ns']:.1f}"


def sections(mine):
    """(title, [(group, functions)]) per SECTIONS entry that has results, in run order within a section."""
    for kind, title in SECTIONS:
        sec = [(g, fs) for g, fs in mine if g.split(" ", 2)[1] == kind]
        if sec:
            yield title, sec


def table(groups, device, paired=None):
    """Markdown tables for one device, one per section, in run order within a section; after a section's
    table, the alternating measurements of its groups (`paired`) if any."""
    mine = [(g, fs) for (d, g), fs in groups.items() if d == device]
    if not mine:
        return None
    # The measured peak of this run (GFLOP/s), if its group ran: the denominator of the "% of peak" columns. Its
    # fastest sample, not the median: the FMA loop touches no memory, so anything else on the machine can only
    # slow it (one run here had 3 samples at 4.0 ms and 7 at 6.7 ms as another load started).
    peaks = [fs["ours"] for g, fs in mine if g.split(" ", 2)[1] == "peak" and fs.get("ours", {}).get("flops")]
    peak = peaks[-1]["flops"] / (peaks[-1]["best_ns"] or peaks[-1]["median_ns"]) if peaks else None
    def pct(row):
        return f"{100 * row['flops'] / row['median_ns'] / peak:.0f} %" if peak and row and row.get("flops") else ""
    out = []
    for title, sec in sections(mine):
        out.append(f"#### {title}\n")
        has_flops = any(r.get("flops") for _g, fs in sec for r in fs.values())
        cols = "| benchmark | ours | libtorch | ratio (libtorch / ours) |"
        rule = "|---|---:|---:|---:|"
        if has_flops:
            cols += " ours GFLOP/s | libtorch GFLOP/s |"
            rule += "---:|---:|"
        if has_flops and peak:
            cols += " ours % of peak | libtorch % of peak |"
            rule += "---:|---:|"
        out += [cols, rule]
        for g, fs in sec:
            o, t = fs.get("ours"), fs.get("libtorch")
            ratio = f"{t['median_ns'] / o['median_ns']:.2f}" if o and t else ""
            name = g.split(" ", 1)[1].replace("->", "→")
            row = f"| {name} | {fmt_time(o and o['median_ns'])} | {fmt_time(t and t['median_ns'])} | {ratio} |"
            if has_flops:
                row += f" {gflops(o)} | {gflops(t)} |"
            if has_flops and peak:
                row += f" {pct(o)} | {pct(t)} |"
            out.append(row)
        out.append("")
        out += alternating_table(sec, paired or {})
    known = {k for k, _ in SECTIONS}
    other = [(g, fs) for g, fs in mine if g.split(" ", 2)[1] not in known]
    if other:
        out.append("#### Other\n")
        out.append("| benchmark | ours | libtorch | ratio (libtorch / ours) |")
        out.append("|---|---:|---:|---:|")
        for g, fs in other:
            o, t = fs.get("ours"), fs.get("libtorch")
            ratio = f"{t['median_ns'] / o['median_ns']:.2f}" if o and t else ""
            out.append(f"| {g.split(' ', 1)[1]} | {fmt_time(o and o['median_ns'])} | "
                       f"{fmt_time(t and t['median_ns'])} | {ratio} |")
        out.append("")
    return "\n".join(out)


def paired_table(groups, device):
    """The GPU table of a first-light run: ours FP32 vs PyTorch TF32-off, ours TF32 vs PyTorch defaults."""
    mine = [(g, fs) for (d, g), fs in groups.items() if d == device and "ours" in fs]
    if not mine:
        return None
    def cell(fs, f):
        return fmt_time(fs[f]["median_ns"]) if f in fs else ""
    def ratio(fs, a, b):
        return f"{fs[b]['median_ns'] / fs[a]['median_ns']:.2f}" if a in fs and b in fs else ""
    out = []
    for title, sec in sections(mine):
        out.append(f"#### {title}\n")
        out.append("| benchmark | ours FP32 | PyTorch FP32 | ratio | ours TF32 | PyTorch default (TF32 convs) | ratio "
                   "| ours GFLOP/s FP32 / TF32 |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for g, fs in sec:
            name = g.split(" ", 1)[1].replace("->", "→")
            rate = " / ".join(x for x in (gflops(fs.get("ours")), gflops(fs.get("ours_tf32"))) if x)
            out.append(f"| {name} | {cell(fs, 'ours')} | {cell(fs, 'torch_fp32')} | {ratio(fs, 'ours', 'torch_fp32')} "
                       f"| {cell(fs, 'ours_tf32')} | {cell(fs, 'torch_tf32')} | {ratio(fs, 'ours_tf32', 'torch_tf32')} "
                       f"| {rate} |")
        out.append("")
    out.append("Ratio = PyTorch time / our time (> 1: we are faster). Empty cells: not measured in this run (the "
               "TF32 pass covers the groups that TF32 changes: convolutions and whole models).")
    graphed = [(g, fs) for g, fs in mine if "ours_graph" in fs or "ours_graph_tf32" in fs]
    if graphed:
        out.append("")
        out.append("#### Training iteration replayed from a captured CUDA graph (`train --cuda-graph`)\n")
        out.append("| benchmark | ours FP32 graph | vs ours FP32 eager | vs PyTorch FP32 | ours TF32 graph "
                   "| vs ours TF32 eager | vs PyTorch default |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for g, fs in graphed:
            name = g.split(" ", 1)[1]
            out.append(f"| {name} | {cell(fs, 'ours_graph')} | {ratio(fs, 'ours_graph', 'ours')} "
                       f"| {ratio(fs, 'ours_graph', 'torch_fp32')} | {cell(fs, 'ours_graph_tf32')} "
                       f"| {ratio(fs, 'ours_graph_tf32', 'ours_tf32')} | {ratio(fs, 'ours_graph_tf32', 'torch_tf32')} |")
        out.append("")
        out.append("Ratios: the other time / the graph's time (> 1: the graph is faster).")
    return "\n".join(out)


def cpu_model():
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and model == "unknown CPU":
                    model = v.strip()
                elif k == "flags" and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    simd = [x for x in ("avx512f", "avx2", "fma", "neon", "asimd") if x in flags]
    return model, simd


def git(*args):
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def header(meta, groups, gpu=None):
    # The machine that ran the benches (bench.sh records it), else this one.
    model, simd = cpu_model()
    model, simd = meta.get("cpu_model", model), meta.get("simd", simd)
    when = meta.get("start_iso") or datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    commit = meta.get("commit") or git("rev-parse", "--short", "HEAD")
    dirty = meta.get("dirty")
    if dirty is None:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    n_samples = sorted({r["samples"] for fs in groups.values() for r in fs.values() if r["samples"]})
    lines = [f"- GPU: {gpu}"] if gpu else []
    lines += [
        f"- {'Host' if gpu else 'Machine'}: {model} ({', '.join(simd) or 'no SIMD flags read'}), "
        f"{meta.get('nproc', os.cpu_count())} logical CPUs",
        f"- Date: {when}",
        f"- Commit: {commit}{' (with uncommitted changes)' if dirty else ''}",
        f"- Command: `{meta.get('command', 'cargo bench --features libtorch')}`",
    ]
    if meta.get("torch"):
        omp = f", OMP_WAIT_POLICY={meta['omp_wait_policy']}" if meta.get("omp_wait_policy") else ""
        lines.append(f"- Threads: {meta.get('threads', '?')} for ours (rayon) and for libtorch (PyTorch "
                     f"{meta['torch']} through tch 0.26{omp})")
    if meta.get("load_before") or meta.get("load_after"):
        lines.append(f"- Load average (1, 5, 15 min) before: {meta.get('load_before', '?')}, after: "
                     f"{meta.get('load_after', '?')}")
    if n_samples:
        lines.append(f"- Samples per benchmark: {', '.join(map(str, n_samples))} (criterion; the median is shown)")
    return "\n".join(lines) + "\n"


SKELETON = """# Benchmarks

<!-- bench:cpu:start -->
<!-- bench:cpu:end -->

<!-- bench:cuda:start -->
<!-- bench:cuda:end -->
"""


def replace(text, key, body):
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    pat = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pat.search(text):
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    return pat.sub(lambda _m: f"{start}\n{body.rstrip()}\n{end}", text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--criterion", default=os.path.join(ROOT, "target", "criterion"))
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--all", action="store_true", help="also use results older than the last bench.sh run")
    ap.add_argument("--devices", default="cpu,cuda", help="which sections to rewrite (default cpu,cuda)")
    ap.add_argument("--criterion-tf32", help="criterion output of our --precision tf32 pass (GPU runs)")
    ap.add_argument("--torch-json", action="append", default=[],
                    help="scripts/bench_torch_gpu.py output (repeat for TF32 off and on)")
    args = ap.parse_args()

    meta_path = os.path.join(args.criterion, META)
    meta = load_json(meta_path) if os.path.exists(meta_path) else {}
    since = None if args.all else meta.get("start_epoch")
    groups = collect(args.criterion, since)
    if args.criterion_tf32:
        renamed = {"ours": "ours_tf32", "ours_graph": "ours_graph_tf32"}
        for key, fs in collect(args.criterion_tf32, None, renamed).items():
            groups.setdefault(key, {}).update(fs)
    torch_meta = [merge_torch_json(groups, p) for p in args.torch_json]
    if not groups:
        print(f"no side-by-side results under {args.criterion}; run scripts/bench.sh first", file=sys.stderr)
        return 1

    text = open(args.out).read() if os.path.exists(args.out) else SKELETON
    devices = set(args.devices.split(","))
    cpu = table(groups, "cpu", collect_paired(args.criterion, since)) if "cpu" in devices else None
    paired = bool(args.criterion_tf32 or args.torch_json)
    cuda = (paired_table if paired else table)(groups, "cuda") if "cuda" in devices else None
    head = header(meta, groups)
    if "cpu" in devices:
        text = replace(text, "cpu", head + "\n" + cpu if cpu else "_No CPU measurements in this run._")
    # Without CUDA results the CUDA section keeps what it says (a note on why there are none).
    if cuda:
        gpu_path = os.path.join(args.criterion, "gan-bench-cuda.txt")
        gpu = open(gpu_path).read().strip() if os.path.exists(gpu_path) else "unknown (no gan-bench-cuda.txt)"
        head = header(meta, groups, gpu)
        for tm in torch_meta:
            head += (f"- PyTorch side: {tm['torch']} (CUDA {tm['cuda']}, cuDNN {tm['cudnn']}), eager from Python, "
                     f"TF32 {tm['tf32']} (cudnn.allow_tf32 = {tm['cudnn_allow_tf32']}, matmul.allow_tf32 = "
                     f"{tm['matmul_allow_tf32']}), CUDA-event timing, median of {tm['samples']} samples, {tm['time']}\n")
        text = replace(text, "cuda", head + "\n" + cuda)
    with open(args.out, "w") as f:
        f.write(text)
    n = sum(len(fs) for fs in groups.values())
    print(f"wrote {args.out}: {len(groups)} groups, {n} measurements "
          f"(cpu: {'yes' if cpu else 'no'}, cuda: {'yes' if cuda else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
