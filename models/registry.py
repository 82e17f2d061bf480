"""Model registry (in the style of timm's `register_model`): one decorator, one file per model family.

A model factory takes the dataset's facts (`num_classes`, `in_shape`, and `vocab_size` for text) plus its own
keyword arguments. `input_kind` says which data it accepts, so a target pairing a text model with images fails
before anything runs.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    input_kind: str  # "image" | "text"

    def options(self) -> set[str]:
        sig = inspect.signature(self.fn)
        return {p for p in sig.parameters if p not in {"num_classes", "in_shape", "vocab_size"}}


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, input_kind: str):
    def deco(fn):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, fn, input_kind)
        return fn

    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, num_classes: int, in_shape: tuple[int, ...], vocab_size: int | None = None,
                 **kwargs) -> nn.Module:
    entry = model_entry(name)
    bad = set(kwargs) - entry.options()
    if bad:
        raise KeyError(f"model {name!r} has no option {sorted(bad)}; allowed: {sorted(entry.options())}")
    facts = {"num_classes": num_classes, "in_shape": tuple(in_shape)}
    if "vocab_size" in inspect.signature(entry.fn).parameters:
        facts["vocab_size"] = vocab_size
    return entry.fn(**facts, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
