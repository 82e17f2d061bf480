"""Backbones (a registry). Each knows its input kind; none knows about methods or training."""
from . import mlp, resnet_cifar, wordcnn  # noqa: F401  (registers the models)
from .registry import count_parameters, create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model", "count_parameters"]
