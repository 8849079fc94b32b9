"""Window set-up against the run's item count: a window reads the items that meet it, whatever the run holds.

The run's items are the demo tile's (32TQR, 128 px) padded with copies moved elsewhere (footprints shifted by
whole degrees, ids renamed) to 140, 1,400 and 7,000 items: what a large area's search returns besides the items
over one window. For each count, in this process, it times reading one 128-pixel window through the mapping job's
read stage (:class:`pimc_ray.data.series.SeriesReader`, which asks its :class:`pimc_ray.data.footprints.ItemIndex`
for the window's items), the index query alone, and building the index (once per run and read actor); and
prints each count's window time as a ratio to the 140-item one (the target: flat within 20 %).

    python benchmarks/bench_item_index.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shapely.affinity  # noqa: E402
import shapely.geometry  # noqa: E402

from pimc_ray.data.footprints import ItemIndex  # noqa: E402
from pimc_ray.data.series import SeriesReader, SeriesSpec  # noqa: E402
from pimc_ray.data.stac import DateRange  # noqa: E402
from pimc_ray.data.tiles import OutputGrid  # noqa: E402
from pimc_ray.local import ArchiveSpec, build_archive  # noqa: E402
from pimc_ray.local.archive import tile_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COUNTS = (140, 1_400, 7_000)


def moved(item: dict[str, Any], k: int) -> dict[str, Any]:
    """A copy of ``item`` whose footprint lies ``k`` whole degrees away (east, then north): never over the window."""
    out = copy.deepcopy(item)
    dx, dy = 1.0 + k % 50, float(k // 50)
    out["id"] = f"{item['id']}-moved-{k}"
    geom = shapely.geometry.shape(item["geometry"])
    out["geometry"] = shapely.geometry.mapping(shapely.affinity.translate(geom, dx, dy))
    x0, y0, x1, y1 = item["bbox"]
    out["bbox"] = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="reads timed per count (the best is kept)")
    args = p.parse_args()
    archive = build_archive(ROOT / "data" / "archive", ArchiveSpec())
    tile = tile_info(archive.spec, "32TQR")
    own = [i for i in archive.read_items("sentinel-2-l2a") if "_32TQR_" in i["id"]]
    grid = OutputGrid(tile.epsg, tile.bounds, 10.0, shapely.geometry.box(*tile.bounds))
    window = grid.windows(128)[0]
    spec = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
    print(f"{len(own)} items over the window (32TQR); one 128 x 128 window, best of {args.repeat}")
    print("| run items | build index (s) | query (ms) | read one window (s) | window / 140 items |")
    print("|---:|---:|---:|---:|---:|")
    base = None
    for count in COUNTS:
        items = own + [moved(own[k % len(own)], k) for k in range(count - len(own))]
        t0 = time.perf_counter()
        index = ItemIndex(items)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(100):
            index.over(grid.epsg, window.bounds, grid.resolution)
        t_query = (time.perf_counter() - t0) / 100
        reader = SeriesReader(spec, items)
        reader(grid, window)  # warm-up: GDAL opens, caches the index
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            reader(grid, window)
            best = min(best, time.perf_counter() - t0)
        base = base or best
        print(f"| {count:,} | {t_build:.2f} | {1000 * t_query:.2f} | {best:.3f} | {best / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
