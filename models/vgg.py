"""VGG with batch norm for 32x32 inputs, the common CIFAR variant (Simonyan & Zisserman 2015 configurations A and D;
the head of e.g. kuangliu/pytorch-cifar): conv3x3(bias)-BN-ReLU per cfg entry, 2x2 max-pool at each "M", then global
average pooling (a no-op at 32x32, where the five pools leave 1x1x512) and a single Linear(512, num_classes) — no
4096-wide fully connected layers, no dropout. PyTorch's default init.

VGG-11-BN has 9.2M and VGG-16-BN 14.7M parameters on CIFAR-10. The pools use ceil_mode, identical to floor for even
sizes (32 -> 16 -> 8 -> 4 -> 2 -> 1) and what lets a 28x28 input through (28 -> 14 -> 7 -> 4 -> 2 -> 1). Named
`vgg11_bn` / `vgg16_bn` (torchvision's names for the batch-norm variants)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model

CFGS: dict[str, list[int | str]] = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int, in_chans: int):
        super().__init__()
        layers: list[nn.Module] = []
        inp = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                layers += [nn.Conv2d(inp, v, 3, 1, 1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                inp = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(x, 1))


def _create_vgg(variant: str, num_classes: int, in_shape: tuple[int, ...]) -> VGG:
    return VGG(CFGS[variant], num_classes, in_shape[0])


@register_model("vgg11_bn", input_kind="image")
def vgg11_bn(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_vgg("vgg11_bn", num_classes, in_shape)


@register_model("vgg16_bn", input_kind="image")
def vgg16_bn(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_vgg("vgg16_bn", num_classes, in_shape)
