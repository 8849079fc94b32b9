"""What the driver of a mapping run costs, and how close tile workers come to their read stage, in one process.

On the benchmark archive (1024-pixel tiles, built once into ``.cache/bench-archive``), a local Ray of 2 CPUs and
a local STAC API, with 256-pixel output tiles, this script measures:

* **driver CPU per megapixel**: the CPU time (user + system, every thread) of this process, the driver, while
  ``map_aoi`` maps an AOI on ``--workers`` worker actors, with the real default encoder (random init) and with a
  zero-cost encoder stub (a precomputed block of random floats per window: no compute, incompressible COGs, so
  writing costs what it does with real embeddings); in all (search, run key, manifest, collection and mosaics
  included) and less what the driver spends idle with Ray connected (Ray's own threads, measured first: a cost
  per second of the run, not per pixel);
* **end to end with the stub / read stage alone**: pixels per second of the whole per-tile path (read, stub,
  write COGs, publish) against the same workers doing only the reads (:func:`run_groups` with a sink that drops
  what it gets);
* **driver peak RSS**: VmHWM of this process after mapping a 1x AOI and then a 10x AOI (stub encoder).

    python benchmarks/bench_driver.py [--workers 2] [--pixels 65536]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_memory import SPEC, aoi_for, peak_rss_mb  # noqa: E402

import pimc_ray.mapping.maps as maps  # noqa: E402
from pimc_ray.data.aoi import load_aoi  # noqa: E402
from pimc_ray.data.series import SeriesSpec, WindowSeries, crop_halo  # noqa: E402
from pimc_ray.data.stac import DateRange, search_items  # noqa: E402
from pimc_ray.data.tiles import OutputGrid, TileGrid, Window  # noqa: E402
from pimc_ray.local.archive import build_archive  # noqa: E402
from pimc_ray.local.stac_server import LocalStacServer  # noqa: E402
from pimc_ray.mapping.embedder import WindowResult, series_reader  # noqa: E402
from pimc_ray.mapping.requests import MapRequest  # noqa: E402
from pimc_ray.mapping.runner import GridWindows, Parallelism, run_groups  # noqa: E402
from pimc_ray.parallel import bound_memory  # noqa: E402

TILE = 256
DATES = DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31))


class StubEmbedder:
    """A zero-cost encoder: a slice of one block of random floats (made once per worker) per window."""

    def __init__(self, dims: int, halo: int, size: int) -> None:
        self.dims, self.halo, self.size = dims, halo, size

    def __call__(self) -> Callable[[OutputGrid, Window, WindowSeries], WindowResult]:
        block = np.random.default_rng(0).standard_normal((self.dims, self.size, self.size), dtype=np.float32)

        def embed(grid: OutputGrid, window: Window, series: WindowSeries) -> WindowResult:
            h, w = window.height, window.width
            count = crop_halo(series.valid_count, h, w, self.halo).reshape(h, w)
            emb = np.where(grid.inside(window), block[:, :h, :w], np.nan).astype(np.float32)
            return WindowResult(window, emb, count)

        return embed


class Discard:
    """A sink that drops what it gets (the read stage alone) and returns the group's pixel count."""

    def __call__(self, grid: OutputGrid, windows: Sequence[Window]) -> Discard:
        self.pixels = 0
        return self

    def add(self, window: Window, result: Any) -> None:
        self.pixels += window.pixels

    def finish(self) -> int:
        return self.pixels

    def abort(self) -> None:
        self.pixels = 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def idle_cpu_rate(seconds: float = 20.0) -> float:
    """CPU-seconds per second this process spends with Ray connected and nothing to do (Ray's own threads)."""
    cpu0 = cpu_seconds()
    time.sleep(seconds)
    return (cpu_seconds() - cpu0) / seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pixels", type=int, default=65_536, help="pixels of the 1x AOI")
    p.add_argument("--tile-size", type=int, default=TILE, help="output tile edge in pixels")
    args = p.parse_args()
    bound_memory()
    import ray

    archive = build_archive(ROOT / ".cache" / "bench-archive", SPEC)
    spec = SeriesSpec(dates=DATES)
    parallel = Parallelism(workers=args.workers)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    probe = MapRequest(
        load_aoi(aoi_for(args.pixels)), spec, "http://unused", "unused", tile_size=args.tile_size
    )
    model, _ = probe.encoder.load()
    stub = StubEmbedder(len(maps.embedding_bands(model, spec)), int(model.halo), probe.window_size)
    real_factory = maps.embedder_factory
    use_stub = False
    maps.embedder_factory = lambda request: (
        stub if use_stub else real_factory(request)
    )  # where the job builds it
    idle = idle_cpu_rate()
    print(f"driver idle with Ray connected: {idle * 1000:.1f} ms CPU per second", flush=True)
    rows: dict[str, dict[str, float]] = {}
    with LocalStacServer(archive.items_path) as server, tempfile.TemporaryDirectory() as tmp:

        def run(name: str, pixels: int) -> dict[str, float]:
            request = MapRequest(
                load_aoi(aoi_for(pixels)),
                spec,
                server.url,
                f"{tmp}/{name}",
                parallel=parallel,
                tile_size=args.tile_size,
            )
            cpu0, t0 = cpu_seconds(), time.perf_counter()
            summary = maps.map_aoi(request, progress=lambda _msg: None)
            cpu, seconds = cpu_seconds() - cpu0, time.perf_counter() - t0
            mpx = summary.pixels / 1e6
            row = {
                "pixels": summary.pixels,
                "tiles": summary.tiles_written,
                "seconds": round(seconds, 1),
                "driver_cpu_s": round(cpu, 3),
                "cpu_s_per_mpx": round(cpu / mpx, 3),
                "cpu_s_per_mpx_less_idle": round((cpu - idle * seconds) / mpx, 3),
                "rss_mb": round(peak_rss_mb(), 1),
            }
            rows[name] = row
            print(f"{name}: {row}", flush=True)
            return row

        run("warm-up", args.pixels // 4)  # starts Ray's worker processes once
        run("real encoder 4x", 4 * args.pixels)
        use_stub = True
        rss_1x = run("stub 1x", args.pixels)["rss_mb"]
        rss_10x = run("stub 10x", 10 * args.pixels)["rss_mb"]
        print(f"driver peak RSS 10x / 1x AOI: {rss_10x:.0f} / {rss_1x:.0f} MB = {rss_10x / rss_1x:.3f}")

        aoi = load_aoi(aoi_for(4 * args.pixels))
        items = search_items(aoi, DATES, stac_url=server.url)
        groups = GridWindows(TileGrid(args.tile_size).tiles(aoi), probe.window_size)
        window_px = sum(w.pixels for i in range(len(groups)) for w in groups[i][1])
        reads, ends = [], []
        for attempt in range(2):  # alternated, best of two each: the machine's load moves
            t0 = time.perf_counter()
            for _ in run_groups(
                groups, series_reader(spec, items, probe.encoder.config), stub, Discard(), parallel=parallel
            ):
                pass
            reads.append(window_px / (time.perf_counter() - t0))
            ends.append(window_px / run(f"stub 4x ({attempt + 1})", 4 * args.pixels)["seconds"])
        print(
            f"read stage alone {max(reads):,.0f} window px/s; end to end with the stub {max(ends):,.0f} "
            f"window px/s: ratio {max(ends) / max(reads):.2f}"
        )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
