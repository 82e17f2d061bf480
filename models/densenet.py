"""DenseNet-BC for 32x32 inputs (Huang et al. 2017, Sec. 3-4; the authors' CIFAR code): a 3x3 stem conv with
2k maps, three dense blocks of n = (depth - 4) / 6 bottleneck layers BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k) whose
outputs are concatenated to their inputs, transitions BN-ReLU-conv1x1(floor(0.5 C))-avgpool2 between blocks, then
BN-ReLU, global average pooling and a linear layer. Convs have no bias and are initialised N(0, 2 / (k*k*out))
(the authors' init, `kaiming_normal_` fan_out); BN weight 1, bias 0; the linear bias 0.

DenseNet-BC-100 (k = 12) has 0.8M parameters and DenseNet-BC-190 (k = 40) 25.6M (Table 2). Option `dropout`
(default 0; the paper uses 0.2 after each conv but the first on the datasets it trains without augmentation).
Any channel count and input size (adaptive average pooling)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model


class Bottleneck(nn.Module):
    def __init__(self, inp: int, growth: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inp)
        self.conv1 = nn.Conv2d(inp, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.dropout(self.conv1(F.relu(self.bn1(x))), self.dropout, self.training)
        y = F.dropout(self.conv2(F.relu(self.bn2(y))), self.dropout, self.training)
        return torch.cat([x, y], 1)


class Transition(nn.Module):
    def __init__(self, inp: int, out: int, dropout: float):
        super().__init__()
        self.bn = nn.BatchNorm2d(inp)
        self.conv = nn.Conv2d(inp, out, 1, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.dropout(self.conv(F.relu(self.bn(x))), self.dropout, self.training)
        return F.avg_pool2d(y, 2)


class DenseNetBC(nn.Module):
    def __init__(self, depth: int, growth: int, num_classes: int, in_chans: int, compression: float = 0.5,
                 dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 (n >= 1), got {depth}")
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        n = (depth - 4) // 6
        chans = 2 * growth
        self.conv1 = nn.Conv2d(in_chans, chans, 3, 1, 1, bias=False)
        stages: list[nn.Module] = []
        for block in range(3):
            for _ in range(n):
                stages.append(Bottleneck(chans, growth, dropout))
                chans += growth
            if block < 2:
                out = int(math.floor(compression * chans))
                stages.append(Transition(chans, out, dropout))
                chans = out
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(chans)
        self.fc = nn.Linear(chans, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# variant -> (depth, growth rate k); compression 0.5 and the 4k bottleneck are what make it "BC"
CONFIGS = {"densenet_bc_100_12": (100, 12), "densenet_bc_190_40": (190, 40)}


def _create_densenet_bc(variant: str, num_classes: int, in_shape: tuple[int, ...], **kwargs) -> DenseNetBC:
    depth, growth = CONFIGS[variant]
    return DenseNetBC(depth, growth, num_classes, in_shape[0], **kwargs)


@register_model("densenet_bc_100_12", input_kind="image")
def densenet_bc_100_12(num_classes: int, in_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    return _create_densenet_bc("densenet_bc_100_12", num_classes, in_shape, dropout=dropout)


@register_model("densenet_bc_190_40", input_kind="image")
def densenet_bc_190_40(num_classes: int, in_shape: tuple[int, ...], dropout: float = 0.0) -> nn.Module:
    return _create_densenet_bc("densenet_bc_190_40", num_classes, in_shape, dropout=dropout)
