"""How pimc-ray runs work on Ray: one Ray Data stage pattern, and the memory bounds every worker process sets.

Every Ray Data stage in pimc-ray is a *class UDF on an actor pool*, the pattern of Ray's batch-inference guide:
the class's ``__init__`` holds what is costly to build or to ship (a model, the run's items, the task list) once
per actor, and ``__call__`` maps a batch (a dict of NumPy arrays) to a batch. Rows carry only a task index;
:func:`index_dataset` makes them and :func:`actor_stage` adds a stage. The pretraining pair stream
(:mod:`pimc_ray.training.pairs`) is built from these two calls. The mapping jobs' tile workers
(:mod:`pimc_ray.mapping.runner`) are plain actors that take whole tiles; they check the cluster with
:func:`check_resources` as the stages do.

:func:`bound_memory` is what every process that reads rasters or runs an encoder calls first, and
:func:`in_order` fans small reads (status objects, items, quicklooks) out to threads in the driver.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pimc_ray.errors import InvalidConfigError

__all__ = [
    "check_resources",
    "GDAL_CACHE_MB",
    "actor_stage",
    "bound_memory",
    "in_order",
    "index_dataset",
]

#: GDAL's block cache per process, in MB: bounded, so memory follows the window in hand rather than the AOI.
GDAL_CACHE_MB = 64


def index_dataset(count: int) -> Any:
    """A Ray dataset of ``count`` rows ``{"i": 0..count-1}``, one per block, so stages stream row by row."""
    import ray.data

    return ray.data.from_items([{"i": i} for i in range(count)], override_num_blocks=max(1, count))


def actor_stage(
    dataset: Any,
    udf: type,
    *,
    kwargs: dict[str, Any],
    actors: int,
    cpus: float,
    gpus: float = 0.0,
    batch_size: int = 1,
) -> Any:
    """``dataset`` followed by ``udf`` on a pool of ``actors`` actors (``udf(**kwargs)`` once per actor).

    Args:
        dataset: the Ray dataset to extend.
        udf: a class whose instances map a batch ``dict[str, np.ndarray]`` to a batch.
        kwargs: the constructor's keyword arguments (shipped once per actor through the object store).
        actors: actors in the pool.
        cpus: CPUs each actor reserves.
        gpus: GPUs each actor reserves (fractions allowed).
        batch_size: rows per call.
    """
    import ray.data

    return dataset.map_batches(
        udf,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        num_gpus=gpus,
    )


def init_ray(**kwargs: Any) -> None:
    """Start or join Ray for a job: the cluster ``RAY_ADDRESS`` names (``ray job submit`` sets it for its jobs),
    else a new local Ray in this process.

    Not a bare ``ray.init()``: without ``RAY_ADDRESS`` that joins the latest cluster anyone started on this machine
    with ``ray start`` (the address it leaves in ``$TMPDIR/ray/ray_current_cluster``), so a job, or a test, would
    run on and wait for someone else's cluster (``tests/test_isolation.py``).
    """
    import ray

    ray.init(address=None if os.environ.get("RAY_ADDRESS") else "local", **kwargs)


def check_resources(needs: Mapping[str, float], *, what: str, fix: str) -> dict[str, float]:
    """Refuse, before anything starts, work that the running Ray cluster can never schedule.

    Ray queues an actor or a Ray Train worker whose resources no node offers, and the job then waits forever;
    this says so up front instead. ``needs`` are totals (``{"CPU": 2.5, "GPU": 0}``); the cluster's totals come
    from ``ray.cluster_resources()`` (so call it after ``ray.init``). An autoscaling cluster that will grow is
    the one case to skip the check (the jobs' ``--wait-for-resources``).

    Returns:
        The cluster's resources.

    Raises:
        InvalidConfigError: naming what is needed, what the cluster has, and ``fix``.
    """
    import ray

    have = {k: float(v) for k, v in ray.cluster_resources().items()}
    short = [k for k, v in needs.items() if v > have.get(k, 0.0) + 1e-9]
    if short:
        need = ", ".join(f"{needs[k]:g} {k}" for k in short)
        got = ", ".join(f"{have.get(k, 0.0):g} {k}" for k in short)
        raise InvalidConfigError(
            f"{what} needs {need} but the Ray cluster has {got} in all, so it would wait forever; {fix} "
            "(or pass --wait-for-resources on a cluster that autoscales)"
        )
    return have


def bound_memory(gdal_cache_mb: int = GDAL_CACHE_MB) -> None:
    """Keep this process's memory bounded by the work in hand, not by how much work it has done.

    Two growths that scale with the AOI, each measured in ``benchmarks/bench_memory.py``:

    * GDAL's block cache defaults to 5 % of the machine's memory and fills as windows are read: capped at
      ``gdal_cache_mb`` (GDAL reads the setting once, when it first caches a block, so call this before any
      raster is read; an explicit ``GDAL_CACHEMAX`` in the environment wins).
    * glibc raises its mmap threshold each time a large block is freed, after which large buffers (encoder
      batches, whose last one per window has a new size each time) come from the heap and fragment it: the
      encoder alone grew to 3 GB over 70 batch sizes. A fixed 1 MiB threshold (``mallopt(M_MMAP_THRESHOLD)``,
      which also turns the adjustment off) keeps large buffers in their own mappings, returned on free.

    The jobs' entry points, read actors, encoder actors and pair readers call this.
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


def in_order(
    fn: Callable[[Any], Any], values: Sequence[Any], threads: int, chunk: int = 256
) -> Iterator[Any]:
    """``fn`` of every value, computed ``threads`` at a time, yielded in order, at most ``chunk`` results held:
    for many small requests to a store, whose time is latency, not bandwidth."""
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, len(values), chunk):
            yield from pool.map(fn, values[start : start + chunk])
