"""ImageNet-style backbones taken as they are from torchvision (`torchvision.models.get_model(name, weights=None,
num_classes=...)`), registered in our registry. Untrained: no weights are downloaded.

The only change: for an input with other than 3 channels (e.g. MNIST 1x28x28) the first conv is replaced by one
with the same configuration and `in_shape[0]` input channels, initialised as torchvision initialises its convs
(kaiming_normal_, fan_out, relu). With 3 channels the model is exactly torchvision's. ResNet-18 keeps its ImageNet
stem (7x7 stride-2 conv and max-pool): a 32x32 input reaches layer4 at 1x1; torchvision pools adaptively."""
from __future__ import annotations

import torch.nn as nn

from .registry import register_model

# our name -> torchvision's name
ARCHS = {"resnet18": "resnet18"}


def _replace_first_conv(model: nn.Module, in_chans: int) -> None:
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_chans:
        return
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, new)


def _create_torchvision(variant: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    import torchvision  # heavy; only when one of these is built

    model = torchvision.models.get_model(ARCHS[variant], weights=None, num_classes=num_classes)
    _replace_first_conv(model, in_shape[0])
    return model


@register_model("resnet18", input_kind="image")
def resnet18(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    return _create_torchvision("resnet18", num_classes, in_shape)
