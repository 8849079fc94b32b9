"""One window's regular-grid series: items -> stack -> SCL mask -> regular time grid, plus QA.

This is the data path every per-pixel product shares (embeddings, index exports, training pairs)::

    stack_reflectance   (obs, band, h, w)  float32, NaN = cloud, shadow or nodata
    regularize          (T, band, P)       float32 on the regular grid, NaN where fewer than min_valid obs
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.footprints import ItemIndex
from pimc_ray.data.stac import DateRange
from pimc_ray.data.stack import StackSpec, read_window, stack_reflectance
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.data.timegrid import TimeGridSpec, grid_dates, regularize
from pimc_ray.errors import AssetReadWarning

logger = logging.getLogger(__name__)

__all__ = [
    "INDEX_BANDS",
    "INDEX_BAND_POSITIONS",
    "Observations",
    "SeriesReader",
    "SeriesSpec",
    "WindowSeries",
    "crop_halo",
    "iso_dates",
    "read_observations",
    "read_series",
    "yyyymmdd",
]

#: Bands the vegetation indices need (blue for EVI, red, NIR), in the order the index functions take them.
INDEX_BANDS = ("B02", "B04", "B08")
#: Positions of :data:`INDEX_BANDS` among all ten :data:`pimc_ray.data.catalogs.BANDS` (series read with every band).
INDEX_BAND_POSITIONS = [BANDS.index(b) for b in INDEX_BANDS]


@dataclass(frozen=True)
class SeriesSpec:
    """Everything that decides a pixel's regular series (besides the items)."""

    dates: DateRange
    """Date range of the regular time grid."""
    timegrid: TimeGridSpec = field(default_factory=TimeGridSpec)
    """Steps of the regular grid and the minimum valid count."""
    bands: tuple[str, ...] = INDEX_BANDS
    """Bands to read."""
    mask_classes: frozenset[int] | None = None
    """SCL classes to mask; :data:`pimc_ray.data.stack.DEFAULT_MASK_CLASSES` when None."""
    catalog: str | None = None
    """Catalog convention; detected from the items when None."""
    on_unreadable: Literal["error", "nodata"] = "error"
    """What an unreadable asset becomes: see :attr:`pimc_ray.data.stack.StackSpec.on_unreadable`."""

    def stack_spec(self) -> StackSpec:
        kwargs: dict[str, Any] = {
            "bands": self.bands,
            "catalog": self.catalog,
            "on_unreadable": self.on_unreadable,
        }
        if self.mask_classes is not None:
            kwargs["mask_classes"] = frozenset(self.mask_classes)
        return StackSpec(**kwargs)

    def grid_dates(self) -> np.ndarray:
        """``(T,)`` datetime64 dates of the regular grid."""
        return grid_dates(self.dates.start, self.dates.end, self.timegrid.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.dates.start.isoformat(),
            "end": self.dates.end.isoformat(),
            "steps": self.timegrid.steps,
            "min_valid": self.timegrid.min_valid,
            "bands": list(self.bands),
            "mask_classes": sorted(self.stack_spec().mask_classes),
            "catalog": self.catalog,
            "on_unreadable": self.on_unreadable,
        }


@dataclass(frozen=True)
class WindowSeries:
    """Regular series and QA of one window's P = h x w pixels."""

    values: np.ndarray
    """(T, band, P) float32, NaN for nodata pixels."""
    valid_count: np.ndarray
    """(P,) uint16 cloud-free observations."""
    first_valid: np.ndarray
    """(P,) datetime64[D] first cloud-free observation, NaT when none."""
    last_valid: np.ndarray
    """(P,) datetime64[D] last cloud-free observation, NaT when none."""
    substituted: int = 0
    """Asset reads that failed (after retries) and became nodata (``on_unreadable="nodata"``): the window is
    degraded when it is not 0."""

    @classmethod
    def nodata(cls, steps: int, bands: int, pixels: int) -> WindowSeries:
        """A window no observation covers: NaN series, no valid count, no dates."""
        never = np.full(pixels, np.datetime64("NaT"), dtype="datetime64[D]")
        values = np.full((steps, bands, pixels), np.nan, dtype=np.float32)
        return cls(values, np.zeros(pixels, dtype=np.uint16), never, never.copy())


@dataclass(frozen=True)
class Observations:
    """One window's masked observations before regularisation (what :func:`read_series` regularises)."""

    values: np.ndarray
    """(obs, band, P) float32, NaN = cloud, shadow or nodata."""
    times: np.ndarray
    """(obs,) datetime64, ascending."""
    substituted: int = 0
    """Asset reads that failed and became nodata (:attr:`WindowSeries.substituted`)."""

    def until(self, end: np.datetime64) -> Observations:
        """The observations made before ``end`` (exclusive)."""
        keep = self.times < end
        return Observations(self.values[keep], self.times[keep], self.substituted)

    def regular(self, grid: np.ndarray, *, min_valid: int) -> WindowSeries:
        """The series on the dates ``grid`` (see :func:`~pimc_ray.data.timegrid.regularize`), with QA."""
        regular = regularize(self.values, self.times, grid, min_valid=min_valid)
        days = np.append(self.times.astype("datetime64[D]"), np.datetime64("NaT", "D"))  # index -1 -> NaT
        return WindowSeries(
            regular.values,
            regular.valid_count,
            days[regular.first_valid],
            days[regular.last_valid],
            self.substituted,
        )


def read_observations(
    items: Sequence[Mapping[str, Any]], spec: SeriesSpec, grid: OutputGrid, window: Window
) -> Observations:
    """Read and mask one window of ``grid`` (every observation of ``items``); reads that became nodata are
    counted in :attr:`Observations.substituted` (and logged)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AssetReadWarning)
        stack = read_window(
            stack_reflectance(items, bounds=window.bounds, epsg=grid.epsg, spec=spec.stack_spec())
        )
    substituted = 0
    for w in caught:
        if isinstance(w.message, AssetReadWarning):
            substituted += w.message.count
            logger.warning("window %s: %s", window.bounds, w.message)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if stack.shape[-2:] != (window.height, window.width):
        raise RuntimeError(f"stack shape {stack.shape} does not match window {window}")
    values = stack.values.reshape(stack.shape[0], stack.shape[1], window.pixels)  # (obs, band, P)
    return Observations(values, stack["time"].values, substituted)


def read_series(
    items: Sequence[Mapping[str, Any]], spec: SeriesSpec, grid: OutputGrid, window: Window
) -> WindowSeries:
    """Read, mask and regularise one window of ``grid``; reads that became nodata are counted in
    :attr:`WindowSeries.substituted` (and logged)."""
    observations = read_observations(items, spec, grid, window)
    return observations.regular(spec.grid_dates(), min_valid=spec.timegrid.min_valid)


@dataclass(frozen=True)
class SeriesReader:
    """The read stage of a run: regular-grid series of a window (picklable; runs in the workers' read threads)."""

    spec: SeriesSpec
    items: list[dict[str, Any]]
    halo: int = 0
    """Pixels read beyond the window on every side (an image-patch encoder's context): the result is the series
    of the grown window, read on the same grid and not clipped to the tile or the AOI."""

    @cached_property
    def index(self) -> ItemIndex:
        """The items' footprints, indexed: a window reads only the items that meet it."""
        return ItemIndex(self.items)

    def __call__(self, grid: OutputGrid, window: Window) -> WindowSeries:
        grown = window.grown(self.halo, grid.resolution)
        items = self.index.over(grid.epsg, grown.bounds, grid.resolution)
        if not items:  # no item meets the window: all of it is nodata
            return WindowSeries.nodata(self.spec.timegrid.steps, len(self.spec.bands), grown.pixels)
        return read_series(items, self.spec, grid, grown)


def crop_halo(values: np.ndarray, height: int, width: int, margin: int) -> np.ndarray:
    """The window's own pixels of ``(..., P')`` values read on the window grown by ``margin`` per side.

    ``P' = (height + 2 margin) (width + 2 margin)`` pixels, row-major, in; ``(..., height * width)`` out.
    """
    grown = values.reshape(*values.shape[:-1], height + 2 * margin, width + 2 * margin)
    own = grown[..., margin : margin + height, margin : margin + width]
    return own.reshape(*values.shape[:-1], height * width)


def yyyymmdd(dates: np.ndarray) -> np.ndarray:
    """datetime64 -> int32 ``YYYYMMDD`` (0 for NaT), a date format GIS tools display as it is."""
    out = np.zeros(dates.shape, dtype=np.int32)
    ok = ~np.isnat(dates)
    if ok.any():
        as_text = np.datetime_as_string(dates[ok].astype("datetime64[D]"))
        out[ok] = np.char.replace(as_text, "-", "").astype(np.int32)
    return out


def iso_dates(dates: np.ndarray) -> list[str]:
    """datetime64 -> ``YYYY-MM-DD`` strings."""
    return [str(d) for d in np.datetime_as_string(dates.astype("datetime64[D]"))]
