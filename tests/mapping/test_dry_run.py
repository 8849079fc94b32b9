"""``--dry-run``: tiles and pixels from the grid's areas at once (a continent-sized AOI printed nothing for
200 s while every window of every tile was enumerated), the time measured on whole windows, nothing written."""

from __future__ import annotations

import re

from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.tiles import TileGrid
from pimc_ray.local import demo_aoi
from tests.mapping.test_map_jobs import job_args, run_job
from tests.specs import TEST_SPEC


def _figures(stdout: str) -> dict[str, int]:
    last = [line for line in stdout.splitlines() if "GB to read" in line][-1]
    tiles, windows, pixels = re.search(r"(\d+) tiles, ~(\d+) windows, ~([\d,]+) pixels", last).groups()
    return {"tiles": int(tiles), "windows": int(windows), "pixels": int(pixels.replace(",", ""))}


def test_pixels_from_the_grid_areas_equal_the_pixels_of_every_window(stac_api, tmp_path):
    out = tmp_path / "plan"
    proc = run_job(job_args(stac_api.url, out, **{"--workers": "0", "--dry-run": None}))
    assert proc.returncode == 0, proc.stderr
    figures = _figures(proc.stdout)
    # the count the run itself makes: pixel centres inside the AOI, window by window
    tiles = TileGrid(64).tiles(load_aoi(demo_aoi(TEST_SPEC)))
    exact = sum(int(t.inside(w).sum()) for t in tiles for w in t.windows(64))
    assert figures["tiles"] == len(tiles)
    assert abs(figures["pixels"] - exact) <= 0.01 * exact, (figures, exact)
    assert figures["windows"] >= len(tiles)
    assert "s per window" in proc.stdout and not out.exists()


def test_a_region_of_15_by_15_degrees_is_planned_at_once(stac_api, tmp_path):
    out = tmp_path / "plan"
    region = "4.0,40.0,19.0,55.0"  # around the sample archive's tiles in 32T and 33T
    args = job_args(stac_api.url, out, **{"--aoi": region, "--tile-size": "1024", "--window-size": "128"})
    proc = run_job([*args, "--workers", "0", "--dry-run"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("dry run:"))
    assert "searching items" in lines[first]  # said before the search and the timing, not after
    zones = TileGrid(1024).zone_tiles(load_aoi(region))
    assert _figures(proc.stdout)["tiles"] == sum(len(z) for z in zones) > 15_000
    assert not out.exists()
