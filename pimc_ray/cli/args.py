"""The jobs' arguments: one definition of each option, grouped by concern, and the builders that validate them.

Every job parser is made of these groups, so an option means the same thing, with the same default and the same
check, in every job. Builders turn parsed arguments into the library's frozen configs and raise a
:class:`~pimc_ray.errors.PimcError` naming the option and the fix; nothing is written before they all pass. Every
path option takes a URI (:func:`uri`): a local path, ``file://`` or ``s3://bucket/key``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import urllib.parse
from collections.abc import Sequence
from typing import Any

from pimc_ray.data.aoi import AOI, load_aoi
from pimc_ray.data.series import SeriesSpec
from pimc_ray.data.stac import DateRange
from pimc_ray.data.timegrid import MAX_STEPS, TimeGridSpec
from pimc_ray.errors import EXIT_CODES_HELP, InvalidConfigError, StorageError
from pimc_ray.mapping.runner import Parallelism
from pimc_ray.storage import UriLike, normalize_location, normalize_uri

__all__ = [
    "add_catalog",
    "add_parallelism",
    "add_series",
    "aoi_union",
    "at_least_one",
    "from_args",
    "job_parser",
    "output",
    "parallelism",
    "series_spec",
    "uri",
]


#: A value that starts like a negative number: ``-122.5,37.7,-122.3,37.9`` (a western-hemisphere bbox), ``-3``.
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


class JobParser(argparse.ArgumentParser):
    """An argument parser that takes values starting with a minus sign, such as a western-hemisphere bbox.

    argparse reads ``--aoi -122.5,37.7,-122.3,37.9`` as an option without its value ("expected one argument"):
    only a lone negative number passes its test for values. Here, a token that starts like a negative number and
    follows an option taking one value is joined to it (``--aoi=-122.5,...``), which argparse reads as meant.
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        tokens = list(sys.argv[1:] if args is None else args)
        joined: list[str] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            action = self._option_string_actions.get(token)
            takes_one = action is not None and action.nargs is None and action.option_strings
            if takes_one and i + 1 < len(tokens) and _NEGATIVE_VALUE.match(tokens[i + 1]):
                joined.append(f"{token}={tokens[i + 1]}")
                i += 2
                continue
            joined.append(token)
            i += 1
        return super().parse_known_args(joined, namespace)


def job_parser(description: str, *, prog: str | None = None) -> argparse.ArgumentParser:
    """A job's parser (:class:`JobParser`): its description, and the exit codes every job shares at the end of
    ``--help``."""
    return JobParser(
        prog=prog,
        description=description,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_catalog(p: argparse.ArgumentParser) -> None:
    """Dates, the STAC API and collection, its convention, cloud filter, and the snapshot of the items."""
    a = p.add_argument
    a("--start", required=True, help="first date, YYYY-MM-DD")
    a("--end", required=True, help="last date, YYYY-MM-DD")
    a("--stac-url", required=True, help="root URL of a STAC API")
    a("--collection", default="sentinel-2-l2a", help="Sentinel-2 L2A collection id")
    a("--catalog", choices=["earth-search", "planetary-computer"], help="default: detect from the items")
    a("--max-cloud-cover", type=float, help="skip scenes above this eo:cloud_cover (%%)")
    a(
        "--snapshot",
        type=uri,
        help="frozen item list, a path or URI: .ndjson, or .parquet (stac-geoparquet, for large searches); read "
        "instead of searching if it exists, else written",
    )


def add_series(p: argparse.ArgumentParser, *, on_unreadable: bool = True) -> None:
    """The regular time grid, the nodata rule, unreadable assets, and the window size."""
    a = p.add_argument
    a("--steps", type=int, default=36, help="regular time-grid steps T (plots are T x T)")
    a("--min-valid", type=int, default=4, help="pixels with fewer cloud-free observations are nodata")
    if on_unreadable:
        a("--on-unreadable", choices=["error", "nodata"], default="error",
          help="an unreadable asset (404, missing, corrupt) fails its window (error) or becomes nodata")  # fmt: skip
    a("--window-size", type=int, default=128, help="pixels per window edge (the unit of work)")


def add_parallelism(p: argparse.ArgumentParser) -> None:
    """The worker actors of a run (:class:`~pimc_ray.mapping.runner.Parallelism`)."""
    a = p.add_argument
    a("--workers", type=int, default=2,
      help="worker actors, each mapping whole tiles (0: run everything in this process)")  # fmt: skip
    a("--cpus-per-worker", type=float, default=0.75, help="CPUs each worker reserves to compute")
    a(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs each worker reserves (> 0: CUDA + CuPy)",
    )
    a("--readers", type=int, default=2, help="read threads per worker (windows read ahead of the encoder)")
    a("--read-cpus", type=float, default=0.25, help="CPUs each worker reserves besides, for its read threads")
    a("--wait-for-resources", action="store_true",
      help="start even if the cluster cannot place every actor now (it autoscales); else refuse up front")  # fmt: skip


def at_least_one(args: argparse.Namespace, *names: str) -> None:
    """Refuse integer options below 1 (``names`` are attribute names, e.g. ``min_valid``).

    Raises:
        InvalidConfigError: naming the option.
    """
    for name in names:
        if getattr(args, name) < 1:
            raise InvalidConfigError(
                f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}"
            )


def series_spec(args: argparse.Namespace) -> SeriesSpec:
    """The series spec of :func:`add_catalog` + :func:`add_series` arguments."""
    at_least_one(args, "steps", "min_valid", "window_size")
    if args.steps > MAX_STEPS:
        raise InvalidConfigError(
            f"--steps {args.steps} is above {MAX_STEPS}: a pixel's plots are 3 x T x T floats, "
            f"{3 * args.steps**2 * 4 / 1e6:.1f} MB each at T = {args.steps}, so a batch would not fit in memory; "
            f"choose at most {MAX_STEPS} (36, the default, is one step per 10 days over a year)"
        )
    return SeriesSpec(
        dates=DateRange.parse(args.start, args.end),
        timegrid=TimeGridSpec(steps=args.steps, min_valid=args.min_valid),
        catalog=args.catalog,
        on_unreadable=getattr(args, "on_unreadable", "error"),
    )


def parallelism(args: argparse.Namespace) -> Parallelism:
    """The parallelism of :func:`add_parallelism` arguments."""
    return from_args(Parallelism, args)


def uri(value: str) -> str:
    """The ``type`` of a path option: a local path, ``file://`` or ``s3://bucket/key``, normalised (an absolute
    path, or the URI); argparse refuses anything else with the reason (``gs://`` is not configured, no bucket...)."""
    try:
        return normalize_uri(value)
    except StorageError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def endpoint(value: str) -> str:
    """The ``type`` of an endpoint option: an ``http://`` or ``https://`` URL with a host."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an http(s) URL; give one like http://127.0.0.1:8333"
        )
    return value


def output(location: UriLike) -> str:
    """A validated output location: an absolute local folder, or an ``s3://bucket/prefix`` URI."""
    return normalize_location(location)


def aoi_union(values: Sequence[str]) -> AOI:
    """One AOI from one or more ``--aoi`` values (their union)."""
    import shapely

    aois = [load_aoi(v) for v in values]
    return aois[0] if len(aois) == 1 else AOI(shapely.union_all([a.geometry for a in aois]))


def from_args(cls: Any, args: argparse.Namespace, **given: Any) -> Any:
    """A dataclass ``cls`` from the parsed flags named like its fields, and ``given`` values for the rest.

    Raises:
        InvalidConfigError: the dataclass refused a value (its message names it).
    """
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    try:
        return cls(**{**flags, **given})
    except ValueError as err:
        raise InvalidConfigError(str(err)) from err
