"""Run a job's per-window stages over groups of windows on Ray worker actors (or in this process).

The unit of scheduling is a *group*: a grid and some of its windows, in the mapping jobs a whole output tile. A
worker actor takes a group and does everything for it: it reads the group's windows (a pool of read threads runs
ahead of the encoder, so reading overlaps computing), computes each window, and hands the results one by one to a
*sink* built for the group, which writes them (COGs into a store, for a tile) and returns a small *record* when
the group is finished. Only records travel back to the driver, which coordinates: it submits groups, keeps every
worker fed, and reports progress. Windows stay the unit of memory inside a group.

Jobs hand :func:`run_groups` three picklable stages, each built once per worker:

* a *reader* ``reader(grid, window)`` (reading and stacking: I/O bound, run in the worker's read threads);
* a *compute factory* whose function ``fn(grid, window, read)`` is built once per worker (e.g. an encoder);
* a *sink factory* ``sink(grid, windows)`` giving a :class:`GroupSink` per group.

:func:`run_windows` is the same machinery for callers that want every window's result back in the driver (fitting
a head on a few labelled windows, the indices job's zone writers): its sink collects a group's results.

Why threads in the worker rather than a two-stage Ray Data pipeline: with a pipeline every window's read result
and every window's embedding travel through the object store, and the last stage (the one that writes a tile)
must see all of a tile's windows, so it funnels into one process; a worker that reads with threads keeps a tile's
bytes in the process that writes it (docs/design.md, "Tile workers", has the measurements).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.errors import InvalidConfigError
from pimc_ray.parallel import GDAL_CACHE_MB, bound_memory, check_resources, init_ray
from pimc_ray.progress import Meter, Progress

logger = logging.getLogger(__name__)

__all__ = [
    "ComputeFactory",
    "Group",
    "GroupFailure",
    "GroupSink",
    "GroupWorker",
    "GridWindows",
    "Parallelism",
    "Reader",
    "SinkFactory",
    "Task",
    "WindowFailure",
    "run_groups",
    "run_windows",
    "start_workers",
]

Task = tuple[OutputGrid, Window]
Group = tuple[OutputGrid, Sequence[Window]]
Reader = Callable[[OutputGrid, Window], Any]
ComputeFactory = Callable[[], Callable[[OutputGrid, Window, Any], Any]]


class GroupSink(Protocol):
    """Takes a group's window results (in window order) on the worker; :meth:`finish` returns its record."""

    def add(self, window: Window, result: Any) -> None:
        """One window's result, or a :class:`WindowFailure`."""

    def finish(self) -> Any:
        """Called once after the last window: publish, and return a small picklable record for the driver."""

    def abort(self) -> None:
        """Called instead of :meth:`finish` when adding a result raised: drop what was written."""


SinkFactory = Callable[[OutputGrid, Sequence[Window]], GroupSink]


class GridWindows(Sequence[Group]):
    """Grids (tiles) as groups of their windows of ``size`` pixels, each built when it is asked for: the driver
    of a large run never holds every window at once."""

    def __init__(self, grids: Sequence[OutputGrid], size: int) -> None:
        self.grids, self.size = grids, size

    def __len__(self) -> int:
        return len(self.grids)

    def __getitem__(self, index: int) -> Group:  # type: ignore[override]
        grid = self.grids[index]
        return grid, grid.windows(self.size)


@dataclass(frozen=True)
class Parallelism:
    """How a run spreads over the cluster (scale comes from here, never from module constants)."""

    workers: int = 2
    """Worker actors (each holds the model once and works on one group at a time); 0 runs in this process."""
    cpus_per_worker: float = 0.75
    """CPUs each worker reserves for computing (torch uses max(1, round(this)) threads)."""
    gpus_per_worker: float = 0.0
    """GPUs each worker reserves (fractions allowed); > 0 runs plots and encoder on CUDA."""
    read_cpus: float = 0.25
    """CPUs each worker reserves besides, for its read threads: with the defaults 2 workers fit 2 cores."""
    readers: int = 2
    """Read threads per worker: windows read ahead of the one being computed."""
    gdal_cache_mb: int = GDAL_CACHE_MB
    """GDAL block cache per process (see :func:`pimc_ray.parallel.bound_memory`)."""
    wait_for_resources: bool = False
    """Start even when the cluster cannot place every worker now (it autoscales); else refuse up front."""

    def __post_init__(self) -> None:
        for name in ("workers", "gpus_per_worker", "read_cpus"):
            if getattr(self, name) < 0:
                raise InvalidConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.cpus_per_worker <= 0:  # torch computes in it: a worker without a CPU share oversubscribes
            raise InvalidConfigError(f"cpus_per_worker must be above 0, got {self.cpus_per_worker}")
        if self.readers < 1:
            raise InvalidConfigError(f"readers must be at least 1, got {self.readers}")

    @property
    def device(self) -> str:
        """Where workers run models: ``cuda`` when they reserve GPUs."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    @property
    def torch_threads(self) -> int:
        """torch's threads in a worker; with ``workers=0`` the CPUs this process may run on (its affinity: a
        container's or ``taskset``'s limit, not the machine's count)."""
        if self.workers == 0:
            return len(os.sched_getaffinity(0)) or 1
        return max(1, round(self.cpus_per_worker))


@dataclass(frozen=True)
class WindowFailure:
    """A window whose read or compute raised: the error travels to the sink instead of stopping the whole run."""

    error: str


@dataclass(frozen=True)
class GroupFailure:
    """A group whose sink raised, or whose worker died: what the driver gets instead of the sink's record."""

    error: str
    exception: type[BaseException] | None = None
    """The class of the exception the sink raised (None when the worker died), for callers that react to some
    (the mapping driver checks the store after a :class:`~pimc_ray.errors.StorageError`)."""


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or a :class:`WindowFailure` naming the exception (the run reports it and exits non-zero)."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - reported per window and per tile, never swallowed
        logger.warning("window failed: %s: %s", type(err).__name__, err)
        return WindowFailure(f"{type(err).__name__}: {err}")


def _group_failure(err: Exception) -> GroupFailure:
    logger.warning("group failed: %s: %s", type(err).__name__, err)
    return GroupFailure(f"{type(err).__name__}: {err}", type(err))


class GroupWorker:
    """Does whole groups: reads their windows in ``readers`` threads ahead of the compute, feeds the sink.

    One per Ray worker actor (or one in the driver's process for ``workers=0``); the reader, the compute function
    and the sink factory are built once and serve every group the worker gets.
    """

    def __init__(
        self, reader: Reader, compute: ComputeFactory, sink: SinkFactory, readers: int, gdal_cache_mb: int
    ) -> None:
        bound_memory(gdal_cache_mb)
        self.reader, self.fn, self.sink = reader, compute(), sink
        self.readers = readers
        self.pool = ThreadPoolExecutor(readers, thread_name_prefix="pimc-read")

    def run(self, grid: OutputGrid, windows: Sequence[Window]) -> Any:
        """The group's record (what its sink's ``finish`` returns), or a :class:`GroupFailure`."""
        try:
            sink = self.sink(grid, windows)
        except Exception as err:  # noqa: BLE001 - a sink that cannot open fails its group, not the run
            return _group_failure(err)
        try:
            for window, data in zip(windows, self._read_ahead(grid, windows), strict=True):
                failed = isinstance(data, WindowFailure)
                sink.add(window, data if failed else _guarded(self.fn, grid, window, data))
        except Exception as err:  # noqa: BLE001 - a sink that cannot write fails its group, not the run
            sink.abort()
            return _group_failure(err)
        try:
            return sink.finish()
        except Exception as err:  # noqa: BLE001 - nor one that cannot publish (finish cleans up after itself)
            return _group_failure(err)

    def _read_ahead(self, grid: OutputGrid, windows: Sequence[Window]) -> Iterator[Any]:
        """The windows' read results in order, each read submitted ``readers`` windows before it is needed."""
        queue: deque[Future[Any]] = deque()
        for window in windows:
            queue.append(self.pool.submit(_guarded, self.reader, grid, window))
            if len(queue) > self.readers:
                yield queue.popleft().result()
        for future in queue:
            yield future.result()


def run_groups(
    groups: Sequence[Group],
    reader: Reader,
    compute: ComputeFactory,
    sink: SinkFactory,
    *,
    parallel: Parallelism,
    progress: Progress = logger.info,
    label: str = "groups",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(group index, record or GroupFailure)`` for every group, as groups finish.

    On Ray (``parallel.workers > 0``) each of ``parallel.workers`` actors builds a :class:`GroupWorker` once and
    takes groups one at a time; the driver keeps two groups queued per worker so none waits for the next, and a
    worker that dies fails only the groups it held (a rerun redoes them). With ``workers=0`` one worker runs in
    this process.

    Args:
        groups: ``(grid, windows)`` pairs, e.g. tiles and their windows (:class:`GridWindows` builds them as
            they are submitted).
        reader: picklable function of ``(grid, window)``.
        compute: picklable zero-argument factory of a function of ``(grid, window, read result)``.
        sink: picklable factory of a :class:`GroupSink` per group.
        parallel: workers, their CPUs, GPUs and read threads, GDAL cache.
        progress: receives one line per finished group.
        label: prefix of the progress lines.
    """
    meter = Meter(len(groups))
    done_px = 0
    records = (
        _in_process(groups, reader, compute, sink, parallel)
        if parallel.workers == 0
        else _on_ray(groups, reader, compute, sink, parallel)
    )
    for n, (index, record, pixels) in enumerate(records, start=1):
        done_px += pixels
        progress(f"[{label}] {n}/{len(groups)}  {done_px} pixels  {meter.times(n)}")
        yield index, record


def _in_process(
    groups: Sequence[Group], reader: Reader, compute: ComputeFactory, sink: SinkFactory, parallel: Parallelism
) -> Iterator[tuple[int, Any, int]]:
    worker = GroupWorker(reader, compute, sink, parallel.readers, parallel.gdal_cache_mb)
    for index in range(len(groups)):
        grid, windows = groups[index]
        yield index, worker.run(grid, windows), sum(w.pixels for w in windows)


def start_workers(
    count: int, reader: Reader, compute: ComputeFactory, sink: SinkFactory, parallel: Parallelism
) -> list[Any]:
    """``count`` :class:`GroupWorker` actors on the running Ray cluster (started here when none is).

    The stages go to the object store once and every actor reads them from there (a run's items may be megabytes).
    Raises :class:`~pimc_ray.errors.InvalidConfigError` up front when the cluster can never place them.
    """
    import ray

    if not ray.is_initialized():
        # the workers' warnings (reads retried, reads that became nodata) reach the job's log
        init_ray(log_to_driver=True)
    cpus = parallel.cpus_per_worker + parallel.read_cpus
    if not parallel.wait_for_resources:
        check_resources(
            {"CPU": count * cpus, "GPU": count * parallel.gpus_per_worker},
            what=f"mapping with {count} workers x {cpus:g} CPU ({parallel.cpus_per_worker:g} to compute, "
            f"{parallel.read_cpus:g} to read), {parallel.gpus_per_worker:g} GPU",
            fix="lower --workers, --cpus-per-worker, --read-cpus or --gpus-per-worker",
        )
    actor = ray.remote(GroupWorker).options(
        num_cpus=cpus, num_gpus=parallel.gpus_per_worker, max_concurrency=1
    )
    stages = [ray.put(stage) for stage in (reader, compute, sink)]
    return [actor.remote(*stages, parallel.readers, parallel.gdal_cache_mb) for _ in range(count)]


def _on_ray(
    groups: Sequence[Group], reader: Reader, compute: ComputeFactory, sink: SinkFactory, parallel: Parallelism
) -> Iterator[tuple[int, Any, int]]:
    import ray
    import ray.exceptions

    if not groups:
        return
    workers = start_workers(min(parallel.workers, len(groups)), reader, compute, sink, parallel)
    todo = iter(range(len(groups)))
    pending: dict[Any, tuple[int, Any, int]] = {}  # group's result -> index, worker, pixels

    def submit(worker: Any) -> None:
        index = next(todo, None)
        if index is not None:
            grid, windows = groups[index]  # built now: a lazy sequence of tiles makes its windows here
            pixels = sum(w.pixels for w in windows)
            pending[worker.run.remote(grid, list(windows))] = (index, worker, pixels)

    for worker in workers:  # two queued per worker: the next group is there when one finishes
        submit(worker)
        submit(worker)
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, worker, pixels = pending.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayError as err:  # the worker (or its node) died: its groups fail
                logger.warning("a worker died: %s", err)
                record = GroupFailure(f"worker lost: {type(err).__name__}")
                # its queued group fails the same way when it comes up; the other workers take the rest
            else:
                submit(worker)
            yield index, record, pixels
        for index in todo:  # every worker died: what is left fails (a rerun redoes it)
            yield index, GroupFailure("no worker left: every worker actor died"), 0
    finally:
        for worker in workers:
            ray.kill(worker)


class _Collect:
    """The sink of :func:`run_windows`: a group's window results, in window order."""

    def __init__(self, grid: OutputGrid, windows: Sequence[Window]) -> None:
        self.results: list[Any] = []

    def add(self, window: Window, result: Any) -> None:
        self.results.append(result)

    def finish(self) -> list[Any]:
        return self.results

    def abort(self) -> None:
        self.results = []


def run_windows(
    tasks: Sequence[Task],
    reader: Reader,
    compute: ComputeFactory,
    *,
    parallel: Parallelism,
    progress: Progress = logger.info,
    label: str = "windows",
    per_group: int = 8,
) -> Iterator[tuple[int, Any]]:
    """Yield ``(task index, result or WindowFailure)`` for every task, in task order, results in the driver.

    Consecutive tasks on one grid are grouped (at most ``per_group`` windows, and enough groups to keep every
    worker busy) and run by :func:`run_groups`; results are put back in task order, so a caller's output does not
    depend on which worker was fastest.
    """
    groups, starts = _chunks(tasks, per_group, max(1, 2 * parallel.workers))
    finished: dict[int, list[Any]] = {}
    next_group = 0
    for index, record in run_groups(
        groups, reader, compute, _Collect, parallel=parallel, progress=progress, label=label
    ):
        if isinstance(record, GroupFailure):
            record = [WindowFailure(record.error)] * len(groups[index][1])
        finished[index] = record
        while next_group in finished:
            for offset, result in enumerate(finished.pop(next_group)):
                yield starts[next_group] + offset, result
            next_group += 1


def _chunks(tasks: Sequence[Task], most: int, least_groups: int) -> tuple[list[Group], list[int]]:
    """Consecutive tasks on one grid as groups of at most ``most`` windows (fewer when there are few tasks, so
    there are at least ``least_groups`` groups); returns the groups and the task index each starts at."""
    size = max(1, min(most, len(tasks) // least_groups))
    groups: list[Group] = []
    starts: list[int] = []
    for i, (grid, window) in enumerate(tasks):
        if groups and groups[-1][0] is grid and len(groups[-1][1]) < size:
            groups[-1][1].append(window)  # type: ignore[attr-defined]
        else:
            groups.append((grid, [window]))
            starts.append(i)
    return groups, starts
