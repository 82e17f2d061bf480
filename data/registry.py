"""Dataset registry: a name maps to a loader returning tensors ready to live on the training device."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

_DATASETS: dict[str, Callable[..., "Splits"]] = {}
_FILES: dict[str, Callable[[str], bool]] = {}
_KINDS: dict[str, str] = {}


@dataclass
class Splits:
    """Train/test tensors of one dataset (images as uint8 N x C x H x W, text as int64 token ids N x L)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kind: str  # "image" | "text"
    meta: dict = field(default_factory=dict)  # e.g. vocab_size, split seed, tokenizer

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def register_dataset(name: str, present: Callable[[str], bool], kind: str = "image"):
    """Decorator: register `fn(root, download) -> Splits` under `name`; `present(root)` says if files exist,
    `kind` ("image" | "text") which models can read it."""

    def deco(fn):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        _DATASETS[name] = fn
        _FILES[name] = present
        _KINDS[name] = kind
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def dataset_kind(name: str) -> str:
    return _KINDS[name]


def dataset_present(name: str, root: str) -> bool:
    return _FILES[name](root)


def load_dataset(name: str, root: str, download: bool = True) -> Splits:
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _DATASETS[name](root, download)
