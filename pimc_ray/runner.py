"""Run a per-window function over an area's windows: in this process, or on a pool of Ray actors.

:class:`AreaRequest` is what every per-pixel job shares (AOI, dates and series options, catalog, output folder,
parallelism).

Jobs hand :func:`run_windows` a list of ``(grid, window)`` tasks and a picklable *worker factory* (a class or a
``functools.partial``) that builds the per-window callable, e.g. a :class:`~pimc_ray.infer.WindowEmbedder` that
loads a model. On Ray each actor calls the factory once (the model is loaded once per actor, as the Ray Data
batch-inference guide recommends) and then serves windows handed out by ``ray.util.ActorPool``. Results come back
as they finish, with progress (windows, pixels, elapsed, ETA) reported through a callback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pimc_ray.aoi import AOI
from pimc_ray.series import SeriesSpec
from pimc_ray.stac import load_snapshot, save_snapshot, search_items
from pimc_ray.tiles import OutputGrid, Window

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
WindowFn = Callable[[OutputGrid, Window], Any]
Task = tuple[OutputGrid, Window]


@dataclass(frozen=True)
class AreaRequest:
    """The part of a run every per-pixel job shares: where, when, from which catalog, to where, how wide."""

    aoi: AOI
    spec: SeriesSpec
    stac_url: str
    out_dir: Path
    collection: str = "sentinel-2-l2a"
    max_cloud_cover: float | None = None
    workers: int = 2
    """Ray actors (0: run in this process)."""
    window_size: int = 128
    """Window edge in pixels (the unit of work)."""

    snapshot: Path | None = None
    """Frozen item list (ndjson): read instead of searching when it exists, written after searching otherwise."""

    def search(self) -> list[dict[str, Any]]:
        """The run's items: from the snapshot if there is one, else from the STAC API (then frozen there)."""
        if self.snapshot is not None and self.snapshot.exists():
            items = load_snapshot(self.snapshot)
            logger.info("using %d items frozen in %s (no search)", len(items), self.snapshot)
            return items
        items = search_items(
            self.aoi,
            self.spec.dates,
            stac_url=self.stac_url,
            collection=self.collection,
            max_cloud_cover=self.max_cloud_cover,
        )
        if self.snapshot is not None:
            save_snapshot(items, self.snapshot)
        return items

    def base_key(self, item_ids: Sequence[str], **extra: Any) -> str:
        payload = {
            "aoi": self.aoi.__geo_interface__,
            "spec": self.spec.to_dict(),
            "items": sorted(item_ids),
            **extra,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def bound_gdal_cache(megabytes: int) -> None:
    """Cap GDAL's raster block cache in this process.

    GDAL's default is 5 % of the machine's memory, and reading more windows fills it, so memory would grow with
    the AOI. GDAL reads the setting once, when it first caches a block: call this before any raster is read
    (the jobs' entry points and every worker do). An explicit ``GDAL_CACHEMAX`` in the environment wins.
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(int(megabytes)))


class _Actor:
    """Ray actor body: builds the per-window function once, then serves windows."""

    def __init__(self, factory: Callable[[], WindowFn], gdal_cache_mb: int) -> None:
        bound_gdal_cache(gdal_cache_mb)
        self.fn = factory()

    def run(self, index: int, grid: OutputGrid, window: Window) -> tuple[int, Any]:
        return index, self.fn(grid, window)


def run_windows(
    tasks: Sequence[Task],
    factory: Callable[[], WindowFn],
    *,
    workers: int,
    gpus_per_worker: float = 0.0,
    gdal_cache_mb: int = 64,
    progress: Progress = logger.info,
    label: str = "windows",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(task index, factory()(grid, window))`` for every task, in completion order.

    Args:
        tasks: ``(grid, window)`` pairs.
        factory: picklable zero-argument callable building the per-window function.
        workers: Ray actors; 0 runs everything in this process (tests, notebooks).
        gpus_per_worker: GPUs each actor reserves (fractions allowed).
        gdal_cache_mb: GDAL block cache of each worker process (see :func:`bound_gdal_cache`).
        progress: receives one line per finished window.
        label: prefix of the progress lines.
    """
    total_px = sum(w.pixels for _, w in tasks)
    done_px = 0
    t0 = time.perf_counter()
    results = _execute(tasks, factory, workers, gpus_per_worker, gdal_cache_mb)
    for n, (index, result) in enumerate(results, start=1):
        done_px += tasks[index][1].pixels
        elapsed = time.perf_counter() - t0
        eta = elapsed / done_px * (total_px - done_px) if done_px else float("nan")
        progress(
            f"[{label}] {n}/{len(tasks)} windows  {done_px}/{total_px} pixels  {elapsed:.0f}s  eta {eta:.0f}s"
        )
        yield index, result


def _execute(
    tasks: Sequence[Task],
    factory: Callable[[], WindowFn],
    workers: int,
    gpus_per_worker: float,
    gdal_cache_mb: int,
) -> Iterator[tuple[int, Any]]:
    if workers == 0 or not tasks:
        bound_gdal_cache(gdal_cache_mb)
        fn = factory()
        for index, (grid, window) in enumerate(tasks):
            yield index, fn(grid, window)
        return
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    actor_cls = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(_Actor)
    factory_ref = ray.put(factory)
    actors = [actor_cls.remote(factory_ref, gdal_cache_mb) for _ in range(min(workers, len(tasks)))]  # type: ignore[attr-defined]
    try:
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda actor, i: actor.run.remote(i, *tasks[i]), range(len(tasks)))
    finally:
        for actor in actors:
            ray.kill(actor)
