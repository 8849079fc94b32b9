"""Mosaics that scale: a GDAL VRT against a GTI tile index (GeoPackage), by size and by time to open and read.

Tiles of ``--tile-px`` pixels lie on a square grid in EPSG:32632, ``--bands`` float32 bands each (the embedding
product's shape). For each tile count it builds both mosaics with :mod:`pimc_ray.io.mosaic` and records their
size and build time. Then, each in a fresh Python process (no GDAL cache carried over; best of ``--repeat``), it
times opening the mosaic and reading one window of 256 x 256 pixels, all bands, across four tiles, with
rasterio, from another working directory, and records the process's peak resident memory above what it held
before opening. Only the 16 tiles at the grid's north-west corner are real COGs (seeded random data): a read
opens only the tiles it meets, so the other rows of a large index need no file. The VRT's and the index's
pixels are checked equal.

    python benchmarks/bench_mosaic.py [--counts 16,64,1000,10000] [--bands 64] [--tile-px 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from affine import Affine  # noqa: E402

from pimc_ray.io.cog import write_cog  # noqa: E402
from pimc_ray.io.mosaic import MosaicSource, build_gti, build_vrt  # noqa: E402

EPSG, RES = 32632, 10.0
X0, Y0 = 300_000.0, 5_200_000.0  # north-west corner of the grid
REAL = 4  # a REAL x REAL block of real tiles at the north-west corner

#: Run in a child process: open a mosaic, read one window, print timings, peak memory and a checksum.
CHILD = """
import json, sys, time
import numpy as np, rasterio
from rasterio.windows import Window

def rss_mb(field):
    line = next(x for x in open("/proc/self/status") if x.startswith(field))
    return int(line.split()[1]) / 1024

path, off, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
before = rss_mb("VmRSS:")
t0 = time.perf_counter()
with rasterio.open(path) as src:
    t1 = time.perf_counter()
    data = src.read(window=Window(off, off, size, size))
    t2 = time.perf_counter()
print(json.dumps({"open_s": t1 - t0, "open_read_s": t2 - t0, "rss_mb": rss_mb("VmHWM:") - before,
                  "checksum": float(np.nansum(data.astype("float64"))), "nan": int(np.isnan(data).sum())}))
"""


def sources(count: int, tile_px: int) -> list[MosaicSource]:
    """``count`` tiles row-major on a square grid from the north-west corner; tile (row, col) at
    ``tiles/r<row>_c<col>/embedding.tif``."""
    side, width = math.ceil(math.sqrt(count)), tile_px * RES
    out = []
    for k in range(count):
        row, col = divmod(k, side)
        x, y = X0 + col * width, Y0 - row * width
        out.append(MosaicSource(f"tiles/r{row:03d}_c{col:03d}/embedding.tif", (x, y - width, x + width, y)))
    return out


def write_real_tiles(root: Path, bands: int, tile_px: int) -> None:
    rng = np.random.default_rng(0)
    for row in range(REAL):
        for col in range(REAL):
            data = rng.standard_normal((bands, tile_px, tile_px), dtype=np.float32)
            x, y = X0 + col * tile_px * RES, Y0 - row * tile_px * RES
            write_cog(
                root / f"tiles/r{row:03d}_c{col:03d}/embedding.tif",
                data,
                transform=Affine(RES, 0, x, 0, -RES, y),
                epsg=EPSG,
                nodata=float("nan"),
                band_descriptions=[f"emb_{b:02d}" for b in range(bands)],
            )


def timed_reads(paths: dict[str, Path], offset: int, size: int, repeat: int) -> dict[str, dict[str, float]]:
    """Per mosaic: best open and open + read times of ``repeat`` fresh processes (the mosaics take turns, so
    that a change of load on the machine hits both), their largest peak memory, and the pixels' checksum."""
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in paths}
    for _ in range(repeat):
        for kind, path in paths.items():
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), str(offset), str(size)],
                check=True,
                capture_output=True,
                text=True,
                cwd="/",  # the mosaics must not depend on the working directory
            )
            runs[kind].append(json.loads(out.stdout))
    return {
        kind: {
            "open_s": min(r["open_s"] for r in rs),
            "open_read_s": min(r["open_read_s"] for r in rs),
            "rss_mb": max(r["rss_mb"] for r in rs),
            "checksum": rs[0]["checksum"],
            "nan": rs[0]["nan"],
        }
        for kind, rs in runs.items()
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="16,64,1000,10000", help="tile counts (comma-separated)")
    p.add_argument("--bands", type=int, default=64)
    p.add_argument("--tile-px", type=int, default=128, help="tile edge in pixels")
    p.add_argument("--repeat", type=int, default=3, help="fresh processes per timing (the best is kept)")
    p.add_argument("--json", type=Path, help="also write every figure here")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    if min(counts) < REAL * REAL:
        p.error(f"every count must be at least {REAL * REAL} (the real tiles the read window needs)")
    layout: dict[str, Any] = {
        "epsg": EPSG,
        "resolution": RES,
        "count": args.bands,
        "dtype": "float32",
        "nodata": float("nan"),
        "band_descriptions": [f"emb_{b:02d}" for b in range(args.bands)],
        "colormap": None,
    }
    size = 256
    offset = args.tile_px - size // 2  # the window straddles the corner of four tiles
    results: dict[str, list[dict[str, float | int | str]]] = {"sizes": [], "reads": []}
    with tempfile.TemporaryDirectory(prefix="bench-mosaic-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_real_tiles(root, args.bands, args.tile_px)
        print(
            f"{REAL * REAL} real tiles of {args.tile_px} px x {args.bands} bands in {time.perf_counter() - t0:.1f} s"
        )
        print("\n| tiles | VRT | GTI index | VRT / GTI | build VRT (s) | build GTI (s) |")
        print("|---:|---:|---:|---:|---:|---:|")
        for count in counts:
            srcs = sources(count, args.tile_px)
            t0 = time.perf_counter()
            vrt = build_vrt(srcs, **layout).encode()
            t_vrt = time.perf_counter() - t0
            (root / f"mosaic_{count}.vrt").write_bytes(vrt)
            t0 = time.perf_counter()
            gti = build_gti(root / f"mosaic_{count}.gti.gpkg", srcs, **layout)
            t_gti = time.perf_counter() - t0
            n_vrt, n_gti = len(vrt), gti.stat().st_size
            results["sizes"].append(
                {"tiles": count, "vrt_bytes": n_vrt, "gti_bytes": n_gti, "vrt_s": t_vrt, "gti_s": t_gti}
            )
            print(
                f"| {count:,} | {mb(n_vrt)} | {mb(n_gti)} | {n_vrt / n_gti:,.0f} | {t_vrt:.2f} | {t_gti:.2f} |"
            )
        print(
            f"\nopen, and open + read one {size} x {size} window of {args.bands} bands (4 tiles); fresh process,"
        )
        print(
            f"best of {args.repeat}; memory: peak resident memory above what the process held before opening"
        )
        print("\n| tiles | mosaic | open (ms) | open + read (ms) | memory (MB) | time / GTI |")
        print("|---:|---|---:|---:|---:|---:|")
        for count in counts:
            paths = {kind: root / f"mosaic_{count}.{kind}" for kind in ("vrt", "gti.gpkg")}
            rows = timed_reads(paths, offset, size, args.repeat)
            if (
                rows["vrt"]["checksum"] != rows["gti.gpkg"]["checksum"]
                or rows["vrt"]["nan"]
                or rows["gti.gpkg"]["nan"]
            ):
                raise SystemExit(f"the VRT and the GTI index read different pixels at {count} tiles: {rows}")
            for kind, r in rows.items():
                ratio = r["open_read_s"] / rows["gti.gpkg"]["open_read_s"]
                results["reads"].append({"tiles": count, "mosaic": kind, **r})
                print(
                    f"| {count:,} | {kind.split('.')[0].upper()} | {r['open_s'] * 1e3:,.1f} | "
                    f"{r['open_read_s'] * 1e3:,.1f} | {r['rss_mb']:,.0f} | {ratio:.2f} |"
                )
    if args.json:
        meta = {
            "gdal": rasterio.__gdal_version__,
            "rasterio": rasterio.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        args.json.write_text(json.dumps({**meta, **vars(args), **results}, indent=2, default=str))
    return 0


def mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


if __name__ == "__main__":
    raise SystemExit(main())
