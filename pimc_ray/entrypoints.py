"""Command-line entry points of the jobs: argument parsing, one-line errors, exit codes.

``jobs/embed_aoi.py`` and ``jobs/export_indices.py`` (what ``ray job submit`` runs) and ``pimc embed`` /
``pimc indices`` all call :func:`embed_main` / :func:`indices_main`. Every argument is validated before any work
starts; a :class:`~pimc_ray.errors.PimcError` becomes one line on stderr (``error: ...``) and exit code 2, and
nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pimc_ray.aoi import load_aoi
from pimc_ray.errors import PimcError
from pimc_ray.runner import bound_gdal_cache
from pimc_ray.series import SeriesSpec
from pimc_ray.stac import DateRange
from pimc_ray.timegrid import TimeGridSpec

EXIT_BAD_INPUT = 2
#: GDAL block cache per process (MB): bounded, so memory follows the window rather than the AOI.
GDAL_CACHE_MB = 64


def area_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the arguments every per-pixel job shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--aoi", required=True, help="bbox 'minx,miny,maxx,maxy' (lon/lat), GeoJSON text or a .geojson file"
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
    p.add_argument(
        "--on-unreadable",
        choices=["error", "nodata"],
        default="error",
        help="an unreadable asset (404, missing, corrupt) stops the job (error) or becomes nodata",
    )
    p.add_argument(
        "--snapshot",
        type=Path,
        help="frozen item list (ndjson): read instead of searching if it exists, else written there",
    )
    p.add_argument("--workers", type=int, default=2, help="Ray actors (0: run in this process)")
    p.add_argument("--window-size", type=int, default=128, help="pixels per window edge (unit of work)")
    return p


def area_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Validated keyword arguments of :class:`~pimc_ray.runner.AreaRequest` (nothing is written here)."""
    if str(args.out).startswith(("s3://", "gs://", "http://", "https://")):
        raise PimcError(f"--out {args.out}: only local folders are supported by this job so far; pass a path")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise PimcError(f"--out {out} exists and is not a folder; pass a folder path")
    for name in ("steps", "min_valid", "window_size"):
        if getattr(args, name) < 1:
            raise PimcError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    spec = SeriesSpec(
        dates=DateRange.parse(args.start, args.end),
        timegrid=TimeGridSpec(steps=args.steps, min_valid=args.min_valid),
        catalog=args.catalog,
        on_unreadable=args.on_unreadable,
    )
    return {
        "aoi": load_aoi(args.aoi),
        "spec": spec,
        "stac_url": args.stac_url,
        "out_dir": out.resolve(),
        "collection": args.collection,
        "max_cloud_cover": args.max_cloud_cover,
        "workers": args.workers,
        "window_size": args.window_size,
        "snapshot": args.snapshot.resolve() if args.snapshot else None,
    }


def _run(work: Callable[[], tuple[list[Path], int, bool]]) -> int:
    """Run a job body, print its outputs and summary line, turn PimcErrors into one line and exit code 2."""
    bound_gdal_cache(GDAL_CACHE_MB)  # before GDAL reads anything in this process
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are expected; failures surface as errors
    t0 = time.perf_counter()
    try:
        files, pixels, skipped = work()
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    seconds = time.perf_counter() - t0
    print("outputs:")
    for path in files:
        print(f"  {path}")
    note = " (already done, skipped)" if skipped else ""
    print(f"summary: {pixels} pixels in {seconds:.1f} s = {pixels / seconds:.0f} pixels/s{note}", flush=True)
    return 0


def embed_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/embed_aoi.py``: embedding (and classification) maps of an AOI."""
    from pimc_ray.models.checkpoint import EncoderConfig
    from pimc_ray.pipeline import MapRequest, map_aoi

    p = area_parser(
        "Map an area of interest to embedding and classification COGs (PIMC recurrence-plot encoder)."
    )
    p.add_argument("--checkpoint", type=Path, help="trained encoder checkpoint folder (default: random init)")
    p.add_argument("--head", type=Path, help="a saved classification head folder")
    p.add_argument("--head-train-aoi", help="fit the head on labels inside this AOI (held out from --aoi)")
    p.add_argument("--labels-collection", default="pimc-sample-labels")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per actor; > 0 runs on CUDA/CuPy")
    p.add_argument("--batch-size", type=int, default=1024, help="pixels per encoder batch")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def work() -> tuple[list[Path], int, bool]:
        request = MapRequest(
            **area_kwargs(args),
            encoder=EncoderConfig(),
            checkpoint=args.checkpoint,
            head=args.head,
            head_train_aoi=load_aoi(args.head_train_aoi) if args.head_train_aoi else None,
            labels_collection=args.labels_collection,
            gpus_per_worker=args.gpus_per_worker,
            batch_size=args.batch_size,
        )
        summary = map_aoi(request, progress=lambda msg: print(msg, flush=True))
        return summary.files, summary.pixels, summary.skipped

    return _run(work)


def indices_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/export_indices.py``: regular-grid NDVI/EVI/SAVI series and QA of an AOI."""
    from pimc_ray.export import export_indices
    from pimc_ray.runner import AreaRequest

    p = area_parser(
        "Export the regular-grid NDVI, EVI and SAVI series of an area of interest as COGs, with QA."
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def work() -> tuple[list[Path], int, bool]:
        result = export_indices(AreaRequest(**area_kwargs(args)), progress=lambda msg: print(msg, flush=True))
        return result.files, result.pixels, result.skipped

    return _run(work)
