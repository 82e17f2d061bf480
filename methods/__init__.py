"""Training methods behind one hook interface (`methods.base.Method`). Knows models only through logits."""
from . import blcl, codistill, data_parameters, dcd, erm, kd, mekd, spl, superloss  # noqa: F401  (registers)
from .base import Batch, Method, StepContext, StepOut
from .registry import build_method, config_dict, list_methods, make_config, method_class, register_method

__all__ = ["Batch", "Method", "StepContext", "StepOut", "build_method", "config_dict", "list_methods",
           "make_config", "method_class", "register_method"]
