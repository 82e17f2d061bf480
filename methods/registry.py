"""Method registry: a name maps to a `Method` subclass; configs are validated against its `Config` dataclass."""
from __future__ import annotations

import dataclasses
import typing

from .base import Method, config_fields

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    if not cls.name or cls.name in _METHODS:
        raise ValueError(f"method name {cls.name!r} empty or registered twice")
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(list_methods())}")
    return _METHODS[name]


def make_config(name: str, params: dict):
    """Validate `params` against the method's Config (names, enum values via `Literal`) and fill defaults."""
    cls = method_class(name)
    fields = config_fields(cls.Config)
    bad = sorted(set(params) - set(fields))
    if bad:
        raise KeyError(f"method {name!r} has no parameter {bad}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls.Config)
    for key, value in params.items():
        allowed = typing.get_args(hints[key]) if typing.get_origin(hints[key]) is typing.Literal else None
        if allowed and value not in allowed:
            raise ValueError(f"method {name!r}: {key}={value!r} is not allowed; allowed: {list(allowed)}")
    return cls.Config(**params)


# A Config field added after runs were recorded carries `metadata=LATER_READING`: its default is the behaviour those
# runs had, so while it holds that default it stays out of the spec (and of the run id); another value enters it.
LATER_READING = {"spec": "omit_default"}


def config_dict(config) -> dict:
    """The config as it enters a run's spec: every field, except a later reading (LATER_READING) at its default."""
    out = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("spec") == "omit_default" and out[f.name] == f.default:
            del out[f.name]
    return out


def build_method(name: str, params: dict, num_classes: int, num_train: int) -> Method:
    return method_class(name)(make_config(name, params), num_classes, num_train)
