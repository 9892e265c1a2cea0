#!/usr/bin/env python3
"""PyTorch eager on a CUDA GPU: the libtorch side of the GPU benchmarks, when no tch build can run there.

tch 0.26 links only against PyTorch 2.13; the lent GPU machines carry their own PyTorch (2.11 when this was
written) and no network, so the `libtorch` feature of `cargo bench` cannot run there. This script times the same
computations as benches/ops.rs and benches/train.rs through that machine's PyTorch, eager, from Python, and
writes rows whose `group` is the criterion group id of our matching benchmark ("cuda train_iter dcgan64 b64",
"cuda conv D2 64x32x32->128x16x16 fwd b64", ...), so scripts/benchmarks_md.py --torch-json can put them beside
ours. Python's per-op dispatch is part of what is timed: it is what a PyTorch user's training loop pays.

Two modes, one per run (--tf32 on|off):
- on:  PyTorch's defaults: cuDNN may use TF32 for convolutions (torch.backends.cudnn.allow_tf32 = True);
       matmuls stay FP32 (torch.backends.cuda.matmul.allow_tf32 = False). Compare with ours at --precision tf32.
- off: cuDNN TF32 off as well: plain FP32 everywhere. Compare with ours at the default --precision fp32.

cuDNN's benchmark mode is on (as in PyTorch's DCGAN example and our tch benches).

Timing: CUDA events around K back-to-back calls (K chosen so a sample lasts >= 2 ms), after warm-up; the median
of --samples samples, per call. Like our benches, a sample runs from an idle device until the device finishes
the K-th call, so launch gaps count.

Run (on the GPU machine): python3 scripts/bench_torch_gpu.py --tf32 off --out $OUT/torch_fp32.json
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch_cpu import conv_layers_dcgan64, dcgan28, dcgan64, weights_init, write_results  # noqa: E402


def time_cuda(fn, samples, min_ms=2.0):
    """Median and min milliseconds per call of fn, timed with CUDA events."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    # Size K so one sample lasts at least min_ms.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    one = max(start.elapsed_time(end), 1e-3)
    k = max(1, min(1000, int(min_ms / one) + 1))
    per_call = []
    for _ in range(samples):
        torch.cuda.synchronize()
        start.record()
        for _ in range(k):
            fn()
        end.record()
        torch.cuda.synchronize()
        per_call.append(start.elapsed_time(end) / k)
    return {"median_ms": statistics.median(per_call), "min_ms": min(per_call), "calls_per_sample": k,
            "samples": samples}


def train_step_fn(model, batch, dev):
    netG, netD, img, nz = model
    netG.apply(weights_init)
    netD.apply(weights_init)
    netG.to(dev)
    netD.to(dev)
    crit = nn.BCEWithLogitsLoss()
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.rand(batch, *img, device=dev) * 2 - 1
    ones = torch.ones(batch, device=dev)
    zeros = torch.zeros(batch, device=dev)

    def step():
        netD.zero_grad()
        crit(netD(x).view(-1), ones).backward()
        z = torch.randn(batch, nz, 1, 1, device=dev)
        fake = netG(z)
        crit(netD(fake.detach()).view(-1), zeros).backward()
        optD.step()
        netG.zero_grad()
        crit(netD(fake).view(-1), ones).backward()
        optG.step()

    return step


def g_inference_fn(batch, dev):
    netG, _, _, nz = dcgan64()
    netG.apply(weights_init)
    netG.to(dev).eval()
    z = torch.randn(batch, nz, 1, 1, device=dev)

    def fwd():
        with torch.no_grad():
            netG(z)

    return fwd


def label(name, xs, ys):
    """Our bench's layer label: "G2 512x4x4->256x8x8"."""
    return f"{name} {xs[1]}x{xs[2]}x{xs[3]}->{ys[1]}x{ys[2]}x{ys[3]}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tf32", choices=["on", "off"], required=True)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="cpu only to dry-run this script's code paths")
    args = ap.parse_args()

    dev = torch.device(args.device)
    torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    torch.backends.cuda.matmul.allow_tf32 = False
    # As PyTorch's DCGAN example and our tch benches: cuDNN picks its fastest algorithm per shape (warm-up pays).
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    n = args.batch
    rows = []

    def record(group, fn, flops=None):
        r = time_cuda(fn, args.samples)
        rows.append({"group": group, "flops": flops, **r})
        print(f"{group:58s} {r['median_ms']:9.3f} ms", flush=True)

    # Whole models (benches/train.rs).
    record(f"cuda g_inference dcgan64 b{n}", g_inference_fn(n, dev))
    record(f"cuda g_inference dcgan64 b{16 * n}", g_inference_fn(16 * n, dev))
    record(f"cuda train_iter dcgan28 b{n}", train_step_fn(dcgan28(), n, dev))
    record(f"cuda train_iter dcgan64 b{n}", train_step_fn(dcgan64(), n, dev))
    record(f"cuda train_iter dcgan64 b{2 * n}", train_step_fn(dcgan64(), 2 * n, dev))

    # GEMM (benches/ops.rs: `linear`, x [k, k] times w^T).
    k = 1024
    a, b = torch.randn(k, k, device=dev), torch.randn(k, k, device=dev)
    record(f"cuda gemm {k}x{k}x{k} (linear)", lambda: torch.nn.functional.linear(a, b), 2 * k**3)

    # Every DCGAN-64 conv layer, three passes.
    g_idx = d_idx = 0
    for _name, m, xshape in conv_layers_dcgan64(n):
        m = m.to(dev)
        transposed = isinstance(m, nn.ConvTranspose2d)
        if transposed:
            g_idx += 1
            lname = f"G{g_idx}"
        else:
            d_idx += 1
            lname = f"D{d_idx}"
        x = torch.randn(*xshape, device=dev, requires_grad=True)
        m.weight.requires_grad_(True)
        y = m(x)
        dy = torch.randn_like(y)
        per = x if transposed else y
        flops = 2 * (per.numel() // per.shape[1]) * m.weight.numel()
        lab = label(lname, xshape, y.shape)

        def fwd(m=m, x=x):
            with torch.no_grad():
                m(x)

        record(f"cuda conv {lab} fwd b{n}", fwd, flops)
        record(f"cuda conv {lab} bwd_data b{n}",
               lambda y=y, x=x, dy=dy: torch.autograd.grad(y, (x,), dy, retain_graph=True), flops)
        record(f"cuda conv {lab} bwd_weight b{n}",
               lambda y=y, m=m, dy=dy: torch.autograd.grad(y, (m.weight,), dy, retain_graph=True), flops)

    # Batch norm, training mode, forward + backward, at G1..G4's output shapes.
    g, _, _, nz = dcgan64()
    h, c = 1, nz
    for mod in g:
        if isinstance(mod, nn.ConvTranspose2d):
            h = (h - 1) * mod.stride[0] - 2 * mod.padding[0] + mod.kernel_size[0]
            c = mod.out_channels
        if isinstance(mod, nn.BatchNorm2d):
            bn = nn.BatchNorm2d(c).to(dev)
            x = torch.randn(n, c, h, h, device=dev, requires_grad=True)
            dy = torch.randn(n, c, h, h, device=dev)

            def bn_step(bn=bn, x=x, dy=dy):
                y = bn(x)
                torch.autograd.grad(y, (x, bn.weight, bn.bias), dy)

            record(f"cuda batchnorm train fwd+bwd {c}x{h}x{h} b{n}", bn_step)

            def bn_leaky_step(bn=bn, x=x, dy=dy):
                y = torch.nn.functional.leaky_relu(bn(x), 0.2)
                torch.autograd.grad(y, (x, bn.weight, bn.bias), dy)

            record(f"cuda batchnorm+leaky_relu train fwd+bwd {c}x{h}x{h} b{n}", bn_leaky_step)

    # LeakyReLU(0.2) on D1's output.
    x = torch.randn(n, 64, 32, 32, device=dev)
    dy = torch.randn_like(x)
    record(f"cuda leaky_relu fwd 64x32x32 b{n}", lambda: torch.nn.functional.leaky_relu(x, 0.2))
    record(f"cuda leaky_relu bwd 64x32x32 b{n}",
           lambda: torch.ops.aten.leaky_relu_backward(dy, x, 0.2, False))

    # Fused BCE with logits, loss and gradient.
    logits = torch.randn(n, device=dev, requires_grad=True)
    target = torch.ones(n, device=dev)

    def bce():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        torch.autograd.grad(loss, (logits,))

    record(f"cuda bce_with_logits fwd+bwd b{n}", bce)

    # Adam over G's parameters (foreach implementation: PyTorch's default on CUDA).
    g, _, _, _ = dcgan64()
    g = g.to(dev)
    params = list(g.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    count = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))
    record(f"cuda adam G params ({count / 1e6:.2f}M)", opt.step)

    meta = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else "none", "tf32": args.tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "samples": args.samples,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_results(args.out, meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
