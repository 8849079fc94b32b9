"""Command-line entry points of the training jobs: ``jobs/pretrain.py`` and ``jobs/train_head.py``.

Both parse and validate every argument before any work starts; a :class:`~pimc_ray.errors.PimcError` (bad
input, no items, a corrupt or mismatched checkpoint) becomes one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pimc_ray.aoi import AOI, load_aoi
from pimc_ray.errors import CheckpointError, PimcError
from pimc_ray.series import SeriesSpec
from pimc_ray.stac import DateRange, load_snapshot, save_snapshot, search_items
from pimc_ray.timegrid import TimeGridSpec

EXIT_BAD_INPUT = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument("--stac-url", required=True, help="root URL of a STAC API")
    p.add_argument("--collection", default="sentinel-2-l2a")
    p.add_argument("--catalog", choices=["earth-search", "planetary-computer"], help="default: detect")
    p.add_argument("--max-cloud-cover", type=float, help="skip scenes above this eo:cloud_cover (%%)")
    p.add_argument("--steps", type=int, default=36, help="regular time-grid steps T (plots are T x T)")
    p.add_argument(
        "--min-valid", type=int, default=4, help="pixels with fewer cloud-free observations are nodata"
    )
    p.add_argument("--snapshot", type=Path, help="frozen item list (ndjson): read if it exists, else written")
    p.add_argument("--window-size", type=int, default=128, help="pixels per window edge (unit of work)")


def _series_spec(args: argparse.Namespace) -> SeriesSpec:
    for name in ("steps", "min_valid", "window_size"):
        if getattr(args, name) < 1:
            raise PimcError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return SeriesSpec(
        dates=DateRange.parse(args.start, args.end),
        timegrid=TimeGridSpec(steps=args.steps, min_valid=args.min_valid),
        catalog=args.catalog,
    )


def _items(args: argparse.Namespace, aoi: AOI, dates: DateRange) -> list[dict[str, Any]]:
    """Sentinel-2 items of the area: from the snapshot if it exists, else searched (and frozen there)."""
    if args.snapshot is not None and args.snapshot.exists():
        return load_snapshot(args.snapshot)
    items = search_items(
        aoi, dates, stac_url=args.stac_url, collection=args.collection, max_cloud_cover=args.max_cloud_cover
    )
    if args.snapshot is not None:
        save_snapshot(items, args.snapshot)
    return items


def _run(work: Any) -> int:
    from pimc_ray.runner import bound_memory

    bound_memory(64)  # bounded block cache and heap, as in the mapping jobs
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    try:
        return int(work())
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


def _say(message: str) -> None:
    print(message, flush=True)


# --- pretraining --------------------------------------------------------------------------------------------


def pretrain_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Pretrain PIMC (RP encoder + image-patch encoder, symmetric InfoNCE) on Ray Train, "
        "resuming from the run's latest checkpoint, and export both encoders for jobs/embed_aoi.py "
        "(the RP encoder to OUT, the image-patch encoder to OUT/rsi).",
    )
    p.add_argument("--aoi", action="append", required=True, help="training area (repeat to join several)")
    _common(p)
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="folder of the exported RP encoder (--checkpoint); the image-patch encoder goes to OUT/rsi",
    )
    p.add_argument(
        "--storage", help="checkpoint storage: a folder or s3://bucket/prefix (default: OUT/../runs)"
    )
    p.add_argument("--s3-endpoint", help="endpoint of an S3-compatible store (default: AWS_ENDPOINT_URL)")
    p.add_argument(
        "--name", help="run name; a resubmitted job with the same name resumes (default: OUT's name)"
    )
    p.add_argument("--train-steps", type=int, default=1000, help="optimizer steps of the whole run")
    p.add_argument("--batch-size", type=int, default=256, help="global batch (pairs per step, all workers)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--temperature", type=float, default=0.07, help="(initial) temperature of the loss")
    p.add_argument(
        "--fixed-temperature", action="store_true", help="keep it fixed (default: learnt, as CLIP)"
    )
    p.add_argument("--patch-size", type=int, default=9, help="image patch side in 10 m pixels (odd)")
    p.add_argument("--composite", default="median", help="'median' or a date YYYY-MM-DD (nearest grid step)")
    p.add_argument("--pixels-per-window", type=int, default=1024, help="pairs drawn per window visit")
    p.add_argument(
        "--time-shift",
        type=int,
        default=2,
        help="augmentation: move each series by up to this many grid steps, either way (0: none)",
    )
    p.add_argument(
        "--shuffle-buffer", type=int, default=2048, help="pairs each worker mixes before a batch (0: none)"
    )
    p.add_argument("--workers", type=int, default=2, help="Ray Train workers (DDP ranks)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl, bf16 autocast)")
    p.add_argument("--readers", type=int, default=1, help="Ray Data actors reading pair windows")
    p.add_argument("--reader-cpus", type=float, default=1.0)
    p.add_argument(
        "--max-failures",
        type=int,
        default=0,
        help="worker failures to recover from within the run (Ray Train)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/pretrain.py``."""
    args = pretrain_parser().parse_args(sys.argv[1:] if argv is None else argv)

    def work() -> int:
        from pimc_ray.models.checkpoint import EncoderConfig
        from pimc_ray.models.pimc import DEFAULT_RSI_PARAMS, PIMCConfig
        from pimc_ray.pairs import PairSpec, PairStream, training_tasks
        from pimc_ray.tiles import aoi_grids
        from pimc_ray.train import RunSpec, TrainConfig, pretrain, summary_line

        t0 = time.perf_counter()
        spec = _series_spec(args)
        aoi = _union([load_aoi(a) for a in args.aoi])
        try:
            pair_spec = _from_args(PairSpec, args, series=spec)
            model = PIMCConfig(
                rsi=EncoderConfig(
                    name="rsi-cnn", params={**DEFAULT_RSI_PARAMS, "patch_size": args.patch_size}
                ),
                loss={
                    "name": "symmetric-infonce",
                    "params": {"temperature": args.temperature, "learnable": not args.fixed_temperature},
                },
                seed=args.seed,
            )
            config = _from_args(TrainConfig, args, model=model, steps=args.train_steps)
            out = args.out.resolve()
            run = _from_args(
                RunSpec,
                args,
                name=args.name or out.name,
                storage_path=args.storage or str(out.parent / "runs"),
                use_gpu=args.gpu,
            )
        except ValueError as err:
            raise PimcError(str(err)) from err
        if config.batch_size % run.workers:
            raise PimcError(f"--batch-size {config.batch_size} must split evenly over {run.workers} workers")
        items = _items(args, aoi, spec.dates)
        tasks = training_tasks(aoi_grids(aoi), pair_spec.window_size)
        _say(
            f"[pretrain] {len(items)} items, {len(tasks)} candidate windows; run {run.name!r} in {run.storage_path}"
        )
        stream = PairStream(items, tasks, pair_spec, readers=run.readers, reader_cpus=run.reader_cpus)
        from ray.train import TrainingFailedError

        try:
            result = pretrain(stream, config, run, export_to=out, progress=_say)
        except TrainingFailedError as err:  # a worker's CheckpointError reaches the driver wrapped
            if "CheckpointError" in str(err):
                raise CheckpointError(_checkpoint_message(err)) from err
            raise
        _say(f"summary: {summary_line(result)}  encoder: {out}  ({time.perf_counter() - t0:.0f} s)")
        return 0

    return _run(work)


def _from_args(cls: Any, args: argparse.Namespace, **given: Any) -> Any:
    """A dataclass ``cls`` from the parsed flags named like its fields, and ``given`` values for the rest."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**flags, **given})


def _checkpoint_message(err: BaseException) -> str:
    text = str(err)
    start = text.rfind("CheckpointError: ")
    line = text[start + len("CheckpointError: ") :] if start >= 0 else text
    return line.strip().splitlines()[0] if line.strip() else "a checkpoint of this run cannot be loaded"


def _union(aois: Sequence[AOI]) -> AOI:
    import shapely

    return aois[0] if len(aois) == 1 else AOI(shapely.union_all([a.geometry for a in aois]))


# --- classification heads -----------------------------------------------------------------------------------


def train_head_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fit a classification head (logistic regression) on frozen embeddings of labelled pixels "
        "and save it beside the encoder; jobs/embed_aoi.py --head DIR then maps with it.",
    )
    p.add_argument("--checkpoint", type=Path, help="the encoder checkpoint (default: random weights)")
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument(
        "--labels", type=Path, help="a GeoJSON of points/polygons or a label raster (GeoTIFF)"
    )
    labels.add_argument(
        "--labels-collection", help="a STAC collection of label rasters (e.g. pimc-sample-labels)"
    )
    p.add_argument("--labels-asset", default="labels", help="asset of the label items holding class ids")
    p.add_argument("--class-property", default="class", help="GeoJSON property holding the class")
    p.add_argument("--aoi", help="area to take labels from (default: the labels' extent; required for STAC)")
    _common(p)
    p.add_argument("--out", type=Path, help="head folder (default: CHECKPOINT/head)")
    p.add_argument("--per-class", type=int, default=400, help="labelled pixels per class used to fit")
    p.add_argument("--workers", type=int, default=0, help="Ray Data actors (0: run in this process)")
    p.add_argument("--seed", type=int, default=0)
    return p


def train_head_main(argv: Sequence[str] | None = None) -> int:
    """``jobs/train_head.py``."""
    args = train_head_parser().parse_args(sys.argv[1:] if argv is None else argv)

    def work() -> int:
        import json

        from pimc_ray.labels import (
            GeoJSONLabels,
            LabelError,
            LabelledSampler,
            RasterLabels,
            StacLabels,
            fit_head,
        )
        from pimc_ray.models.checkpoint import (
            EncoderConfig,
            load_checkpoint,
            read_encoder_config,
            sha256_file,
        )
        from pimc_ray.tiles import aoi_grids

        spec = _series_spec(args)
        if args.out is None and args.checkpoint is None:
            raise PimcError("pass --out (where to save the head) or --checkpoint (it is saved beside it)")
        out = (args.out or args.checkpoint / "head").resolve()
        encoder = read_encoder_config(args.checkpoint) if args.checkpoint else EncoderConfig()
        if args.checkpoint is not None:
            _, meta = load_checkpoint(args.checkpoint, expect=encoder)  # fails early on a bad checkpoint
            weights = f"checkpoint sha256:{meta['sha256']}"
        else:
            weights = f"random-init (untrained, seed {encoder.seed})"
        source: Any
        if args.labels_collection:
            if not args.aoi:
                raise PimcError("--labels-collection needs --aoi (the area whose labels to use)")
            aoi = load_aoi(args.aoi)
            found = search_items(aoi, spec.dates, stac_url=args.stac_url, collection=args.labels_collection)
            source = StacLabels(tuple(found), asset=args.labels_asset)
        elif args.labels.suffix.lower() in (".json", ".geojson"):
            source = GeoJSONLabels.load(args.labels, class_property=args.class_property)
            aoi = load_aoi(args.aoi) if args.aoi else source.area()
        else:
            source = RasterLabels(args.labels)
            aoi = load_aoi(args.aoi) if args.aoi else source.area()
        if args.per_class < 1:
            raise LabelError(f"--per-class must be at least 1, got {args.per_class}")
        items = _items(args, aoi, spec.dates)
        sampler = LabelledSampler(
            spec, items, encoder, args.checkpoint, source, args.per_class, seed=args.seed,
            threads=1 if args.workers else (os.cpu_count() or 1),
        )  # fmt: skip
        head, stats = fit_head(
            sampler, aoi_grids(aoi), window_size=args.window_size, workers=args.workers, progress=_say
        )
        head.save(out)
        provenance = {
            "encoder": encoder.to_dict(),
            "weights": weights,
            "checkpoint": str(args.checkpoint.resolve()) if args.checkpoint else None,
            "head_sha256": sha256_file(out / "head.safetensors"),
            "labels": str(args.labels) if args.labels else f"stac:{args.labels_collection}",
            "aoi": aoi.__geo_interface__,
            "spec": spec.to_dict(),
            **stats,
        }
        (out / "fit.json").write_text(json.dumps(provenance, indent=2))
        _say(f"head: {out}  ({stats['pixels']} pixels, training accuracy {stats['train_accuracy']:.3f})")
        return 0

    return _run(work)
