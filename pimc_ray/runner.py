"""Run a job's per-window stages over an area's windows: a streaming Ray Data pipeline, or this process.

:class:`AreaRequest` is what every per-pixel job shares (AOI, dates and series options, catalog, output folder,
parallelism).

Jobs hand :func:`run_windows` a list of ``(grid, window)`` tasks and two picklable stages: a *reader* (reading and
stacking, run as CPU tasks) and a *compute factory* that builds the per-window computation once per actor (e.g.
loading an encoder, as the Ray Data batch-inference guide recommends). The Ray Data pipeline streams windows
through both stages with backpressure, so memory is bounded whatever the area's size; results come back in task
order, with progress (windows, pixels, elapsed, ETA) reported through a callback.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pimc_ray.aoi import AOI
from pimc_ray.errors import PimcError
from pimc_ray.series import SeriesSpec
from pimc_ray.stac import load_snapshot, save_snapshot, search_items
from pimc_ray.tiles import OutputGrid, Window

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
Task = tuple[OutputGrid, Window]
Reader = Callable[[OutputGrid, Window], Any]
ComputeFactory = Callable[[], Callable[[OutputGrid, Window, Any], Any]]


@dataclass(frozen=True)
class Parallelism:
    """How a run spreads over the cluster (scale comes from here, never from module constants)."""

    workers: int = 2
    """Compute actors (each holds the model once); 0 runs everything in this process."""
    cpus_per_worker: float = 0.75
    """CPUs each compute actor reserves (torch uses max(1, round(this)) threads)."""
    gpus_per_worker: float = 0.0
    """GPUs each compute actor reserves (fractions allowed); > 0 runs plots and encoder on CUDA."""
    read_cpus: float = 0.25
    """CPUs each read task reserves: with the defaults, 2 actors and 2 reads fit 2 cores."""
    gdal_cache_mb: int = 64
    """GDAL block cache per process (see :func:`bound_memory`)."""

    def __post_init__(self) -> None:
        if self.workers < 0 or self.cpus_per_worker < 0 or self.gpus_per_worker < 0 or self.read_cpus < 0:
            raise ValueError(f"parallelism settings must not be negative: {self}")

    @property
    def device(self) -> str:
        """Where compute actors run models: ``cuda`` when they reserve GPUs."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    @property
    def torch_threads(self) -> int:
        if self.workers == 0:
            return os.cpu_count() or 1
        return max(1, round(self.cpus_per_worker))


@dataclass(frozen=True)
class AreaRequest:
    """The part of a run every per-pixel job shares: where, when, from which catalog, to where, how wide."""

    aoi: AOI
    spec: SeriesSpec
    stac_url: str
    out: str
    """Output location: a local folder, or ``s3://bucket/prefix`` for the jobs that support it."""
    collection: str = "sentinel-2-l2a"
    max_cloud_cover: float | None = None
    parallel: Parallelism = field(default_factory=Parallelism)
    """Workers, CPUs, GPUs."""
    window_size: int = 128
    """Window edge in pixels (the unit of work)."""

    snapshot: Path | None = None
    """Frozen item list (ndjson): read instead of searching when it exists, written after searching otherwise."""

    @property
    def out_dir(self) -> Path:
        """The output location as a local folder (for jobs that write locally only)."""
        if "://" in self.out:
            raise PimcError(f"--out {self.out}: this job writes to local folders only; pass a path")
        return Path(self.out)

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


def bound_memory(gdal_cache_mb: int) -> None:
    """Keep this process's memory bounded by the work in hand, not by how much work it has done.

    Two growths that scale with the AOI, each measured in ``benchmarks/bench_memory.py``:

    * GDAL's block cache defaults to 5 % of the machine's memory and fills as windows are read: capped at
      ``gdal_cache_mb`` (GDAL reads the setting once, when it first caches a block, so call this before any
      raster is read; an explicit ``GDAL_CACHEMAX`` in the environment wins).
    * glibc raises its mmap threshold each time a large block is freed, after which large buffers (encoder
      batches, whose last one per window has a new size each time) come from the heap and fragment it: the
      encoder alone grew to 3 GB over 70 batch sizes. A fixed 1 MiB threshold (``mallopt(M_MMAP_THRESHOLD)``,
      which also turns the adjustment off) keeps large buffers in their own mappings, returned on free.

    The jobs' entry points, read tasks, encoder actors and pair readers call this.
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(int(gdal_cache_mb)))
    _fix_mmap_threshold()


@functools.cache
def _fix_mmap_threshold(threshold: int = 1 << 20) -> bool:
    """``mallopt(M_MMAP_THRESHOLD, threshold)`` where the C library is glibc; False elsewhere (nothing to do)."""
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3  # glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(m_mmap_threshold, threshold))
    except (OSError, AttributeError):  # not glibc (musl, macOS): no dynamic threshold to pin
        return False


@dataclass(frozen=True)
class WindowFailure:
    """A window whose read or compute raised: the error travels back instead of stopping the whole run."""

    error: str


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or a :class:`WindowFailure` naming the exception (the run reports it and exits non-zero)."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - reported per window and per tile, never swallowed
        logger.warning("window failed: %s: %s", type(err).__name__, err)
        return WindowFailure(f"{type(err).__name__}: {err}")


def _read_row(reader: Reader, gdal_cache_mb: int, row: dict[str, Any]) -> dict[str, Any]:
    """Ray Data read stage (a CPU task): unpickle the task, read it, pickle the result."""
    bound_memory(gdal_cache_mb)
    grid, window = pickle.loads(row["task"])
    return {"i": row["i"], "task": row["task"], "data": pickle.dumps(_guarded(reader, grid, window))}


class _ComputeStage:
    """Ray Data compute stage (an actor): builds the compute function once, then serves read windows."""

    def __init__(self, factory: ComputeFactory, gdal_cache_mb: int) -> None:
        bound_memory(gdal_cache_mb)
        self.fn = factory()

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        data = pickle.loads(row["data"])
        if isinstance(data, WindowFailure):
            return {"i": row["i"], "out": row["data"]}
        grid, window = pickle.loads(row["task"])
        return {"i": row["i"], "out": pickle.dumps(_guarded(self.fn, grid, window, data))}


def run_windows(
    tasks: Sequence[Task],
    reader: Reader,
    compute: ComputeFactory,
    *,
    parallel: Parallelism,
    progress: Progress = logger.info,
    label: str = "windows",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(task index, result or WindowFailure)`` for every task, in task order.

    Two stages, as a streaming Ray Data pipeline (or in this process when ``parallel.workers == 0``):
    ``reader(grid, window)`` runs as CPU tasks (reading and stacking), and ``compute()(grid, window, data)`` on
    a pool of ``parallel.workers`` actors that each build their compute function once (a model, on a GPU when
    ``parallel.gpus_per_worker > 0``). Results stream back in task order, so a caller writing tile by tile keeps
    only a few tiles open. An exception in either stage becomes a :class:`WindowFailure` for that window.

    Args:
        tasks: ``(grid, window)`` pairs.
        reader: picklable function of ``(grid, window)``.
        compute: picklable zero-argument factory of a function of ``(grid, window, read result)``.
        parallel: workers, CPUs and GPUs per worker, CPUs per read task, GDAL cache.
        progress: receives one line per finished window.
        label: prefix of the progress lines.
    """
    total_px = sum(w.pixels for _, w in tasks)
    done_px = 0
    t0 = time.perf_counter()
    results = (
        _in_process(tasks, reader, compute, parallel)
        if parallel.workers == 0
        else _on_ray(tasks, reader, compute, parallel)
    )
    for n, (index, result) in enumerate(results, start=1):
        done_px += tasks[index][1].pixels
        elapsed = time.perf_counter() - t0
        eta = elapsed / done_px * (total_px - done_px) if done_px else float("nan")
        progress(
            f"[{label}] {n}/{len(tasks)} windows  {done_px}/{total_px} pixels  {elapsed:.0f}s  eta {eta:.0f}s"
        )
        yield index, result


def _in_process(
    tasks: Sequence[Task], reader: Reader, compute: ComputeFactory, parallel: Parallelism
) -> Iterator[tuple[int, Any]]:
    bound_memory(parallel.gdal_cache_mb)
    fn = compute()
    for index, (grid, window) in enumerate(tasks):
        data = _guarded(reader, grid, window)
        yield index, data if isinstance(data, WindowFailure) else _guarded(fn, grid, window, data)


def _on_ray(
    tasks: Sequence[Task], reader: Reader, compute: ComputeFactory, parallel: Parallelism
) -> Iterator[tuple[int, Any]]:
    import ray
    import ray.data

    if not tasks:
        return
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # tile by tile: few tiles open at once in the writer
    ctx.enable_progress_bars = False  # the runner prints its own progress
    rows = [{"i": i, "task": pickle.dumps(task)} for i, task in enumerate(tasks)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(functools.partial(_read_row, reader, parallel.gdal_cache_mb), num_cpus=parallel.read_cpus)
    ds = ds.map(
        _ComputeStage,
        fn_constructor_args=(compute, parallel.gdal_cache_mb),
        compute=ray.data.ActorPoolStrategy(size=parallel.workers),
        num_cpus=parallel.cpus_per_worker,
        num_gpus=parallel.gpus_per_worker,
    )
    for row in ds.iter_rows():
        yield int(row["i"]), pickle.loads(row["out"])
