"""Every model of our registry, also in timm's: `timm.create_model("clrepro_<name>", num_classes=...)`.

One generic entrypoint per registered model, made by `_entrypoint` and registered with `timm.models.register_model`
(under a unique `__name__`, with this module as `__module__`, and set as an attribute here so it can be found by
name). `register_timm_models()` runs on import, after models/__init__.py has imported the model modules; calling it
again registers models added since.

Arguments of the timm entrypoint:
- `num_classes` is required (no ImageNet default);
- image models take `in_shape` (default (3, 32, 32)) or `in_chans`, which replaces in_shape[0]; text models need
  `in_shape` = (sequence length,) and `vocab_size`;
- `pretrained=True` raises (there are no weights); timm's `pretrained_cfg`, `pretrained_cfg_overlay` and
  `cache_dir` are ignored; `device` builds the model on that device (e.g. "meta"), `dtype` casts it;
- every other keyword is the model's own option, checked by our `create_model` (KeyError naming an unknown one).
"""
from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model as timm_register_model

from .registry import create_model, list_models, model_entry

PREFIX = "clrepro_"
DEFAULT_IMAGE_SHAPE = (3, 32, 32)
_TIMM_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
_registered: set[str] = set()


def _entrypoint(name: str):
    entry = model_entry(name)

    def fn(pretrained: bool = False, num_classes: int | None = None, in_chans: int | None = None,
           in_shape: tuple[int, ...] | None = None, vocab_size: int | None = None, device: Any = None,
           dtype: torch.dtype | None = None, **kwargs) -> nn.Module:
        timm_name = PREFIX + name
        if pretrained:
            raise ValueError(f"{timm_name}: pretrained=True, but clrepro models have no pretrained weights")
        for key in _TIMM_ONLY:
            kwargs.pop(key, None)
        if num_classes is None:
            raise ValueError(f"{timm_name}: num_classes is required")
        if entry.input_kind == "image":
            shape = tuple(in_shape) if in_shape is not None else DEFAULT_IMAGE_SHAPE
            if in_chans is not None:
                if in_shape is not None and in_chans != shape[0]:
                    raise ValueError(f"{timm_name}: in_chans={in_chans} contradicts in_shape={shape}")
                shape = (in_chans, *shape[1:])
        else:
            if in_chans is not None:
                raise ValueError(f"{timm_name}: in_chans given to a {entry.input_kind} model")
            if in_shape is None:
                raise ValueError(f"{timm_name}: a {entry.input_kind} model needs in_shape")
            shape = tuple(in_shape)
        if vocab_size is not None and entry.input_kind != "text":
            raise KeyError(f"{timm_name}: vocab_size given to a {entry.input_kind} model")
        if entry.input_kind == "text" and vocab_size is None:
            raise ValueError(f"{timm_name}: a text model needs vocab_size")
        if device is not None:
            with torch.device(device):
                model = create_model(name, num_classes, shape, vocab_size=vocab_size, **kwargs)
        else:
            model = create_model(name, num_classes, shape, vocab_size=vocab_size, **kwargs)
        return model.to(dtype) if dtype is not None else model

    fn.__name__ = fn.__qualname__ = PREFIX + name
    fn.__module__ = __name__
    fn.__doc__ = f"clrepro model {name!r} ({entry.input_kind}) via timm; see models.timm_bridge."
    return fn


def register_timm_models() -> list[str]:
    """Register in timm every model of our registry not yet registered there; returns the timm names added."""
    added = []
    module = sys.modules[__name__]
    for name in list_models():
        if name in _registered:
            continue
        fn = _entrypoint(name)
        setattr(module, fn.__name__, fn)
        timm_register_model(fn)
        _registered.add(name)
        added.append(fn.__name__)
    return added


register_timm_models()
