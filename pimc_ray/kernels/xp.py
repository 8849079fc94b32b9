"""Array backends: NumPy on the CPU, CuPy on a GPU, decided by the arrays a function is given.

This is the only module of pimc-ray that imports CuPy, and it does so lazily: importing it costs nothing and
works where CuPy is not installed. Code that must run on both backends asks for the namespace of its inputs::

    xp = array_namespace(x)        # numpy for NumPy arrays, cupy for CuPy arrays
    y = xp.abs(x[..., :, None] - x[..., None, :])

and never picks a backend from a global flag. Arrays cross the host/device boundary only at I/O
(:func:`to_numpy`) and are handed to PyTorch without a copy (:func:`to_torch`).
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "GPU_INSTALL_HINT",
    "array_namespace",
    "cupy_available",
    "import_cupy",
    "is_cupy_array",
    "to_numpy",
    "to_torch",
]

logger = logging.getLogger(__name__)

GPU_INSTALL_HINT = "pip install 'pimc-ray[gpu]'"
"""How to get CuPy: the ``gpu`` extra pins the CuPy build pimc-ray is tested with."""


def import_cupy() -> ModuleType:
    """Import CuPy, or fail with an error that says how to install it.

    Returns:
        The ``cupy`` module.

    Raises:
        ImportError: CuPy is not installed (or fails to import); the message names the ``gpu`` extra.
    """
    cached = sys.modules.get("cupy")
    if cached is not None:
        return cached
    try:
        return importlib.import_module("cupy")
    except ImportError as err:
        raise ImportError(
            f"CuPy is needed to run pimc-ray on a GPU but could not be imported ({err}). "
            f"Install it with: {GPU_INSTALL_HINT}"
        ) from err


@functools.cache
def cupy_available() -> bool:
    """Tell whether CuPy imports and a CUDA device is usable from this process.

    Never raises: a missing package, a missing driver or a machine without a GPU all give ``False``. The
    answer is cached for the life of the process.

    Returns:
        ``True`` only if ``import cupy`` works and at least one CUDA device answers.
    """
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
        # A device that is counted may still refuse work (driver mismatch, exclusive mode): touch it.
        cupy.cuda.Device(0).synchronize()
        return bool(cupy.is_available())
    except Exception as err:  # noqa: BLE001 - any failure here simply means "no usable GPU"
        logger.debug("CuPy/CUDA not usable: %s", err)
        return False


def is_cupy_array(x: object) -> bool:
    """Tell whether ``x`` is a CuPy array, without importing CuPy.

    Args:
        x: Any object.

    Returns:
        ``True`` for ``cupy.ndarray`` instances.
    """
    return type(x).__module__.split(".", 1)[0] == "cupy" and hasattr(x, "__cuda_array_interface__")


def array_namespace(*arrays: object) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) that serves the given arrays.

    ``None`` and Python scalars are ignored, so optional arguments can be passed as they are. Anything that is
    not a CuPy array (NumPy arrays, NumPy scalars, lists) is served by NumPy.

    Args:
        *arrays: Arrays (or scalars, or ``None``) a function was given.

    Returns:
        ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Raises:
        TypeError: NumPy and CuPy arrays are mixed, or a GPU array other than CuPy's (e.g. a CUDA torch
            tensor) is passed; the message says how to convert it.
        ImportError: A CuPy array is passed but CuPy cannot be imported (cannot happen in practice).
    """
    on_gpu = False
    on_host = False
    for a in arrays:
        if a is None or isinstance(a, (bool, int, float, complex)):
            continue
        if is_cupy_array(a):
            on_gpu = True
        elif hasattr(a, "__cuda_array_interface__"):
            raise TypeError(
                f"{type(a).__module__}.{type(a).__qualname__} is a GPU array that pimc-ray does not take "
                "directly: wrap it without a copy with cupy.from_dlpack(x) (or pass x.cpu().numpy())."
            )
        elif isinstance(a, np.ndarray):
            on_host = True
    if on_gpu and on_host:
        raise TypeError(
            "NumPy and CuPy arrays were mixed in one call: move them to one device first, "
            "with cupy.asarray(x) (host -> GPU) or pimc_ray.kernels.xp.to_numpy(x) (GPU -> host)."
        )
    return import_cupy() if on_gpu else np


def to_numpy(x: Any) -> np.ndarray[Any, Any]:
    """Return ``x`` as a NumPy array, copying from the GPU if it is a CuPy array.

    Args:
        x: A NumPy or CuPy array, or anything :func:`numpy.asarray` accepts.

    Returns:
        A NumPy array (``x`` itself when it already is one).
    """
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def to_torch(x: Any) -> torch.Tensor:
    """Hand an array to PyTorch without copying it: CuPy via DLPack, NumPy via ``torch.from_numpy``.

    A CuPy array stays on its GPU (``torch.from_dlpack`` shares the memory and orders the producer's stream
    before torch's current stream), so recurrence plots built by CuPy go to the encoder without a host round
    trip. The tensor aliases the array: writing to one changes the other.

    Args:
        x: A NumPy or CuPy array.

    Returns:
        A ``torch.Tensor`` sharing ``x``'s memory, on the same device.
    """
    import torch  # noqa: PLC0415 - torch is heavy; only callers that hand data to a model pay for it

    if is_cupy_array(x):
        return torch.from_dlpack(x)
    return torch.from_numpy(np.asarray(x))
