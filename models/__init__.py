"""Backbones (a registry). Each knows its input kind; none knows about methods or training."""
from . import densenet, mlp, resnet_cifar, torchvision_models, vgg, wide_resnet, wordcnn  # noqa: F401  (registers)
from . import timm_bridge  # noqa: F401,I001  (after the model modules: registers each in timm as clrepro_<name>)
from .registry import count_parameters, create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model", "count_parameters"]
