"""The ``pimc`` command and the jobs' entry points.

    pimc embed --aoi ... --out DIR|s3://...      embedding (and class) maps per tile  (= jobs/embed_aoi.py)
    pimc classify --aoi ... --head DIR --out ... class maps per tile                  (= jobs/classify_aoi.py)
    pimc indices --aoi ... --out DIR|s3://...    regular-grid NDVI/EVI/SAVI COGs, QA   (= jobs/export_indices.py)
    pimc pretrain --aoi ... --out DIR            PIMC pretraining on Ray Train          (= jobs/pretrain.py)
    pimc train-head --labels ... --checkpoint D  a classification head from labels     (= jobs/train_head.py)
    pimc train-forecast --checkpoint D --aoi ... a forecast head (the next index steps)  (= jobs/train_forecast.py)
    pimc derive DIR|s3://...                     a mapping run's manifest, collection and mosaics, derived
                                                 from what its tiles published (at any time)
    pimc run validate SPEC                       check a run spec (YAML, path or URI); print what it does
    pimc run plan SPEC [--out URI]               plan it: tiles, km², pixels, items, bytes, CPU/GPU-hours and
                                                 cost; writes plan.json and plan_tiles.geojson; exit 2 over budget
    pimc run execute SPEC                        plan it, then map it on this Ray cluster tile by tile: resumes,
                                                 remaps only tiles whose inputs changed, keeps status.geojson/png
    pimc eval pastis --root DIR --task TASK      PASTIS pixel forecast (RMSE) or classification (OA, mIoU)
    pimc eval eurosat --root DIR                 EuroSAT classification (accuracy); both beside the paper's
                                                 figures, with baselines and the random-init encoder
    pimc archive build --out data/archive        generate the embedded sample archive
    pimc archive extend --out DIR --until DAY    add later acquisitions to (some tiles of) a built archive
    pimc archive bbox --demo|--train|--tile ID   lon/lat bbox of the demo AOI, the head's training area, a tile
    pimc stac serve --archive data/archive       serve the archive as a STAC API on loopback until stopped
    pimc s3 serve --bucket pimc                  a local S3-compatible store (SeaweedFS) until stopped

The jobs run in this process's Ray (a local one unless RAY_ADDRESS is set); ``ray job submit -- python
jobs/<job>.py`` runs the same code on a cluster. ``pimc <command> --help`` lists a command's options.

Modules: :mod:`~pimc_ray.cli.args` (every option, once), :mod:`~pimc_ray.cli.run` (the job runner and its exit
codes), :mod:`~pimc_ray.cli.jobs` (the jobs), :mod:`~pimc_ray.cli.local` (the local services).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pimc_ray.cli import evaluate, jobs
from pimc_ray.cli.local import add_commands, archive_build
from pimc_ray.cli.run import run_job
from pimc_ray.errors import EXIT_CODES_HELP

__all__ = ["build_parser", "main"]

#: Commands whose arguments their own job parser reads.
JOBS: dict[str, Callable[[list[str]], int]] = {
    "embed": jobs.embed_main,
    "classify": jobs.classify_main,
    "indices": jobs.indices_main,
    "pretrain": jobs.pretrain_main,
    "train-head": jobs.train_head_main,
    "train-forecast": jobs.train_forecast_main,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``pimc`` parser (the jobs' own options are listed by ``pimc <job> --help``)."""
    parser = argparse.ArgumentParser(
        prog="pimc",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, main_fn in JOBS.items():
        summary = (main_fn.__doc__ or "").strip().splitlines()[0]
        commands.add_parser(name, help=summary, add_help=False)
    derive = commands.add_parser(
        "derive",
        help="rebuild a mapping run's manifest.json, collection.json and mosaics from its published tiles",
    )
    derive.add_argument("out", help="the run's output: a folder or s3://bucket/prefix")
    derive.set_defaults(func=_derive)
    run = commands.add_parser("run", help="runs written as a YAML run spec").add_subparsers(
        dest="run_command", required=True
    )
    validate = run.add_parser(
        "validate", help="check a run spec and print what it does and its command lines"
    )
    validate.add_argument("spec", help="the run spec: a YAML file path or URI")
    validate.set_defaults(func=_run_validate)
    plan = run.add_parser(
        "plan",
        help="plan a run spec: its tiles, km², pixels, items, bytes to read, CPU/GPU-hours and cost; write "
        "plan.json and plan_tiles.geojson, or refuse (exit 2, nothing written) when it is over its budget",
    )
    plan.add_argument("spec", help="the run spec: a YAML file path or URI")
    plan.add_argument(
        "--out", help="folder or s3:// URI for plan.json and plan_tiles.geojson (default: the spec's output)"
    )
    _add_plan_options(plan)
    plan.set_defaults(func=_run_plan)
    execute = run.add_parser(
        "execute",
        help="plan a run spec (refused over its budget), then map it on the Ray cluster this runs in (what a "
        "RayJob runs): tile by tile, resuming, remapping only the tiles whose inputs (items, model, parameters) "
        "changed since the output's last run, with a live status layer (status.geojson, status.png) beside the "
        "run's collection",
    )
    execute.add_argument("spec", help="the run spec: a YAML file path or URI")
    execute.add_argument(
        "--today",
        type=_date,
        metavar="YYYY-MM-DD",
        help="the day a rolling period is resolved on (default: today, UTC)",
    )
    _add_plan_options(execute)
    execute.set_defaults(func=_run_execute)
    add_commands(commands)
    evaluate.add_commands(commands)
    return parser


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    """The options of planning (``pimc run plan``, ``pimc run execute``)."""
    a = parser.add_argument
    a("--cpu-hour-price", type=float, metavar="PRICE", help="price of a CPU-hour (no cost without)")
    a("--gpu-hour-price", type=float, metavar="PRICE", help="price of a GPU-hour (no cost without)")
    a(
        "--no-items",
        action="store_true",
        help="do not ask the STAC API: acquisitions assumed from the 5-day revisit, items not counted",
    )
    a(
        "--sample-tiles",
        type=int,
        metavar="N",
        help="tiles searched for acquisitions (and items, where the API does not count them); default 16",
    )


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from err


def _plan_options(args: argparse.Namespace) -> dict[str, Any]:
    from pimc_ray.runs.plan import DEFAULT_SAMPLE_TILES, Prices

    return {
        "prices": Prices(args.cpu_hour_price, args.gpu_hour_price),
        "count_items": not args.no_items,
        "sample_tiles": DEFAULT_SAMPLE_TILES if args.sample_tiles is None else args.sample_tiles,
    }


def _run_validate(args: argparse.Namespace) -> None:
    from pimc_ray.cli.run import say
    from pimc_ray.runs import RunSpec, describe

    say(describe(RunSpec.load(args.spec)))


def _run_plan(args: argparse.Namespace) -> None:
    from pimc_ray.cli.run import say
    from pimc_ray.runs import RunSpec
    from pimc_ray.runs.plan import plan_run, write_plan
    from pimc_ray.storage import normalize_location

    spec = RunSpec.load(args.spec)
    out = normalize_location(args.out if args.out is not None else spec.output)
    plan = plan_run(spec, **_plan_options(args), progress=say)
    say(plan.summary())
    plan.check_budget(spec.budget)  # over it: one line, exit 2, nothing written
    for uri in write_plan(plan, out):
        say(f"  wrote         {uri}")


def _run_execute(args: argparse.Namespace) -> None:
    import time

    from pimc_ray.cli.jobs import embed_parser, map_request
    from pimc_ray.cli.run import say
    from pimc_ray.runs import RunSpec
    from pimc_ray.runs.execute import execute_run

    t0 = time.perf_counter()
    spec = RunSpec.load(args.spec)
    job_args = embed_parser().parse_args([*spec.to_args(today=args.today), "--update"])
    request = map_request(job_args, write_embedding=spec.products.embedding, run_name=spec.name)
    summary = execute_run(spec, request, today=args.today, **_plan_options(args), progress=say)
    seconds = time.perf_counter() - t0
    say(
        f"summary: {summary.tiles_written} tiles mapped, {summary.tiles_skipped} unchanged of "
        f"{summary.tiles_total}; {summary.pixels} pixels in {seconds:.1f} s; outputs in {summary.out}"
    )


def _derive(args: argparse.Namespace) -> None:
    from pimc_ray.cli.run import say
    from pimc_ray.mapping.maps import derive_run

    for key in derive_run(args.out, progress=say):
        say(f"  {args.out.rstrip('/')}/{key}")


def main(argv: Sequence[str] | None = None) -> int:
    """``pimc``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args_list[:1] and args_list[0] in JOBS:
        return JOBS[args_list[0]](args_list[1:])
    if args_list[:2] == ["archive", "build"]:
        return archive_build(args_list[2:])
    args = build_parser().parse_args(args_list)
    return run_job(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
