"""AOI -> regular-grid NDVI, EVI and SAVI series as COGs, plus per-pixel QA: the ``indices`` job.

These are the series the recurrence plots are built from, written out so users can explore them in notebooks
and tests can check the whole data path (search, stack, harmonisation, mask, regular grid, indices).

Outputs under ``out`` (a folder or ``s3://bucket/prefix``), per UTM zone (``<zone>`` = ``epsg32632`` etc.)::

    ndvi_<zone>.tif   float32, one band per time step, described by its date (YYYY-MM-DD), NaN nodata
    evi_<zone>.tif    the same for EVI
    savi_<zone>.tif   the same for SAVI
    qa_<zone>.tif     int32: valid_observations, first_valid (YYYYMMDD), last_valid (YYYYMMDD); 0 nodata
    items.ndjson      the frozen STAC items the run read
    manifest.json     the run key and each zone's status (:class:`~pimc_ray.io.manifest.RunManifest`)
    status/<zone>.json  a zone's status, written when it is published

Pixels with fewer than ``min_valid`` cloud-free observations are NaN in the index files (never zeros) and
keep their counts in QA. Every zone's files are computed in full before any is published: a run that finds no
valid pixel at all writes nothing. A rerun with the same key skips finished zones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pimc_ray.data.series import SeriesReader, WindowSeries, iso_dates, yyyymmdd
from pimc_ray.data.stac import dumps_ndjson
from pimc_ray.data.tiles import OutputGrid, Window, aoi_grids
from pimc_ray.errors import AllCloudError, PimcError
from pimc_ray.io.manifest import RunManifest
from pimc_ray.io.rasters import RasterProduct, RasterSet
from pimc_ray.kernels.indices import INDEX_NAMES, vegetation_indices
from pimc_ray.mapping.requests import AreaRequest
from pimc_ray.mapping.runner import WindowFailure, run_windows
from pimc_ray.progress import Meter, Progress
from pimc_ray.scratch import temporary_folder
from pimc_ray.storage import open_store

logger = logging.getLogger(__name__)

__all__ = ["IndexBlock", "IndexExporter", "IndicesSummary", "export_indices", "index_products"]

QA_BANDS = ("valid_observations", "first_valid", "last_valid")


@dataclass(frozen=True)
class IndexBlock:
    """One window's index series and QA."""

    window: Window
    indices: np.ndarray
    """(3, T, h, w) float32 NDVI, EVI, SAVI; NaN nodata."""
    qa: np.ndarray
    """(3, h, w) int32 valid count, first and last valid date (YYYYMMDD)."""
    substituted: int = 0
    """Reads that failed and became nodata (``on_unreadable="nodata"``): the block is degraded."""


@dataclass(frozen=True)
class IndicesSummary:
    """What an indices run produced."""

    out: str
    keys: list[str]
    """Keys (relative paths) of the run's outputs."""
    pixels: int
    """Pixels with valid series."""
    skipped: bool = False
    """True when the run had already finished and nothing was done."""


class IndexExporter:
    """Compute stage of the indices job: regular series -> indices and QA (stateless; the class is its factory)."""

    def __call__(self, grid: OutputGrid, window: Window, series: WindowSeries) -> IndexBlock:
        # series.values: (T, 3, P) blue, red, NIR
        blue, red, nir = series.values[:, 0], series.values[:, 1], series.values[:, 2]
        indices = vegetation_indices(blue, red, nir)  # (3, T, P)
        shape = (window.height, window.width)
        outside = ~grid.inside(window).reshape(-1)
        indices[:, :, outside] = np.nan
        count = np.where(outside, 0, series.valid_count).astype(np.int32)
        qa = np.stack([count, yyyymmdd(series.first_valid), yyyymmdd(series.last_valid)])
        qa[:, outside] = 0
        return IndexBlock(window, indices.reshape(3, -1, *shape), qa.reshape(3, *shape), series.substituted)


def index_products(dates: list[str]) -> dict[str, RasterProduct]:
    """The products of one zone: a float32 series per index (a band per grid date) and the int32 QA."""
    products = {
        name.lower(): RasterProduct(name.lower(), "float32", float("nan"), tuple(dates), f"{name} series")
        for name in INDEX_NAMES
    }
    products["qa"] = RasterProduct(
        "qa", "int32", 0, QA_BANDS, "Valid observations, first and last valid date"
    )
    return products


def export_indices(
    request: AreaRequest, *, accept_degraded: bool = False, progress: Progress = logger.info
) -> IndicesSummary:
    """Write the regular-grid index series and QA of ``request.aoi``.

    A zone with reads that became nodata (``on_unreadable="nodata"``) is published with their count
    (``substituted_reads`` in its status) and computed again by a rerun, unless ``accept_degraded``.

    Raises:
        NoItemsFoundError, CatalogUnreachableError, AllCloudError, OutputExistsError: nothing is written then.
    """
    meter = Meter(0)
    store = open_store(request.out)
    items = request.search()
    key = request.base_key([i["id"] for i in items], job="indices")
    grids = aoi_grids(request.aoi)
    zones = [f"epsg{g.epsg}" for g in grids]
    dates = iso_dates(request.spec.grid_dates())
    products = index_products(dates)
    keys = [f"{name}_{zone}.tif" for zone in zones for name in products] + ["items.ndjson"]
    manifest = RunManifest.load(store)
    if manifest is not None:
        manifest.check_same_run(key, "indices", request.out)
        degraded = [z for z in zones if manifest.tiles.get(z, {}).get("substituted_reads")]
        if set(zones) <= manifest.done() and (accept_degraded or not degraded):
            progress(f"outputs for run {key} already in {request.out}; nothing to do")
            pixels = sum(int(manifest.tiles[z].get("pixels", 0)) for z in zones)
            return IndicesSummary(request.out, keys, pixels, skipped=True)
        if degraded and not accept_degraded:
            progress(f"computing again {', '.join(degraded)}: published with reads that became nodata")
    progress(f"{len(items)} items")
    tasks = [(g, w) for g in grids for w in g.windows(request.window_size)]
    with temporary_folder("pimc-indices-") as tmp:
        sets = []
        for grid, zone in zip(grids, zones, strict=True):
            Path(tmp, zone).mkdir()
            sets.append(RasterSet(grid, Path(tmp, zone), products, {"pimc_run": key}))
        try:
            counts, substituted = _write_windows(request, items, tasks, grids, sets, progress)
            if sum(counts) == 0:
                raise AllCloudError(
                    f"no AOI pixel has {request.spec.timegrid.min_valid} or more cloud-free observations between "
                    f"{request.spec.dates.start} and {request.spec.dates.end}; widen the dates or lower --min-valid"
                )
        except BaseException:
            for rasters in sets:
                rasters.abort()
            raise
        manifest = manifest or RunManifest(
            key, "indices", {"spec": request.spec.to_dict(), "dates": dates}, {}
        )
        manifest.save(store)  # what the run is, before any zone's status object
        store.put_bytes(dumps_ndjson(items), "items.ndjson")
        for zone, rasters, pixels, lost in zip(zones, sets, counts, substituted, strict=True):
            written = rasters.publish(store, {name: f"{name}_{zone}.tif" for name in products})
            details = {"substituted_reads": lost} if lost else {}
            manifest.mark(zone, "done", files=sorted(written.values()), pixels=pixels, **details)
            manifest.publish(store, zone)
        manifest.save(store)
    if any(substituted):
        per_zone = ", ".join(f"{z} {n}" for z, n in zip(zones, substituted, strict=True) if n)
        progress(
            f"degraded: reads that became nodata (--on-unreadable nodata) per zone: {per_zone}; a rerun computes "
            "them again, --accept-degraded keeps them"
        )
    progress(
        f"wrote {len(keys)} outputs to {request.out} ({sum(counts)} pixels with series, {meter.elapsed:.0f}s)"
    )
    return IndicesSummary(request.out, keys, sum(counts))


def _write_windows(
    request: AreaRequest,
    items: list[dict[str, object]],
    tasks: list[tuple[OutputGrid, Window]],
    grids: list[OutputGrid],
    sets: list[RasterSet],
    progress: Progress,
) -> tuple[list[int], list[int]]:
    """Stream every window's indices into its zone's rasters; returns the valid pixels and the reads that became
    nodata, per zone."""
    counts, substituted = [0] * len(grids), [0] * len(grids)
    results = run_windows(
        tasks, SeriesReader(request.spec, items), IndexExporter, parallel=request.parallel, progress=progress,
        label="indices",
    )  # fmt: skip
    for index, block in results:
        if isinstance(block, WindowFailure):
            raise PimcError(f"window {index} of the indices job failed: {block.error}")
        zone = grids.index(tasks[index][0])
        w, rasters = block.window, sets[zone]
        for i, name in enumerate(INDEX_NAMES):
            rasters.write(name.lower(), block.indices[i], w.row, w.col)
        rasters.write("qa", block.qa, w.row, w.col)
        counts[zone] += int(np.isfinite(block.indices[0, 0]).sum())
        substituted[zone] += block.substituted
    return counts, substituted
