"""AOI -> regular-grid NDVI, EVI and SAVI series as COGs, plus per-pixel QA: the ``indices`` job.

These are the series the recurrence plots are built from, written out so users can explore them in notebooks
and tests can check the whole data path (search, stack, harmonisation, mask, regular grid, indices).

Outputs in ``out_dir``, per UTM zone (``<zone>`` = ``epsg32632`` etc.)::

    ndvi_<zone>.tif   float32, one band per time step, described by its date (YYYY-MM-DD), NaN nodata
    evi_<zone>.tif    the same for EVI
    savi_<zone>.tif   the same for SAVI
    qa_<zone>.tif     int32: valid_observations, first_valid (YYYYMMDD), last_valid (YYYYMMDD); 0 nodata
    run.json          parameters, item ids, timing; written last

Pixels with fewer than ``min_valid`` cloud-free observations are NaN in the index files (never zeros) and
keep their counts in QA.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pimc_ray.cog import COGWriter
from pimc_ray.errors import PimcError
from pimc_ray.indices import INDEX_NAMES, vegetation_indices
from pimc_ray.infer import SeriesReader
from pimc_ray.outputs import RunSummary, Staging, finished_run, write_windows
from pimc_ray.runner import AreaRequest, WindowFailure, run_windows
from pimc_ray.series import WindowSeries, iso_dates, yyyymmdd
from pimc_ray.stac import save_snapshot
from pimc_ray.tiles import OutputGrid, Window, aoi_grids

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
QA_BANDS = ("valid_observations", "first_valid", "last_valid")


@dataclass(frozen=True)
class IndexBlock:
    """One window's index series and QA."""

    window: Window
    indices: np.ndarray
    """(3, T, h, w) float32 NDVI, EVI, SAVI; NaN nodata."""
    qa: np.ndarray
    """(3, h, w) int32 valid count, first and last valid date (YYYYMMDD)."""


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
        return IndexBlock(window, indices.reshape(3, -1, *shape), qa.reshape(3, *shape))


def export_indices(request: AreaRequest, *, progress: Progress = logger.info) -> RunSummary:
    """Write the regular-grid index series and QA of ``request.aoi``.

    Raises:
        NoItemsFoundError, CatalogUnreachableError, AllCloudError: nothing is written in that case.
    """
    t0 = time.perf_counter()
    items = request.search()
    key = request.base_key([i["id"] for i in items], job="indices")
    done = finished_run(request.out_dir, key)
    if done is not None:
        progress(f"outputs for run {key} already in {request.out_dir}; nothing to do")
        return RunSummary.of_finished(request.out_dir, done)
    progress(f"{len(items)} items")
    grids = aoi_grids(request.aoi)
    tasks = [(g, w) for g in grids for w in g.windows(request.window_size)]
    dates = iso_dates(request.spec.grid_dates())
    with Staging(request.out_dir) as staging:
        writers = [_grid_writers(staging, g, dates, {"pimc_run": key}) for g in grids]
        results = run_windows(
            tasks,
            SeriesReader(request.spec, items),
            IndexExporter,
            parallel=request.parallel,
            progress=progress,
            label="indices",
        )

        def write(index: int, block: IndexBlock | WindowFailure) -> int:
            if isinstance(block, WindowFailure):
                raise PimcError(f"window {index} of the indices job failed: {block.error}")
            w, grid_writers = block.window, writers[grids.index(tasks[index][0])]
            for i, name in enumerate(INDEX_NAMES):
                grid_writers[name].write(block.indices[i], w.row, w.col)
            grid_writers["QA"].write(block.qa, w.row, w.col)
            return int(np.isfinite(block.indices[0, 0]).sum())

        pixels = write_windows(results, write, [w for gw in writers for w in gw.values()], request.spec)
        save_snapshot(items, staging.path("items.ndjson"))  # the run's frozen item list
        meta = {
            "key": key,
            "job": "indices",
            "pixels": pixels,
            "seconds": round(time.perf_counter() - t0, 3),
            "spec": request.spec.to_dict(),
            "dates": dates,
            "stac_url": request.stac_url,
            "items": [i["id"] for i in items],
            "aoi": request.aoi.__geo_interface__,
        }
        files = staging.commit(meta)
    progress(f"wrote {len(files)} outputs to {request.out_dir} ({pixels} pixels with series)")
    return RunSummary(request.out_dir, files, pixels)


def _grid_writers(
    staging: Staging, grid: OutputGrid, dates: Sequence[str], tags: Mapping[str, str]
) -> dict[str, COGWriter]:
    zone = f"epsg{grid.epsg}"
    height, width = grid.shape
    common = {"height": height, "width": width, "transform": grid.transform, "epsg": grid.epsg, "tags": tags}
    writers = {
        name: COGWriter(
            staging.path(f"{name.lower()}_{zone}.tif"),
            count=len(dates),
            dtype="float32",
            nodata=float("nan"),
            band_descriptions=list(dates),
            **common,
        )
        for name in INDEX_NAMES
    }
    writers["QA"] = COGWriter(
        staging.path(f"qa_{zone}.tif"),
        count=3,
        dtype="int32",
        nodata=0,
        band_descriptions=list(QA_BANDS),
        **common,
    )
    return writers
