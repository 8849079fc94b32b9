"""Run a job's per-window stages over an area's windows: a streaming Ray Data pipeline, or this process.

Jobs hand :func:`run_windows` a list of ``(grid, window)`` tasks and two picklable stages: a *reader* (reading and
stacking, on read actors that reserve little CPU) and a *compute factory* that builds the per-window computation
once per actor (e.g. loading an encoder). Both stages follow pimc-ray's one Ray Data pattern
(:mod:`pimc_ray.parallel`: class UDFs on actor pools, rows that carry a task index). The pipeline streams windows
through both with backpressure, so memory is bounded whatever the area's size; results come back in task order,
with progress (windows, pixels, elapsed, ETA) reported through a callback.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.errors import InvalidConfigError
from pimc_ray.parallel import GDAL_CACHE_MB, actor_stage, bound_memory, check_resources, index_dataset
from pimc_ray.progress import Meter, Progress

logger = logging.getLogger(__name__)

__all__ = ["ComputeFactory", "Parallelism", "Reader", "Task", "WindowFailure", "run_windows"]

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
    """CPUs each read actor reserves: with the defaults, 2 compute and 2 read actors fit 2 cores."""
    readers: int = 2
    """Read actors (each holds the run's items once and reads one window at a time)."""
    gdal_cache_mb: int = GDAL_CACHE_MB
    """GDAL block cache per process (see :func:`pimc_ray.parallel.bound_memory`)."""
    wait_for_resources: bool = False
    """Start even when the cluster cannot place every actor now (it autoscales); else refuse up front."""

    def __post_init__(self) -> None:
        if min(self.workers, self.cpus_per_worker, self.gpus_per_worker, self.read_cpus) < 0:
            raise InvalidConfigError(f"parallelism settings must not be negative: {self}")
        if self.readers < 1:
            raise InvalidConfigError(f"readers must be at least 1, got {self.readers}")

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


class _ReadStage:
    """Ray Data UDF: task indices -> the reader's result for each (pickled), the task list held once."""

    def __init__(self, tasks: Sequence[Task], reader: Reader, gdal_cache_mb: int) -> None:
        bound_memory(gdal_cache_mb)
        self.tasks, self.reader = list(tasks), reader

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        data = [pickle.dumps(_guarded(self.reader, *self.tasks[int(i)])) for i in batch["i"]]
        return {"i": batch["i"], "data": np.array(data, dtype=object)}


class _ComputeStage:
    """Ray Data UDF: read windows -> computed results (pickled), the compute function built once per actor."""

    def __init__(self, tasks: Sequence[Task], factory: Callable[[], Any], gdal_cache_mb: int) -> None:
        bound_memory(gdal_cache_mb)
        self.tasks, self.fn = list(tasks), factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for i, blob in zip(batch["i"], batch["data"], strict=True):
            data = pickle.loads(blob)
            failed = isinstance(data, WindowFailure)
            out.append(blob if failed else pickle.dumps(_guarded(self.fn, *self.tasks[int(i)], data)))
        return {"i": batch["i"], "out": np.array(out, dtype=object)}


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
    ``reader(grid, window)`` on ``parallel.readers`` read actors (reading and stacking), and
    ``compute()(grid, window, data)`` on a pool of ``parallel.workers`` actors that each build their compute
    function once (a model, on a GPU when ``parallel.gpus_per_worker > 0``). Results stream back in task order, so
    a caller writing tile by tile keeps only a few tiles open. An exception in either stage becomes a
    :class:`WindowFailure` for that window.

    Args:
        tasks: ``(grid, window)`` pairs.
        reader: picklable function of ``(grid, window)``.
        compute: picklable zero-argument factory of a function of ``(grid, window, read result)``.
        parallel: workers, CPUs and GPUs per worker, readers and their CPUs, GDAL cache.
        progress: receives one line per finished window.
        label: prefix of the progress lines.
    """
    total_px = sum(w.pixels for _, w in tasks)
    done_px = 0
    meter = Meter(total_px)
    results = (
        _in_process(tasks, reader, compute, parallel)
        if parallel.workers == 0
        else _on_ray(tasks, reader, compute, parallel)
    )
    for n, (index, result) in enumerate(results, start=1):
        done_px += tasks[index][1].pixels
        progress(f"[{label}] {n}/{len(tasks)} windows  {done_px}/{total_px} pixels  {meter.times(done_px)}")
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
    cache = parallel.gdal_cache_mb
    readers = min(parallel.readers, len(tasks))
    if not parallel.wait_for_resources:
        needs = {
            "CPU": readers * parallel.read_cpus + parallel.workers * parallel.cpus_per_worker,
            "GPU": parallel.workers * parallel.gpus_per_worker,
        }
        check_resources(
            needs,
            what=f"mapping with {readers} read actors x {parallel.read_cpus:g} CPU and {parallel.workers} encoder "
            f"actors x {parallel.cpus_per_worker:g} CPU, {parallel.gpus_per_worker:g} GPU",
            fix="lower --workers, --cpus-per-worker, --gpus-per-worker, --readers or --read-cpus",
        )
    ds = actor_stage(
        index_dataset(len(tasks)),
        _ReadStage,
        kwargs={"tasks": tasks, "reader": reader, "gdal_cache_mb": cache},
        actors=readers,
        cpus=parallel.read_cpus,
    )
    ds = actor_stage(
        ds,
        _ComputeStage,
        kwargs={"tasks": tasks, "factory": compute, "gdal_cache_mb": cache},
        actors=parallel.workers,
        cpus=parallel.cpus_per_worker,
        gpus=parallel.gpus_per_worker,
    )
    for row in ds.iter_rows():
        yield int(row["i"]), pickle.loads(row["out"])
