"""Models by name, so that configurations and checkpoints name a model instead of pickling it.

Three kinds of parts are registered, each in its own namespace: **encoders** (the RP encoder ``rp-resnet`` and
the image-patch encoder ``rsi-cnn``), **projections** (the heads that map an encoder's embedding into the space
where the contrastive loss compares the two modalities) and **losses** (``symmetric-infonce``). A config holds a
name and keyword parameters; :func:`build_encoder` and friends turn them back into a module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

from torch import nn

__all__ = [
    "M",
    "build",
    "build_encoder",
    "encoder_class",
    "encoder_names",
    "lookup",
    "names",
    "register",
    "register_encoder",
    "Kind",
]

Kind = Literal["encoder", "projection", "loss"]

_REGISTRY: dict[str, dict[str, type[nn.Module]]] = {"encoder": {}, "projection": {}, "loss": {}}

M = TypeVar("M", bound=type[nn.Module])


def register(kind: Kind, name: str) -> Callable[[M], M]:
    """Class decorator adding a module class to the ``kind`` namespace under ``name``."""

    def add(cls: M) -> M:
        table = _REGISTRY[kind]
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = cls
        return cls

    return add


def names(kind: Kind) -> list[str]:
    """Registered names of one kind."""
    return sorted(_REGISTRY[kind])


def lookup(kind: Kind, name: str) -> type[nn.Module]:
    """The class registered as ``name`` in the ``kind`` namespace.

    Raises:
        ValueError: no such name (the message lists the registered ones).
    """
    try:
        return _REGISTRY[kind][name]
    except KeyError as err:
        raise ValueError(f"unknown {kind} {name!r}; registered: {names(kind)}") from err


def build(kind: Kind, name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Instantiate the ``kind`` registered as ``name`` with keyword ``params``.

    Raises:
        ValueError: no such name (the message lists the registered ones).
    """
    return lookup(kind, name)(**dict(params or {}))


def register_encoder(name: str) -> Callable[[M], M]:
    """Class decorator adding an encoder to the registry under ``name``."""
    return register("encoder", name)


def encoder_names() -> list[str]:
    """Names of the registered encoders."""
    return names("encoder")


def build_encoder(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """Instantiate the encoder registered as ``name`` with keyword ``params``."""
    return build("encoder", name, params)


def encoder_class(name: str) -> type[nn.Module]:
    """The encoder class registered as ``name`` (its class attributes say e.g. which ``inputs`` it takes)."""
    return lookup("encoder", name)
