"""Image-folder trees `<folder>/<split>/<class>/<image>` decoded once into uint8 tensors, cached as one file.

Shared by CINIC-10 and user-provided ImageNet-style folders. The tree is read with torchvision's own ImageFolder
rules (`torchvision.datasets.folder.find_classes` / `make_dataset`: classes are the sorted sub-folder names, a
label is the index in that list, files are those with an image extension, in sorted order). Images are decoded
with PIL to RGB and, where not already `size` x `size`, squashed to that square with Pillow's box filter (the
down-sampling of ImageNet32, Chrabaszcz et al. 2017, that CINIC-10 also used). STYLE pattern 6: decode once into a
tensor file; later loads read that file, never the images. The cache records, per split, the class list and the
file count; when either disagrees with the tree on disk (or the size differs, or the file is unreadable) it is
rebuilt. It is written atomically (temporary file in the same folder, then os.replace).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

CACHE_FORMAT = 1
Samples = list[tuple[str, int]]


def list_split(split_dir: str) -> tuple[list[str], Samples]:
    """Sorted class names and (path, label) pairs of one split, as torchvision's ImageFolder lists them."""
    classes, class_to_idx = find_classes(split_dir)
    return classes, make_dataset(split_dir, class_to_idx, extensions=IMG_EXTENSIONS)


def read_image(path: str, size: int) -> np.ndarray:
    """One image as uint8 H x W x 3 RGB, box-resized to size x size where it is not already that size."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BOX)
            return np.array(im, dtype=np.uint8)
    except OSError as e:  # truncated or not an image: name the file
        raise RuntimeError(f"cannot read image {path}: {e}; replace or delete the file") from e


def read_split(samples: Samples, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every listed image: uint8 N x 3 x size x size and int64 labels."""
    x = torch.empty((len(samples), 3, size, size), dtype=torch.uint8)
    for i, (path, _) in enumerate(samples):
        x[i] = torch.from_numpy(read_image(path, size)).permute(2, 0, 1)
    return x, torch.tensor([label for _, label in samples], dtype=torch.long)


def save_atomic(obj: object, path: str) -> None:
    """torch.save to a temporary file beside `path`, then os.replace: readers never see a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_cache(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign file: rebuild it
        return None


def load_tree(folder: str, splits: Sequence[str], size: int,
              cache_name: str) -> tuple[list[str], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Class names and {split: (x uint8 N x 3 x size x size, y int64)} of `<folder>/<split>/<class>/*`, read from
    the cache `<folder>/<cache_name>` when it matches the tree, else decoded and cached. Every split must have the
    same class folders (labels then mean the same class in every split)."""
    listing = {s: list_split(os.path.join(folder, s)) for s in splits}
    classes = listing[splits[0]][0]
    for s, (names, _) in listing.items():
        if names != classes:
            raise RuntimeError(f"{os.path.join(folder, s)} has class folders {names}, "
                               f"but {os.path.join(folder, splits[0])} has {classes}")
    key = {"format": CACHE_FORMAT, "size": size, "classes": classes,
           "counts": {s: len(samples) for s, (_, samples) in listing.items()}}
    path = os.path.join(folder, cache_name)
    cache = _read_cache(path)
    if cache is None or cache.get("key") != key:
        cache = {"key": key, "x": {}, "y": {}}
        for s, (_, samples) in listing.items():
            cache["x"][s], cache["y"][s] = read_split(samples, size)
        save_atomic(cache, path)
    return classes, {s: (cache["x"][s], cache["y"][s]) for s in splits}
