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
