#!/usr/bin/env python3
"""Writes tests/fixtures/double_backward.safetensors: PyTorch's second-order gradients, which
tests/golden_double_backward.rs compares our double backward (Tape::grad_graph) against.

The fixture is committed; this script only regenerates it (setup as in scripts/gen_golden.py):

    .venv-torch/bin/python scripts/gen_double_backward_golden.py

Per op case `<case>`: inputs `<case>.x<i>` (float32 values, computed on in float64), the output projection
`<case>.r` and one projection `<case>.r2_<i>` per input. With L = <r, f(x)>, the first-order gradients
`<case>.g<i>` = dL/dx_i come from torch.autograd.grad(..., create_graph=True), and the second-order ones
`<case>.h<i>` = dF/dx_i of F = sum_i <r2_i, g_i>.

Two whole penalties on a small critic (conv 4x4/2 -> LeakyReLU -> conv 4x4/2 -> LeakyReLU -> linear, no batch
norm): `gp.*` is WGAN-GP's lambda * mean((|grad D(x_hat)| - 1)^2) at given interpolates, `r1.*` is R1's
gamma/2 * mean(|grad D(x)|^2); each stores the penalty and its gradient for every critic parameter.
"""

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "double_backward.safetensors")

torch.set_num_threads(1)


def randn32(g, *shape, std=1.0):
    """float32 normal samples, widened to float64: the stored f32 values are exactly what is computed on."""
    return (torch.randn(*shape, generator=g, dtype=torch.float32) * std).double()


def away_from_zero(t, margin=0.1):
    """Moves values at least `margin` from 0, the kink of ReLU and LeakyReLU."""
    return torch.where(t < 0, t - margin, t + margin).float().double()


def op_case(out, g, name, f, inputs):
    xs = [x.clone().requires_grad_(True) for x in inputs]
    y = f(*xs)
    r = randn32(g, *y.shape)
    grads = torch.autograd.grad(y, xs, r, create_graph=True)
    r2 = [randn32(g, *x.shape) for x in xs]
    total = sum((gi * ri).sum() for gi, ri in zip(grads, r2))
    second = torch.autograd.grad(total, xs, allow_unused=True)
    out[f"{name}.r"] = r
    for i, (x, gi, ri, hi) in enumerate(zip(inputs, grads, r2, second)):
        out[f"{name}.x{i}"] = x
        out[f"{name}.g{i}"] = gi
        out[f"{name}.r2_{i}"] = ri
        out[f"{name}.h{i}"] = hi if hi is not None else torch.zeros_like(x)


def critic(x, w1, w2, w3, b3):
    h = F.leaky_relu(F.conv2d(x, w1, stride=2, padding=1), 0.2)
    h = F.leaky_relu(F.conv2d(h, w2, stride=2, padding=1), 0.2)
    return F.linear(h.flatten(1), w3, b3)


def penalty_case(out, name, x, params, penalty):
    ps = [p.clone().requires_grad_(True) for p in params]
    x = x.clone().requires_grad_(True)
    d = critic(x, *ps)
    (gx,) = torch.autograd.grad(d, x, torch.ones_like(d), create_graph=True)
    p = penalty(gx.flatten(1))
    # The last bias shifts D's output and not its gradient: no penalty gradient (stored as zeros).
    grads = torch.autograd.grad(p, ps, allow_unused=True)
    out[f"{name}.x"] = x.detach()
    out[f"{name}.penalty"] = p.detach().reshape(1)
    for k, gk, pk in zip(["w1", "w2", "w3", "b3"], grads, params):
        out[f"{name}.grad_{k}"] = gk if gk is not None else torch.zeros_like(pk)


def main():
    g = torch.Generator().manual_seed(2017)
    out = {}
    op_case(out, g, "conv2d", lambda x, w: F.conv2d(x, w, stride=2, padding=1),
            [randn32(g, 2, 2, 6, 6), randn32(g, 3, 2, 4, 4)])
    op_case(out, g, "conv_transpose2d", lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1),
            [randn32(g, 2, 3, 3, 3), randn32(g, 3, 2, 4, 4)])
    op_case(out, g, "linear", lambda x, w, b: F.linear(x, w, b),
            [randn32(g, 3, 5), randn32(g, 4, 5), randn32(g, 4)])
    x = away_from_zero(randn32(g, 3, 5))
    for name, act in [("relu", F.relu), ("leaky_relu", lambda t: F.leaky_relu(t, 0.2)),
                      ("tanh", torch.tanh), ("sigmoid", torch.sigmoid)]:
        op_case(out, g, f"{name}_times_x", lambda t, act=act: act(t) * t, [x])
    for target in [0.0, 1.0]:
        op_case(out, g, f"bce_t{int(target)}",
                lambda t, target=target: F.binary_cross_entropy_with_logits(t, torch.full_like(t, target)).reshape(1),
                [randn32(g, 7, std=2.0)])

    # The critic, DCGAN-initialised (weights N(0, 0.02)) but wider-spread so the gradients are not tiny.
    params = [randn32(g, 3, 1, 4, 4, std=0.3), randn32(g, 4, 3, 4, 4, std=0.3), randn32(g, 1, 16, std=0.3),
              randn32(g, 1, std=0.3)]
    real, fake = randn32(g, 4, 1, 8, 8), randn32(g, 4, 1, 8, 8)
    eps = torch.rand(4, 1, 1, 1, generator=g, dtype=torch.float32).double()
    x_hat = (fake + eps * (real - fake)).float().double()
    lam, gamma = 10.0, 1.0
    penalty_case(out, "gp", x_hat, params, lambda gr: lam * ((gr.norm(2, dim=1) - 1) ** 2).mean())
    penalty_case(out, "r1", real, params, lambda gr: gamma / 2 * (gr ** 2).sum(1).mean())
    for k, p in zip(["w1", "w2", "w3", "b3"], params):
        out[f"critic.{k}"] = p

    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in sorted(out.items())}
    meta = {"generator": "scripts/gen_double_backward_golden.py", "torch": torch.__version__,
            "gp_lambda": str(lam), "r1_gamma": str(gamma), "leaky_slope": "0.2"}
    save_file(tensors, OUT, metadata={"info": json.dumps(meta, sort_keys=True)})
    print(f"{OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
