"""``pimc eval pastis`` and ``pimc eval eurosat``: the PIMC paper's downstream tasks (:mod:`pimc_ray.evaluation`).

Both read a dataset folder in the layout it is distributed in, score the raw baselines, the randomly initialised
encoder and (with ``--checkpoint``) the pretrained one as a linear probe and fine-tuned, print a table with the
paper's figures beside ours, and with ``--out`` write it as JSON. A folder with another layout ends the command
with one line naming the expected layout (exit code 2).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pimc_ray.cli.args import uri
from pimc_ray.cli.run import say
from pimc_ray.errors import EXIT_CODES_HELP, InvalidConfigError

if TYPE_CHECKING:
    from pimc_ray.evaluation.probes import TrainOptions

__all__ = ["add_commands"]


def _folds(text: str) -> tuple[int, ...]:
    """``1,2,3`` -> (1, 2, 3), each fold 1..5."""
    try:
        folds = tuple(sorted({int(f) for f in text.split(",") if f.strip()}))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of folds, e.g. 1,2,3"
        ) from err
    if not folds or not all(1 <= f <= 5 for f in folds):
        raise argparse.ArgumentTypeError(f"{text!r}: PASTIS folds are 1..5, e.g. 1,2,3")
    return folds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _add_common(p: argparse.ArgumentParser, *, batch_size: int) -> None:
    """The options every evaluation takes: the encoder, training, device and report."""
    a = p.add_argument
    a(
        "--checkpoint",
        type=uri,
        help="the pretrained PIMC model: a pretraining export (its root, rp/, rsi/ or joint/) or a training "
        "checkpoint, a path or URI; without it only the baselines and the random initialisation are scored",
    )
    a("--epochs", type=int, default=5, help="fine-tuning epochs; 0 scores linear probes only (default: 5)")
    a("--batch-size", type=int, default=batch_size, help=f"samples per step (default: {batch_size})")
    a(
        "--lr",
        type=float,
        default=1e-4,
        help="fine-tuning's peak learning rate, AdamW, cosine (default: 1e-4)",
    )
    a(
        "--seed",
        type=int,
        default=0,
        help="seed of sampling, splits, random initialisation and batches (default: 0)",
    )
    a("--device", choices=["cpu", "cuda"], default="cpu", help="where the encoders run (default: cpu)")
    a("--out", type=uri, help="also write the report as JSON to this file (a path or URI)")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eval`` (``pastis``, ``eurosat``) to the ``pimc`` parser's subcommands."""
    evaluate = commands.add_parser(
        "eval", help="the paper's downstream tasks: PASTIS pixel forecasting and classification, EuroSAT"
    ).add_subparsers(dest="eval_command", required=True)

    pastis = evaluate.add_parser(
        "pastis",
        help="PASTIS pixel forecasting (RMSE per index) or classification (OA, mIoU)",
        description="Score the RP encoder on PASTIS: --task forecast predicts the next 10 NDVI, EVI and SAVI "
        "values of a pixel from its first 32 observations (RMSE per index, against persistence and the raw "
        "series); --task classify predicts its class from its series on a regular 36-step grid (overall "
        "accuracy and mean IoU, against the raw series). Heads are fit on --train-folds and scored on "
        "--test-folds.",
        epilog=EXIT_CODES_HELP,
    )
    a = pastis.add_argument
    a("--root", required=True, help="the PASTIS folder (metadata.geojson, DATA_S2/, ANNOTATIONS/)")
    a("--task", required=True, choices=["forecast", "classify"])
    a("--train-folds", type=_folds, default=(1, 2, 3), help="folds the heads are fit on (default: 1,2,3)")
    a("--test-folds", type=_folds, default=(5,), help="folds they are scored on (default: 5)")
    a(
        "--max-pixels",
        type=_positive,
        default=50_000,
        help="pixels of each split, drawn evenly over its patches (default: 50000)",
    )
    a("--max-patches", type=_positive, help="patches of each split, drawn with --seed (default: all)")
    a("--steps", type=_positive, default=36, help="regular-grid steps of --task classify (default: 36)")
    _add_common(pastis, batch_size=512)
    pastis.set_defaults(func=_pastis)

    eurosat = evaluate.add_parser(
        "eurosat",
        help="EuroSAT land-cover classification with the image-patch encoder (accuracy, per class)",
        description="Score the image-patch (RSI) encoder on EuroSAT multispectral: a linear probe and "
        "fine-tuned, against band statistics; accuracy overall and per class.",
        epilog=EXIT_CODES_HELP,
    )
    a = eurosat.add_argument
    a("--root", required=True, help="the EuroSAT_MS folder (one folder of 13-band GeoTIFFs per class)")
    a(
        "--split-files",
        nargs=2,
        metavar=("TRAIN", "TEST"),
        help="text files listing the training and the test images, one name per line (default: a stratified "
        "split drawn with --seed)",
    )
    a("--test-fraction", type=float, default=0.2, help="share of each class for test (default: 0.2)")
    a("--max-per-class", type=_positive, help="images of each class, drawn with --seed (default: all)")
    _add_common(eurosat, batch_size=64)
    eurosat.set_defaults(func=_eurosat)


def _options(args: argparse.Namespace) -> TrainOptions:
    """The training options (torch loads only when a command runs)."""
    from pimc_ray.evaluation.probes import TrainOptions

    try:
        return TrainOptions(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device
        )
    except ValueError as err:
        raise InvalidConfigError(str(err)) from err


def _check_out(out: str | None) -> None:
    """Refuse an ``--out`` that cannot take a file before any work (a folder, or a path inside a file)."""
    from pimc_ray.storage import is_local

    if out is None or not is_local(out):
        return
    path = Path(out)
    if path.is_dir():
        raise InvalidConfigError(
            f"--out {out} is a folder; name the JSON file to write, e.g. {path / 'report.json'}"
        )
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise InvalidConfigError(f"--out {out} is inside {parent}, which is a file; pass another path")


def _finish(report_json: str, table: str, out: str | None, t0: float) -> None:
    from pimc_ray.storage import write_bytes

    say("")
    say(table)
    if out is not None:
        say(f"wrote {write_bytes(report_json.encode(), out)}")
    say(f"done in {time.perf_counter() - t0:.1f} s")


def _pastis(args: argparse.Namespace) -> None:
    from pimc_ray.evaluation.tasks import evaluate_pastis
    from pimc_ray.evaluation.towers import encoder_variants

    t0 = time.perf_counter()
    _check_out(args.out)
    options = _options(args)
    variants = encoder_variants(args.checkpoint, "plots", seed=args.seed)
    report = evaluate_pastis(
        args.root,
        args.task,
        variants,
        train_folds=args.train_folds,
        test_folds=args.test_folds,
        max_pixels=args.max_pixels,
        max_patches=args.max_patches,
        steps=args.steps,
        options=options,
        progress=say,
    )
    _finish(report.to_json(), report.table(), args.out, t0)


def _eurosat(args: argparse.Namespace) -> None:
    from pimc_ray.evaluation.tasks import evaluate_eurosat
    from pimc_ray.evaluation.towers import encoder_variants

    t0 = time.perf_counter()
    _check_out(args.out)
    options = _options(args)
    variants = encoder_variants(args.checkpoint, "patches", seed=args.seed)
    report = evaluate_eurosat(
        args.root,
        variants,
        split_files=args.split_files,
        test_fraction=args.test_fraction,
        max_per_class=args.max_per_class,
        options=options,
        progress=say,
    )
    _finish(report.to_json(), report.table(), args.out, t0)
