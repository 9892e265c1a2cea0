#!/usr/bin/env python3
"""The GPU's measured peak: what "% of peak" in BENCHMARKS.md divides by.

Datasheet peaks assume boost clocks the card may not hold, so the denominator is measured on the same machine,
in the same call, as the kernels it judges: cuBLAS's best large square matmul in each precision our kernels use
(FP32 on the CUDA cores, TF32 / BF16 / FP16 on the tensor cores, FP32 accumulation), and a large device-to-device
copy for memory bandwidth. CUDA events around back-to-back calls after warm-up; the best of --samples samples.

Run (on the GPU machine): python3 scripts/gpu_peak.py --out $OUT/peak.json
"""

import argparse
import json

import torch


def best_ms(fn, samples, calls):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / calls)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="matmul size n x n x n")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    n = args.n
    rows = []
    for name, dtype, tf32 in [
        ("fp32", torch.float32, False),
        ("tf32", torch.float32, True),
        ("bf16", torch.bfloat16, False),
        ("fp16", torch.float16, False),
    ]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        ms = best_ms(lambda: torch.mm(a, b), args.samples, 5)
        tflops = 2 * n**3 / (ms * 1e-3) / 1e12
        rows.append({"what": f"matmul {name}", "ms": ms, "tflops": tflops})
        print(f"peak matmul {name:<5} {n}^3: {ms:8.3f} ms  {tflops:7.1f} TFLOP/s")
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = False
    nbytes = 1 << 30
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = best_ms(lambda: dst.copy_(src), args.samples, 5)
    gbs = 2 * nbytes / (ms * 1e-3) / 1e9
    rows.append({"what": "copy 1 GiB d2d", "ms": ms, "gbytes_per_s": gbs})
    print(f"peak copy 1 GiB d2d: {ms:8.3f} ms  {gbs:7.0f} GB/s (read + write)")
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
