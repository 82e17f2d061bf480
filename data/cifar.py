"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html) through torchvision.

torchvision's CIFAR10/CIFAR100 classes hold the archive URL, its MD5 and the MD5 of every member file (STYLE
pattern 5); they download `cifar-10-python.tar.gz` / `cifar-100-python.tar.gz` into `<root>` and unpack
`<root>/cifar-10-batches-py` / `<root>/cifar-100-python`, and check every batch file's MD5 on each load. We do not
copy those checksums. 50,000 train / 10,000 test images, returned as uint8 N x 3 x 32 x 32 (RGB planes); CIFAR-100
uses the 100 fine labels. A missing, truncated or altered file is a RuntimeError naming it; nothing is downloaded
again when the files are present (download is only tried when some file is missing, once). When the archive's files
are absent but `<root>/CIFAR10/meta.json` (`CIFAR100/`) is there, the lossless WebP copy is read instead
(data/cifar_webp.py); `Splits.meta["source"]` says which copy was read.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity

from . import cifar_webp
from .registry import Splits, register_dataset

# Per-channel mean / std of the training images scaled to [0, 1] (pixel-level over the whole training set), the
# values widely quoted in CIFAR code (e.g. timm, pytorch-cifar100); not recomputed here. Note the much-copied CIFAR-10
# std (0.2023, 0.1994, 0.2010) of kuangliu/pytorch-cifar, which apple/ml-data-parameters also uses for CIFAR-100, is
# a different statistic: a method that wants it sets its own.
STATS = {
    "cifar10": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]},
    "cifar100": {"mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762]},
}


def _files(cls: type[CIFAR10]) -> list[tuple[str, str]]:
    """(file name, md5) of every file torchvision checks, read from the class so a sibling's override applies."""
    return [(f, md5) for f, md5 in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]


def _archive_present(cls: type[CIFAR10], root: str) -> bool:
    folder = os.path.join(root, cls.base_folder)
    return all(os.path.isfile(os.path.join(folder, f)) for f, _ in _files(cls))


def _present(cls: type[CIFAR10], name: str):
    def present(root: str) -> bool:
        return _archive_present(cls, root) or cifar_webp.present(root, name)

    return present


def _nchw(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()  # torchvision gives N x H x W x C


def _load(cls: type[CIFAR10], name: str, num_classes: int, root: str, download: bool) -> Splits:
    """The published archive when its files are there (first choice), else the WebP copy when `<root>/CIFAR10/
    meta.json` is there (data/cifar_webp.py), else a download of the archive (when allowed)."""
    folder = os.path.join(root, cls.base_folder)
    present = _archive_present(cls, root)
    if not present and cifar_webp.present(root, name):
        splits, classes, source = cifar_webp.load(root, name)
        (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
        return Splits(name=name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=num_classes,
                      kind="image", meta={**STATS[name], "classes": classes, "source": source})
    if not present and not download:
        raise FileNotFoundError(f"{name}: {folder} is missing or incomplete; load with download=True, or unpack "
                                f"{cls.url} into {root}")
    try:
        tr = cls(root, train=True, download=not present)  # downloads at most once, then checks every member's MD5
        te = cls(root, train=False, download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" / "... metadata file ..."
        bad = [os.path.join(folder, f) for f, md5 in _files(cls) if not check_integrity(os.path.join(folder, f), md5)]
        archive = os.path.join(root, cls.filename)
        if not present and os.path.isfile(archive) and not check_integrity(archive, cls.tgz_md5):
            bad = [archive]  # the download itself failed its check: nothing was unpacked
        raise RuntimeError(f"{name}: {', '.join(bad) or folder} missing, truncated or not the published file "
                           f"(torchvision's MD5 check failed); delete the file(s) named and load again with "
                           f"download=True to fetch {cls.url}") from e
    return Splits(
        name=name,
        x_train=_nchw(tr.data),
        y_train=torch.tensor(tr.targets, dtype=torch.long),
        x_test=_nchw(te.data),
        y_test=torch.tensor(te.targets, dtype=torch.long),
        num_classes=num_classes,
        kind="image",
        meta={**STATS[name], "classes": list(tr.classes),
              "source": {"copy": "torchvision-archive", "path": os.path.abspath(folder), "url": cls.url,
                         "md5": cls.tgz_md5}},
    )


@register_dataset("cifar10", _present(CIFAR10, "cifar10"))
def cifar10(root: str, download: bool = True) -> Splits:
    """CIFAR-10: 10 classes, 50,000 train / 10,000 test, 32 x 32 RGB."""
    return _load(CIFAR10, "cifar10", 10, root, download)


@register_dataset("cifar100", _present(CIFAR100, "cifar100"))
def cifar100(root: str, download: bool = True) -> Splits:
    """CIFAR-100: 100 fine classes, 50,000 train / 10,000 test, 32 x 32 RGB."""
    return _load(CIFAR100, "cifar100", 100, root, download)
