"""End-to-end mapping throughput with a breakdown by stage, against the encoder alone, in one process.

On the benchmark archive (1024-pixel tiles, built once into ``.cache/bench-archive``) and an AOI with the demo's
pixel count, this script times, in one process and on the same windows:

* ``read``: STAC items -> stackstac -> harmonise, mask -> regular grid (``SeriesReader``);
* ``indices + plots``: NDVI/EVI/SAVI and recurrence plots of every valid pixel (``rp_from_reflectance``);
* ``encoder``: the RP encoder on those plots (the "encoder-only" throughput);
* ``write``: classification, per-tile COG writers, COG conversion and publishing to a local store;
* ``end to end``: the whole embedding job (``map_aoi``, in-process, no head), run separately.

and reports pixels per second of each, and the ratio of end-to-end to encoder-only throughput. With
``--ray-workers N`` it also runs the job on a local Ray (N tile workers, each with its read threads) after a
warm-up run that starts Ray, so the figure is the pipeline's, not Ray's start-up.

    python benchmarks/bench_pipeline.py [--ray-workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_memory import DEMO_PIXELS, SPEC, aoi_for  # noqa: E402

from pimc_ray.data.aoi import load_aoi  # noqa: E402
from pimc_ray.data.series import SeriesReader, SeriesSpec  # noqa: E402
from pimc_ray.data.stac import DateRange, search_items  # noqa: E402
from pimc_ray.data.tiles import TileGrid  # noqa: E402
from pimc_ray.io.rasters import RasterSet  # noqa: E402
from pimc_ray.kernels.recurrence import rp_from_reflectance  # noqa: E402
from pimc_ray.local.archive import build_archive  # noqa: E402
from pimc_ray.local.stac_server import LocalStacServer  # noqa: E402
from pimc_ray.mapping.maps import map_aoi, tile_products  # noqa: E402
from pimc_ray.mapping.requests import MapRequest  # noqa: E402
from pimc_ray.mapping.runner import Parallelism  # noqa: E402
from pimc_ray.models import EncoderConfig  # noqa: E402
from pimc_ray.parallel import bound_memory  # noqa: E402
from pimc_ray.storage import open_store  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--ray-workers", type=int, default=0, help="also time the job on a local Ray with N actors"
    )
    p.add_argument("--scale", type=float, default=1.0, help="AOI pixels as a multiple of the demo's")
    args = p.parse_args()
    bound_memory()
    archive = build_archive(ROOT / ".cache" / "bench-archive", SPEC)
    spec = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
    aoi = load_aoi(aoi_for(int(DEMO_PIXELS * args.scale)))
    model = EncoderConfig().build().eval()
    threads = torch.get_num_threads()
    with LocalStacServer(archive.items_path) as server, tempfile.TemporaryDirectory() as tmp:
        items = search_items(aoi, spec.dates, stac_url=server.url)
        tiles = TileGrid(1024).tiles(aoi)
        tasks = [(t, w) for t in tiles for w in t.windows(128)]
        reader = SeriesReader(spec, items)

        t0 = time.perf_counter()
        series = [reader(g, w) for g, w in tasks]
        t_read = time.perf_counter() - t0

        t_plots = t_encoder = 0.0
        embeddings = []
        pixels = 0
        with torch.inference_mode():
            for (grid, window), s in zip(tasks, series, strict=True):
                inside = grid.inside(window).reshape(-1)
                ok = np.flatnonzero(np.isfinite(s.values).all(axis=(0, 1)) & inside)
                by_band = np.ascontiguousarray(s.values[:, :, ok].transpose(1, 2, 0))
                emb = np.full((window.pixels, model.embed_dim), np.nan, np.float32)
                for start in range(0, len(ok), 1024):
                    b = by_band[:, start : start + 1024]
                    t1 = time.perf_counter()
                    plots = torch.from_numpy(rp_from_reflectance(b[0], b[1], b[2]))
                    t2 = time.perf_counter()
                    emb[ok[start : start + len(plots)]] = model(plots).numpy()
                    t_encoder += time.perf_counter() - t2
                    t_plots += t2 - t1
                pixels += len(ok)
                embeddings.append(emb.T.reshape(model.embed_dim, window.height, window.width))

        store = open_store(Path(tmp) / "stages")
        prods = tile_products([f"emb_{i:02d}" for i in range(model.embed_dim)], None)
        t0 = time.perf_counter()
        writers = {t.tile_id: RasterSet(t, Path(tmp), prods, {}) for t in tiles}
        for (grid, window), s, e in zip(tasks, series, embeddings, strict=True):
            valid = np.isfinite(e[0])
            qa = np.where(valid, s.valid_count.reshape(window.height, window.width), 0).astype(np.uint16)
            writers[grid.tile_id].write("embedding", e, window.row, window.col)
            writers[grid.tile_id].write("qa", qa[None], window.row, window.col)
        for tile_id, w in writers.items():
            w.publish(store, {name: f"tiles/{tile_id}/{name}.tif" for name in prods})
        t_write = time.perf_counter() - t0

        request = MapRequest(aoi, spec, server.url, str(Path(tmp) / "e2e"), parallel=Parallelism(workers=0))
        t0 = time.perf_counter()
        summary = map_aoi(request, progress=lambda _msg: None)
        t_e2e = time.perf_counter() - t0

        t_ray = None
        if args.ray_workers:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            parallel = Parallelism(workers=args.ray_workers)
            warm = MapRequest(aoi, spec, server.url, str(Path(tmp) / "warm"), parallel=parallel)
            map_aoi(warm, progress=lambda _msg: None)  # starts Ray's workers and actors once
            request = MapRequest(aoi, spec, server.url, str(Path(tmp) / "ray"), parallel=parallel)
            t0 = time.perf_counter()
            map_aoi(request, progress=lambda _msg: None)
            t_ray = time.perf_counter() - t0
            ray.shutdown()

    rate = lambda seconds: pixels / seconds  # noqa: E731
    print(
        f"{pixels:,} valid pixels, {len(tasks)} windows of 128 px in {len(tiles)} tile(s); torch threads {threads}"
    )
    print("| stage | seconds | pixels/s | share of stage time |")
    print("|---|---:|---:|---:|")
    stages = {"read": t_read, "indices + plots": t_plots, "encoder": t_encoder, "write": t_write}
    total = sum(stages.values())
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.1f} | {rate(seconds):,.0f} | {100 * seconds / total:.0f} % |")
    print(f"| end to end (map_aoi, in this process) | {t_e2e:.1f} | {summary.pixels / t_e2e:,.0f} | |")
    if t_ray is not None:
        print(
            f"| end to end (map_aoi, Ray, {args.ray_workers} actors) | {t_ray:.1f} | {summary.pixels / t_ray:,.0f} | |"
        )
    print(
        f"\nend-to-end / encoder-only throughput: {(summary.pixels / t_e2e) / rate(t_encoder):.2f} (in this process)"
    )
    if t_ray is not None:
        print(
            f"end-to-end / encoder-only throughput: {(summary.pixels / t_ray) / rate(t_encoder):.2f} (on Ray)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
