"""The one interface between the training engine and a method.

The engine builds one network per entry of `roles`, an optimizer and LR schedule for each trainable role, and
for every mini-batch calls `train_step(batch, ctx)`. The method sees networks only through their logits and
per-sample losses; it asks the engine to take an optimisation step with `ctx.update(role, scalar_loss)`, so
it controls the order (BLCL Algorithm 1 updates the teacher before the student). Hooks at epoch boundaries let
a method choose the epoch's training samples (curricula such as MEKD/DCD) and log per-epoch extras.

Roles:
- `roles` lists every network; `reported` is the one whose test accuracy is the run's result.
- `frozen` roles never train: no optimizer, always in eval mode. A frozen role is restored from another run's
  checkpoint, named in the run spec (`roles: {teacher: {model: ..., from_run: <spec>}}`), e.g. KD's teacher.
- Initial weights (`init_streams`): roles whose stream is `main` are drawn one after the other, in `roles`
  order, from the global generator seeded with the run seed; so for one seed ERM's `model`, BLCL's `student`
  and co-distillation's first peer start identical, and BLCL's teacher equals co-distillation's second peer.
  Any other stream is drawn from its own generator seeded by (seed, stream name), so adding a role never
  changes another role's weights.

Method state (per-sample parameters, an EMA, a curriculum window) lives in the method and is saved and restored
through `state_dict` / `load_state_dict` (tensors and plain Python values only).
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
    loss: torch.Tensor | None  # per-sample objective of the reported network, detached, (N,); None: it is the
    # per-sample CE of `logits` against the batch labels (ERM), which the engine computes from the logits it keeps
    logits: torch.Tensor  # reported network's logits, detached
    logs: dict[str, torch.Tensor] = field(default_factory=dict)  # per-sample (N,) or batch scalars, epoch means
    ce: torch.Tensor | None = None  # per-sample CE of `logits` when the method computed it anyway (else the engine)


class Stepper(Protocol):
    """Anything with `zero_grad()` and `step()`: a torch optimizer or a method's own (Data Parameters)."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> None: ...


class StepContext(Protocol):
    nets: dict[str, nn.Module]
    epoch: int  # 0-based
    num_epochs: int  # epochs of the run (the recipe after budget overrides)
    progress: float  # fraction of all training steps done before this one, in [0, 1)
    device: torch.device
    num_classes: int
    num_train: int
    train_labels: torch.Tensor  # (num_train,) training labels as trained on (possibly noisy), on the device
    has_val: bool  # whether the run holds out a validation split (spec data.val_size)

    def update(self, role: str, loss: torch.Tensor) -> None:
        """zero_grad, backward `loss`, step the optimizer of `role` and every stepper attached to it, then apply
        the model's constraints."""

    def attach(self, role: str, stepper: Stepper) -> None:
        """Step `stepper` together with `role`'s optimizer (zeroed before the backward, stepped after)."""

    def evaluate(self, role: str, split: str = "val") -> tuple[float, float]:
        """(mean CE, accuracy in %) of `role` in eval mode on `split`: "val" (held out of the training set) or
        "train". The test split is never offered: it selects nothing."""

    def score_train(self, role: str, indices: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-sample CE against `train_labels`, logits) of `role` on the training set (or `indices` of it), in
        eval mode, without augmentation, batched on the device."""


class Method:
    """Base class. Subclasses set `name`, `Config` (a dataclass of hyper-parameters), `roles` and `reported`."""

    name: str = ""
    roles: tuple[str, ...] = ("model",)
    reported: str = "model"
    frozen: tuple[str, ...] = ()
    init_streams: dict[str, str] = {}  # role -> stream; roles not named here are in the `main` stream
    # Packing (engine.packing): K seeds of one spec in one step, the batch being the K runs' batches concatenated.
    # A method may allow it only if its step is per-sample and separable by slot: losses are batch means of
    # per-sample terms, logs are per-sample, no state indexed by sample or class, no per-epoch extras, all samples
    # every epoch, and no ctx.evaluate / ctx.score_train.
    packable: bool = False

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: Any, num_classes: int, num_train: int):
        self.cfg = config
        self.num_classes = num_classes
        self.num_train = num_train

    def init_stream(self, role: str) -> str:
        return self.init_streams.get(role, "main")

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

    def state_dict(self) -> dict[str, Any]:
        """The method's own state (not the networks'), for saving a run and resuming it."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"method {self.name!r} has no state, got keys {sorted(state)}")


def config_fields(config_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(config_cls)}
