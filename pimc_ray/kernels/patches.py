"""Image patches around pixels: a window's composite, and one ``bands x k x k`` patch per pixel cut from it.

The image-patch (RSI) encoder sees a patch of surface reflectance centred on a pixel. Training pairs
(:mod:`pimc_ray.training.pairs`) and the mapping job (:mod:`pimc_ray.mapping.embedder`) both build their patches
with these functions, so pretraining and mapping see the same patch for the same pixel::

    values      (T, bands, P')      regular-grid series of the window grown by k // 2 px per side (H x W = P')
    composite   (bands, P')         per-pixel median over the steps, or the step nearest a date
    patch_ok    (H - k + 1, W - k + 1)  True where the whole k x k patch is free of nodata
    patches_at  (n, bands, k, k)    float32 patches centred on n pixels of the (un-grown) window

A window of ``h x w`` pixels grown by ``m = k // 2`` is ``(h + 2m) x (w + 2m)``, so patch ``(r, c)`` of the
grown image (its top-left corner at row ``r``, column ``c``) is centred on pixel ``(r, c)`` of the window.
Array-generic: all three run on NumPy or CuPy arrays (decided by their inputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pimc_ray.kernels.xp import array_namespace

__all__ = ["MEDIAN", "check_composite", "composite", "patch_ok", "patches_at"]

Array = Any
"""A NumPy or CuPy array."""

#: The default composite: the per-pixel median over the regular grid (interpolated between cloud-free dates).
MEDIAN = "median"


def check_composite(how: str) -> None:
    """Refuse a composite that is neither ``"median"`` nor an ISO date such as ``2022-07-15``.

    Raises:
        ValueError: naming the value and what is accepted.
    """
    if how == MEDIAN:
        return
    try:
        np.datetime64(how, "D")
    except ValueError as err:
        raise ValueError(f"composite must be 'median' or an ISO date like 2022-07-15, got {how!r}") from err


def composite(values: Array, how: str, dates: np.ndarray) -> Array:
    """``(bands, P)`` image of regular-grid series ``(T, bands, P)``: the median over the steps, or one step.

    Args:
        values: regular-grid series (NumPy or CuPy), NaN for nodata pixels (NaN at every step: the median
            stays NaN, on CuPy too).
        how: ``"median"``, or an ISO date: the step of ``dates`` nearest to it.
        dates: ``(T,)`` datetime64 dates of the regular grid.
    """
    if how == MEDIAN:
        return array_namespace(values).median(values, axis=0)
    step = int(np.argmin(np.abs(dates.astype("datetime64[D]") - np.datetime64(how, "D"))))
    return values[step]


def patch_ok(image: Array, k: int) -> Array:
    """``(H - k + 1, W - k + 1)`` bool: the ``k x k`` patch at each position of ``image (bands, H, W)`` is
    finite in every band (a patch that touches nodata is never encoded)."""
    xp = array_namespace(image)
    finite = xp.isfinite(image).all(axis=0)  # (H, W)
    return xp.lib.stride_tricks.sliding_window_view(finite, (k, k)).all(axis=(-2, -1))


def patches_at(image: Array, rows: Array, cols: Array, k: int) -> Array:
    """``(n, bands, k, k)`` float32 patches of ``image (bands, H, W)`` whose top-left corners are ``(rows, cols)``.

    With ``image`` the composite of a window grown by ``k // 2``, these are the patches centred on pixels
    ``(rows, cols)`` of the window. ``rows`` and ``cols`` live on the same device as ``image``.
    """
    xp = array_namespace(image, rows, cols)
    windows = xp.lib.stride_tricks.sliding_window_view(image, (k, k), axis=(1, 2))  # (bands, h, w, k, k)
    return xp.ascontiguousarray(windows[:, rows, cols].transpose(1, 0, 2, 3), dtype=xp.float32)
