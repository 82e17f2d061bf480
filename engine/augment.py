"""Whole-batch augmentation on the training device (no per-sample Python): pad-4 random crop, horizontal flip.

`crop_flip` is the He et al. (2016) CIFAR augmentation that BLCL follows; `crop` (no flip) is our choice for
digits, where a mirrored digit is another glyph; `none` for MLP inputs and text.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAD = 4


def random_crop(x: torch.Tensor, g: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """Zero-pad by `pad` and cut a random h x w window per sample (two gathers, no Python loop)."""
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=x.device, generator=g)
    rows = dy + torch.arange(h, device=x.device)  # n x h
    cols = dx + torch.arange(w, device=x.device)  # n x w
    xp = xp.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    return xp.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], device=x.device, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _none(x, g):
    return x


def _crop(x, g):
    return random_crop(x, g)


def _crop_flip(x, g):
    return random_flip(random_crop(x, g), g)


AUGMENTS = {"none": _none, "crop": _crop, "crop_flip": _crop_flip}
