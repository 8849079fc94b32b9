"""Ray job: map an area of interest to embedding and classification COGs.

Submit to a running Ray cluster::

    ray job submit --address http://127.0.0.1:8265 -- python jobs/embed_aoi.py \\
        --aoi 11.93,45.50,11.96,45.52 --start 2022-01-01 --end 2022-12-31 \\
        --stac-url http://127.0.0.1:7822 --out out/demo --head-train-aoi 12.01,45.49,12.04,45.51

Exit codes: 0 success (or nothing to do), 2 bad input or data problem (one line on stderr naming the fix).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pimc_ray.aoi import load_aoi
from pimc_ray.errors import PimcError
from pimc_ray.infer import EmbedSpec
from pimc_ray.models.checkpoint import EncoderConfig
from pimc_ray.pipeline import MapRequest, map_aoi
from pimc_ray.stac import DateRange
from pimc_ray.timegrid import TimeGridSpec


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--aoi", required=True, help="bbox 'minx,miny,maxx,maxy' (lon/lat), GeoJSON text, or a .geojson file"
    )
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument("--stac-url", required=True, help="root URL of a STAC API")
    p.add_argument("--collection", default="sentinel-2-l2a")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument(
        "--catalog", choices=["earth-search", "planetary-computer"], help="default: detect from items"
    )
    p.add_argument("--max-cloud-cover", type=float, help="skip scenes above this eo:cloud_cover (%%)")
    p.add_argument("--steps", type=int, default=36, help="regular time-grid steps T (plots are T x T)")
    p.add_argument(
        "--min-valid", type=int, default=4, help="pixels with fewer cloud-free observations are nodata"
    )
    p.add_argument("--checkpoint", type=Path, help="trained encoder checkpoint folder (default: random init)")
    p.add_argument("--head", type=Path, help="a saved classification head folder")
    p.add_argument("--head-train-aoi", help="fit the head on labels inside this AOI (held out from --aoi)")
    p.add_argument("--labels-collection", default="pimc-sample-labels")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (0: run in this process)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor; > 0 runs on CUDA/CuPy")
    p.add_argument("--window-size", type=int, default=128, help="pixels per window edge (unit of work)")
    p.add_argument("--batch-size", type=int, default=1024, help="pixels per encoder batch")
    return p.parse_args(argv)


def build_request(args: argparse.Namespace) -> MapRequest:
    """Validate every argument before any work starts (nothing is written on bad input)."""
    if str(args.out).startswith(("s3://", "gs://", "http://", "https://")):
        raise PimcError(f"--out {args.out}: only local folders are supported by this job so far; pass a path")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PimcError(f"--out {out} exists and is not a folder; pass a folder path")
    spec = EmbedSpec(
        dates=DateRange.parse(args.start, args.end),
        timegrid=TimeGridSpec(steps=args.steps, min_valid=args.min_valid),
        catalog=args.catalog,
        batch_size=args.batch_size,
    )
    return MapRequest(
        aoi=load_aoi(args.aoi),
        spec=spec,
        stac_url=args.stac_url,
        out_dir=out.resolve(),
        collection=args.collection,
        encoder=EncoderConfig(),
        checkpoint=args.checkpoint,
        head=args.head,
        head_train_aoi=load_aoi(args.head_train_aoi) if args.head_train_aoi else None,
        labels_collection=args.labels_collection,
        max_cloud_cover=args.max_cloud_cover,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        window_size=args.window_size,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are expected; failures surface as errors
    try:
        request = build_request(args)
        t0 = time.perf_counter()
        summary = map_aoi(request, progress=lambda msg: print(msg, flush=True))
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    seconds = time.perf_counter() - t0
    print("outputs:")
    for path in summary.files:
        print(f"  {path}")
    print(
        f"summary: {summary.pixels} pixels in {seconds:.1f} s = {summary.pixels / seconds:.0f} pixels/s"
        + (" (already done, skipped)" if summary.skipped else ""),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
