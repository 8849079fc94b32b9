"""The window runner: results in task order whatever the parallelism, and actors the cluster cannot place."""

import pytest
import shapely.geometry

from pimc_ray.data.tiles import OutputGrid
from pimc_ray.errors import InvalidConfigError
from pimc_ray.mapping.runner import Parallelism, WindowFailure, run_windows

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
    parallel = Parallelism(workers=3, cpus_per_worker=1.0)  # 2 readers x 0.25 + 3 x 1 = 3.5 CPUs on 2
    with pytest.raises(InvalidConfigError, match="needs 3.5 CPU but the Ray cluster has 2 CPU in all"):
        list(run_windows(tasks, read_corner, Doubler(), parallel=parallel))
