"""Lazy exports for packages whose modules import heavy libraries (torch, Ray): PEP 562 ``__getattr__``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, api: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import ``api[name]`` (a module) when ``name`` is first used.

    A Ray worker that unpickles one class of a package then imports that class's module, not the whole package.
    """

    def __getattr__(name: str) -> Any:
        if name in api:
            return getattr(importlib.import_module(api[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(api)

    return __getattr__, __dir__
