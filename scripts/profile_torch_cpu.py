#!/usr/bin/env python3
"""Where PyTorch's CPU training step spends its time, op family by op family: the other side of the per-op
comparison in docs/perf-notes.md (ours comes from `perf record` on `gan-engine benchmark --device cpu`).

The DCGAN example's iteration of scripts/torch_dcgan_step.py, PyTorch's default threads and environment, profiled
with torch.profiler over --steps iterations after warm-up. Self CPU time of the aten ops, summed into families
(convolution forward / backward, batch norm, activations, loss, optimizer, the rest), as a share of the total.

    .venv-torch/bin/python scripts/profile_torch_cpu.py --batch 64 --steps 3
"""

import argparse
import os
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_dcgan_step import iteration_fn, make  # noqa: E402

# First matching substring wins; order matters (backward before forward).
FAMILIES = [
    ("conv backward", ("convolution_backward",)),
    ("conv forward", ("mkldnn_convolution", "_convolution", "conv2d", "conv_transpose", "slow_conv")),
    ("batch norm", ("batch_norm",)),
    ("activations", ("relu", "leaky", "tanh", "threshold", "sigmoid")),
    ("loss", ("binary_cross_entropy",)),
    ("optimizer", ("_foreach", "adam", "lerp", "addcmul", "addcdiv", "sqrt")),
    ("memory (fill, copy, zero)", ("fill_", "zero_", "copy_", "empty", "resize_", "normal_", "ones", "zeros")),
]


def family(name):
    n = name.lower()
    for fam, keys in FAMILIES:
        if any(k in n for k in keys):
            return fam
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int, choices=[64, 28], default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device("cpu")
    netG, netD, optD, optG, real, nz = make(args.batch, dev, False, args.image_size)
    it = iteration_fn(netG, netD, optD, optG, real, nz, torch.nn.BCEWithLogitsLoss())
    for _ in range(args.warmup):
        [v.item() for v in it()]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            [v.item() for v in it()]
    fams = defaultdict(float)
    ops = defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith("aten::"):
            fams[family(e.key)] += e.self_cpu_time_total
            ops[e.key] += e.self_cpu_time_total
    total = sum(fams.values())
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.steps} iterations: {total / 1e3 / args.steps:.1f} ms of aten self time per iteration")
    for fam, us in sorted(fams.items(), key=lambda kv: -kv[1]):
        print(f"  {fam:28s} {us / 1e3 / args.steps:9.1f} ms  {100 * us / total:5.1f} %")
    print("top aten ops:")
    for op, us in sorted(ops.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:40s} {us / 1e3 / args.steps:9.1f} ms  {100 * us / total:5.1f} %")


if __name__ == "__main__":
    main()
