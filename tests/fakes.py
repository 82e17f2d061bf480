"""A minimal `methods.base.StepContext` for testing a method's hooks without the engine: plain SGD per trainable
role, attached steppers, evaluation and whole-train-set scoring on small in-memory tensors."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class FakeContext:
    def __init__(self, nets: dict[str, nn.Module], x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, lr: float = 0.1,
                 frozen: tuple[str, ...] = ()):
        self.nets = nets
        self.optimizers = {r: torch.optim.SGD(n.parameters(), lr=lr) for r, n in nets.items() if r not in frozen}
        self.steppers: dict[str, list] = {r: [] for r in nets}
        self.device = torch.device("cpu")
        self.num_classes = num_classes
        self.x_train, self.train_labels = x_train, y_train
        self.num_train = len(y_train)
        self.x_val, self.y_val = x_val, y_val
        self.has_val = x_val is not None
        self.epoch = 0
        self.num_epochs = 1
        self.progress = 0.0
        self.updates: list[str] = []  # roles in the order they were stepped

    def attach(self, role, stepper):
        self.steppers[role].append(stepper)

    def update(self, role, loss):
        opt = self.optimizers[role]
        opt.zero_grad(set_to_none=True)
        for s in self.steppers[role]:
            s.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for s in self.steppers[role]:
            s.step()
        self.updates.append(role)

    @torch.no_grad()
    def _logits(self, role, x):
        net = self.nets[role]
        was = net.training
        net.eval()
        out = net(x)
        net.train(was)
        return out

    def evaluate(self, role, split="val"):
        x, y = (self.x_val, self.y_val) if split == "val" else (self.x_train, self.train_labels)
        if x is None:
            raise ValueError("no validation split")
        logits = self._logits(role, x)
        return F.cross_entropy(logits, y).item(), 100.0 * (logits.argmax(1) == y).float().mean().item()

    def score_train(self, role, indices=None):
        idx = torch.arange(self.num_train) if indices is None else indices
        logits = self._logits(role, self.x_train[idx])
        return F.cross_entropy(logits, self.train_labels[idx], reduction="none"), logits
