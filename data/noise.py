"""Label noise as a data transform, independent of the training method.

Deterministic in (dataset, kind, rate, seed), so every method of a matrix sees the same corrupted labels.
Exactly round(rate * N) samples are selected (a seeded permutation), then
- `symmetric`: each selected label is replaced by a uniformly drawn *other* class (all selected are corrupted);
- `uniform`: each selected label is replaced by a uniformly drawn class, possibly the same (rate 1.0 = random labels);
- `shuffle`: the official Data Parameters code (apple/ml-data-parameters, dataset/cifar_dataset.py; FACTS.md): the
  images of the first floor(rate * N) training samples (in dataset order, not a random selection) are permuted
  among themselves and the labels stay put. We permute those samples' labels instead, which yields the same set
  of (image, label) pairs while images keep their indices; some keep their true label by chance.
The returned mask marks samples whose label actually differs from the clean one.
"""
from __future__ import annotations

import hashlib

import torch

KINDS = ("none", "symmetric", "uniform", "shuffle")


def _generator(dataset: str, kind: str, rate: float, seed: int) -> torch.Generator:
    key = f"{dataset}|{kind}|{rate:.6f}|{seed}".encode()
    return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def corrupt_labels(labels: torch.Tensor, num_classes: int, kind: str, rate: float, seed: int,
                   dataset: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (noisy labels, corrupted mask). Rate 0 or kind `none` returns the labels unchanged."""
    if kind not in KINDS:
        raise ValueError(f"unknown label-noise kind {kind!r}; allowed: {', '.join(KINDS)}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"label-noise rate {rate!r} must lie in [0, 1]")
    labels = labels.clone().long()
    if kind == "none" or rate == 0.0:
        return labels, torch.zeros_like(labels, dtype=torch.bool)
    g = _generator(dataset, kind, rate, seed)
    n = labels.numel()
    if kind == "shuffle":
        k = int(rate * n)  # floor, as the official code
        noisy = labels.clone()
        noisy[:k] = labels[:k][torch.randperm(k, generator=g)]
        return noisy, noisy != labels
    chosen = torch.randperm(n, generator=g)[: round(rate * n)]
    if kind == "symmetric":
        shift = torch.randint(1, num_classes, (chosen.numel(),), generator=g)
        new = (labels[chosen] + shift) % num_classes
    else:
        new = torch.randint(0, num_classes, (chosen.numel(),), generator=g)
    noisy = labels.clone()
    noisy[chosen] = new
    return noisy, noisy != labels


def add_pixel_noise(images: torch.Tensor, alpha: float, seed: int, dataset: str = "", split: str = "train",
                    chunk: int = 8192) -> torch.Tensor:
    """Acquisition noise (DCD Sec. V-D, Table II): add N(0, alpha^2) to the raw uint8 pixels (alpha in 0-255
    units), round and clip to [0, 255]. Drawn once per (dataset, split, alpha, seed), so the noise is a fixed
    property of the images, the same for every method and for the teacher run of the same seed."""
    if alpha < 0:
        raise ValueError(f"pixel-noise alpha {alpha!r} must be >= 0")
    if alpha == 0:
        return images
    if images.dtype != torch.uint8:
        raise ValueError(f"pixel noise applies to raw uint8 images, got {images.dtype}")
    g = _generator(dataset, f"gaussian-{split}", float(alpha), seed)
    out = torch.empty_like(images)
    for i in range(0, len(images), chunk):  # chunks: a float copy of CINIC-10 at once would take 1 GB
        x = images[i : i + chunk].float()
        out[i : i + chunk] = (x + alpha * torch.randn(x.shape, generator=g)).round_().clamp_(0, 255).to(torch.uint8)
    return out
