"""A user-provided image folder: `<root>/imagefolder/{train,val}/<class>/<image>`, ImageNet / WebVision style.

This is the layout ImageNet (ILSVRC-2012) and WebVision have after the usual preparation (validation images moved
into one folder per class, as for torchvision's ImageFolder). Nothing is downloaded: these sets need an account or
a licence, so the files must be put there by hand. Classes are the sorted folder names of `train` (`val` must have
the same), labels their indices. Every image is decoded once, squashed to SIZE x SIZE with Pillow's box filter
(the down-sampled ImageNet of Chrabaszcz et al. 2017, arXiv:1707.08819) and cached in
`<root>/imagefolder/imagefolder-uint8.pt` (see data/folder.py).

SIZE is 32 because the suite keeps a whole dataset resident on the training device as uint8 tensors (STYLE
pattern 6): ImageNet at full resolution (1.28M images of ~400 x 350 px) does not fit that design, so the paper rows
that train at full resolution stay "not run"; this loader serves the down-sampled variant only.
"""
from __future__ import annotations

import os

from .folder import load_tree
from .registry import Splits, register_dataset

FOLDER = "imagefolder"
SPLITS = ("train", "val")
SIZE = 32
# ImageNet channel mean / std in [0, 1] (torchvision's model documentation); for another folder (e.g. WebVision,
# whose images are ImageNet-like) an approximation that a target may override.
STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _folder_dataset(name: str, folder_name: str, what: str):
    """Register `name`: `<root>/<folder_name>/{train,val}/<class>/<image>`, loaded as described above."""

    def present(root: str) -> bool:
        return all(os.path.isdir(os.path.join(root, folder_name, s)) for s in SPLITS)

    @register_dataset(name, present)
    def load(root: str, download: bool = True) -> Splits:
        folder = os.path.join(root, folder_name)
        if not present(root):
            raise FileNotFoundError(f"{name}: put {what} in {folder}/train/<class>/ and {folder}/val/<class>/ "
                                    f"(ImageFolder layout, same class folders in both); it is never downloaded")
        classes, data = load_tree(folder, SPLITS, SIZE, f"{folder_name}-uint8.pt")
        return Splits(name=name, x_train=data["train"][0], y_train=data["train"][1], x_test=data["val"][0],
                      y_test=data["val"][1], num_classes=len(classes), kind="image",
                      meta={**STATS, "classes": classes, "size": SIZE})

    load.__doc__ = f"{what}: train on `train`, test on `val`, images {SIZE} x {SIZE}; nothing is downloaded."
    return load


imagefolder = _folder_dataset("imagefolder", FOLDER, "the images")
imagenet = _folder_dataset("imagenet", "imagenet", "ILSVRC-2012 (train, and val sorted into class folders)")
webvision = _folder_dataset("webvision", "webvision", "WebVision (train, and its val sorted into class folders)")
