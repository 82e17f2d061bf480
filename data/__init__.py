"""Datasets (a registry) and data transforms. Knows nothing of models, methods or benchmarks."""
from . import mnist, mr  # noqa: F401  (registers the datasets)
from . import cifar, cinic10, imagefolder, svhn  # noqa: F401  (registers the image datasets)
from .noise import KINDS as NOISE_KINDS, add_pixel_noise, corrupt_labels
from .registry import Splits, dataset_kind, dataset_present, list_datasets, load_dataset, register_dataset

__all__ = ["Splits", "load_dataset", "dataset_kind", "list_datasets", "dataset_present", "register_dataset",
           "corrupt_labels", "add_pixel_noise", "NOISE_KINDS"]
