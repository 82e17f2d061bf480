"""The one interface between the training engine and a method.

The engine builds one network per entry of `roles` (same backbone), an optimizer and LR schedule for each, and
for every mini-batch calls `train_step(batch, ctx)`. The method sees networks only through their logits and
per-sample losses; it asks the engine to take an optimisation step with `ctx.update(role, scalar_loss)`, so
it controls the order (BLCL Algorithm 1 updates the teacher before the student). Hooks at epoch boundaries let
a method choose the epoch's training samples (curricula such as MEKD/DCD) and log per-epoch extras.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn as nn


@dataclass
class Batch:
    x: torch.Tensor  # inputs on the training device (augmented)
    y: torch.Tensor  # training labels (possibly noisy)
    idx: torch.Tensor  # indices of the samples in the training set (for per-sample state)


@dataclass
class StepOut:
    loss: torch.Tensor  # per-sample training objective of the reported network, detached, shape (N,)
    logits: torch.Tensor  # reported network's logits, detached
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # scalars averaged over the epoch


class StepContext(Protocol):
    nets: dict[str, nn.Module]
    epoch: int  # 0-based
    progress: float  # fraction of all training steps done before this one, in [0, 1)
    device: torch.device

    def update(self, role: str, loss: torch.Tensor) -> None:
        """zero_grad, backward `loss`, apply the model's constraints and step the optimizer of `role`."""


class Method:
    """Base class. Subclasses set `name`, `Config` (a dataclass of hyper-parameters), `roles` and `reported`."""

    name: str = ""
    roles: tuple[str, ...] = ("model",)
    reported: str = "model"

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: Any, num_classes: int, num_train: int):
        self.cfg = config
        self.num_classes = num_classes
        self.num_train = num_train

    def setup(self, ctx: StepContext) -> None:
        """Called once before training, e.g. to create per-sample parameters on `ctx.device`."""

    def train_step(self, batch: Batch, ctx: StepContext) -> StepOut:
        raise NotImplementedError

    def epoch_indices(self, epoch: int, ctx: StepContext) -> torch.Tensor | None:
        """Training-set indices to use this epoch (None: all samples)."""
        return None

    def on_epoch_end(self, epoch: int, ctx: StepContext, noisy_mask: torch.Tensor) -> dict[str, Any]:
        """Per-epoch extras stored in the run's history (JSON-serialisable). `noisy_mask` marks the training
        samples whose label was corrupted: for analysis (e.g. Data Parameters Fig. 4) only, never for training."""
        return {}


def config_fields(config_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}
