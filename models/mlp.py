"""MLP with one hidden layer (BLCL Sec. V-B: 784-500-10; "all the setting is the same as in" L2T-DLF, whose
MNIST demo uses a tanh hidden layer and inputs in [0, 1])."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .registry import register_model

_ACT = {"tanh": nn.Tanh, "relu": nn.ReLU}


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, num_classes: int, activation: str):
        super().__init__()
        if activation not in _ACT:
            raise ValueError(f"activation {activation!r}; allowed: {sorted(_ACT)}")
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), _ACT[activation](),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("mlp500", input_kind="image")
def mlp500(num_classes: int, in_shape: tuple[int, ...], hidden: int = 500, activation: str = "tanh") -> nn.Module:
    return MLP(math.prod(in_shape), hidden, num_classes, activation)
