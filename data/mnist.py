"""MNIST and Fashion-MNIST through torchvision (raw IDX files under <root>/<Class>/raw, torchvision's layout)."""
from __future__ import annotations

import os

import torchvision

from .registry import Splits, register_dataset

_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _present(cls):
    def present(root: str) -> bool:
        raw = os.path.join(root, cls.__name__, "raw")
        return all(os.path.isfile(os.path.join(raw, f)) for f in _RAW)

    return present


def _load(cls, name: str, root: str, download: bool) -> Splits:
    # torchvision verifies the MD5 of each archive it downloads; with the files present it reads them as they are.
    download = download and not _present(cls)(root)
    tr = cls(root, train=True, download=download)
    te = cls(root, train=False, download=download)
    return Splits(
        name=name,
        x_train=tr.data.unsqueeze(1).contiguous(),  # uint8 N x 1 x 28 x 28
        y_train=tr.targets.long(),
        x_test=te.data.unsqueeze(1).contiguous(),
        y_test=te.targets.long(),
        num_classes=10,
        kind="image",
    )


@register_dataset("mnist", _present(torchvision.datasets.MNIST))
def mnist(root: str, download: bool = True) -> Splits:
    """MNIST (LeCun et al.), 60,000 train / 10,000 test; BLCL Table IV."""
    return _load(torchvision.datasets.MNIST, "mnist", root, download)


@register_dataset("fashion_mnist", _present(torchvision.datasets.FashionMNIST))
def fashion_mnist(root: str, download: bool = True) -> Splits:
    """Fashion-MNIST (Xiao et al. 2017), 60,000 train / 10,000 test."""
    return _load(torchvision.datasets.FashionMNIST, "fashion_mnist", root, download)
