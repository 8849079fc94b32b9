"""Items -> lazy (time, band, y, x) surface-reflectance DataArray on a UTM grid; harmonisation; SCL mask.

:func:`stack_reflectance` is the one entry point. It

1. normalises item dicts for stackstac (``proj:epsg`` re-added from ``proj:code``: pystac >= 1.12 rewrites it and
   stackstac 0.5.1 reads only ``proj:epsg``, upstream issue 262);
2. stacks the requested bands plus SCL with stackstac as uint16 DNs (no rescale: catalogs' scale/offset
   metadata is unreliable, see :mod:`pimc_ray.data.catalogs`);
3. converts DNs to surface reflectance with the per-item ``(scale, offset)`` of :func:`catalogs.harmonisation`,
   so BOA_ADD_OFFSET is removed exactly once whichever catalog and baseline an item comes from;
4. sets to NaN every pixel whose DN is 0 (nodata) or whose SCL class is in ``mask_classes``;
5. merges acquisitions of the same day (adjacent tiles, or a tile seen by two orbits) by taking, per pixel, the
   first valid value in item order.

Everything stays lazy (dask) until the caller computes a window.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import xarray as xr
from rasterio.errors import RasterioIOError

from pimc_ray.data.catalogs import (
    BANDS,
    SCL,
    CatalogConvention,
    detect_convention,
    get_convention,
    harmonisation,
)
from pimc_ray.data.stac import epsg_of
from pimc_ray.errors import AssetReadError, AssetReadWarning, MixedCRSError, UnknownCatalogError

__all__ = [
    "DEFAULT_MASK_CLASSES",
    "merge_same_day",
    "read_window",
    "resolve_convention",
    "stack_reflectance",
    "stackstac_ready",
    "StackSpec",
]

logger = logging.getLogger(__name__)

#: SCL classes treated as invalid by default: 0 no data, 1 saturated or defective, 2 dark area (topographic or
#: cast shadow), 3 cloud shadow, 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus,
#: 11 snow or ice. Kept: 4 vegetation, 5 not vegetated, 6 water, 7 unclassified.
DEFAULT_MASK_CLASSES: frozenset[int] = frozenset({0, 1, 2, 3, 8, 9, 10, 11})


@dataclass(frozen=True)
class StackSpec:
    """How to turn items into a reflectance stack."""

    bands: tuple[str, ...] = BANDS
    """Canonical band names to load, in output order."""
    resolution: float = 10.0
    """Output pixel size in metres (20 m bands are resampled with nearest neighbour)."""
    mask_classes: frozenset[int] = field(default_factory=lambda: DEFAULT_MASK_CLASSES)
    """SCL classes set to NaN."""
    catalog: str | None = None
    """Catalog convention name; detected from the items' asset keys when None."""
    chunksize: int = 1024
    """Dask chunk size in pixels along y and x."""
    on_unreadable: Literal["error", "nodata"] = "error"
    """An asset that cannot be read (404, missing, corrupt): ``error`` stops with an
    :class:`~pimc_ray.errors.AssetReadError` naming it; ``nodata`` treats its pixels as nodata (like cloud)
    and emits an :class:`~pimc_ray.errors.AssetReadWarning` per window saying how many reads failed."""

    def __post_init__(self) -> None:
        unknown = [b for b in self.bands if b not in BANDS]
        if unknown or not self.bands:
            raise ValueError(f"unknown bands {unknown}; choose from {BANDS}")
        if self.resolution <= 0:
            raise ValueError(f"resolution must be positive, got {self.resolution}")
        if self.on_unreadable not in ("error", "nodata"):
            raise ValueError(f"on_unreadable must be 'error' or 'nodata', got {self.on_unreadable!r}")
        bad = [c for c in self.mask_classes if not 0 <= int(c) <= 11]
        if bad:
            raise ValueError(f"SCL classes are 0..11, got {sorted(bad)}")


#: GDAL's HTTP settings for asset reads: a transient failure (a 429 or 5xx answer, a dropped connection, a
#: truncated body, a stall) is retried with a growing delay before a read fails; a stalled request ends after
#: ``GDAL_HTTP_TIMEOUT`` seconds. Measured against tests/faulty_http.py (tests/data/test_stack.py).
HTTP_RETRY_ENV = {
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
}


#: Tries of one asset read, and the delay before the second (doubled before each next one): 0.5 + 1 + 2 s.
READ_ATTEMPTS = 4
READ_RETRY_DELAY = 0.5


def _retrying_reader() -> type:
    """stackstac's reader, each read tried :data:`READ_ATTEMPTS` times (made on first use: stackstac is imported
    lazily)."""
    from stackstac.rio_reader import AutoParallelRioReader

    class RetryingRioReader(AutoParallelRioReader):
        """stackstac's reader whose reads are tried again, on a reopened dataset, before they fail (or become
        nodata under ``errors_as_nodata``): GDAL retries answers such as 503 itself (:data:`HTTP_RETRY_ENV`),
        not a connection dropped in the middle of a body."""

        @property
        def dataset(self) -> Any:
            return _RetryingDataset(self, AutoParallelRioReader.dataset.fget)

    return RetryingRioReader


class _RetryingDataset:
    """What :meth:`RetryingRioReader.dataset` gives stackstac's ``read``: the reader's dataset, whose ``read`` is
    tried again (after closing it, so that it is opened anew) when it fails."""

    def __init__(self, reader: Any, open_dataset: Any) -> None:
        self.reader, self.open_dataset = reader, open_dataset

    def read(self, **kwargs: Any) -> Any:
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return self.open_dataset(self.reader).read(**kwargs)
            except Exception as err:  # any failure of a read: GDAL, curl, a closed file  # noqa: BLE001
                if attempt == READ_ATTEMPTS:
                    raise
                logger.warning(
                    "reading %s failed (attempt %d of %d), trying again: %s",
                    self.reader.url, attempt, READ_ATTEMPTS, err,
                )  # fmt: skip
                self.reader.close()
                _clear_network_cache()
                time.sleep(READ_RETRY_DELAY * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


def _clear_network_cache() -> None:
    """Empty GDAL's cache of bytes read over the network (``VSICurlClearCache``): a body cut short is kept there,
    and a reopened file would read the same broken bytes again. The cache only saves requests, so clearing it
    costs some re-reads; rasterio does not expose the call, so it is made through the loaded GDAL library (a
    no-op where it cannot be found)."""
    library = _gdal_library()
    if library is not None:
        library.VSICurlClearCache()


@functools.cache
def _gdal_library() -> Any:
    """The GDAL library this process loaded (rasterio's), through ctypes; None where it cannot be found."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = {
                line.split()[-1] for line in maps if "libgdal" in line and line.split()[-1].startswith("/")
            }
        return ctypes.CDLL(sorted(paths)[0]) if paths else None
    except (OSError, AttributeError):
        return None


def _gdal_env() -> Any:
    """stackstac's GDAL environment with :data:`HTTP_RETRY_ENV` (given settings in the environment win)."""
    import stackstac

    settings = {k: v for k, v in HTTP_RETRY_ENV.items() if k not in os.environ}
    return stackstac.DEFAULT_GDAL_ENV.updated(always=settings)


def stackstac_ready(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``items`` ready for stackstac 0.5.1.

    ``proj:epsg`` is filled in from ``proj:code`` where pystac removed it, and a null ``datetime`` (items with a
    ``start_datetime``/``end_datetime`` range, such as label rasters) from ``start_datetime``.
    """
    ready = []
    for item in items:
        props = dict(item.get("properties", {}))
        if props.get("proj:epsg") is None and epsg_of(props) is not None:
            props["proj:epsg"] = epsg_of(props)
        if props.get("datetime") is None and props.get("start_datetime") is not None:
            props["datetime"] = props["start_datetime"]
        ready.append({**item, "properties": props})
    return ready


def resolve_convention(items: Sequence[Mapping[str, Any]], catalog: str | None) -> CatalogConvention:
    """The catalog convention of ``items``: the named one, or the one all items' asset keys match."""
    if catalog is not None:
        return get_convention(catalog)
    found = {detect_convention(item).name for item in items}
    if len(found) > 1:
        raise UnknownCatalogError(
            f"items mix catalog conventions {sorted(found)}; search one catalog at a time or pass catalog=<name>"
        )
    return get_convention(found.pop())


def stack_reflectance(
    items: Sequence[Mapping[str, Any]],
    *,
    bounds: tuple[float, float, float, float],
    epsg: int,
    spec: StackSpec | None = None,
) -> xr.DataArray:
    """Lazy surface reflectance, dims ``(time, band, y, x)``, float32, NaN where invalid.

    Args:
        items: STAC item dicts of one Sentinel-2 L2A collection.
        bounds: ``(xmin, ymin, xmax, ymax)`` of the output grid in ``EPSG:epsg`` metres.
        epsg: output CRS, normally the UTM zone of the area (items of other zones are reprojected).
        spec: bands, resolution, mask and catalog convention.

    Returns:
        A DataArray with ``time`` (one per acquisition day), ``band`` (canonical names) and ``y``/``x`` (pixel
        top-left corners) coordinates, and ``epsg``/``resolution`` attributes.
    """
    import stackstac

    spec = spec or StackSpec()
    if not items:
        raise ValueError("no items to stack")
    convention = resolve_convention(items, spec.catalog)
    ready = stackstac_ready(items)
    assets = [convention.asset_key(b) for b in (*spec.bands, SCL)]
    try:
        dn = stackstac.stack(
            ready,
            assets=assets,
            epsg=epsg,
            resolution=spec.resolution,
            bounds=bounds,
            dtype="uint16",
            fill_value=np.uint16(0),
            rescale=False,
            chunksize=(1, 1, spec.chunksize, spec.chunksize),
            properties=False,
            band_coords=False,
            errors_as_nodata=(RasterioIOError(".*"),) if spec.on_unreadable == "nodata" else (),
            gdal_env=_gdal_env(),
            reader=_retrying_reader(),
        )
    except ValueError as err:
        if "CRS" in str(err):
            raise MixedCRSError(f"cannot put the items on one grid in EPSG:{epsg}: {err}") from err
        raise AssetReadError(f"cannot stack the items: {err}") from err

    attrs = {"epsg": epsg, "resolution": spec.resolution, "catalog": convention.name}
    if dn.sizes["time"] == 0:  # stackstac drops items that miss the bounds: no item covers this area
        empty = np.empty((0, len(spec.bands), dn.sizes["y"], dn.sizes["x"]), np.float32)
        coords = {
            "time": np.array([], "datetime64[ns]"),
            "band": list(spec.bands),
            "y": dn["y"],
            "x": dn["x"],
        }
        return xr.DataArray(
            empty, dims=("time", "band", "y", "x"), coords=coords, attrs=attrs, name="reflectance"
        )

    # (scale, offset) per item, aligned on the time axis.
    by_id = {item["id"]: harmonisation(item, convention) for item in items}
    scale = xr.DataArray(np.array([by_id[i][0] for i in dn["id"].values], np.float32), dims="time")
    offset = xr.DataArray(np.array([by_id[i][1] for i in dn["id"].values], np.float32), dims="time")

    refl_dn = dn.isel(band=slice(0, len(spec.bands)))
    scl = dn.isel(band=len(spec.bands))
    valid = (refl_dn != 0) & ~scl.isin(sorted(spec.mask_classes))
    reflectance = (refl_dn.astype(np.float32) * scale + offset).where(valid)
    reflectance = reflectance.assign_coords(band=list(spec.bands))
    merged = merge_same_day(reflectance)
    merged.attrs = attrs
    merged.name = "reflectance"
    return merged


def merge_same_day(stack: xr.DataArray) -> xr.DataArray:
    """One time step per calendar day: the first valid value per pixel among that day's items."""
    days = stack["time"].dt.floor("D")
    if len(np.unique(days.values)) == stack.sizes["time"]:
        return stack.assign_coords(time=days.values).drop_vars(
            [c for c in stack.coords if c not in {"time", "band", "y", "x"}]
        )
    stack = stack.drop_vars([c for c in stack.coords if c not in {"time", "band", "y", "x"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        merged = stack.groupby(days.rename("day")).first(skipna=True)
    return merged.rename(day="time").transpose("time", "band", "y", "x")


def read_window(stack: xr.DataArray) -> xr.DataArray:
    """Compute a (small) lazy stack into memory with dask's threaded scheduler.

    Each asset read is tried several times before it fails (:class:`RetryingRioReader`).

    Raises:
        AssetReadError: an asset could not be read (stackstac reports it as a RuntimeError naming the URL).

    Warns:
        AssetReadWarning: reads that failed and became nodata under ``on_unreadable="nodata"``.
    """
    from rasterio.errors import RasterioError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            computed = stack.compute(scheduler="threads")
    except (RuntimeError, OSError, RasterioError) as err:
        raise AssetReadError(
            f"reading the Sentinel-2 assets failed ({err}); check that the asset hrefs are reachable and not "
            "corrupt, or pass --on-unreadable nodata to treat unreadable assets as nodata"
        ) from err
    failed = [str(w.message) for w in caught if str(w.message).startswith("Error ")]
    if failed:
        warnings.warn(
            AssetReadWarning(
                f"{len(failed)} asset read(s) failed and became nodata; first: {failed[0]}", count=len(failed)
            ),
            stacklevel=2,
        )
    for w in caught:
        if not str(w.message).startswith("Error "):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return computed
