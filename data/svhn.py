"""SVHN, cropped digits (Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/) through torchvision.

torchvision's SVHN class holds the URL and MD5 of each `.mat` file (STYLE pattern 5), downloads it, checks the MD5
on every load and maps label 10 (the digit 0) to 0. We keep its files in `<root>/SVHN/` (`train_32x32.mat`,
`test_32x32.mat`, `extra_32x32.mat`: torchvision's layout inside a folder of their own, as MNIST has `<root>/MNIST`).
Images come back as uint8 N x 3 x 32 x 32, labels 0-9.

BLCL does not say whether SVHN's `extra` split is used, so both settings are registered:
  svhn        train (73,257) / test (26,032)  -- the default;
  svhn_extra  train + extra (73,257 + 531,131 = 604,388) / test (26,032).
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torchvision.datasets import SVHN

from .registry import Splits, register_dataset

FOLDER = "SVHN"
# Per-channel mean / std of the train split in [0, 1], the values widely quoted in SVHN code; not recomputed here.
# svhn_extra uses the same values (the train split's).
STATS = {"mean": [0.4377, 0.4438, 0.4728], "std": [0.1980, 0.2010, 0.1970]}


def _path(root: str, split: str) -> str:
    return os.path.join(root, FOLDER, SVHN.split_list[split][1])


def _present(splits: tuple[str, ...]):
    def present(root: str) -> bool:
        return all(os.path.isfile(_path(root, s)) for s in splits)

    return present


def _read(name: str, root: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    path = _path(root, split)
    url = SVHN.split_list[split][0]
    present = os.path.isfile(path)
    if not present and not download:
        raise FileNotFoundError(f"{name}: {path} not found in {os.path.dirname(path)}; load with download=True, or "
                                f"put {url} there")
    try:
        ds = SVHN(os.path.join(root, FOLDER), split=split, download=not present)  # at most one download per file
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" / "File not found or corrupted."
        raise RuntimeError(f"{name}: {path} is truncated or not the published file (torchvision's MD5 check "
                           f"failed); delete it and load again with download=True to fetch {url}") from e
    return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels).long()


def _load(name: str, train_splits: tuple[str, ...], root: str, download: bool) -> Splits:
    parts = [_read(name, root, s, download) for s in train_splits]
    x_test, y_test = _read(name, root, "test", download)
    return Splits(
        name=name,
        x_train=torch.cat([x for x, _ in parts]) if len(parts) > 1 else parts[0][0],
        y_train=torch.cat([y for _, y in parts]) if len(parts) > 1 else parts[0][1],
        x_test=x_test,
        y_test=y_test,
        num_classes=10,
        kind="image",
        meta={**STATS, "train_splits": list(train_splits)},
    )


@register_dataset("svhn", _present(("train", "test")))
def svhn(root: str, download: bool = True) -> Splits:
    """SVHN train (73,257) / test (26,032), without `extra` (the default reading of BLCL)."""
    return _load("svhn", ("train",), root, download)


@register_dataset("svhn_extra", _present(("train", "extra", "test")))
def svhn_extra(root: str, download: bool = True) -> Splits:
    """SVHN train + extra (604,388) / test (26,032)."""
    return _load("svhn_extra", ("train", "extra"), root, download)
