"""Wide ResNets (Zagoruyko & Komodakis 2016) as in the official Data Parameters code (apple/ml-data-parameters,
`models/wide_resnet.py`, itself from meliketoy/wide-resnet.pytorch), the WRN-28-10 that Data Parameters and BLCL
train on CIFAR.

Depth 6n+4, widths 16 / 16k / 32k / 64k. A 3x3 stem conv (16 maps), three stages of n pre-activation basic blocks
BN-ReLU-conv3x3 [-dropout] -BN-ReLU-conv3x3 (the stride sits on the second conv), a 1x1 conv shortcut on the
block's raw input where the shape changes (identity otherwise), then BN + ReLU, global average pooling and a linear
layer. Faithful to that code: every conv has a bias, the final BN has momentum 0.9 (PyTorch's convention: the
running statistics are 90% the latest batch), and the weights keep PyTorch's default init (its `conv_init` is never
applied). Dropout between the two convs is 0 by default (option `dropout`; the paper's 0.3 is opt-in).
WRN-28-10 has 36.5M parameters on CIFAR-10. Any channel count and input size (adaptive average pooling)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model


class WideBasic(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = nn.Conv2d(inp, out, 3, 1, 1, bias=True)
        self.dropout = nn.Dropout(dropout)
        self.bn2 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, stride, 1, bias=True)
        self.shortcut = nn.Conv2d(inp, out, 1, stride, bias=True) if stride != 1 or inp != out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dropout(self.conv1(F.relu(self.bn1(x))))
        y = self.conv2(F.relu(self.bn2(y)))
        return y + self.shortcut(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_chans: int, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"Wide ResNet depth must be 6n+4 (n >= 1), got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=True)
        layers, inp = [], 16
        for i, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for j in range(n):
                layers.append(WideBasic(inp, width, 2 if (i > 0 and j == 0) else 1, dropout))
                inp = width
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(inp, momentum=0.9)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# variant -> (depth, widen factor)
CONFIGS = {"wrn28_10": (28, 10), "wrn40_10": (40, 10)}


def _create_wrn(variant: str, num_classes: int, in_shape: tuple[int, ...], **kwargs) -> WideResNet:
    depth, widen = CONFIGS[variant]
    return WideResNet(depth, widen, num_classes, in_shape[0], **kwargs)


@register_model("wrn28_10", input_kind="image")
def wrn28_10(num_classes: int, in_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    return _create_wrn("wrn28_10", num_classes, in_shape, dropout=dropout)


@register_model("wrn40_10", input_kind="image")
def wrn40_10(num_classes: int, in_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    return _create_wrn("wrn40_10", num_classes, in_shape, dropout=dropout)
