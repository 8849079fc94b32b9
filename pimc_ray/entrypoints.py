"""Command-line entry points of the jobs: argument parsing, one-line errors, exit codes.

``jobs/embed_aoi.py``, ``jobs/classify_aoi.py`` and ``jobs/export_indices.py`` (what ``ray job submit`` runs)
and ``pimc embed`` / ``pimc classify`` / ``pimc indices`` all call the ``*_main`` functions here. Every argument
is validated before any work starts; a :class:`~pimc_ray.errors.PimcError` becomes one line on stderr
(``error: ...``) and exit code 2, and nothing is written.
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
from pimc_ray.runner import Parallelism, bound_memory
from pimc_ray.series import SeriesSpec
from pimc_ray.stac import DateRange
from pimc_ray.timegrid import TimeGridSpec

EXIT_BAD_INPUT = 2
EXIT_TILES_FAILED = 3
#: GDAL block cache per process (MB): bounded, so memory follows the window rather than the AOI.
GDAL_CACHE_MB = 64


def area_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the arguments every per-pixel job shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--aoi", required=True, help="bbox 'minx,miny,maxx,maxy' (lon/lat), GeoJSON text or a .geojson file")
    a("--start", required=True, help="first date, YYYY-MM-DD")
    a("--end", required=True, help="last date, YYYY-MM-DD")
    a("--stac-url", required=True, help="root URL of a STAC API")
    a("--collection", default="sentinel-2-l2a")
    a("--out", required=True, help="output folder, or s3://bucket/prefix where the job supports it")
    a("--catalog", choices=["earth-search", "planetary-computer"], help="default: detect from items")
    a("--max-cloud-cover", type=float, help="skip scenes above this eo:cloud_cover (%%)")
    a("--steps", type=int, default=36, help="regular time-grid steps T (plots are T x T)")
    a("--min-valid", type=int, default=4, help="pixels with fewer cloud-free observations are nodata")
    a("--on-unreadable", choices=["error", "nodata"], default="error",
      help="an unreadable asset (404, missing, corrupt) fails its window (error) or becomes nodata")  # fmt: skip
    a(
        "--snapshot",
        type=Path,
        help="frozen item list (ndjson): read instead of searching if it exists, else written",
    )
    a("--window-size", type=int, default=128, help="pixels per window edge (the unit of work)")
    a("--workers", type=int, default=2, help="compute actors (0: run everything in this process)")
    a("--cpus-per-worker", type=float, default=0.75, help="CPUs each compute actor reserves")
    a(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs each compute actor reserves (> 0: CUDA + CuPy)",
    )
    a("--read-cpus", type=float, default=0.25, help="CPUs each read task reserves")
    return p


def area_kwargs(args: argparse.Namespace, *, remote_out: bool = False) -> dict[str, Any]:
    """Validated keyword arguments of :class:`~pimc_ray.runner.AreaRequest` (nothing is written here)."""
    out = str(args.out)
    if "://" in out and not (remote_out and out.startswith("s3://")):
        allowed = "a local folder or s3://bucket/prefix" if remote_out else "a local folder"
        raise PimcError(f"--out {out}: this job writes to {allowed}")
    if "://" not in out:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise PimcError(f"--out {path} exists and is not a folder; pass a folder path")
        out = str(path.resolve())
    for name in ("steps", "min_valid", "window_size"):
        if getattr(args, name) < 1:
            raise PimcError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    spec = SeriesSpec(
        dates=DateRange.parse(args.start, args.end),
        timegrid=TimeGridSpec(steps=args.steps, min_valid=args.min_valid),
        catalog=args.catalog,
        on_unreadable=args.on_unreadable,
    )
    try:
        parallel = Parallelism(
            args.workers, args.cpus_per_worker, args.gpus_per_worker, args.read_cpus, GDAL_CACHE_MB
        )
    except ValueError as err:
        raise PimcError(str(err)) from err
    return {
        "aoi": load_aoi(args.aoi),
        "spec": spec,
        "stac_url": args.stac_url,
        "out": out,
        "collection": args.collection,
        "max_cloud_cover": args.max_cloud_cover,
        "parallel": parallel,
        "window_size": args.window_size,
        "snapshot": args.snapshot.resolve() if args.snapshot else None,
    }


def _run(work: Callable[[], tuple[list[str], int]]) -> int:
    """Run a job body, print its outputs and summary line, turn PimcErrors into one line and exit code 2."""
    from pimc_ray.pipeline import TilesFailedError

    bound_memory(GDAL_CACHE_MB)  # before GDAL reads anything in this process
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries are expected; failures surface as errors
    logging.getLogger("botocore").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    try:
        outputs, pixels = work()
    except TilesFailedError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_TILES_FAILED
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    seconds = time.perf_counter() - t0
    print("outputs:")
    for name in outputs:
        print(f"  {name}")
    print(f"summary: {pixels} pixels in {seconds:.1f} s = {pixels / seconds:.0f} pixels/s", flush=True)
    return 0


def _map_parser(description: str) -> argparse.ArgumentParser:
    p = area_parser(description)
    a = p.add_argument
    a("--checkpoint", type=Path, help="trained encoder checkpoint folder (default: random init)")
    a("--head", type=Path, help="a saved classification head folder")
    a("--head-train-aoi", help="fit the head on labels inside this AOI (held out from --aoi)")
    a("--labels-collection", default="pimc-sample-labels")
    a("--batch-size", type=int, default=1024, help="pixels per encoder batch")
    a("--tile-size", type=int, default=1024, help="tile edge in pixels (the unit of output)")
    a(
        "--dry-run",
        action="store_true",
        help="print tiles, pixels, bytes to read and the estimated time; write nothing",
    )
    return p


def _map_main(argv: Sequence[str] | None, description: str, *, write_embedding: bool) -> int:
    from pimc_ray.models.checkpoint import EncoderConfig, read_encoder_config, read_meta
    from pimc_ray.patches import composite_of
    from pimc_ray.pipeline import MapRequest, dry_run, map_aoi

    args = _map_parser(description).parse_args(sys.argv[1:] if argv is None else argv)

    def work() -> tuple[list[str], int]:
        # A checkpoint says which encoder it holds; without one, the default encoder, randomly initialised.
        encoder = read_encoder_config(args.checkpoint) if args.checkpoint else EncoderConfig()
        # An image-patch encoder cuts its patches from the composite it was pretrained on (the export records it).
        meta = read_meta(args.checkpoint) if args.checkpoint else {}
        request = MapRequest(
            **area_kwargs(args, remote_out=True),
            encoder=encoder,
            checkpoint=args.checkpoint,
            head=args.head,
            head_train_aoi=load_aoi(args.head_train_aoi) if args.head_train_aoi else None,
            labels_collection=args.labels_collection,
            batch_size=args.batch_size,
            tile_size=args.tile_size,
            write_embedding=write_embedding,
            composite=composite_of(meta),
        )
        if args.dry_run:
            plan = dry_run(request, progress=lambda msg: print(msg, flush=True))
            return [], int(plan["pixels"])
        summary = map_aoi(request, progress=lambda msg: print(msg, flush=True))
        return [f"{summary.out}/{key}" for key in summary.keys], summary.pixels

    return _run(work)


def embed_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/embed_aoi.py``: embedding maps (and class maps when a head is given or fit) of an AOI."""
    return _map_main(argv, "Map an AOI to PIMC embedding COGs on a tile grid (and class maps with a head).",
                     write_embedding=True)  # fmt: skip


def classify_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/classify_aoi.py``: land-cover class maps (with confidence) of an AOI."""
    return _map_main(argv, "Map an AOI to land-cover class COGs on a tile grid (needs --head or --head-train-aoi).",
                     write_embedding=False)  # fmt: skip


def indices_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/export_indices.py``: regular-grid NDVI/EVI/SAVI series and QA of an AOI."""
    from pimc_ray.export import export_indices
    from pimc_ray.runner import AreaRequest

    p = area_parser(
        "Export the regular-grid NDVI, EVI and SAVI series of an area of interest as COGs, with QA."
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def work() -> tuple[list[str], int]:
        result = export_indices(AreaRequest(**area_kwargs(args)), progress=lambda msg: print(msg, flush=True))
        note = " (already done, skipped)" if result.skipped else ""
        return [f"{path}{note}" for path in result.files], result.pixels

    return _run(work)
