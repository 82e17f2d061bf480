"""Tiny image datasets in the exact on-disk formats of the real ones (CIFAR-10/100 python pickles, SVHN MATLAB
files, CINIC-10 PNG trees), for the loader tests and for the end-to-end smoke runs of the image targets in CI.

torchvision checks each CIFAR / SVHN file against the MD5 of the published file, which a tiny file cannot match:
`fake_image_data` therefore points torchvision's class-level MD5 tables at the tiny files (through pytest's
monkeypatch), so its own integrity check still runs.
"""
from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import scipy.io
import torchvision.datasets.utils as tv_utils
from PIL import Image
from torchvision.datasets import CIFAR10, CIFAR100, SVHN

md5 = tv_utils.calculate_md5
PIXEL = (2, 5)  # (row, col) of the pixel written as R=1, G=2, B=3 in the first image of each set


class Py2Str(bytes):
    """A Python 2 `str`, as in the real CIFAR pickles (written by Python 2): Python 3 reads it back as str under
    encoding="latin1" (torchvision) and as bytes under encoding="bytes" (the CIFAR page's snippet: b"data")."""


class Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj):
        n = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def _dump(path, obj):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


def _cifar_images(n, seed):
    """n images as CIFAR rows: uint8 n x 3072 = R plane, G plane, B plane, each 32 x 32 row-major."""
    rows = np.random.default_rng(seed).integers(10, 250, size=(n, 3072), dtype=np.uint8)
    r, c = PIXEL
    rows[0, [0 * 1024 + r * 32 + c, 1 * 1024 + r * 32 + c, 2 * 1024 + r * 32 + c]] = [1, 2, 3]
    return rows


def _batch(label_key, labels, seed, title):
    out = {Py2Str(b"batch_label"): Py2Str(title.encode()), Py2Str(label_key): list(labels),
           Py2Str(b"data"): _cifar_images(len(labels), seed),
           Py2Str(b"filenames"): [Py2Str(f"img_{seed}_{i}.png".encode()) for i in range(len(labels))]}
    if label_key == b"fine_labels":
        out[Py2Str(b"coarse_labels")] = [y // 5 for y in labels]
    return out


def _patch_cifar_md5(monkeypatch, cls, folder_):
    """Point torchvision's per-file MD5 table at the tiny files (see the module docstring)."""
    monkeypatch.setattr(cls, "train_list", [[f, md5(os.path.join(folder_, f))] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5(os.path.join(folder_, f))] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(os.path.join(folder_, cls.meta["filename"]))})


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root, per_batch: int = 2) -> tuple[list[int], list[int]]:
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    train = []
    for i in range(1, 6):
        labels = [(i + 5 * k) % 10 if k < 2 else (i * 7 + k) % 10 for k in range(per_batch)]
        _dump(os.path.join(d, f"data_batch_{i}"), _batch(b"labels", labels, i, f"training batch {i} of 5"))
        train += labels
    test = [3, 1, 4]
    _dump(os.path.join(d, "test_batch"), _batch(b"labels", test, 99, "testing batch 1 of 1"))
    _dump(os.path.join(d, "batches.meta"), {Py2Str(b"num_cases_per_batch"): 10000, Py2Str(b"num_vis"): 3072,
                                            Py2Str(b"label_names"): [Py2Str(n.encode()) for n in CIFAR10_NAMES]})
    return train, test


def write_cifar100(root, n_train: int = 4) -> tuple[list[int], list[int]]:
    d = os.path.join(root, "cifar-100-python")
    os.makedirs(d)
    train, test = [0, 99, 42, 7] + [(13 * i) % 100 for i in range(n_train - 4)], [55, 3, 17, 88]
    _dump(os.path.join(d, "train"), _batch(b"fine_labels", train, 1, "training batch 1 of 1"))
    _dump(os.path.join(d, "test"), _batch(b"fine_labels", test, 2, "testing batch 1 of 1"))
    _dump(os.path.join(d, "meta"), {Py2Str(b"fine_label_names"): [Py2Str(f"c{i}".encode()) for i in range(100)],
                                    Py2Str(b"coarse_label_names"): [Py2Str(f"s{i}".encode()) for i in range(20)]})
    return train, test


def write_svhn(root, split, digits, seed) -> None:
    """`<root>/SVHN/<split>_32x32.mat` as published: X uint8 32 x 32 x 3 x N, y uint8 N x 1, digit 0 labelled 10."""
    x = np.random.default_rng(seed).integers(10, 250, size=(32, 32, 3, len(digits)), dtype=np.uint8)
    x[PIXEL[0], PIXEL[1], :, 0] = [1, 2, 3]
    y = np.array([[10 if d == 0 else d] for d in digits], dtype=np.uint8)
    os.makedirs(os.path.join(root, "SVHN"), exist_ok=True)
    scipy.io.savemat(os.path.join(root, "SVHN", f"{split}_32x32.mat"), {"X": x, "y": y})


def write_tree(base, splits: dict[str, int], classes, size=(32, 32), mode="RGB") -> None:
    """`<base>/<split>/<class>/<i>.png`; pixel (0, 0) of each image = (index of the class among the sorted class
    names, split index, i), all other pixels 100."""
    for si, (split, n) in enumerate(splits.items()):
        for cls in classes:
            ci = sorted(classes).index(cls)
            os.makedirs(os.path.join(base, split, cls), exist_ok=True)
            for i in range(n):
                a = np.full((size[1], size[0], 3), 100, dtype=np.uint8)
                a[0, 0] = (ci, si, i)
                Image.fromarray(a).convert(mode).save(os.path.join(base, split, cls, f"img{i}.png"))


def fake_image_data(root, monkeypatch, per_batch: int = 8) -> str:
    """Write tiny CIFAR-10, CIFAR-100, SVHN and CINIC-10 under `root` and accept them in torchvision's checks."""
    write_cifar10(root, per_batch)
    _patch_cifar_md5(monkeypatch, CIFAR10, os.path.join(root, "cifar-10-batches-py"))
    write_cifar100(root, 5 * per_batch)
    _patch_cifar_md5(monkeypatch, CIFAR100, os.path.join(root, "cifar-100-python"))
    rng = np.random.default_rng(0)
    for i, split in enumerate(("train", "test", "extra")):
        write_svhn(root, split, rng.integers(0, 10, size=4 * per_batch).tolist(), i)
    table = {k: [url, f, md5(os.path.join(root, "SVHN", f))] for k, (url, f, _) in SVHN.split_list.items()}
    monkeypatch.setattr(SVHN, "split_list", table)
    from data import cinic10

    monkeypatch.setattr(cinic10, "EXPECTED_PER_SPLIT", None)  # the real archive's 90,000 per split
    write_tree(os.path.join(root, "CINIC-10"), {"train": 3, "valid": 1, "test": 2}, cinic10.CLASSES)
    for folder in ("imagenet", "webvision"):  # ImageFolder trees, images of another size (resized to 32x32)
        write_tree(os.path.join(root, folder), {"train": 6, "val": 2}, ["n01", "n02", "n03"], size=(40, 36))
    return str(root)


def run_smoke(base, targets: list[str]) -> dict[str, int]:
    """Run `targets` at the smoke budget (seed 0) on tiny image datasets written under `base`/data, through the
    command line in-process; results under `base`/results, the report at `base`/REPORT.md. Returns exit codes."""
    from _pytest.monkeypatch import MonkeyPatch

    from benchmarks.cli import main

    mp = MonkeyPatch()
    try:
        root = fake_image_data(os.path.join(base, "data"), mp)
        return {t: main([t, "--budget", "smoke", "--seeds", "0", "--device", "cpu", "--data", root, "--no-download",
                         "--results", os.path.join(base, "results"), "--report", os.path.join(base, "REPORT.md")])
                for t in targets}
    finally:
        mp.undo()


def write_cifar_webp(root, name: str = "cifar10", n_train: int = 12, n_test: int = 5, per_file: int = 6,
                     per_row: int = 4, seed: int = 0) -> dict:
    """A tiny copy of `../shared/data/CIFAR10` (`CIFAR100`) in exactly its format: lossless WebP mosaics of
    `per_file` 32 x 32 tiles on a `per_row`-wide grid (row-major, unused tiles black), `labels.npz` and
    `meta.json` with the sha256 of the decoded N x 32 x 32 x 3 uint8 arrays. Returns the arrays written."""
    import hashlib
    import json

    folder_ = os.path.join(root, {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}[name])
    os.makedirs(folder_, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_classes = 10 if name == "cifar10" else 100
    out, files = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        out[f"x_{split}"], out[f"y_{split}"] = x, rng.integers(0, n_classes, n).astype(np.int16)
        files[split] = []
        rows = -(-per_file // per_row)
        for j, start in enumerate(range(0, n, per_file)):
            tiles = np.zeros((rows * per_row, 32, 32, 3), np.uint8)
            part = x[start:start + per_file]
            tiles[:len(part)] = part
            mosaic = tiles.reshape(rows, per_row, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 32, per_row * 32, 3)
            fname = f"{split}_{j}.webp"
            Image.fromarray(mosaic).save(os.path.join(folder_, fname), lossless=True)
            files[split].append(fname)
    np.savez(os.path.join(folder_, "labels.npz"), y_train=out["y_train"], y_test=out["y_test"])
    meta = {"dataset": name, "tile": [32, 32, 3], "per_file": per_file, "tiles_per_row": per_row, "files": files,
            "sha256": {k: hashlib.sha256(out[k].tobytes()).hexdigest() for k in ("x_train", "x_test")},
            "classes": [f"class{i}" for i in range(n_classes)]}
    with open(os.path.join(folder_, "meta.json"), "w") as f:
        json.dump(meta, f)
    return out
