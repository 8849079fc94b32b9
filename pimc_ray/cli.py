"""The ``pimc`` command: sample archive, local STAC API, and the demo's areas.

    pimc archive build --out data/archive        generate the embedded sample archive
    pimc archive bbox --demo|--train|--tile ID   lon/lat bbox of the demo AOI, the head's training area, a tile
    pimc stac serve --archive data/archive       serve the archive as a STAC API on loopback until stopped
    pimc indices --aoi ... --out DIR             regular-grid NDVI/EVI/SAVI COGs and QA (= jobs/export_indices.py)
    pimc embed --aoi ... --out DIR|s3://...      embedding (and class) maps per tile (= jobs/embed_aoi.py)
    pimc classify --aoi ... --head DIR --out ... class maps per tile (= jobs/classify_aoi.py)
    pimc s3 serve --bucket pimc                  a local S3-compatible store (SeaweedFS) until stopped

``pimc indices`` and ``pimc embed`` run the jobs in this process's Ray (a local one unless RAY_ADDRESS is set);
``ray job submit -- python jobs/<job>.py`` runs the same code on a cluster.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from pimc_ray.errors import PimcError


def _tile_lonlat_bbox(tile_id: str, fractions: tuple[float, float, float, float], spec: object) -> str:
    """A lon/lat bbox of the part ``fractions`` (x0, y0, x1, y1 in 0..1 of the tile) of a sample tile."""
    from pyproj import Transformer

    from pimc_ray.testing.archive import tile_grid

    tile = next((t for t in tile_grid(spec) if t.tile_id == tile_id), None)  # type: ignore[arg-type]
    if tile is None:
        raise PimcError(f"no sample tile {tile_id!r}; use one of {[t.tile_id for t in tile_grid(spec)]}")  # type: ignore[arg-type]
    xmin, ymin, xmax, ymax = tile.bounds
    fx0, fy0, fx1, fy1 = fractions
    x0, x1 = xmin + fx0 * (xmax - xmin), xmin + fx1 * (xmax - xmin)
    y0, y1 = ymin + fy0 * (ymax - ymin), ymin + fy1 * (ymax - ymin)
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    lon0, lat0 = to_lonlat.transform(x0, y0)
    lon1, lat1 = to_lonlat.transform(x1, y1)
    return f"{min(lon0, lon1):.6f},{min(lat0, lat1):.6f},{max(lon0, lon1):.6f},{max(lat0, lat1):.6f}"


def demo_aoi(spec: object) -> str:
    """The demo AOI: the east half of tile 32TQR and the west half of 32TQS (same-day items are merged)."""
    west = _tile_lonlat_bbox("32TQR", (0.5, 0.1, 1.0, 0.9), spec).split(",")
    east = _tile_lonlat_bbox("32TQS", (0.0, 0.1, 0.5, 0.9), spec).split(",")
    return ",".join([west[0], max(west[1], east[1]), east[2], min(west[3], east[3])])


def demo_train_aoi(spec: object) -> str:
    """The area whose labels fit the demo's classification head: tile 33TTL, held out from the demo AOI."""
    return _tile_lonlat_bbox("33TTL", (0.1, 0.1, 0.9, 0.9), spec)


def _cmd_archive_bbox(args: argparse.Namespace) -> int:
    from pimc_ray.testing.archive import ArchiveSpec

    spec = ArchiveSpec(tile_size=args.tile_size)
    if args.demo:
        print(demo_aoi(spec))
    elif args.train:
        print(demo_train_aoi(spec))
    else:
        print(_tile_lonlat_bbox(args.tile, (0.0, 0.0, 1.0, 1.0), spec))
    return 0


def _cmd_stac_serve(args: argparse.Namespace) -> int:
    from pimc_ray.testing.stac_server import LocalStacServer

    items = Path(args.archive) / "items.ndjson"
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalStacServer(items, port=args.port) as server:
        print(
            f"STAC API at {server.url} serving {items} (collections: {', '.join(server.collections())})",
            flush=True,
        )
        stop.wait()
    return 0


def _cmd_s3_serve(args: argparse.Namespace) -> int:
    from pimc_ray.testing.s3_server import LocalS3Server

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    data_dir = Path(args.data_dir) if args.data_dir else None
    with LocalS3Server(tuple(args.bucket), data_dir=data_dir) as server:
        exports = "".join(f"export {k}={v}\n" for k, v in server.env().items())
        # the secret goes to the env file only (mode 0600), not to the output, which may well be a log
        if args.env_file:
            tmp = Path(f"{args.env_file}.tmp")
            tmp.unlink(missing_ok=True)
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(exports)
            tmp.replace(args.env_file)
            how = f"`set -a; source {args.env_file}; set +a` (endpoint and credentials)"
        else:
            how = f"\n{exports}"
        print(
            f"S3 (SeaweedFS) at {server.endpoint}, buckets {', '.join(args.bucket)}; to use it: {how}",
            flush=True,
        )
        stop.wait()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pimc", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    archive = commands.add_parser("archive", help="the embedded sample archive").add_subparsers(
        dest="archive_command", required=True
    )
    archive.add_parser(
        "build", help="generate the sample archive (see docs/sample-archive.md)", add_help=False
    )
    bbox = archive.add_parser("bbox", help="print a lon/lat bbox of the sample region")
    which = bbox.add_mutually_exclusive_group(required=True)
    which.add_argument("--demo", action="store_true", help="the demo AOI")
    which.add_argument("--train", action="store_true", help="the area the demo's head is trained on")
    which.add_argument("--tile", help="a whole sample tile, e.g. 32TQR")
    bbox.add_argument("--tile-size", type=int, default=256, help="tile size the archive was built with")
    bbox.set_defaults(func=_cmd_archive_bbox)

    commands.add_parser(
        "indices", help="export regular-grid index series (see pimc indices --help)", add_help=False
    )
    commands.add_parser("embed", help="map embeddings and classes (see pimc embed --help)", add_help=False)
    commands.add_parser("classify", help="map classes (see pimc classify --help)", add_help=False)
    stac = commands.add_parser("stac", help="the local STAC API").add_subparsers(
        dest="stac_command", required=True
    )
    serve = stac.add_parser("serve", help="serve an archive's items on 127.0.0.1 until interrupted")
    serve.add_argument("--archive", default="data/archive", help="archive folder (holding items.ndjson)")
    serve.add_argument("--port", type=int, default=7822)
    serve.set_defaults(func=_cmd_stac_serve)
    s3 = commands.add_parser("s3", help="a local S3-compatible store").add_subparsers(
        dest="s3_command", required=True
    )
    s3_serve = s3.add_parser("serve", help="run SeaweedFS on 127.0.0.1 until interrupted")
    s3_serve.add_argument("--bucket", action="append", default=None, help="bucket to create (repeatable)")
    s3_serve.add_argument(
        "--data-dir", help="where to keep the data (default: a temporary folder, removed on stop)"
    )
    s3_serve.add_argument("--env-file", help="write the environment variables clients need to this file")
    s3_serve.set_defaults(func=_cmd_s3_serve, bucket=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] in (["indices"], ["embed"], ["classify"]):
        from pimc_ray.entrypoints import classify_main, embed_main, indices_main

        job = {"indices": indices_main, "embed": embed_main, "classify": classify_main}[argv[0]]
        return job(argv[1:])
    if argv[:2] == ["archive", "build"]:
        from pimc_ray.testing.archive import main as archive_main

        return archive_main(["build", *argv[2:]])
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "s3" and not args.bucket:
        args.bucket = ["pimc"]
    try:
        return int(args.func(args))
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
