"""The jobs: what ``jobs/*.py`` (``ray job submit -- python jobs/<job>.py``) and ``pimc <command>`` run.

==================  ========================  ===================================================================
job                 command                   does
==================  ========================  ===================================================================
embed_aoi.py        ``pimc embed``            embedding (and class) maps per tile (:func:`.map_aoi`)
classify_aoi.py     ``pimc classify``         class maps per tile, with a head
export_indices.py   ``pimc indices``          regular-grid NDVI/EVI/SAVI series and QA per UTM zone
pretrain.py         ``pimc pretrain``         PIMC pretraining on Ray Train, exported for mapping
train_head.py       ``pimc train-head``       a classification head from labels, on frozen embeddings
train_forecast.py   ``pimc train-forecast``   a forecast head (next NDVI/EVI/SAVI steps), on frozen embeddings
==================  ========================  ===================================================================

Each ``*_main`` parses its arguments (:mod:`pimc_ray.cli.args`), validates all of them before any work starts and
runs the library call through :func:`~pimc_ray.cli.run.run_job`, which owns the exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from pimc_ray.cli.args import (
    add_catalog,
    add_parallelism,
    add_series,
    aoi_union,
    at_least_one,
    endpoint,
    from_args,
    job_parser,
    output,
    parallelism,
    series_spec,
    uri,
)
from pimc_ray.cli.run import run_job, say
from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.stac import frozen_search
from pimc_ray.errors import InvalidConfigError, PimcError
from pimc_ray.storage import join_uri, split_uri, write_bytes

if TYPE_CHECKING:
    from pimc_ray.mapping.requests import MapRequest

__all__ = [
    "classify_main",
    "embed_main",
    "embed_parser",
    "indices_main",
    "indices_parser",
    "map_request",
    "pretrain_main",
    "pretrain_parser",
    "train_forecast_main",
    "train_forecast_parser",
    "train_head_main",
    "train_head_parser",
]


def _argv(argv: Sequence[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


def _area_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every per-pixel job shares: area, catalog, series, output and parallelism."""
    p = job_parser(description)
    p.add_argument(
        "--aoi", required=True, help="bbox 'minx,miny,maxx,maxy' (lon/lat), GeoJSON text or a .geojson file"
    )
    add_catalog(p)
    p.add_argument("--out", required=True, help="output folder, or s3://bucket/prefix")
    add_series(p)
    add_parallelism(p)
    return p


def _area(args: argparse.Namespace) -> dict[str, object]:
    """Validated keyword arguments of :class:`~pimc_ray.mapping.requests.AreaRequest` (nothing is written)."""
    return {
        "aoi": load_aoi(args.aoi),
        "spec": series_spec(args),
        "stac_url": args.stac_url,
        "out": output(args.out),
        "collection": args.collection,
        "max_cloud_cover": args.max_cloud_cover,
        "parallel": parallelism(args),
        "window_size": args.window_size,
        "snapshot": args.snapshot,
    }


def _print_outputs(keys: Sequence[str], pixels: int, seconds: float) -> None:
    say("outputs:")
    for key in keys:
        say(f"  {key}")
    say(f"summary: {pixels} pixels in {seconds:.1f} s = {pixels / seconds:.0f} pixels/s")


# --- mapping ------------------------------------------------------------------------------------------------


def embed_parser(description: str = "Map an AOI to PIMC embedding COGs on a tile grid (and class maps with a head).",
                 ) -> argparse.ArgumentParser:  # fmt: skip
    """The mapping jobs' parser (``embed`` and ``classify``)."""
    p = _area_parser(description)
    a = p.add_argument
    a(
        "--checkpoint",
        type=uri,
        help="trained encoder checkpoint, a folder or s3://bucket/prefix (default: random)",
    )
    a("--head", type=uri, help="a saved classification head: a folder or s3://bucket/prefix")
    a("--head-train-aoi", help="fit the head on labels inside this AOI (held out from --aoi)")
    a(
        "--forecast-head",
        type=uri,
        help="a saved forecast head (jobs/train_forecast.py): also write each tile's NDVI/EVI/SAVI forecast of "
        "the steps after --end",
    )
    a(
        "--labels-collection",
        default="pimc-sample-labels",
        help="STAC collection of the labels --head-train-aoi uses",
    )
    a("--batch-size", type=int, default=1024, help="pixels per encoder batch")
    a(
        "--precision",
        default="float32",
        help="what the encoders compute in: float32, or bfloat16 (torch autocast; docs/benchmarks.md, 'bf16')",
    )
    a("--tile-size", type=int, default=1024, help="tile edge in pixels (the unit of output)")
    a(
        "--update",
        action="store_true",
        help="rerun in place: remap only the tiles whose inputs (items, model, parameters) changed since the "
        "output's last run, as new versions (without it, an output holding other items, model or parameters is "
        "refused)",
    )
    a(
        "--accept-degraded",
        action="store_true",
        help="keep tiles published with reads that became nodata (--on-unreadable nodata) as done; without it, a "
        "rerun maps them again",
    )
    a(
        "--dry-run",
        action="store_true",
        help="print tiles, pixels, bytes to read and the estimated time; write nothing",
    )
    return p


def map_request(
    args: argparse.Namespace, *, write_embedding: bool, run_name: str | None = None
) -> MapRequest:
    """The mapping request of a mapping job's parsed arguments (also what ``pimc run execute`` maps: a spec's
    command line, :meth:`~pimc_ray.runs.spec.RunSpec.to_args`); validated, nothing written."""
    from pimc_ray.mapping.requests import MapRequest
    from pimc_ray.models.checkpoint import EncoderRef

    return MapRequest(
        **_area(args),  # type: ignore[arg-type]
        encoder=EncoderRef.open(args.checkpoint),  # the checkpoint says which encoder it holds
        head=args.head,
        head_train_aoi=load_aoi(args.head_train_aoi) if args.head_train_aoi else None,
        forecast_head=args.forecast_head,
        labels_collection=args.labels_collection,
        batch_size=args.batch_size,
        precision=args.precision,
        tile_size=args.tile_size,
        write_embedding=write_embedding,
        update=args.update,
        accept_degraded=args.accept_degraded,
        run_name=run_name,
    )


def _map_main(argv: Sequence[str] | None, description: str, *, write_embedding: bool) -> int:
    args = embed_parser(description).parse_args(_argv(argv))

    def work() -> None:
        from pimc_ray.mapping.maps import dry_run, map_aoi

        t0 = time.perf_counter()
        request = map_request(args, write_embedding=write_embedding)
        if args.dry_run:
            plan = dry_run(request, progress=say)
            _print_outputs([], int(plan["pixels"]), time.perf_counter() - t0)
            return
        summary = map_aoi(request, progress=say)
        _print_outputs(
            [f"{summary.out}/{key}" for key in summary.keys], summary.pixels, time.perf_counter() - t0
        )

    return run_job(work)


def embed_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/embed_aoi.py``: embedding maps (and class maps when a head is given or fit) of an AOI."""
    return _map_main(argv, "Map an AOI to PIMC embedding COGs on a tile grid (and class maps with a head).",
                     write_embedding=True)  # fmt: skip


def classify_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/classify_aoi.py``: land-cover class maps (with confidence) of an AOI."""
    return _map_main(argv, "Map an AOI to land-cover class COGs on a tile grid (needs --head or --head-train-aoi).",
                     write_embedding=False)  # fmt: skip


def indices_parser() -> argparse.ArgumentParser:
    """The indices job's parser."""
    p = _area_parser(
        "Export the regular-grid NDVI, EVI and SAVI series of an area of interest as COGs, with QA."
    )
    p.add_argument(
        "--accept-degraded",
        action="store_true",
        help="keep zones published with reads that became nodata (--on-unreadable nodata) as done; without it, a "
        "rerun computes them again",
    )
    return p


def indices_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/export_indices.py``: regular-grid NDVI/EVI/SAVI series and QA of an AOI."""
    args = indices_parser().parse_args(_argv(argv))

    def work() -> None:
        from pimc_ray.mapping.indices import export_indices
        from pimc_ray.mapping.requests import AreaRequest

        t0 = time.perf_counter()
        request = AreaRequest(**_area(args))  # type: ignore[arg-type]
        result = export_indices(request, accept_degraded=args.accept_degraded, progress=say)
        note = " (already done, skipped)" if result.skipped else ""
        _print_outputs(
            [f"{result.out}/{key}{note}" for key in result.keys], result.pixels, time.perf_counter() - t0
        )

    return run_job(work)


# --- pretraining --------------------------------------------------------------------------------------------


def pretrain_parser() -> argparse.ArgumentParser:
    """The pretraining job's parser."""
    p = job_parser(
        "Pretrain PIMC (RP encoder + image-patch encoder, symmetric InfoNCE) on Ray Train, resuming from the run's "
        "latest checkpoint, and export the encoders for jobs/embed_aoi.py (the RP encoder to OUT, the image-patch "
        "encoder to OUT/rsi, both to OUT/joint)."
    )
    a = p.add_argument
    a("--aoi", action="append", required=True, help="training area (repeat to join several)")
    add_catalog(p)
    add_series(p, on_unreadable=False)
    a("--out", required=True,
      help="where the encoders are exported (--checkpoint of the mapping jobs): a folder or s3://bucket/prefix; "
           "the image-patch encoder goes to OUT/rsi")  # fmt: skip
    a("--storage", type=uri, help="checkpoint storage: a folder or s3://bucket/prefix (default: OUT/../runs)")
    a("--s3-endpoint", type=endpoint, help="endpoint of an S3-compatible store (default: AWS_ENDPOINT_URL)")
    a("--name", help="run name; a resubmitted job with the same name resumes (default: OUT's name)")
    a("--train-steps", type=int, default=1000, help="optimizer steps of the whole run")
    a("--batch-size", type=int, default=256, help="global batch (pairs per step, all workers)")
    a("--lr", type=float, default=1e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    a("--weight-decay", type=float, default=1e-4)
    a("--warmup-steps", type=int, default=50)
    a("--checkpoint-every", type=int, default=100)
    a("--keep-checkpoints", type=int, default=3)
    a("--log-every", type=int, default=20)
    a("--temperature", type=float, default=0.07, help="(initial) temperature of the loss")
    a("--fixed-temperature", action="store_true", help="keep it fixed (default: learnt, as CLIP)")
    a(
        "--rp-widths",
        default="16,32,64",
        help="channels of the RP encoder's stages (32,64,128: the earlier size)",
    )
    a("--patch-size", type=int, default=9, help="image patch side in 10 m pixels (odd)")
    a("--composite", default="median", help="'median' or a date YYYY-MM-DD (nearest grid step)")
    a("--pixels-per-window", type=int, default=1024, help="pairs drawn per window visit")
    a("--time-shift", type=int, default=2,
      help="augmentation: move each series by up to this many grid steps, either way (0: none)")  # fmt: skip
    a("--haze", type=float, default=0.0,
      help="augmentation: haze each step of a series with this probability (an aerosol residual; 0: none)")  # fmt: skip
    a("--shuffle-buffer", type=int, default=2048, help="pairs each worker mixes before a batch (0: none)")
    a("--workers", type=int, default=2, help="Ray Train workers (DDP ranks)")
    a(
        "--cpus-per-worker",
        type=float,
        help="CPUs per worker (default: what the readers leave, at most 1 each)",
    )
    a("--gpu", action="store_true", help="one GPU per worker (nccl, bf16 autocast)")
    a("--readers", type=int, default=1, help="Ray Data actors reading pair windows")
    a("--reader-cpus", type=float, default=1.0, help="CPUs each pair reader reserves")
    a("--reader-cache-mb", type=int, default=1024,
      help="memory each pair reader keeps read windows in, to draw from them again at later visits")  # fmt: skip
    a("--wait-for-resources", action="store_true",
      help="start even if the cluster cannot place every worker now (it autoscales); else refuse up front")  # fmt: skip
    a(
        "--max-failures",
        type=int,
        default=0,
        help="worker failures to recover from within the run (Ray Train)",
    )
    a("--seed", type=int, default=0)
    return p


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/pretrain.py``."""
    args = pretrain_parser().parse_args(_argv(argv))

    def work() -> None:
        from pimc_ray.data.tiles import aoi_grids
        from pimc_ray.models.checkpoint import DEFAULT_RP_PARAMS, EncoderConfig
        from pimc_ray.models.pimc import DEFAULT_RSI_PARAMS, PIMCConfig
        from pimc_ray.training.config import RunSpec, TrainConfig
        from pimc_ray.training.pairs import PairSpec, PairStream, training_tasks
        from pimc_ray.training.trainer import pretrain, summary_line

        t0 = time.perf_counter()
        spec = series_spec(args)
        aoi = aoi_union(args.aoi)
        pair_spec = from_args(PairSpec, args, series=spec)
        loss_params = {"temperature": args.temperature, "learnable": not args.fixed_temperature}
        rsi = EncoderConfig(name="rsi-cnn", params={**DEFAULT_RSI_PARAMS, "patch_size": args.patch_size})
        rp = EncoderConfig(params={**DEFAULT_RP_PARAMS, "widths": _widths(args.rp_widths)})
        loss = {"name": "symmetric-infonce", "params": loss_params}
        model = PIMCConfig(rp=rp, rsi=rsi, loss=loss, seed=args.seed)
        config = from_args(TrainConfig, args, model=model, steps=args.train_steps)
        out = output(args.out)
        parent, name = split_uri(out)
        storage = args.storage or join_uri(parent, "runs")
        run = from_args(RunSpec, args, name=args.name or name, storage_path=storage, use_gpu=args.gpu)
        if config.batch_size % run.workers:
            raise InvalidConfigError(
                f"--batch-size {config.batch_size} must split evenly over {run.workers} workers"
            )
        items = frozen_search(
            aoi, spec.dates, stac_url=args.stac_url, collection=args.collection,
            max_cloud_cover=args.max_cloud_cover, snapshot=args.snapshot,
        )  # fmt: skip
        tasks = training_tasks(aoi_grids(aoi), pair_spec.window_size)
        say(
            f"[pretrain] {len(items)} items, {len(tasks)} candidate windows; run {run.name!r} in {run.storage_path}"
        )
        stream = PairStream(
            items,
            tasks,
            pair_spec,
            readers=run.readers,
            reader_cpus=run.reader_cpus,
            cache_mb=args.reader_cache_mb,
        )
        result = pretrain(stream, config, run, export_to=out, progress=say)
        say(f"summary: {summary_line(result)}  encoder: {out}  ({time.perf_counter() - t0:.0f} s)")

    return run_job(work)


def _widths(text: str) -> list[int]:
    """``--rp-widths 16,32,64`` as a list of positive integers."""
    try:
        widths = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise InvalidConfigError(
            f"--rp-widths {text!r}: write channel counts separated by commas, e.g. 16,32,64"
        ) from err
    if not widths or min(widths) < 1:
        raise InvalidConfigError(
            f"--rp-widths {text!r}: give one or more positive channel counts, e.g. 16,32,64"
        )
    return widths


# --- classification heads -----------------------------------------------------------------------------------


def train_head_parser() -> argparse.ArgumentParser:
    """The head-fitting job's parser."""
    p = job_parser(
        "Fit a classification head (logistic regression) on frozen embeddings of labelled pixels and save it "
        "beside the encoder; jobs/embed_aoi.py --head DIR then maps with it."
    )
    a = p.add_argument
    a(
        "--checkpoint",
        type=uri,
        help="the encoder checkpoint: a folder or s3://bucket/prefix (default: random weights)",
    )
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument(
        "--labels", type=uri, help="a GeoJSON of points/polygons or a label raster (GeoTIFF): a path or URI"
    )
    labels.add_argument(
        "--labels-collection", help="a STAC collection of label rasters (e.g. pimc-sample-labels)"
    )
    a("--labels-asset", default="labels", help="asset of the label items holding class ids")
    a("--class-property", default="class", help="GeoJSON property holding the class")
    a("--aoi", help="area to take labels from (default: the labels' extent; required for STAC)")
    add_catalog(p)
    add_series(p, on_unreadable=False)
    a("--out", type=uri, help="head folder, or s3://bucket/prefix (default: CHECKPOINT/head)")
    a("--per-class", type=int, default=400, help="labelled pixels per class used to fit")
    _add_embedding_workers(p)
    return p


def _add_embedding_workers(p: argparse.ArgumentParser) -> None:
    """The options of the head-fitting jobs' embedding: actors, batch and the seed of the pixel draws."""
    p.add_argument("--workers", type=int, default=0, help="encoder actors (0: run in this process)")
    p.add_argument("--batch-size", type=int, default=1024, help="pixels per encoder batch")
    p.add_argument("--seed", type=int, default=0)


def _save_fit(
    head: Any, out: str, args: argparse.Namespace, encoder: Any, weights: str, **record: Any
) -> None:
    """Save a fitted head in ``out`` and its provenance beside it (``fit.json``): the encoder and its weights,
    the head's hash, and ``record`` (area, grid, what it was fit on, its statistics)."""
    from pimc_ray.models.checkpoint import sha256_file
    from pimc_ray.models.heads import HEAD_WEIGHTS

    head.save(out)
    provenance = {
        "encoder": encoder.config.to_dict(),
        "weights": weights,
        "checkpoint": args.checkpoint,
        "head_sha256": sha256_file(join_uri(out, HEAD_WEIGHTS)),
        **record,
    }
    write_bytes(json.dumps(provenance, indent=2).encode(), join_uri(out, "fit.json"))


def train_head_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/train_head.py``."""
    args = train_head_parser().parse_args(_argv(argv))

    def work() -> None:
        from pimc_ray.data.labels import GeoJSONLabels, LabelSource, RasterLabels, StacLabels
        from pimc_ray.data.stac import search_items
        from pimc_ray.data.tiles import aoi_grids
        from pimc_ray.mapping.embedder import EmbedderFactory, series_reader
        from pimc_ray.mapping.heads import fit_head
        from pimc_ray.mapping.runner import Parallelism
        from pimc_ray.models.checkpoint import EncoderRef

        spec = series_spec(args)
        at_least_one(args, "per_class", "batch_size")
        if args.out is None and args.checkpoint is None:
            raise PimcError("pass --out (where to save the head) or --checkpoint (it is saved beside it)")
        out = output(args.out or join_uri(args.checkpoint, "head"))
        encoder = EncoderRef.open(args.checkpoint)
        _, weights = encoder.load()  # fails early on a bad checkpoint
        source: LabelSource
        if args.labels_collection:
            if not args.aoi:
                raise PimcError("--labels-collection needs --aoi (the area whose labels to use)")
            aoi = load_aoi(args.aoi)
            found = search_items(aoi, spec.dates, stac_url=args.stac_url, collection=args.labels_collection)
            source = StacLabels(tuple(found), asset=args.labels_asset)
        elif PurePosixPath(args.labels).suffix.lower() in (".json", ".geojson"):
            source = GeoJSONLabels.load(args.labels, class_property=args.class_property)
            aoi = load_aoi(args.aoi) if args.aoi else source.area()
        else:
            source = RasterLabels(args.labels)
            aoi = load_aoi(args.aoi) if args.aoi else source.area()
        items = frozen_search(
            aoi, spec.dates, stac_url=args.stac_url, collection=args.collection,
            max_cloud_cover=args.max_cloud_cover, snapshot=args.snapshot,
        )  # fmt: skip
        parallel = Parallelism(workers=args.workers)  # the mapping defaults: 0.75 CPU per encoder actor
        head, stats = fit_head(
            source,
            aoi_grids(aoi),
            reader=series_reader(spec, items, encoder.config),
            embedder=EmbedderFactory(spec, encoder, args.batch_size, parallel.torch_threads),
            parallel=parallel,
            window_size=args.window_size,
            per_class=args.per_class,
            seed=args.seed,
            progress=say,
        )
        labels = args.labels or f"stac:{args.labels_collection}"
        _save_fit(head, out, args, encoder, weights, labels=labels, aoi=aoi.__geo_interface__,
                  spec=spec.to_dict(), **stats)  # fmt: skip
        say(f"head: {out}  ({stats['pixels']} pixels, training accuracy {stats['train_accuracy']:.3f})")

    return run_job(work)


# --- forecast heads -----------------------------------------------------------------------------------------


def train_forecast_parser() -> argparse.ArgumentParser:
    """The forecast-head fitting job's parser."""
    p = job_parser(
        "Fit a forecast head on frozen embeddings: from a pixel's embedding over --start..--end, the NDVI, EVI and "
        "SAVI of the --horizon grid steps that follow (observed in the archive after --end: no labels needed). "
        "jobs/embed_aoi.py --forecast-head DIR then writes forecast COGs, from runs on the same calendar window "
        "of another year or area."
    )
    a = p.add_argument
    a(
        "--checkpoint",
        type=uri,
        required=True,
        help="the encoder: a pretraining export (its default embedding holds the index series a forecast needs)",
    )
    a("--aoi", required=True, help="the training area: bbox 'minx,miny,maxx,maxy', GeoJSON text or a file")
    add_catalog(p)
    add_series(p, on_unreadable=False)
    a("--horizon", type=int, default=10, help="grid steps to forecast after --end (the paper's: 10)")
    a("--out", type=uri, help="head folder, or s3://bucket/prefix (default: CHECKPOINT/forecast)")
    a("--per-window", type=int, default=256, help="pixels kept per window to fit on")
    _add_embedding_workers(p)
    return p


def train_forecast_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/train_forecast.py``."""
    args = train_forecast_parser().parse_args(_argv(argv))

    def work() -> None:
        from pimc_ray.data.stac import DateRange
        from pimc_ray.data.tiles import aoi_grids
        from pimc_ray.mapping.embedder import EmbedderFactory, series_reader
        from pimc_ray.mapping.forecast import ForecastReader, fit_forecaster, last_positions, targets_end
        from pimc_ray.mapping.runner import Parallelism
        from pimc_ray.models.checkpoint import EncoderRef

        spec = series_spec(args)
        at_least_one(args, "horizon", "per_window", "batch_size")
        out = output(args.out or join_uri(args.checkpoint, "forecast"))
        encoder = EncoderRef.open(args.checkpoint)
        model, weights = encoder.load()  # fails early on a bad checkpoint
        last_positions(model, spec)  # and on one whose embedding holds no series
        aoi = load_aoi(args.aoi)
        until = targets_end(spec, args.horizon)
        items = frozen_search(
            aoi, DateRange(spec.dates.start, until), stac_url=args.stac_url, collection=args.collection,
            max_cloud_cover=args.max_cloud_cover, snapshot=args.snapshot,
        )  # fmt: skip
        parallel = Parallelism(workers=args.workers)
        head, stats = fit_forecaster(
            aoi_grids(aoi),
            reader=ForecastReader(series_reader(spec, items, encoder.config), args.horizon),
            embedder=EmbedderFactory(spec, encoder, args.batch_size, parallel.torch_threads),
            encoder=model,
            parallel=parallel,
            window_size=args.window_size,
            per_window=args.per_window,
            seed=args.seed,
            progress=say,
        )
        _save_fit(head, out, args, encoder, weights, aoi=aoi.__geo_interface__, spec=spec.to_dict(),
                  targets_until=until.isoformat(), **stats)  # fmt: skip
        rmse = ", ".join(f"{k} {v:.4f}" for k, v in stats["train_rmse"].items())
        held = ", ".join(f"{k} {v:.4f}" for k, v in stats["persistence_rmse"].items())
        say(f"forecast head: {out}  ({stats['pixels']} pixels; training RMSE {rmse}; persistence {held})")

    return run_job(work)
