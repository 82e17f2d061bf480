"""CIFAR ResNets (He et al. 2016, Sec. 4.2): 3x3 stem with 16 maps, three stages of n basic blocks (16/32/64 maps),
option-A shortcuts (stride-2 subsampling plus zero-padded channels, no extra parameters), global average pooling.
Depth 6n+2: ResNet-20 has n = 3 and 0.27M parameters, ResNet-110 n = 18 and 1.7M (Table 6). Any channel count and
input size (e.g. MNIST 1x28x28). One class plus a depth table (`DEPTHS`); the registered names are the table's keys.

Committed results depend on resnet20's exact construction (module order, names and the kaiming_normal_ init in
`self.modules()` order): tests/test_backbones.py pins a hash of its seed-0 state_dict."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model


class ShortcutA(nn.Module):
    def __init__(self, planes_out: int, planes_in: int):
        super().__init__()
        self.pad = planes_out - planes_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = ShortcutA(out, inp) if stride != 1 or inp != out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_chans: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inp = [], 16
        for i, width in enumerate((16, 32, 64)):
            for j in range(n):
                layers.append(BasicBlock(inp, width, 2 if (i > 0 and j == 0) else 1))
                inp = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


DEPTHS = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet56": 56, "resnet110": 110}


def _create_cifar_resnet(variant: str, num_classes: int, in_shape: tuple[int, ...]) -> CifarResNet:
    return CifarResNet(DEPTHS[variant], num_classes, in_shape[0])


@register_model("resnet8", input_kind="image")
def resnet8(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_cifar_resnet("resnet8", num_classes, in_shape)


@register_model("resnet20", input_kind="image")
def resnet20(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_cifar_resnet("resnet20", num_classes, in_shape)


@register_model("resnet32", input_kind="image")
def resnet32(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_cifar_resnet("resnet32", num_classes, in_shape)


@register_model("resnet56", input_kind="image")
def resnet56(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_cifar_resnet("resnet56", num_classes, in_shape)


@register_model("resnet110", input_kind="image")
def resnet110(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_cifar_resnet("resnet110", num_classes, in_shape)
