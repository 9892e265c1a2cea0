#!/usr/bin/env python3
"""PyTorch CPU baseline for gan-engine's benchmarks: DCGAN training iterations and per-layer convolutions.

Setup (see scripts/gen_golden.py): python3 -m venv .venv-torch && .venv-torch/bin/pip install torch==2.13.0
Run:   .venv-torch/bin/python scripts/bench_torch_cpu.py [--threads 2] [--runs 5] [--convs-only] [--out target/bench/torch_cpu.json]

What is timed (float32, CPU, torch.set_num_threads(threads)):
- DCGAN-64 (nz 100, ngf = ndf = 64, nc 3, BatchNorm, LeakyReLU 0.2, D returns logits, BCEWithLogitsLoss mean,
  Adam lr 2e-4 betas (0.5, 0.999)): one training iteration = the PyTorch DCGAN example's D step (real + fake) and
  G step, at batch 16, 64 and 128; and G forward alone (no grad) at batch 64.
- DCGAN-28 (the MNIST architecture, nc 1, ngf = ndf = 64) training iteration at batch 64.
- Every DCGAN-64 convolution layer at batch 64: forward, backward-data (dx) and backward-weight (dw) separately.
Each measurement: warm-up runs, then the median (and min) of --runs timed runs. Prints a table, writes JSON.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def weights_init(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def dcgan64(nz=100, ngf=64, ndf=64, nc=3):
    g = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
    )
    return g, d, (nc, 64, 64), nz


def dcgan28(nz=100, ngf=64, ndf=64, nc=1):
    g = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, nc, 4, 2, 1, bias=False), nn.Tanh(),
    )
    d = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, 1, 7, 1, 0, bias=False),
    )
    return g, d, (nc, 28, 28), nz


def timeit(fn, warmup, runs):
    """Wall time, plus the process's CPU time (all threads): on a shared machine the wall time grows with other
    processes' load while the CPU time stays close to the work done, so the pair shows how much load skewed a row."""
    for _ in range(warmup):
        fn()
    ts, cs = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return {"median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3,
            "median_cpu_ms": statistics.median(cs) * 1e3, "runs": runs}


def train_iteration_fn(model, batch):
    """One DCGAN-example iteration (D on real + fake, then G), on fixed data: data loading is not timed."""
    netG, netD, img, nz = model
    netG.apply(weights_init)
    netD.apply(weights_init)
    crit = nn.BCEWithLogitsLoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.rand(batch, *img) * 2 - 1
    ones = torch.ones(batch)
    zeros = torch.zeros(batch)

    def step():
        netD.zero_grad()
        errD_real = crit(netD(x).view(-1), ones)
        errD_real.backward()
        z = torch.randn(batch, nz, 1, 1)
        fake = netG(z)
        errD_fake = crit(netD(fake.detach()).view(-1), zeros)
        errD_fake.backward()
        optD.step()
        netG.zero_grad()
        errG = crit(netD(fake).view(-1), ones)
        errG.backward()
        optG.step()

    return step


def g_forward_fn(model, batch):
    netG, _, _, nz = model
    netG.apply(weights_init)
    z = torch.randn(batch, nz, 1, 1)

    def fwd():
        with torch.no_grad():
            netG(z)

    return fwd


def conv_layers_dcgan64(batch):
    """(name, module, input shape) of every DCGAN-64 conv layer, in execution order."""
    g, d, _, nz = dcgan64()
    out = []
    h = 1
    c = nz
    for i, m in enumerate(g):
        if isinstance(m, nn.ConvTranspose2d):
            out.append((f"G.main.{i} convT", m, (batch, c, h, h)))
            h = (h - 1) * m.stride[0] - 2 * m.padding[0] + m.kernel_size[0]
            c = m.out_channels
    h, c = 64, 3
    for i, m in enumerate(d):
        if isinstance(m, nn.Conv2d):
            out.append((f"D.main.{i} conv", m, (batch, c, h, h)))
            h = (h + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
            c = m.out_channels
    return out


def write_results(path, meta, results):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench", "torch_cpu.json"))
    ap.add_argument("--convs-only", action="store_true", help="only the per-layer convolution rows")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    results = []

    def record(kind, name, batch, r, extra=None):
        row = {"kind": kind, "name": name, "batch": batch, **r, **(extra or {})}
        results.append(row)
        print(f"{kind:16s} {name:22s} batch {batch:4d}  median {r['median_ms']:9.1f} ms  min {r['min_ms']:9.1f} ms"
              f"  cpu {r['median_cpu_ms']:9.1f} ms", flush=True)

    if not args.convs_only:
        for batch in (16, 64, 128):
            record("train_iter", "dcgan64", batch,
                   timeit(train_iteration_fn(dcgan64(), batch), args.warmup, args.runs))
        record("g_forward", "dcgan64", 64, timeit(g_forward_fn(dcgan64(), 64), args.warmup, args.runs))
        record("train_iter", "dcgan28", 64, timeit(train_iteration_fn(dcgan28(), 64), args.warmup, args.runs))

    for name, m, xshape in conv_layers_dcgan64(64):
        m.weight.requires_grad_(True)
        x = torch.randn(*xshape, requires_grad=True)
        y = m(x)
        dy = torch.randn_like(y)
        # Multiply-adds: conv = every output pixel x (C kh kw); transposed conv = every input pixel x (O kh kw).
        if isinstance(m, nn.Conv2d):
            macs = y.numel() // y.shape[1] * m.weight.numel()
        else:
            macs = x.numel() // x.shape[1] * m.weight.numel()
        extra = {"x_shape": list(xshape), "w_shape": list(m.weight.shape), "y_shape": list(y.shape), "gflop": 2 * macs / 1e9}

        def fwd():
            with torch.no_grad():
                m(x)

        # One graph, backward replayed (retain_graph): the rows time the backward alone, not a forward too.
        def bwd_data():
            torch.autograd.grad(y, (x,), dy, retain_graph=True)

        def bwd_weight():
            torch.autograd.grad(y, (m.weight,), dy, retain_graph=True)

        record("conv_fwd", name, 64, timeit(fwd, args.warmup, args.runs), extra)
        record("conv_bwd_data", name, 64, timeit(bwd_data, args.warmup, args.runs), extra)
        record("conv_bwd_weight", name, 64, timeit(bwd_weight, args.warmup, args.runs), extra)

    load_after = os.getloadavg()
    meta = {
        "torch": torch.__version__, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
        "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_results(args.out, meta, results)
    print(f"load average before {load_before}, after {load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
