"""The embedded, deterministic sample Sentinel-2 L2A archive.

Public Sentinel-2 archives are unreachable where pimc-ray is built and tested, so the project generates a
realistic miniature one from a seed: COGs per tile and date (10 m and 20 m bands, SCL), land-cover label COGs,
two STAC collections and an ``items.ndjson`` holding every item, in the Earth Search v1 or the Planetary
Computer style (see ``docs/sample-archive.md``)::

    from pimc_ray.local.archive import ArchiveSpec, build_archive, render_scene
    info = build_archive("data/archive", ArchiveSpec(seed=0))
    scene = render_scene(info.spec, "32TQR", datetime.date(2022, 7, 22))  # what the COGs of that item hold

or ``python -m pimc_ray.local.archive build --out data/archive``.

Layout of ``out_dir``::

    archive.json                                   spec, format version, root, counts
    items.ndjson                                   every item of both collections, one JSON object per line
    collections/sentinel-2-l2a.json
    collections/pimc-sample-labels.json
    sentinel-2-l2a/<tile>/<year>/<month>/<item id>/{B02,...,B12,B8A,SCL}.tif
    pimc-sample-labels/<tile>/labels.tif
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from numpy.typing import NDArray

from pimc_ray.data.catalogs import BANDS, SCL
from pimc_ray.errors import EXIT_BAD_INPUT, OutputExistsError, PimcError
from pimc_ray.local.archive_grid import (
    TILE_IDS,
    ArchiveSpec,
    TileInfo,
    acquisition_dates,
    processing_baseline,
    tile_grid,
    tile_info,
)
from pimc_ray.local.archive_scenes import (
    BANDS_10M,
    BANDS_20M,
    CLASS_SETS,
    CLASSES,
    ClassInfo,
    Scene,
    classes_of,
    elevation,
    label_raster,
    render_scene,
    solar_position,
)
from pimc_ray.local.archive_stac import (
    LABELS_ASSET,
    LABELS_COLLECTION,
    S2_COLLECTION,
    dn_carries_offset,
    label_item,
    labels_collection,
    s2_collection,
    scene_item,
    scene_item_id,
)

__all__ = [
    "BANDS_10M",
    "BANDS_20M",
    "CLASSES",
    "CLASS_SETS",
    "DEFAULT_SPEC",
    "FORMAT_VERSION",
    "LABELS_ASSET",
    "LABELS_COLLECTION",
    "S2_COLLECTION",
    "TILE_IDS",
    "ArchiveInfo",
    "ArchiveSpec",
    "ClassInfo",
    "Scene",
    "TileInfo",
    "acquisition_dates",
    "build_archive",
    "classes_of",
    "dn_carries_offset",
    "elevation",
    "label_raster",
    "main",
    "processing_baseline",
    "render_scene",
    "scene_item_id",
    "solar_position",
    "tile_grid",
    "tile_info",
]

logger = logging.getLogger(__name__)

#: Version of the archive layout; an archive written by another version is rebuilt.
FORMAT_VERSION = 3
_MANIFEST = "archive.json"
_ITEMS = "items.ndjson"
#: The identity written into ``archive.json`` (the generator's module path when the format was defined; kept
#: unchanged so that archives built before the package layout moved stay valid).
_GENERATOR = "pimc_ray.testing.archive"

ProgressCallback = Callable[[int, int], None]
#: The demo archive: three 256-pixel tiles, 37 dates in 2022, Earth Search style.
DEFAULT_SPEC = ArchiveSpec()


@dataclass(frozen=True)
class ArchiveInfo:
    """Where a built sample archive lies and what it holds."""

    root: Path
    """Absolute path of the archive folder."""
    spec: ArchiveSpec
    """The spec it was built from."""
    items_path: Path
    """``items.ndjson``: every item of both collections, one per line."""
    collection_paths: Mapping[str, Path]
    """Collection id to its JSON file."""
    label_paths: Mapping[str, Path]
    """Tile id to its land-cover label COG."""
    n_scene_items: int
    """Number of ``sentinel-2-l2a`` items (tiles x dates)."""
    n_label_items: int
    """Number of ``pimc-sample-labels`` items (one per tile)."""
    n_cogs: int
    """Number of COG files (11 per scene, 1 per tile)."""
    built: bool
    """True when this call wrote the archive, False when an existing matching one was reused."""

    def read_items(self, collection: str | None = None) -> list[dict[str, Any]]:
        """The items of ``items.ndjson`` (of one collection if given), in file order."""
        with self.items_path.open(encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
        return [i for i in items if collection is None or i.get("collection") == collection]


def build_archive(
    out_dir: str | os.PathLike[str],
    spec: ArchiveSpec = DEFAULT_SPEC,
    *,
    progress: ProgressCallback | None = None,
    rebuild: bool = False,
) -> ArchiveInfo:
    """Generate the sample archive of ``spec`` under ``out_dir`` (deterministic: same spec, same bytes).

    The archive is built in a temporary folder beside ``out_dir`` and renamed into place when complete. An
    ``out_dir`` already holding the archive of the same spec (per its ``archive.json``) is reused; one holding
    the archive of another spec, format version or location is replaced.

    Args:
        out_dir: folder to create; asset hrefs are ``file://`` URIs below its absolute path.
        spec: what to generate.
        progress: called as ``progress(done, total)`` after each item is written.
        rebuild: regenerate even when a matching archive exists.

    Returns:
        Paths and counts of the archive.

    Raises:
        OutputExistsError: if ``out_dir`` exists and holds anything but a sample archive.
    """
    root = Path(out_dir).expanduser().resolve()
    existing = _read_existing(root)
    if existing is not None and existing.spec == spec and not rebuild:
        logger.info("sample archive at %s already matches the spec; reusing it", root)
        return existing
    if existing is not None:
        logger.info("replacing the sample archive at %s (spec, version or location changed)", root)

    started = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".building", dir=root.parent))
    try:
        os.chmod(staging, 0o755)
        info = _write_archive(staging, root, spec, progress)
        _move_into_place(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info(
        "built sample archive %s: %d items, %d COGs in %.1f s",
        root,
        info.n_scene_items + info.n_label_items,
        info.n_cogs,
        time.perf_counter() - started,
    )
    return info


def _write_archive(
    staging: Path, root: Path, spec: ArchiveSpec, progress: ProgressCallback | None
) -> ArchiveInfo:
    """Write every file of the archive under ``staging``, with hrefs pointing below ``root``."""
    tiles, dates = tile_grid(spec), acquisition_dates(spec)
    collection_rel = {c: Path("collections", f"{c}.json") for c in (S2_COLLECTION, LABELS_COLLECTION)}
    collection_href = {c: (root / rel).as_uri() for c, rel in collection_rel.items()}
    total, done, n_cogs = len(tiles) * (len(dates) + 1), 0, 0
    lines: list[str] = []

    for tile in tiles:
        for date in dates:
            scene = render_scene(spec, tile.tile_id, date)
            rel_dir = Path(S2_COLLECTION, tile.tile_id, str(date.year), str(date.month))
            rel_dir /= scene_item_id(spec, tile.tile_id, date)
            (staging / rel_dir).mkdir(parents=True)
            hrefs = _write_scene(
                staging, root, rel_dir, tile, scene, dn_carries_offset(spec, tile.tile_id, date)
            )
            n_cogs += len(hrefs)
            item = scene_item(
                spec, tile, date, scene, hrefs=hrefs, collection_href=collection_href[S2_COLLECTION]
            )
            lines.append(json.dumps(item, separators=(",", ":")))
            done += 1
            if progress is not None:
                progress(done, total)

    label_rel: dict[str, Path] = {}
    for tile in tiles:
        label_rel[tile.tile_id] = rel = Path(LABELS_COLLECTION, tile.tile_id, "labels.tif")
        (staging / rel).parent.mkdir(parents=True)
        _write_cog(staging / rel, label_raster(spec, tile.tile_id), tile, resolution=10, resampling="NEAREST")
        n_cogs += 1
        item = label_item(
            spec, tile, href=(root / rel).as_uri(), collection_href=collection_href[LABELS_COLLECTION]
        )
        lines.append(json.dumps(item, separators=(",", ":")))
        done += 1
        if progress is not None:
            progress(done, total)

    (staging / _ITEMS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (staging / "collections").mkdir()
    for collection, document in (
        (S2_COLLECTION, s2_collection(spec, tiles)),
        (LABELS_COLLECTION, labels_collection(spec, tiles)),
    ):
        _write_json(staging / collection_rel[collection], document)
    manifest = {
        "generator": _GENERATOR,
        "format_version": FORMAT_VERSION,
        "root": str(root),
        "spec": spec.to_dict(),
        "items": _ITEMS,
        "collections": {c: str(p) for c, p in collection_rel.items()},
        "labels": {t: str(p) for t, p in label_rel.items()},
        "counts": {"scene_items": len(tiles) * len(dates), "label_items": len(tiles), "cogs": n_cogs},
    }
    _write_json(staging / _MANIFEST, manifest)  # last: its presence marks a complete archive
    return _info_from_manifest(root, manifest, built=True)


def _write_scene(
    staging: Path, root: Path, rel_dir: Path, tile: TileInfo, scene: Scene, carries_offset: bool
) -> dict[str, str]:
    """Write the 11 COGs of one scene; returns canonical band name -> absolute ``file://`` URI."""
    hrefs = {}
    for band in (*BANDS, SCL):
        rel = rel_dir / f"{band}.tif"
        resolution = 10 if band in BANDS_10M else 20
        resampling = "NEAREST" if band == SCL else "AVERAGE"
        _write_cog(staging / rel, scene.dn(band, boa_offset=carries_offset), tile, resolution, resampling)
        hrefs[band] = (root / rel).as_uri()
    return hrefs


def _write_cog(
    path: Path,
    array: NDArray[np.uint16] | NDArray[np.uint8],
    tile: TileInfo,
    resolution: int,
    resampling: str,
) -> None:
    """One single-band COG (nodata 0, DEFLATE) on the tile's grid at ``resolution`` metres."""
    height, width = array.shape
    transform: Affine = tile.transform(resolution)
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=width,
        height=height,
        count=1,
        dtype=array.dtype,
        crs=tile.crs,
        transform=transform,
        nodata=0,
        BLOCKSIZE=_block_size(min(height, width)),
        COMPRESS="DEFLATE",
        PREDICTOR="YES",
        OVERVIEW_RESAMPLING=resampling,
    ) as dataset:
        dataset.write(array, 1)


def _block_size(side: int) -> int:
    """Largest COG block (512, 256 or 128 pixels, GDAL's range) dividing ``side``; 128 for smaller rasters."""
    return next((block for block in (512, 256) if side % block == 0), 128)


def _write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _read_existing(root: Path) -> ArchiveInfo | None:
    """The archive already at ``root`` if it is a current, complete one; None if absent or stale.

    Raises:
        OutputExistsError: if ``root`` holds something that is not a sample archive.
    """
    if not root.exists():
        return None
    if not root.is_dir() or (not (root / _MANIFEST).is_file() and any(root.iterdir())):
        raise OutputExistsError(
            f"{root} exists and is not a pimc-ray sample archive; choose another output folder or delete it"
        )
    if not (root / _MANIFEST).is_file():
        return None  # an empty folder
    try:
        manifest = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("generator") != _GENERATOR:
            raise OutputExistsError(
                f"{root}/{_MANIFEST} was not written by {_GENERATOR}; choose another output folder"
            )
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("root") != str(root):
            return None
        info = _info_from_manifest(root, manifest, built=False)
    except (ValueError, TypeError, KeyError) as err:
        logger.warning("unreadable %s in %s (%s); rebuilding", _MANIFEST, root, err)
        return None
    complete = info.items_path.is_file() and all(p.is_file() for p in (*info.collection_paths.values(),))
    return info if complete else None


def _info_from_manifest(root: Path, manifest: Mapping[str, Any], *, built: bool) -> ArchiveInfo:
    spec_fields = dict(manifest["spec"])
    spec_fields["tiles"] = tuple(spec_fields["tiles"])
    counts = manifest["counts"]
    return ArchiveInfo(
        root=root,
        spec=ArchiveSpec(**spec_fields),
        items_path=root / manifest["items"],
        collection_paths={c: root / p for c, p in manifest["collections"].items()},
        label_paths={t: root / p for t, p in manifest["labels"].items()},
        n_scene_items=int(counts["scene_items"]),
        n_label_items=int(counts["label_items"]),
        n_cogs=int(counts["cogs"]),
        built=built,
    )


def _move_into_place(staging: Path, root: Path) -> None:
    """Rename the finished ``staging`` folder to ``root``, replacing a stale archive or an empty folder."""
    old = None
    if root.exists():
        old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(root, old)
    try:
        os.rename(staging, root)
    except OSError:
        if old is not None and not root.exists():
            os.rename(old, root)  # put the previous archive back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --- command line -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pimc_ray.local.archive build --out DIR [options]``; returns the exit code."""
    defaults = ArchiveSpec()
    parser = argparse.ArgumentParser(
        prog="python -m pimc_ray.local.archive", description="Generate the sample Sentinel-2 L2A archive."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build (or reuse) the archive under --out")
    build.add_argument("--out", required=True, type=Path, help="output folder, e.g. data/archive")
    build.add_argument("--seed", type=int, default=defaults.seed)
    build.add_argument("--tile-size", type=int, default=defaults.tile_size, help="pixels per side at 10 m")
    build.add_argument("--year", type=int, default=defaults.year)
    build.add_argument("--revisit-days", type=int, default=defaults.revisit_days)
    build.add_argument(
        "--convention", choices=["earth-search", "planetary-computer"], default=defaults.convention
    )
    build.add_argument("--tiles", default=",".join(defaults.tiles), help="comma-separated tile ids")
    build.add_argument("--cloud-rate", type=float, default=defaults.cloud_rate)
    build.add_argument("--calendar", choices=["shifted", "aligned"], default=defaults.calendar)
    build.add_argument("--field-size", type=float, default=defaults.field_size, help="metres")
    build.add_argument("--class-set", choices=["shape", "level"], default=defaults.class_set)
    build.add_argument("--haze", type=float, default=defaults.haze, help="0: none, 1: default, 2+: hazy")
    build.add_argument("--years", type=int, default=defaults.years, help="years ending with --year")
    build.add_argument("--rebuild", action="store_true", help="regenerate even if a matching archive exists")
    build.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec = ArchiveSpec(
            seed=args.seed,
            tile_size=args.tile_size,
            year=args.year,
            revisit_days=args.revisit_days,
            convention=args.convention,
            tiles=tuple(t.strip() for t in args.tiles.split(",") if t.strip()),
            cloud_rate=args.cloud_rate,
            calendar=args.calendar,
            field_size=args.field_size,
            class_set=args.class_set,
            haze=args.haze,
            years=args.years,
        )
        started = time.perf_counter()
        info = build_archive(args.out, spec, rebuild=args.rebuild)
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    verb = f"built in {time.perf_counter() - started:.1f} s" if info.built else "already up to date"
    print(f"sample archive {verb}: {info.root}")
    print(f"  items:       {info.items_path} ({info.n_scene_items} scenes, {info.n_label_items} labels)")
    for collection, path in info.collection_paths.items():
        print(f"  collection:  {path} ({collection})")
    for tile, path in info.label_paths.items():
        print(f"  labels:      {path} ({tile})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
