"""Regular time grids: irregular, gappy per-pixel series -> N evenly spaced steps, plus per-pixel QA.

Sentinel-2 sees a pixel every 5 days at best, and clouds remove a different subset of dates at every pixel.
Recurrence plots need series of one fixed length on one fixed calendar, so each pixel's valid observations are
linearly interpolated onto the centres of N equal bins over the date range. Before the first (after the last)
valid observation the series holds that observation's value (no extrapolation). A pixel with fewer than
``min_valid`` valid observations is nodata (NaN), never zeros.

The implementation is array-generic (NumPy or CuPy, chosen by the input) and vectorised over pixels: for every
grid step it finds, per pixel, the nearest valid observation at or before and after it via running max/min of
observation indices, so the cost is O((observations + steps) x pixels) with no Python loop over pixels.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from pimc_ray.kernels.xp import array_namespace

__all__ = [
    "MAX_STEPS",
    "future_dates",
    "grid_dates",
    "regularize",
    "RegularSeries",
    "TimeGridSpec",
    "step_days",
]


#: The most steps of a regular time grid: a pixel's plots are 3 x T x T float32, 0.2 MB at 128, 200 MB for a
#: batch of 1,024 pixels (``--steps`` and run specs refuse more).
MAX_STEPS = 128


@dataclass(frozen=True)
class TimeGridSpec:
    """The regular time grid series are resampled onto."""

    steps: int = 36
    """Number of steps N over the date range (36 is about 10 days over a year)."""
    min_valid: int = 4
    """Pixels with fewer valid observations than this are nodata."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.min_valid < 1:
            raise ValueError(f"min_valid must be >= 1, got {self.min_valid}")


def grid_dates(start: dt.date, end: dt.date, steps: int) -> np.ndarray:
    """Centres of ``steps`` equal bins from ``start`` 00:00 to ``end`` 24:00, as ``datetime64[s]``."""
    return _bin_centres(start, end, steps, range(steps))


def future_dates(start: dt.date, end: dt.date, steps: int, horizon: int) -> np.ndarray:
    """Centres of the ``horizon`` bins that follow :func:`grid_dates`'s after ``end``, at the same step: the
    dates a forecast from that grid is for."""
    return _bin_centres(start, end, steps, range(steps, steps + horizon))


def step_days(start: dt.date, end: dt.date, steps: int) -> float:
    """The length in days of one step of :func:`grid_dates`'s grid."""
    return ((end - start).days + 1) / steps


def _bin_centres(start: dt.date, end: dt.date, steps: int, bins: range) -> np.ndarray:
    """Centres of bins ``bins`` of the ``steps`` equal bins from ``start`` 00:00 to ``end`` 24:00 (bins past
    ``steps - 1`` continue after ``end`` at the same width)."""
    t0 = np.datetime64(start, "s")
    t1 = np.datetime64(end + dt.timedelta(days=1), "s")
    span = (t1 - t0).astype(np.int64)
    centres = (np.arange(bins.start, bins.stop, dtype=np.float64) + 0.5) * span / steps
    return t0 + centres.round().astype("timedelta64[s]")


def _days(times: np.ndarray) -> np.ndarray:
    """datetime64 -> float64 days since the epoch."""
    return times.astype("datetime64[s]").astype(np.int64) / 86400.0


@dataclass(frozen=True)
class RegularSeries:
    """Series on a regular grid plus QA, for P pixels."""

    values: Any
    """(steps, channel, P) float32, NaN for nodata pixels."""
    valid_count: Any
    """(P,) uint16 number of valid observations."""
    first_valid: Any
    """(P,) int64 index of the first valid observation, -1 when none."""
    last_valid: Any
    """(P,) int64 index of the last valid observation, -1 when none."""


def regularize(values: Any, times: np.ndarray, grid: np.ndarray, *, min_valid: int = 4) -> RegularSeries:
    """Interpolate gappy series onto a regular grid.

    Args:
        values: (obs, channel, P) float array; an observation is valid at a pixel when all its channels are
            finite there. NumPy or CuPy.
        times: (obs,) datetime64, sorted ascending.
        grid: (steps,) datetime64, the target dates.
        min_valid: pixels with fewer valid observations are NaN in the output.

    Returns:
        :class:`RegularSeries` on the same array module as ``values``.
    """
    xp = array_namespace(values)
    n_obs, n_chan, n_pix = values.shape
    if len(times) != n_obs:
        raise ValueError(f"{len(times)} times for {n_obs} observations")
    if n_obs > 1 and np.any(np.diff(times.astype("datetime64[s]").astype(np.int64)) < 0):
        raise ValueError("times must be sorted ascending")
    if n_obs == 0:  # no item covers these pixels
        none = xp.full(n_pix, -1, dtype=xp.int64)
        empty = xp.full((len(grid), n_chan, n_pix), xp.nan, dtype=xp.float32)
        return RegularSeries(empty, xp.zeros(n_pix, dtype=xp.uint16), none, none.copy())
    t_obs = xp.asarray(_days(times))  # (obs,)
    t_grid = _days(grid)  # (steps,) host

    valid = xp.all(xp.isfinite(values), axis=1)  # (obs, P)
    count = valid.sum(axis=0)
    obs_idx = xp.arange(n_obs)[:, None]
    # prev[k, p]: last valid observation index <= k (-1 if none); nxt[k, p]: first valid index >= k (n_obs if none)
    prev = xp.maximum.accumulate(xp.where(valid, obs_idx, -1), axis=0)
    nxt = xp.flip(xp.minimum.accumulate(xp.flip(xp.where(valid, obs_idx, n_obs), axis=0), axis=0), axis=0)
    first = xp.where(count > 0, nxt[0], -1)
    last = prev[-1]

    out = xp.full((len(grid), n_chan, n_pix), xp.nan, dtype=xp.float32)
    pix = xp.arange(n_pix)
    k_before = np.searchsorted(_days(times), t_grid, side="right") - 1  # last observation at or before step
    for s, k in enumerate(k_before):
        lo = prev[k] if k >= 0 else xp.full(n_pix, -1)
        hi = nxt[k + 1] if k + 1 < n_obs else xp.full(n_pix, n_obs)
        has_lo, has_hi = lo >= 0, hi < n_obs
        lo_c, hi_c = xp.clip(lo, 0, n_obs - 1), xp.clip(hi, 0, n_obs - 1)
        v_lo = values[lo_c, :, pix].T  # (channel, P)
        v_hi = values[hi_c, :, pix].T
        span = t_obs[hi_c] - t_obs[lo_c]
        w = xp.where(span > 0, (t_grid[s] - t_obs[lo_c]) / xp.where(span > 0, span, 1.0), 0.0)
        both = v_lo + w.astype(xp.float32) * (v_hi - v_lo)
        step = xp.where(has_lo & has_hi, both, xp.where(has_lo, v_lo, v_hi))
        out[s] = xp.where(has_lo | has_hi, step, xp.nan)
    out[:, :, count < min_valid] = xp.nan
    return RegularSeries(out, count.astype(xp.uint16), first, last)
