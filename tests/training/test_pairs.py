"""Training pairs: the Hilbert ordering, the visit plan, and pairs read back against read_series."""

import datetime as dt

import numpy as np
import pytest
import shapely.geometry

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.footprints import ItemIndex
from pimc_ray.data.series import INDEX_BANDS, SeriesSpec, read_series
from pimc_ray.data.stac import DateRange
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.kernels.indices import vegetation_indices
from pimc_ray.local.archive import tile_info
from pimc_ray.training.pairs import (
    PairReader,
    PairSpec,
    hilbert_index,
    hilbert_sort,
    read_pairs,
    spread_order,
    stratified_pick,
    training_tasks,
    visit_plan,
)
from tests.specs import TEST_SPEC

SERIES = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_hilbert_index_walks_every_cell_through_edge_neighbours(order):
    n = 1 << order
    x, y = np.meshgrid(np.arange(n), np.arange(n))
    d = hilbert_index(x.ravel(), y.ravel(), order)
    assert np.array_equal(np.sort(d), np.arange(n * n))  # a bijection onto 0 .. 4^order - 1
    walk = np.argsort(d)
    steps = np.abs(np.diff(x.ravel()[walk])) + np.abs(np.diff(y.ravel()[walk]))
    assert (steps == 1).all()  # consecutive positions share an edge
    if order == 1:  # the first-order curve by hand: (0,0) (0,1) (1,1) (1,0)
        assert hilbert_index(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 0]), 1).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="cells must lie"):
        hilbert_index(np.array([n]), np.array([0]), order)


def test_hilbert_sort_keeps_neighbours_together():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1000, 400), rng.uniform(0, 1000, 400)
    walk = hilbert_sort(x, y)
    hop = np.hypot(np.diff(x[walk]), np.diff(y[walk]))
    random_hop = np.hypot(np.diff(x), np.diff(y))
    assert np.median(hop) < 0.25 * np.median(random_hop)


def test_spread_order_and_stratified_pick():
    assert spread_order(16)[:4].tolist() == [0, 8, 4, 12]  # every prefix halves the gaps
    for n in (1, 5, 12):
        assert sorted(spread_order(n).tolist()) == list(range(n))
    rng = np.random.default_rng(0)
    pick = stratified_pick(100, 10, rng)
    assert len(pick) == 10 and (pick // 10 == np.arange(10)).all()  # one per run of 10
    assert stratified_pick(7, 10, rng).tolist() == list(range(7))


def test_visit_plan_covers_every_window_each_pass_and_resumes_where_it_stopped():
    full = visit_plan(7, start=0, count=21, seed=3)
    for epoch in range(3):
        assert sorted(v.task for v in full[7 * epoch : 7 * epoch + 7]) == list(range(7))
    assert visit_plan(7, start=9, count=5, seed=3) == full[9:14]
    assert [v.index for v in full] == list(range(21))
    assert len({v.seed for v in full}) == 21


def tile_grid(tile_id: str) -> OutputGrid:
    tile = tile_info(TEST_SPEC, tile_id)
    return OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))


def test_training_tasks_keep_windows_inside_the_footprint_in_hilbert_order():
    grid = tile_grid("32TQR")
    tasks = training_tasks([grid], 32)
    assert len(tasks) == 16
    rows = np.array([w.row for _, w in tasks]) // 32
    cols = np.array([w.col for _, w in tasks]) // 32
    assert (np.abs(np.diff(rows)) + np.abs(np.diff(cols)) == 1).all()  # a 4 x 4 Hilbert walk


def test_pairs_are_the_series_and_the_composite_around_each_pixel(sample_archive):
    items = sample_archive.read_items("sentinel-2-l2a")
    grid = tile_grid("32TQR")
    window = Window(
        40,
        48,
        32,
        32,
        (grid.bounds[0] + 480, grid.bounds[3] - 720, grid.bounds[0] + 800, grid.bounds[3] - 400),
    )
    spec = PairSpec(SERIES, patch_size=5, pixels_per_window=64, seed=1)
    pairs = read_pairs(ItemIndex(items).over(grid.epsg, window.bounds, 10.0), spec, grid, window, seed=7)
    n = len(pairs["x"])
    assert n == 64 and pairs["series"].shape == (n, 3, 36) and pairs["patch"].shape == (n, 10, 5, 5)
    assert np.isfinite(pairs["series"]).all() and np.isfinite(pairs["patch"]).all()
    cols = np.rint((pairs["x"] - window.bounds[0]) / 10 - 0.5).astype(int)
    rows = np.rint((window.bounds[3] - pairs["y"]) / 10 - 0.5).astype(int)
    assert len(set(zip(rows, cols, strict=True))) == n and (0 <= rows).all() and (rows < 32).all()

    # independently: the window's series (3 bands) and the 10-band median of a window two pixels larger
    rp = read_series(items, SeriesSpec(dates=SERIES.dates, bands=INDEX_BANDS), grid, window).values
    np.testing.assert_array_equal(
        pairs["series"], rp.reshape(36, 3, 32, 32)[:, :, rows, cols].transpose(2, 1, 0)
    )
    xmin, ymin, xmax, ymax = window.bounds
    big = Window(38, 46, 36, 36, (xmin - 20, ymin - 20, xmax + 20, ymax + 20))
    all_bands = read_series(items, SeriesSpec(dates=SERIES.dates, bands=BANDS), grid, big).values
    median = np.median(all_bands, axis=0).reshape(10, 36, 36)
    for i in (0, n // 2, n - 1):
        r, c = rows[i], cols[i]
        np.testing.assert_array_equal(pairs["patch"][i], median[:, r : r + 5, c : c + 5])

    again = read_pairs(items, spec, grid, window, seed=7)
    assert np.array_equal(again["x"], pairs["x"])  # the draw is seeded
    other = read_pairs(items, spec, grid, window, seed=8)
    assert not np.array_equal(other["x"], pairs["x"])


def test_nodata_pixels_and_patches_are_never_drawn(sample_archive):
    """A window half outside the archive: pixels without data, or whose patch reaches nodata, are excluded."""
    items = sample_archive.read_items("sentinel-2-l2a")
    tile = tile_info(TEST_SPEC, "32TQR")
    xmin, _, _, ymax = tile.bounds
    bounds = (xmin - 160.0, ymax - 320.0, xmin + 160.0, ymax)  # 16 columns west of the tile: no item there
    grid = OutputGrid(tile.epsg, bounds, 10.0, shapely.geometry.box(*bounds))
    window = grid.windows(32)[0]
    pairs = read_pairs(items, PairSpec(SERIES, patch_size=5, pixels_per_window=2000), grid, window, seed=0)
    cols = np.rint((pairs["x"] - bounds[0]) / 10 - 0.5).astype(int)
    assert len(cols) > 100 and cols.min() >= 16 + 2  # data starts at column 16; a 5 x 5 patch needs 2 more
    assert np.isfinite(pairs["patch"]).all() and np.isfinite(pairs["series"]).all()
    indices = vegetation_indices(*(pairs["series"][:, i] for i in range(3)), axis=1)
    assert np.isfinite(indices).all()


def test_pair_reader_concatenates_visits_and_skips_windows_without_items(sample_archive):
    items = sample_archive.read_items("sentinel-2-l2a")
    grid = tile_grid("32TQR")
    far = Window(0, 0, 16, 16, (0.0, 0.0, 160.0, 160.0))  # a window no item covers
    tasks = [(grid, grid.windows(32)[5]), (grid, far)]
    reader = PairReader(items, tasks, PairSpec(SERIES, patch_size=3, pixels_per_window=10))
    out = reader({"task": np.array([0, 1, 0]), "seed": np.array([1, 2, 3]), "visit": np.array([4, 5, 6])})
    assert out["series"].shape == (20, 3, 36) and out["patch"].shape == (20, 10, 3, 3)
    assert out["visit"].tolist() == [4] * 10 + [6] * 10
    assert set(out) == {"series", "patch", "x", "y", "epsg", "visit"}


def test_pair_reader_reads_a_window_once_and_draws_the_same_pairs_from_its_cache(sample_archive, monkeypatch):
    import pimc_ray.training.pairs as pairs_module

    items = sample_archive.read_items("sentinel-2-l2a")
    grid = tile_grid("32TQR")
    spec = PairSpec(SERIES, patch_size=3, pixels_per_window=10)
    tasks = [(grid, w) for w in grid.windows(32)[:3]]
    expected = [read_pairs(items, spec, g, w, seed=7) for g, w in tasks]  # no cache: read at every call
    reads = []
    real = pairs_module.window_pixels
    monkeypatch.setattr(pairs_module, "window_pixels", lambda *a: reads.append(a[3]) or real(*a))
    reader = PairReader(items, tasks, spec, cache_mb=1024)
    batch = {"task": np.array([0, 1, 0, 2, 1, 0]), "seed": np.full(6, 7), "visit": np.arange(6)}
    out = reader(batch)
    assert reads == [w for _, w in tasks]  # each window read once, whatever the visits
    for i, task in enumerate(batch["task"]):  # and drawn from exactly as a fresh read would be
        np.testing.assert_array_equal(out["series"][10 * i : 10 * i + 10], expected[task]["series"])
        np.testing.assert_array_equal(out["patch"][10 * i : 10 * i + 10], expected[task]["patch"])
    # a cache of 1 MB holds two of these 34 x 34-pixel reads (~0.5 MB): the least recently used one goes
    assert 2 * reader.cache[0].nbytes <= 1024 * 1024 < 3 * reader.cache[0].nbytes
    reads.clear()
    small = PairReader(items, tasks, spec, cache_mb=1)
    np.testing.assert_array_equal(small(batch)["series"], out["series"])
    assert [tasks.index((grid, w)) for w in reads] == [0, 1, 2, 1, 0] and list(small.cache) == [1, 0]
