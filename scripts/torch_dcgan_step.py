#!/usr/bin/env python3
"""PyTorch's side of `gan-engine benchmark`: one DCGAN training iteration, timed as ours is, on CPU or CUDA.

The iteration is PyTorch's DCGAN example loop (nz 100, ngf = ndf = 64, BatchNorm, LeakyReLU 0.2, D returning
logits, BCEWithLogitsLoss, Adam 2e-4 / (0.5, 0.999)): D on a fixed real batch and on G(z), G step, and the five
scalars the example prints (errD, errG, D(x), D(G(z)) before and after the D update) read back to the host.
--image-size 64 is DCGAN-64 (3 channels), 28 the MNIST architecture (1 channel). With --g-inference it times G
inference instead (eval mode, no autograd, a fixed z of --batch latents), the twin of `benchmark --g-inference`.

On the CPU (--device cpu) only the eager mode runs, with PyTorch's default threads and environment (run it in
its own process, as users do: scripts/bench_cpu_vs_torch.py does), timed with the host clock.
On CUDA, one row per mode and precision (--precisions, default fp32,tf32,bf16):
- fp32: TF32 off (cuDNN and matmul in FP32): compare with ours at --precision fp32;
- tf32: TF32 on (cuDNN's default; matmul TF32 too): compare with ours at --precision tf32;
- bf16: the forward passes and losses under torch.autocast(dtype=torch.bfloat16), PyTorch's mixed precision as its
  AMP recipe writes it (backward and optimizer steps outside autocast, TF32 flags at their defaults): compare with
  ours at --precision bf16;
- fp16: the same under autocast(float16) with a GradScaler (one scaler, a step per optimizer, one update per
  iteration), eager only: the scaler's step reads the inf check back to the host, which a graph cannot hold;
modes:
- eager;
- graph: the same iteration captured once with torch.cuda.graph (Adam capturable=True) and replayed; z is drawn
  inside the graph; the five scalars come back in one copy; under autocast with its weight cache off, as capture
  requires;
- compile: torch.compile(mode="reduce-overhead") of G and D (CUDA graphs under Inductor), TF32 only, if asked
  for in --modes and it compiles within the time left.
cuDNN benchmark mode is on, as in the example. Timing: CUDA events (CPU: the host clock) around --steps
back-to-back iterations after --warmup, --repeat samples, median reported, like ours.

Run with PyTorch's own library path (no LD_LIBRARY_PATH pointing at a CUDA toolkit):
    env -u LD_LIBRARY_PATH python3 scripts/first_light_torch.py --batch 128 --out torch.json
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch_cpu import dcgan28, dcgan64, weights_init  # noqa: E402


def make(batch, dev, capturable, image_size):
    torch.manual_seed(0)
    netG, netD, img, nz = dcgan64() if image_size == 64 else dcgan28()
    netG.apply(weights_init)
    netD.apply(weights_init)
    netG.to(dev)
    netD.to(dev)
    opt = dict(lr=2e-4, betas=(0.5, 0.999))
    if capturable:
        opt["capturable"] = True
    optD = torch.optim.Adam(netD.parameters(), **opt)
    optG = torch.optim.Adam(netG.parameters(), **opt)
    real = torch.rand(batch, *img, device=dev) * 2 - 1
    return netG, netD, optD, optG, real, nz


# Autocast dtype of each precision (None: no autocast).
AMP = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def set_tf32(precision):
    """TF32 flags: off for fp32, on for tf32, PyTorch's defaults (cuDNN on, matmul off) under autocast."""
    cudnn, matmul = {"fp32": (False, False), "tf32": (True, True)}.get(precision, (True, False))
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.backends.cuda.matmul.allow_tf32 = matmul


def iteration_fn(netG, netD, optD, optG, real, nz, crit, static_grads=False, amp=None, scaler=None):
    """The example's iteration; returns the five scalars as 0-d tensors (still on the device). Gradients are
    released between steps (zero_grad's default) unless `static_grads`: a captured graph needs them to stay at
    their addresses. With `amp` (a dtype) the forward passes and losses run under autocast (its weight cache off
    when `static_grads`, for graph capture), and with `scaler` the losses are scaled and the steps go through it."""
    batch = real.shape[0]
    dev = real.device
    ones = torch.ones(batch, device=dev)
    zeros = torch.zeros(batch, device=dev)
    z = torch.empty(batch, nz, 1, 1, device=dev)

    def autocast():
        return torch.autocast(dev.type, dtype=amp, enabled=amp is not None, cache_enabled=not static_grads)

    def backward(loss):
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def step(opt):
        if scaler is not None:
            scaler.step(opt)
        else:
            opt.step()

    def it():
        netD.zero_grad(set_to_none=not static_grads)
        with autocast():
            out = netD(real).view(-1)
            err_real = crit(out, ones)
        backward(err_real)
        d_x = torch.sigmoid(out.float()).mean()
        z.normal_()
        with autocast():
            fake = netG(z)
            out = netD(fake.detach()).view(-1)
            err_fake = crit(out, zeros)
        backward(err_fake)
        d_g_z1 = torch.sigmoid(out.float()).mean()
        step(optD)
        netG.zero_grad(set_to_none=not static_grads)
        with autocast():
            out = netD(fake).view(-1)
            err_g = crit(out, ones)
        backward(err_g)
        d_g_z2 = torch.sigmoid(out.float()).mean()
        step(optG)
        if scaler is not None:
            scaler.update()
        return err_real + err_fake, err_g, d_x, d_g_z1, d_g_z2

    return it


def time_events(fn, steps, repeat):
    if not torch.cuda.is_available() or ARGS.device == "cpu":
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            out.append((time.perf_counter() - t0) * 1e3 / steps)
        return out
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    out = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / steps)
    return out


def eager(args, dev, precision):
    netG, netD, optD, optG, real, nz = make(args.batch, dev, False, args.image_size)
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    it = iteration_fn(netG, netD, optD, optG, real, nz, nn.BCEWithLogitsLoss(), amp=AMP[precision], scaler=scaler)
    last = []

    def step():
        # The example reads each scalar with .item(): five host reads per iteration.
        last[:] = [t.item() for t in it()]

    for _ in range(args.warmup):
        step()
    return time_events(step, args.steps, args.repeat), last


def g_infer(args, dev, precision):
    """G inference as `sample` runs it: eval mode (BN running statistics), no autograd, a fixed z; the images
    are synchronised (CUDA) or computed (CPU) before the clock stops. The scalar read back is one pixel."""
    netG, _, _, _, _, nz = make(args.batch, dev, False, args.image_size)
    netG.eval()
    z = torch.randn(args.batch, nz, 1, 1, device=dev)
    last = []

    def step():
        with torch.no_grad(), torch.autocast(dev.type, dtype=AMP[precision], enabled=AMP[precision] is not None):
            last[:] = [netG(z)[0, 0, 0, 0].float().item()]

    for _ in range(args.warmup):
        step()
    return time_events(step, args.steps, args.repeat), last


def graphed(args, dev, precision):
    if precision == "fp16":
        raise NotImplementedError("fp16 needs a GradScaler, whose step reads the host: not capturable")
    netG, netD, optD, optG, real, nz = make(args.batch, dev, True, args.image_size)
    it = iteration_fn(netG, netD, optD, optG, real, nz, nn.BCEWithLogitsLoss(), static_grads=True,
                      amp=AMP[precision])
    # Warm-up on a side stream (cuDNN's algorithm search, the optimizers' state), as torch.cuda.graph requires.
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(max(3, args.warmup)):
            it()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        scalars = torch.stack(it())
    last = []

    def step():
        g.replay()
        last[:] = scalars.tolist()

    for _ in range(args.warmup):
        step()
    return time_events(step, args.steps, args.repeat), last


def compiled(args, dev, precision):
    netG, netD, optD, optG, real, nz = make(args.batch, dev, False, args.image_size)
    netG = torch.compile(netG, mode="reduce-overhead")
    netD = torch.compile(netD, mode="reduce-overhead")
    it = iteration_fn(netG, netD, optD, optG, real, nz, nn.BCEWithLogitsLoss())
    last = []

    def step():
        torch.compiler.cudagraph_mark_step_begin()
        last[:] = [t.item() for t in it()]

    for _ in range(max(3, args.warmup)):
        step()
    return time_events(step, args.steps, args.repeat), last


ARGS = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--image-size", type=int, choices=[64, 28], default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", default="eager,graph", help="comma-separated: eager, graph, compile")
    ap.add_argument("--precisions", default="fp32,tf32,bf16",
                    help="comma-separated, in the order to run: fp32, tf32, bf16, fp16 (CUDA; the CPU runs fp32 "
                         "unless bf16 is the only one asked for)")
    ap.add_argument("--g-inference", action="store_true",
                    help="time G inference (eval mode, no gradients, batch --batch) instead of the iteration")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    global ARGS
    ARGS = args
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_dcgan_step: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    if args.device == "cpu" or args.g_inference:
        args.modes = "eager"
    torch.backends.cudnn.benchmark = True
    rows = []
    runners = {"eager": g_infer if args.g_inference else eager, "graph": graphed, "compile": compiled}
    precisions = args.precisions.split(",")
    bad = [p for p in precisions if p not in AMP]
    if bad:
        print(f"torch_dcgan_step: unknown precision(s) {bad}; known: {list(AMP)}", file=sys.stderr)
        return 2
    if args.device == "cpu":
        precisions = ["bf16"] if precisions == ["bf16"] else ["fp32"]
    for precision in precisions:
        for mode in args.modes.split(","):
            if mode == "compile" and precision != "tf32":
                continue
            set_tf32(precision)
            tf32 = torch.backends.cudnn.allow_tf32 and args.device == "cuda"
            t0 = time.time()
            try:
                samples, last = runners[mode](args, dev, precision)
            except Exception as e:  # a mode that does not run here is a row saying so, not a lost run
                rows.append({"mode": mode, "precision": precision, "tf32": tf32,
                             "error": f"{type(e).__name__}: {e}"[:500]})
                print(f"torch {mode:7s} {precision}: FAILED {type(e).__name__}: {e}"[:300], flush=True)
                continue
            med = statistics.median(samples)
            rows.append({"mode": mode, "precision": precision, "tf32": tf32, "median_ms": med,
                         "min_ms": min(samples), "max_ms": max(samples), "samples_ms": samples, "last": last,
                         "setup_s": time.time() - t0 - sum(samples) * args.steps / 1e3})
            where = precision if args.device == "cuda" else f"cpu {precision}"
            print(f"torch {mode:7s} {where}: {med:8.3f} ms per iteration "
                  f"(min {min(samples):.3f}, max {max(samples):.3f}), {args.batch * 1e3 / med:.0f} images/s; "
                  f"last: " + " ".join(f"{v:.4f}" for v in last), flush=True)
    meta = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if args.device == "cuda" else None,
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "image_size": args.image_size, "batch": args.batch,
            "what": "g_inference" if args.g_inference else "iteration", "warmup": args.warmup,
            "steps_per_sample": args.steps, "repeat": args.repeat, "cudnn_benchmark": True,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
