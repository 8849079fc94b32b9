"""``pimc archive``, ``pimc stac serve`` and ``pimc s3 serve``: the local stand-ins of :mod:`pimc_ray.local`.

The only module of the package that imports :mod:`pimc_ray.local` (lazily, so the library runs without the
``local`` extra). The servers run until interrupted (SIGINT or SIGTERM) and stop cleanly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import threading
from pathlib import Path

from pimc_ray.cli.run import say
from pimc_ray.errors import InvalidConfigError, PimcError

__all__ = ["add_commands"]

_TILE_ID = re.compile(r"\d{2}[A-Z]{3}")


def _wait_for_signal() -> threading.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _archive_bbox(args: argparse.Namespace) -> None:
    from pimc_ray.local import ArchiveSpec, demo_aoi, demo_train_aoi, tile_bbox

    try:
        spec = ArchiveSpec(tile_size=args.tile_size)
    except ValueError as err:
        raise InvalidConfigError(f"--tile-size {args.tile_size}: {err}") from None
    if args.demo:
        say(demo_aoi(spec))
    elif args.train:
        say(demo_train_aoi(spec))
    else:
        say(tile_bbox(args.tile, spec))


def _stac_serve(args: argparse.Namespace) -> None:
    from pimc_ray.local import LocalStacServer

    items = Path(args.archive) / "items.ndjson"
    stop = _wait_for_signal()
    with LocalStacServer(items, port=args.port) as server:
        say(f"STAC API at {server.url} serving {items} (collections: {', '.join(server.collections())})")
        stop.wait()


def _s3_serve(args: argparse.Namespace) -> None:
    from pimc_ray.local import LocalS3Server

    env_file = Path(args.env_file) if args.env_file else None
    if env_file is not None and not env_file.parent.is_dir():  # before the server starts
        raise PimcError(
            f"--env-file {env_file}: the folder {env_file.parent} does not exist; create it or choose another path"
        )
    stop = _wait_for_signal()
    buckets = args.bucket or ["pimc"]
    data_dir = Path(args.data_dir) if args.data_dir else None
    if data_dir is not None and data_dir.exists() and not data_dir.is_dir():
        raise PimcError(f"--data-dir {data_dir} is a file; give a folder (it is made if missing)")
    with LocalS3Server(tuple(buckets), data_dir=data_dir) as server:
        env = server.env()
        # the secret goes to the env file only (mode 0600), never to the output, which may well be a log
        if env_file is not None:
            tmp = Path(f"{env_file}.tmp")
            tmp.unlink(missing_ok=True)
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write("".join(f"export {k}={v}\n" for k, v in env.items()))
            tmp.replace(env_file)
            how = f"`set -a; source {env_file}; set +a` (endpoint and credentials)"
        else:
            shown = {k: v for k, v in env.items() if "SECRET" not in k}
            how = (
                "\n"
                + "".join(f"export {k}={v}\n" for k, v in shown.items())
                + "(the secret key is not printed: rerun with --env-file FILE to have every variable written there)"
            )
        say(f"S3 (SeaweedFS) at {server.endpoint}, buckets {', '.join(buckets)}; to use it: {how}")
        stop.wait()


def archive_build(argv: list[str]) -> int:
    """``pimc archive build ...``: the generator's own command line (:func:`pimc_ray.local.archive.main`)."""
    from pimc_ray.local.archive import main

    return main(["build", *argv])


def _archive_extend(args: argparse.Namespace) -> int:
    """``pimc archive extend ...``: the generator's ``extend`` (:func:`pimc_ray.local.archive.extend_archive`)."""
    from pimc_ray.local.archive import main

    tiles = [] if args.tiles is None else ["--tiles", args.tiles]
    return main(["extend", "--out", args.out, "--until", args.until, *tiles])


def _day(value: str) -> str:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date; give YYYY-MM-DD, e.g. 2022-12-31"
        ) from None
    return value


def _tile_ids(value: str) -> str:
    bad = [t for t in value.split(",") if not _TILE_ID.fullmatch(t)]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a Sentinel-2 tile id; give ids like 33TTL,32TQR")
    return value


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``archive``, ``stac`` and ``s3`` to the ``pimc`` parser's subcommands."""
    archive = commands.add_parser("archive", help="the embedded sample archive").add_subparsers(
        dest="archive_command", required=True
    )
    archive.add_parser(
        "build", help="generate the sample archive (see docs/sample-archive.md)", add_help=False
    )
    extend = archive.add_parser(
        "extend",
        help="add the acquisitions up to --until to some or all tiles of a built archive (see "
        "docs/sample-archive.md, 'Extending the period')",
    )
    extend.add_argument("--out", required=True, help="the archive's folder, e.g. data/archive")
    extend.add_argument(
        "--until", required=True, type=_day, metavar="YYYY-MM-DD", help="new last day with acquisitions"
    )
    extend.add_argument(
        "--tiles", type=_tile_ids, help="comma-separated tile ids, e.g. 33TTL,32TQR (default: every tile)"
    )
    extend.set_defaults(func=_archive_extend)
    bbox = archive.add_parser("bbox", help="print a lon/lat bbox of the sample region")
    which = bbox.add_mutually_exclusive_group(required=True)
    which.add_argument("--demo", action="store_true", help="the demo AOI")
    which.add_argument("--train", action="store_true", help="the area the demo's head is trained on")
    which.add_argument("--tile", help="a whole sample tile, e.g. 32TQR")
    bbox.add_argument("--tile-size", type=int, default=256, help="tile size the archive was built with")
    bbox.set_defaults(func=_archive_bbox)

    stac = commands.add_parser("stac", help="the local STAC API").add_subparsers(
        dest="stac_command", required=True
    )
    serve = stac.add_parser("serve", help="serve an archive's items on 127.0.0.1 until interrupted")
    serve.add_argument("--archive", default="data/archive", help="archive folder (holding items.ndjson)")
    serve.add_argument("--port", type=int, default=7822)
    serve.set_defaults(func=_stac_serve)

    s3 = commands.add_parser("s3", help="a local S3-compatible store").add_subparsers(
        dest="s3_command", required=True
    )
    s3_serve = s3.add_parser("serve", help="run SeaweedFS on 127.0.0.1 until interrupted")
    s3_serve.add_argument("--bucket", action="append", help="bucket to create (repeatable; default: pimc)")
    s3_serve.add_argument(
        "--data-dir", help="where to keep the data (default: a temporary folder, removed on stop)"
    )
    s3_serve.add_argument("--env-file", help="write the environment variables clients need to this file")
    s3_serve.set_defaults(func=_s3_serve)
