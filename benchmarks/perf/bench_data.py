"""The bench workloads' data on disk: tiny MNIST copies and CIFAR-10 in torchvision's own layout (for the
anchors, which read files the way a researcher's loop does)."""
from __future__ import annotations

import os
import pickle
import struct
import tempfile

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_tiny_mnist(src_root: str, dst_root: str, n_train: int, n_test: int) -> None:
    """The first n samples of real MNIST as IDX files under dst_root/MNIST/raw (torchvision's layout), so the
    anchor, whose dataset is whatever the root holds, trains a tiny epoch too."""
    import numpy as np

    src, dst = os.path.join(src_root, "MNIST", "raw"), os.path.join(dst_root, "MNIST", "raw")
    os.makedirs(dst, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, magic, dims in (("images-idx3-ubyte", 2051, 3), ("labels-idx1-ubyte", 2049, 1)):
            name = f"{prefix}-{kind}"
            with open(os.path.join(src, name), "rb") as f:
                raw = f.read()
            shape = np.frombuffer(raw, dtype=">i4", count=dims + 1, offset=0)[1:]
            per = int(np.prod(shape[1:])) if dims > 1 else 1
            head = np.array([magic, n, *shape[1:]], dtype=">i4").tobytes()
            body = raw[4 * (dims + 1): 4 * (dims + 1) + n * per]
            with open(os.path.join(dst, name), "wb") as f:
                f.write(head + body)


def cifar_splits(n: int, n_test: int):
    """Random uint8 images of CIFAR's shape (n x 3 x 32 x 32), 10 classes; a timing, never an accuracy."""
    import torch

    from data import Splits

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + n_test, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    return Splits("cifar-shaped", x[:n], y[:n], x[n:], y[n:], 10, "image")


class _Py2Str(bytes):
    """A Python 2 `str`, as the keys of the published CIFAR pickles are (written by Python 2): torchvision reads them
    back as str (encoding="latin1"), the CIFAR page's snippet as bytes (encoding="bytes": b"data", b"labels")."""


class _Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2str(self, obj):
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n])) if n < 256 else (pickle.BINSTRING + struct.pack("<i", n)))
        self.write(obj)
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def write_torchvision_cifar10(splits, dst_root: str) -> None:
    """The uint8 arrays of `splits` (N x 3 x 32 x 32) in torchvision's on-disk layout of CIFAR-10:
    dst_root/cifar-10-batches-py/data_batch_1..5 (the training images in order, split in five), test_batch and
    batches.meta, each a protocol-2 pickle of a dict whose keys are Python 2 strs as in the published files; b"data"
    is uint8 N x 3072 (R, G, B planes of 32 x 32, row-major), b"labels" a list of ints."""
    import numpy as np
    import torch

    d = os.path.join(dst_root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)

    def dump(name: str, obj: dict) -> None:
        with open(os.path.join(d, name), "wb") as f:
            _Py2Pickler(f, protocol=2).dump({_Py2Str(k): v for k, v in obj.items()})

    def batch(x, y, title: str) -> dict:
        return {b"batch_label": _Py2Str(title.encode()), b"labels": [int(v) for v in y],
                b"data": np.ascontiguousarray(x.reshape(len(x), 3072).numpy(), dtype=np.uint8),
                b"filenames": [_Py2Str(f"img_{i}.png".encode()) for i in range(len(y))]}

    parts = np.array_split(np.arange(len(splits.y_train)), 5)
    for i, idx in enumerate(parts, 1):
        idx = torch.as_tensor(idx, dtype=torch.long)
        dump(f"data_batch_{i}", batch(splits.x_train[idx], splits.y_train[idx], f"training batch {i} of 5"))
    dump("test_batch", batch(splits.x_test, splits.y_test, "testing batch 1 of 1"))
    names = (splits.meta or {}).get("classes") or CIFAR10_CLASSES
    dump("batches.meta", {b"num_cases_per_batch": len(parts[0]), b"num_vis": 3072,
                          b"label_names": [_Py2Str(str(n).encode()) for n in names]})


def cifar10_torchvision_root(splits) -> str:
    """A folder holding `splits` (CIFAR-10 from the data root) in torchvision's layout, for the anchor: written once
    into the decoded-data cache ($CLREPRO_CACHE, default ~/.cache/clrepro), keyed by the sha256 of the decoded
    arrays (data/cifar_webp.py checked them against meta.json when it decoded the mosaics), reused while the key
    matches."""
    import hashlib
    import json
    import shutil

    from data.cifar_webp import cache_dir

    sha = ((splits.meta or {}).get("source") or {}).get("sha256") or {
        f"x_{s}": hashlib.sha256(getattr(splits, f"x_{s}").numpy().tobytes()).hexdigest() for s in ("train", "test")}
    key = {"format": 1, "sha256": sha, "n_train": len(splits.y_train), "n_test": len(splits.y_test),
           "labels": hashlib.sha256(splits.y_train.numpy().tobytes() + splits.y_test.numpy().tobytes()).hexdigest()}
    dst = os.path.join(cache_dir(), f"cifar10-torchvision-{sha['x_train'][:16]}")
    try:
        with open(os.path.join(dst, "key.json")) as f:
            if json.load(f) == key:
                return dst
    except (OSError, ValueError):
        pass
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="cifar10-torchvision-", dir=cache_dir())
    try:
        write_torchvision_cifar10(splits, tmp)
        with open(os.path.join(tmp, "key.json"), "w") as f:
            json.dump(key, f)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst
