"""Encoders by name, so that configurations and checkpoints name a model instead of pickling it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

_ENCODERS: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type[nn.Module])


def register_encoder(name: str) -> Callable[[M], M]:
    """Class decorator adding an encoder to the registry under ``name``."""

    def add(cls: M) -> M:
        if name in _ENCODERS and _ENCODERS[name] is not cls:
            raise ValueError(f"encoder {name!r} is registered twice")
        _ENCODERS[name] = cls
        return cls

    return add


def encoder_names() -> list[str]:
    """Names of the registered encoders."""
    return sorted(_ENCODERS)


def build_encoder(name: str, params: Mapping[str, Any] | None = None) -> nn.Module:
    """Instantiate the encoder registered as ``name`` with keyword ``params``."""
    try:
        cls = _ENCODERS[name]
    except KeyError as err:
        raise ValueError(f"unknown encoder {name!r}; registered: {encoder_names()}") from err
    return cls(**dict(params or {}))
