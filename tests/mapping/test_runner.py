"""The runner: groups of windows done whole by workers, results in task order whatever the parallelism, and
workers the cluster cannot place."""

import os
import threading

import pytest
import shapely.geometry

from pimc_ray.data.tiles import OutputGrid
from pimc_ray.errors import InvalidConfigError
from pimc_ray.mapping.runner import (
    GridWindows,
    GroupFailure,
    Parallelism,
    WindowFailure,
    run_groups,
    run_windows,
)

GRID = OutputGrid(32632, (0.0, 0.0, 640.0, 640.0), 10.0, shapely.geometry.box(0.0, 0.0, 640.0, 640.0))


def read_corner(grid, window):
    if window.row == 16 and window.col == 16:
        raise OSError("asset unreachable")
    return window.row * 1000 + window.col


class Doubler:
    """A compute factory: the function it builds doubles what was read."""

    def __call__(self):
        return lambda grid, window, data: 2 * data


@pytest.mark.parametrize("workers", [0, 2], ids=["this process", "ray actors"])
def test_results_come_back_in_task_order_and_failures_as_values(workers, request):
    if workers:
        request.getfixturevalue("local_ray")
    tasks = [(GRID, w) for w in GRID.windows(16)]  # 16 windows
    out = list(
        run_windows(tasks, read_corner, Doubler(), parallel=Parallelism(workers=workers), progress=print)
    )
    assert [i for i, _ in out] == list(range(16))
    for (_, result), (_, window) in zip(out, tasks, strict=True):
        if window.row == 16 and window.col == 16:
            assert isinstance(result, WindowFailure) and "OSError: asset unreachable" in result.error
        else:
            assert result == 2 * (window.row * 1000 + window.col)


@pytest.mark.slow
def test_actors_the_cluster_cannot_place_are_refused_up_front(local_ray):
    tasks = [(GRID, w) for w in GRID.windows(16)]
    parallel = Parallelism(workers=3, cpus_per_worker=1.0)  # 3 x (1 + 0.25 to read) = 3.75 CPUs on 2
    with pytest.raises(InvalidConfigError, match="needs 3.75 CPU but the Ray cluster has 2 CPU in all"):
        list(run_windows(tasks, read_corner, Doubler(), parallel=parallel))


class Summer:
    """A sink factory: per group, the sum of its results, the windows in the order they came, and who ran it."""

    def __call__(self, grid, windows):
        return _Sum(grid, windows)


class _Sum:
    def __init__(self, grid, windows):
        if grid.bounds[0] > 0:
            raise OSError("store unreachable")
        self.total, self.seen, self.failures = 0, [], []
        self.full = grid.bounds[1] > 0  # a grid whose sink fails after some windows

    def add(self, window, result):
        if self.full and window.row == 48:
            raise OSError("disk full")
        self.seen.append((window.row, window.col))
        if isinstance(result, WindowFailure):
            self.failures.append(result.error)
        else:
            self.total += result

    def finish(self):
        return {"total": self.total, "seen": self.seen, "failures": self.failures, "pid": os.getpid()}

    def abort(self):
        assert self.full, "abort is called only when adding a result raised"


def read_in_pool(grid, window):
    """Reads in a thread of the worker's read pool, never in the thread that computes."""
    assert threading.current_thread().name.startswith("pimc-read")
    return read_corner(grid, window)


@pytest.mark.parametrize("workers", [0, 2], ids=["this process", "ray actors"])
def test_groups_are_done_whole_by_one_worker_and_only_records_come_back(workers, request):
    if workers:
        request.getfixturevalue("local_ray")
    far = OutputGrid(
        32632, (640.0, 0.0, 1280.0, 640.0), 10.0, shapely.geometry.box(640.0, 0.0, 1280.0, 640.0)
    )
    high = OutputGrid(
        32632, (0.0, 640.0, 640.0, 1280.0), 10.0, shapely.geometry.box(0.0, 640.0, 640.0, 1280.0)
    )
    grids = [GRID, GRID, far, high]  # the third group's sink cannot open, the fourth's fails: only they fail
    groups = GridWindows(grids, 16)
    out = dict(
        run_groups(
            groups, read_in_pool, Doubler(), Summer(), parallel=Parallelism(workers=workers), label="t"
        )
    )
    assert sorted(out) == [0, 1, 2, 3]
    for index in (0, 1):
        windows = groups[index][1]
        expected = sum(2 * (w.row * 1000 + w.col) for w in windows if (w.row, w.col) != (16, 16))
        record = out[index]
        assert record["seen"] == [(w.row, w.col) for w in windows]  # in window order, read ahead or not
        assert record["total"] == expected
        assert record["failures"] == ["OSError: asset unreachable"]  # the window at (16, 16)
    assert isinstance(out[2], GroupFailure) and "OSError: store unreachable" in out[2].error
    assert isinstance(out[3], GroupFailure) and "OSError: disk full" in out[3].error
    assert out[2].exception is out[3].exception is OSError  # the class itself, across processes too
    assert (out[0]["pid"] == os.getpid()) == (workers == 0)  # on Ray, the worker processes did the groups
