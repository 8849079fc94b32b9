"""Peak memory against AOI size: a job over an AOI 10x the demo's must stay within 1.3x of the demo's peak RSS.

Builds (once, in ``.cache/bench-archive``) a sample archive with 1024-pixel tiles, serves it with the local STAC
API, then runs the job in a fresh child process per AOI size, in this process's run, and reports each child's
peak resident set size (VmHWM) and the ratio to the 1x run. The 1x AOI has the demo's pixel count
(51,434 pixels); the others scale it. Windows of 128 x 128 pixels are the unit of work; the job streams them
into windowed COG writers (per 1024-pixel tile for the embedding job), so memory should follow the window and
the tile, not the AOI. The child runs the job in its own process (``workers=0``), so its VmHWM covers every
stage; on Ray the same stages are spread over read tasks and actors.

    python benchmarks/bench_memory.py                   # indices job, 1x and 10x
    python benchmarks/bench_memory.py --job embed       # embedding job (no head), 1x and 10x
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyproj import Transformer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pimc_ray.data.aoi import load_aoi  # noqa: E402
from pimc_ray.data.series import SeriesSpec  # noqa: E402
from pimc_ray.data.stac import DateRange  # noqa: E402
from pimc_ray.local.archive import ArchiveSpec, build_archive, tile_info  # noqa: E402
from pimc_ray.local.stac_server import LocalStacServer  # noqa: E402
from pimc_ray.mapping.requests import AreaRequest, MapRequest  # noqa: E402
from pimc_ray.mapping.runner import Parallelism  # noqa: E402
from pimc_ray.parallel import bound_memory  # noqa: E402

DEMO_PIXELS = 51_434
SPEC = ArchiveSpec(tile_size=1024, tiles=("32TQR", "32TQS"))


def aoi_for(pixels: int) -> str:
    """A square lon/lat AOI of about ``pixels`` 10 m pixels centred on the 32TQR|32TQS edge."""
    west = tile_info(SPEC, "32TQR")
    half = math.sqrt(pixels) * 10 / 2
    cx, cy = west.bounds[2], (west.bounds[1] + west.bounds[3]) / 2
    to_lonlat = Transformer.from_crs(west.epsg, 4326, always_xy=True)
    lon0, lat0 = to_lonlat.transform(cx - half, cy - half)
    lon1, lat1 = to_lonlat.transform(cx + half, cy + half)
    return f"{lon0:.6f},{lat0:.6f},{lon1:.6f},{lat1:.6f}"


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM). Not ``ru_maxrss``: Linux carries that across exec, so a
    child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(args: argparse.Namespace) -> int:
    """Run one job in this (fresh) process and print its peak RSS as JSON."""
    bound_memory()  # as the jobs' entry points do
    request_kwargs = {
        "aoi": load_aoi(aoi_for(int(args.pixels))),
        "spec": SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31))),
        "stac_url": args.stac_url,
        "out": args.out,
        "parallel": Parallelism(workers=0),  # in this process: VmHWM then covers reading, encoder and writers
    }
    t0 = time.perf_counter()
    if args.job == "indices":
        from pimc_ray.mapping.indices import export_indices

        summary = export_indices(AreaRequest(**request_kwargs))
    else:
        from pimc_ray.mapping.maps import map_aoi

        summary = map_aoi(MapRequest(**request_kwargs))
    peak_mb = peak_rss_mb()
    print(json.dumps({"pixels": summary.pixels, "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_mb}))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--job", choices=["indices", "embed"], default="indices")
    p.add_argument("--scales", default="1,10", help="AOI sizes in multiples of the demo's pixel count")
    p.add_argument("--archive", default=str(ROOT / ".cache" / "bench-archive"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pixels", help=argparse.SUPPRESS)
    p.add_argument("--stac-url", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    t0 = time.perf_counter()
    archive = build_archive(args.archive, SPEC)
    print(
        f"archive {archive.root}: {'built' if archive.built else 'reused'} in {time.perf_counter() - t0:.0f} s"
    )
    rows = []
    with LocalStacServer(archive.items_path) as server, tempfile.TemporaryDirectory() as tmp:
        for scale in (float(s) for s in args.scales.split(",")):
            cmd = [sys.executable, __file__, "--child", "--job", args.job, "--pixels", str(int(scale * DEMO_PIXELS)),
                   "--stac-url", server.url, "--out", f"{tmp}/x{scale:g}"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((scale, result))
            print(f"  {scale:g}x: {result}", flush=True)
    base = rows[0][1]["peak_rss_mb"]
    print(f"\njob: {args.job}, in-process (workers=0), windows of 128 x 128 pixels")
    print("| AOI | pixels with output | seconds | peak RSS (MB) | peak RSS / 1x |")
    print("|---|---:|---:|---:|---:|")
    for scale, r in rows:
        print(f"| {scale:g}x | {r['pixels']:,} | {r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] / base:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
