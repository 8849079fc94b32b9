"""Pretraining pairs: where a pair reader's time goes, and whether one reader keeps up with the trainer.

Times, in this process, one pair reader (:class:`pimc_ray.training.pairs.PairReader`) over the windows of the
demo's training tiles, stage by stage:

* ``read``: STAC items -> stackstac -> harmonise, SCL mask -> regular grid, ten bands on the window grown by the
  patch halo (:func:`pimc_ray.data.series.read_series`);
* ``prepare``: composite, valid pixels, Hilbert order (the rest of :func:`pimc_ray.training.pairs.window_pixels`);
* ``draw``: the stratified pick and the patches (:func:`pimc_ray.training.pairs.draw_pairs`), all that a later
  visit of a window costs while the reader holds it in its cache;
* ``stream``: visits through the Ray Data pipeline the trainer reads (one reader actor, its cache on), batches
  of 256 pairs taken as fast as they come: what a training step can be fed.

Prints pairs per second per stage and overall; the trainer consumes about 400 pairs/s on this machine (the floor
the reader must keep). ``--pixels-per-window`` is the pretraining job's option of the same name.

    python benchmarks/bench_pairs.py [--pixels-per-window 2048] [--visits 12]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pimc_ray.data.aoi import load_aoi  # noqa: E402
from pimc_ray.data.footprints import ItemIndex  # noqa: E402
from pimc_ray.data.series import SeriesSpec, read_series  # noqa: E402
from pimc_ray.data.stac import DateRange, search_items  # noqa: E402
from pimc_ray.data.tiles import aoi_grids  # noqa: E402
from pimc_ray.local import ArchiveSpec, LocalStacServer, build_archive, tile_bbox  # noqa: E402
from pimc_ray.training.pairs import (  # noqa: E402
    PairSpec,
    PairStream,
    draw_pairs,
    training_tasks,
    visit_plan,
    window_pixels,
)

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pixels-per-window", type=int, default=2048)
    p.add_argument("--visits", type=int, default=12, help="window visits timed stage by stage")
    p.add_argument(
        "--stream-visits", type=int, default=64, help="visits streamed (the demo tile has 16 windows: 4 each)"
    )
    args = p.parse_args()
    archive = build_archive(ROOT / "data" / "archive", ArchiveSpec())
    series = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
    spec = PairSpec(series, pixels_per_window=args.pixels_per_window)
    aoi = tile_bbox("32TQR", archive.spec)
    with LocalStacServer(archive.items_path) as server:
        items = search_items(aoi, series.dates, stac_url=server.url)
    tasks = training_tasks(aoi_grids(load_aoi(aoi)), 128)
    plan = visit_plan(len(tasks), start=0, count=args.visits, seed=0)
    halo = spec.patch_size // 2
    index = ItemIndex(items)

    t_read = t_prepare = t_draw = 0.0
    pairs = 0
    for visit in plan:
        grid, window = tasks[visit.task]
        grown = window.grown(halo, grid.resolution)
        near = index.over(grid.epsg, grown.bounds, grid.resolution)
        t0 = time.perf_counter()
        read_series(near, spec.read_spec, grid, grown)
        t1 = time.perf_counter()
        pixels = window_pixels(near, spec, grid, window)  # reads again, then prepares
        t2 = time.perf_counter()
        out = draw_pairs(pixels, spec, grid, window, seed=visit.seed)
        t3 = time.perf_counter()
        t_read += t1 - t0
        t_prepare += (t2 - t1) - (t1 - t0)
        t_draw += t3 - t2
        pairs += len(out["x"])
    print(
        f"{pairs:,} pairs from {len(plan)} window visits ({args.pixels_per_window} per visit), one process:"
    )
    print("| stage | seconds | pairs/s |")
    print("|---|---:|---:|")
    print(f"| read (ten bands, grown window) | {t_read:.1f} | {pairs / t_read:,.0f} |")
    print(
        f"| prepare (composite, valid pixels, Hilbert order) | {t_prepare:.1f} | {pairs / t_prepare:,.0f} |"
    )
    print(
        f"| draw (stratified pick, patches): all a cached window costs | {t_draw:.2f} | {pairs / t_draw:,.0f} |"
    )
    print(
        f"| first visit of a window (all three) | {t_read + t_prepare + t_draw:.1f} | "
        f"{pairs / (t_read + t_prepare + t_draw):,.0f} |"
    )

    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    temp = tempfile.mkdtemp(prefix="pimc-bp-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        stream = PairStream(items, tasks, spec, readers=1, reader_cpus=1.0)
        ds = stream.dataset(start=0, count=args.stream_visits)
        t0, n, first = time.perf_counter(), 0, None
        for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
            first = first or time.perf_counter()
            n += len(batch["x"])
        t_stream = time.perf_counter() - (first or t0)
        print(
            f"| Ray Data stream, one reader actor, {args.stream_visits} visits (after its first batch) | "
            f"{t_stream:.1f} | {n / t_stream:,.0f} |"
        )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
