"""CIFAR-10 / CIFAR-100 as lossless WebP mosaics (the copy in this project's `../shared/data`, see its README.md).

Layout of `<root>/CIFAR10/` (`CIFAR100/`): `meta.json` lists the mosaic files of each split in order and the
sha256 of each split's decoded uint8 array (N x 32 x 32 x 3, HWC, C-contiguous, file order); each mosaic holds
`per_file` tiles of 32 x 32 RGB on a `tiles_per_row`-wide grid, row-major (tile k at row k // 100, column k % 100);
`labels.npz` holds `y_train`, `y_test` and per-image flags. This is not the published archive (103 CIFAR-10 images
are JPEG stand-ins, the test orders differ), so torchvision's MD5 checks cannot apply: the sha256 of the decoded
arrays is checked instead, and every run records which copy it read (`Splits.meta["source"]`).

Decode once (STYLE pattern 6): the decoded arrays are cached in `$CLREPRO_CACHE` (default `~/.cache/clrepro`) as
`<name>-webp-<sha256 prefix>.pt`, keyed by the sha256 values of meta.json and each mosaic's size and mtime; a
cache that is missing, stale, unreadable or whose arrays fail the sha256 is rebuilt. A missing, truncated or
undecodable mosaic, a wrong mosaic size or a sha256 mismatch is a RuntimeError naming the file(s).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch
from PIL import Image

from .folder import _read_cache, save_atomic

CACHE_FORMAT = 1
FOLDERS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}
SPLITS = ("train", "test")


def folder(root: str, name: str) -> str:
    return os.path.join(root, FOLDERS[name])


def present(root: str, name: str) -> bool:
    """True when `<root>/CIFAR10/meta.json` (`CIFAR100/`) is there: this copy is then read instead of the archive."""
    return os.path.isfile(os.path.join(folder(root, name), "meta.json"))


def cache_dir() -> str:
    return os.environ.get("CLREPRO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "clrepro")


def read_meta(root: str, name: str) -> dict:
    path = os.path.join(folder(root, name), "meta.json")
    try:
        with open(path) as f:
            meta = json.load(f)
        for key in ("files", "sha256", "per_file", "tile", "tiles_per_row"):
            meta[key]  # noqa: B018  (a KeyError names the missing key)
        for s in SPLITS:
            meta["files"][s], meta["sha256"][f"x_{s}"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"{name}: {path} is unreadable or lacks {e}; it must list 'files' per split, "
                           f"'sha256' of x_train/x_test, 'per_file', 'tile' and 'tiles_per_row'") from e
    return meta


def decode_mosaic(path: str, count: int, tile: tuple[int, int, int], per_row: int) -> np.ndarray:
    """One mosaic file -> its first `count` tiles, uint8 count x H x W x C (tile k at row k // per_row, column
    k % per_row). The mosaic must be `per_row` tiles wide and a whole number of tile rows, at least as many as
    `count` tiles fill."""
    h, w, c = tile
    rows = -(-count // per_row)
    if not os.path.isfile(path):
        raise RuntimeError(f"mosaic {path} is missing; restore it from the dataset's source (see README.md there)")
    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:  # truncated or not an image: name the file
        raise RuntimeError(f"mosaic {path} is truncated or not a decodable image ({e}); restore the file") from e
    if m.shape[1] != per_row * w or m.shape[0] % h or m.shape[0] < rows * h or m.shape[2] != c:
        raise RuntimeError(f"mosaic {path} is {m.shape[1]} x {m.shape[0]} pixels; {count} tiles of {w} x {h} "
                           f"on a {per_row}-wide grid need {per_row * w} x {rows * h}")
    full = m.shape[0] // h
    x = m.reshape(full, h, per_row, w, c).transpose(0, 2, 1, 3, 4).reshape(full * per_row, h, w, c)
    return np.ascontiguousarray(x[:count])


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _decode_split(root: str, name: str, meta: dict, split: str, n: int) -> np.ndarray:
    """The split's n images (n from labels.npz): every file holds `per_file` but the last, which holds the rest."""
    paths = [os.path.join(folder(root, name), f) for f in meta["files"][split]]
    per_file = int(meta["per_file"])
    if not (len(paths) - 1) * per_file < n <= len(paths) * per_file:
        raise RuntimeError(f"{name}: {n} {split} labels in labels.npz do not fit {len(paths)} mosaic file(s) of "
                           f"{per_file} images listed in {os.path.join(folder(root, name), 'meta.json')}")
    parts = [decode_mosaic(p, min(per_file, n - j * per_file), tuple(meta["tile"]), int(meta["tiles_per_row"]))
             for j, p in enumerate(paths)]
    x = np.concatenate(parts) if len(parts) > 1 else parts[0]
    want = meta["sha256"][f"x_{split}"]
    if sha256(x) != want:
        raise RuntimeError(f"{name}: the decoded {split} images of {', '.join(paths)} fail the sha256 in "
                           f"{os.path.join(folder(root, name), 'meta.json')} (want {want}); a file is altered or "
                           f"truncated: restore it")
    return x


def _nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def load(root: str, name: str) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[str], dict]:
    """{split: (x uint8 N x 3 x 32 x 32, y int64)}, the class names, and the source record for run JSONs."""
    meta = read_meta(root, name)
    base = folder(root, name)
    stats = {}
    for s in SPLITS:
        for f in meta["files"][s]:
            p = os.path.join(base, f)
            if not os.path.isfile(p):
                raise RuntimeError(f"mosaic {p} is missing; restore it from the dataset's source (see README.md there)")
            st = os.stat(p)
            stats[f] = [st.st_size, st.st_mtime_ns]
    labels_path = os.path.join(base, "labels.npz")
    try:
        with np.load(labels_path) as z:
            ys = {s: torch.from_numpy(z[f"y_{s}"].astype(np.int64)) for s in SPLITS}
    except (OSError, ValueError, KeyError) as e:
        raise RuntimeError(f"{name}: {labels_path} is missing, truncated or lacks y_train/y_test ({e})") from e
    key = {"format": CACHE_FORMAT, "sha256": meta["sha256"], "files": stats}
    path = os.path.join(cache_dir(), f"{name}-webp-{meta['sha256']['x_train'][:16]}.pt")
    cache = _read_cache(path)
    xs = None
    if cache is not None and cache.get("key") == key:
        xs = {s: cache["x"][s] for s in SPLITS}
        if any(sha256(xs[s].permute(0, 2, 3, 1).numpy()) != meta["sha256"][f"x_{s}"] for s in SPLITS):
            xs = None  # a damaged cache: decode again
    if xs is None:
        xs = {s: _nchw(_decode_split(root, name, meta, s, len(ys[s]))) for s in SPLITS}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_atomic({"key": key, "x": xs}, path)
    for s in SPLITS:
        if len(ys[s]) != len(xs[s]):
            raise RuntimeError(f"{name}: {labels_path} has {len(ys[s])} {s} labels for {len(xs[s])} images")
    source = {"copy": "webp-mosaics", "path": os.path.abspath(base),
              "sha256": {f"x_{s}": meta["sha256"][f"x_{s}"] for s in SPLITS}}
    return {s: (xs[s], ys[s]) for s in SPLITS}, list(meta.get("classes") or []), source
