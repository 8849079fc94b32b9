"""Vegetation indices (NDVI, EVI, SAVI) as pure, array-generic functions of surface reflectance.

Inputs are surface reflectance as floats (about 0..1: Sentinel-2 L2A digital numbers already scaled and
offset), with nodata as NaN; any shape, broadcast together. NumPy in gives NumPy out, CuPy in gives CuPy out,
and float32 in gives float32 out (float64 stays float64; integers compute in float64, float16 in float32).

Policy shared by the three indices, chosen so that a recurrence plot built from them never sees ``inf``:

* **Undefined is NaN.** Where the denominator is NaN or ``|denominator| < DENOMINATOR_EPS`` (1e-6 reflectance,
  a hundredth of a Sentinel-2 digital number) the index is NaN, the same nodata a missing observation gives.
  No ``inf`` and no divide-by-zero warning is ever produced.
* **Clipped to [-1, 1] by default** (``clip=True``). That is each index's range for reflectances in [0, 1].
  NDVI and SAVI leave it only for negative reflectance (L2A's BOA offset lets dark water or shadow go slightly
  below zero, e.g. NIR 0.01, red -0.009 gives NDVI 19). EVI leaves it even for valid reflectance: its
  denominator ``N + 6R - 7.5B + 1`` reaches zero when blue is bright (haze, cloud edges, snow), so EVI can be
  arbitrarily large or change sign. Such values carry no vegetation signal but would dominate the distances of
  a recurrence plot, so they saturate at the range's ends. Pass ``clip=False`` for the raw ratio.

The fused GPU kernel (:mod:`pimc_ray.kernels.gpu`) evaluates the same formulas in the same operation order;
tests check it against these functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pimc_ray.kernels.xp import array_namespace

__all__ = [
    "DENOMINATOR_EPS",
    "INDEX_NAMES",
    "SAVI_L",
    "VALID_RANGE",
    "evi",
    "ndvi",
    "savi",
    "vegetation_indices",
]

Array = Any
"""A NumPy or CuPy array (the two share no static type)."""

INDEX_NAMES: tuple[str, str, str] = ("NDVI", "EVI", "SAVI")
"""Channel order of :func:`vegetation_indices` and of the recurrence-plot channels."""

DENOMINATOR_EPS = 1e-6
"""An index is NaN where ``|denominator|`` is below this (reflectance units)."""

VALID_RANGE: tuple[float, float] = (-1.0, 1.0)
"""Range the indices are clipped to when ``clip=True``."""

SAVI_L = 0.5
"""Default soil-brightness correction of SAVI (Huete 1988: 0.5 suits intermediate vegetation cover)."""


def _as_float(xp: Any, *arrays: Array) -> list[Array]:
    """The inputs as arrays of one floating dtype: their common float type, float64 for integers, at least
    float32. Arrays already of that dtype are not copied."""
    arrs = [xp.asarray(a) for a in arrays]
    dtype = np.result_type(*(a.dtype for a in arrs))
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    elif dtype.itemsize < 4:
        dtype = np.dtype(np.float32)
    return [a.astype(dtype, copy=False) for a in arrs]


def _ratio(xp: Any, num: Array, den: Array, clip: bool) -> Array:
    """``num / den`` with the module's policy: NaN where ``|den| < DENOMINATOR_EPS``, then optional clipping.

    ``num`` and ``den`` are fresh temporaries of the result dtype; they are overwritten.
    """
    # NaN denominators where the ratio is undefined: the division then yields NaN without a warning.
    xp.copyto(den, den.dtype.type(np.nan), where=xp.abs(den) < DENOMINATOR_EPS)
    out = xp.divide(num, den, out=num)
    if clip:
        lo, hi = VALID_RANGE
        # maximum/minimum propagate NaN (np.clip's NaN handling differs between backends).
        xp.maximum(out, lo, out=out)
        xp.minimum(out, hi, out=out)
    return out


def ndvi(nir: Array, red: Array, *, clip: bool = True) -> Array:
    """Normalised Difference Vegetation Index.

    ``NDVI = (N - R) / (N + R)``  (Rouse et al. 1974, "Monitoring vegetation systems in the Great Plains with
    ERTS", Third ERTS Symposium, NASA SP-351, pp. 309-317).

    Valid range [-1, 1] for non-negative reflectance; dense vegetation is about 0.6-0.9, bare soil 0.1-0.2,
    water below 0.

    Args:
        nir: Near-infrared surface reflectance N (Sentinel-2 B08), NaN for nodata.
        red: Red surface reflectance R (B04), broadcastable with ``nir``.
        clip: Clip to [-1, 1] (reached only with negative reflectance).

    Returns:
        NDVI with the broadcast shape of the inputs; NaN where an input is NaN or ``|N + R| < 1e-6``.
    """
    xp = array_namespace(nir, red)
    n, r = _as_float(xp, nir, red)
    return _ratio(xp, n - r, n + r, clip)


def evi(nir: Array, red: Array, blue: Array, *, clip: bool = True) -> Array:
    """Enhanced Vegetation Index.

    ``EVI = 2.5 (N - R) / (N + 6 R - 7.5 B + 1)``  (Liu & Huete 1995, IEEE TGRS 33(2):457-465; Huete et al.
    2002, Remote Sensing of Environment 83:195-213; gain G = 2.5, aerosol coefficients C1 = 6, C2 = 7.5,
    canopy background L = 1).

    Valid range [-1, 1]; vegetation is about 0.2-0.8. Unlike NDVI the ratio is not bounded: the denominator
    vanishes when ``7.5 B = N + 6 R + 1`` (bright blue: haze, cloud edges, snow), so values far outside the
    range occur on valid reflectance and are clipped by default (see the module docstring).

    Args:
        nir: Near-infrared surface reflectance N (B08), NaN for nodata.
        red: Red surface reflectance R (B04).
        blue: Blue surface reflectance B (B02). All three broadcast together.
        clip: Clip to [-1, 1].

    Returns:
        EVI with the broadcast shape of the inputs; NaN where an input is NaN or
        ``|N + 6R - 7.5B + 1| < 1e-6``.
    """
    xp = array_namespace(nir, red, blue)
    n, r, b = _as_float(xp, nir, red, blue)
    # Operation order is part of the contract (the GPU kernel repeats it): ((N + 6R) - 7.5B) + 1.
    return _ratio(xp, 2.5 * (n - r), n + 6.0 * r - 7.5 * b + 1.0, clip)


def savi(nir: Array, red: Array, L: float = SAVI_L, *, clip: bool = True) -> Array:  # noqa: N803 - paper's name
    """Soil-Adjusted Vegetation Index.

    ``SAVI = (1 + L) (N - R) / (N + R + L)``  (Huete 1988, "A soil-adjusted vegetation index (SAVI)", Remote
    Sensing of Environment 25:295-309), with soil-brightness correction ``L`` (0.5 by default).

    Valid range [-1, 1] for reflectance in [0, 1] (reached at N = 1, R = 0 and the reverse); with ``L = 0.5``
    the denominator is at least 0.5 for non-negative reflectance, so NaN arises only from nodata or from
    strongly negative reflectance.

    Args:
        nir: Near-infrared surface reflectance N (B08), NaN for nodata.
        red: Red surface reflectance R (B04), broadcastable with ``nir``.
        L: Soil-brightness correction factor, 0 (dense cover, SAVI = NDVI) to 1 (sparse cover).
        clip: Clip to [-1, 1].

    Returns:
        SAVI with the broadcast shape of the inputs; NaN where an input is NaN or ``|N + R + L| < 1e-6``.
    """
    xp = array_namespace(nir, red)
    n, r = _as_float(xp, nir, red)
    # (1 + L) is formed in Python (double) and rounded once to the array dtype, as the GPU kernel does.
    return _ratio(xp, (1.0 + L) * (n - r), n + r + L, clip)


def vegetation_indices(
    blue: Array,
    red: Array,
    nir: Array,
    *,
    axis: int = 0,
    L: float = SAVI_L,  # noqa: N803
    clip: bool = True,
) -> Array:
    """Stack NDVI, EVI and SAVI (in :data:`INDEX_NAMES` order) along a new axis.

    Args:
        blue: Blue surface reflectance (B02), e.g. ``(pixel, time)``; NaN for nodata.
        red: Red surface reflectance (B04), same shape.
        nir: Near-infrared surface reflectance (B08), same shape.
        axis: Position of the new ``index`` axis in the output, as in :func:`numpy.stack`. The pipeline uses
            ``axis=1`` to turn ``(pixel, time)`` bands into ``(pixel, index, time)`` series.
        L: SAVI's soil-brightness correction.
        clip: Clip every index to [-1, 1] (see the module docstring).

    Returns:
        Array with a new axis of length 3 at ``axis`` (NDVI, EVI, SAVI); float32 for float32 input.

    Raises:
        ValueError: The three bands do not have the same shape.
    """
    xp = array_namespace(blue, red, nir)
    b, r, n = _as_float(xp, blue, red, nir)
    if not b.shape == r.shape == n.shape:
        raise ValueError(
            f"blue, red and nir must have the same shape, got {b.shape}, {r.shape} and {n.shape}: "
            "give each band as one (pixel, time) array."
        )
    ndim = b.ndim + 1
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for a {ndim}-dimensional result.")
    shape = list(b.shape)
    shape.insert(axis % ndim, 3)
    out = xp.empty(tuple(shape), dtype=b.dtype)  # e.g. (pixel, index, time) for axis=1
    view = xp.moveaxis(out, axis, 0)  # (index, *band shape), a view: each index is written in place
    view[0] = ndvi(n, r, clip=clip)
    view[1] = evi(n, r, b, clip=clip)
    view[2] = savi(n, r, L, clip=clip)
    return out
