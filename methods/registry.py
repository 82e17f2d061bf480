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


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


def build_method(name: str, params: dict, num_classes: int, num_train: int) -> Method:
    return method_class(name)(make_config(name, params), num_classes, num_train)
