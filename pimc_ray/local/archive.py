"""The embedded, deterministic sample Sentinel-2 L2A archive.

Public Sentinel-2 archives are unreachable where pimc-ray is built and tested, so the project generates a
realistic miniature one from a seed: COGs per tile and date (10 m and 20 m bands, SCL), land-cover label COGs,
two STAC collections and an ``items.ndjson`` holding every item, in the Earth Search v1 or the Planetary
Computer style (see ``docs/sample-archive.md``)::

    from pimc_ray.local.archive import ArchiveSpec, build_archive, render_scene
    info = build_archive("data/archive", ArchiveSpec(seed=0))
    scene = render_scene(info.spec, "32TQR", datetime.date(2022, 7, 22))  # what the COGs of that item hold

or ``python -m pimc_ray.local.archive build --out data/archive``. :func:`extend_archive` adds the acquisitions
of later days to some or all tiles of a built archive, as a real archive grows (``... extend --until DAY``).

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
import dataclasses
import datetime as dt
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
from pimc_ray.errors import (
    EXIT_BAD_INPUT,
    InvalidConfigError,
    InvalidDateRangeError,
    OutputExistsError,
    PimcError,
    StorageError,
)
from pimc_ray.local.archive_grid import (
    TILE_IDS,
    ArchiveSpec,
    TileInfo,
    acquisition_dates,
    period_end,
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
    "extend_archive",
    "label_raster",
    "main",
    "period_end",
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
    tile_until: Mapping[str, dt.date]
    """Tile id to the last day of its acquisitions: the end of ``spec``'s period, later for the tiles that
    :func:`extend_archive` extended beyond it."""
    n_scene_items: int
    """Number of ``sentinel-2-l2a`` items (the acquisitions of every tile)."""
    n_label_items: int
    """Number of ``pimc-sample-labels`` items (one per tile)."""
    n_cogs: int
    """Number of COG files (11 per scene, 1 per tile)."""
    built: bool
    """True when this call wrote (or extended) the archive, False when an existing one was left as it was."""

    @property
    def extended(self) -> bool:
        """Whether some tile has acquisitions after the end of ``spec``'s period (:func:`extend_archive`)."""
        return any(end != period_end(self.spec) for end in self.tile_until.values())

    def acquisitions(self, tile_id: str) -> list[dt.date]:
        """Acquisition dates of one tile's ``sentinel-2-l2a`` items, oldest first."""
        return acquisition_dates(dataclasses.replace(self.spec, until=self.tile_until[tile_id]))

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
    the archive of another spec, format version or location, or the spec's archive extended by
    :func:`extend_archive`, is replaced.

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
    if existing is not None and existing.spec == spec and not existing.extended and not rebuild:
        logger.info("sample archive at %s already matches the spec; reusing it", root)
        return existing
    if existing is not None:
        logger.info("replacing the sample archive at %s (spec, version, location or extension)", root)

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
            _, line, cogs = _write_scene_item(staging, root, spec, tile, date, collection_href[S2_COLLECTION])
            lines.append(line)
            n_cogs += cogs
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


def _write_scene_item(
    staging: Path, root: Path, spec: ArchiveSpec, tile: TileInfo, date: dt.date, collection_href: str
) -> tuple[Path, str, int]:
    """Render one scene and write its COGs under ``staging``; returns its folder (relative), item line, COGs."""
    scene = render_scene(spec, tile.tile_id, date)
    rel_dir = Path(S2_COLLECTION, tile.tile_id, str(date.year), str(date.month))
    rel_dir /= scene_item_id(spec, tile.tile_id, date)
    (staging / rel_dir).mkdir(parents=True)
    hrefs = _write_scene(staging, root, rel_dir, tile, scene, dn_carries_offset(spec, tile.tile_id, date))
    item = scene_item(spec, tile, date, scene, hrefs=hrefs, collection_href=collection_href)
    return rel_dir, json.dumps(item, separators=(",", ":")), len(hrefs)


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
    path.write_text(_json_text(document), encoding="utf-8")


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
    spec = ArchiveSpec(**spec_fields)
    extended = manifest.get("tile_until", {})  # only in an archive whose tiles end on different days
    counts = manifest["counts"]
    return ArchiveInfo(
        root=root,
        spec=spec,
        items_path=root / manifest["items"],
        collection_paths={c: root / p for c, p in manifest["collections"].items()},
        label_paths={t: root / p for t, p in manifest["labels"].items()},
        tile_until={
            t: dt.date.fromisoformat(extended[t]) if t in extended else period_end(spec) for t in spec.tiles
        },
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


# --- extending the period -----------------------------------------------------------------------------------


def extend_archive(
    out_dir: str | os.PathLike[str],
    until: dt.date | str,
    *,
    tiles: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> ArchiveInfo:
    """Add to the archive at ``out_dir`` the acquisitions of ``tiles`` after their current end, up to ``until``.

    As a real archive grows, tile by tile (tiles on different orbits are acquired on different days), so that
    a rerun over the archive has new scenes on some tiles only. The new items and COGs are exactly those a build
    with the later ``until`` writes for those tiles; the other items are left as they were. Extending every tile
    to the same day gives, byte for byte, the archive that ``build_archive`` writes for the spec with that
    ``until``; an extension already made is a no-op.

    The new scene folders are written under a temporary folder inside the archive and renamed into place, then
    the collection, ``items.ndjson`` and ``archive.json`` are replaced (each written to a temporary name and
    renamed), so an interrupted extension never leaves an item pointing at a missing file; running it again
    completes it. One writer at a time: do not extend an archive that another process is building or extending.

    Args:
        out_dir: the folder of an archive built by :func:`build_archive`.
        until: the new last day with acquisitions (a date or ``"YYYY-MM-DD"``), at most 31 December of the
            archive's year.
        tiles: tile ids to extend (default: every tile of the archive).
        progress: called as ``progress(done, total)`` after each new scene is written.

    Returns:
        Paths and counts of the extended archive; ``built`` is False when nothing had to change.

    Raises:
        StorageError: if there is no current sample archive at ``out_dir``, or its files disagree.
        InvalidDateRangeError: if ``until`` is not a date, is beyond the archive's year, or is before the
            current end of one of ``tiles``.
        InvalidConfigError: if a tile id is not one of the archive's.
    """
    root = Path(out_dir).expanduser().resolve()
    info = _existing_archive(root)
    for stale in root.glob(".extending-*"):  # left by an extension that was killed
        shutil.rmtree(stale, ignore_errors=True)
    spec, new_end = info.spec, _as_date(until)
    year_end = dt.date(spec.year, 12, 31)
    if new_end > year_end:
        raise InvalidDateRangeError(
            f"until {new_end} is beyond the archive's year {spec.year}: extend to {year_end} at the latest, "
            f"or build an archive of {new_end.year} (pimc archive build --year {new_end.year})"
        )
    targets = _tiles_to_extend(info, tiles)
    for tile_id in targets:
        if new_end < info.tile_until[tile_id]:
            raise InvalidDateRangeError(
                f"until {new_end} is before the end of tile {tile_id}'s acquisitions "
                f"({info.tile_until[tile_id]}); an archive is never shortened: give a later day, or build the "
                f"archive again with its options and --until {new_end}"
            )
    targets = [t for t in targets if info.tile_until[t] < new_end]
    if not targets:
        logger.info("sample archive %s already holds the acquisitions up to %s; nothing to do", root, new_end)
        return info

    grown = dataclasses.replace(spec, until=new_end)  # the spec whose build the new items must equal
    new_dates = {t: [d for d in acquisition_dates(grown) if d > info.tile_until[t]] for t in targets}
    kept = _kept_item_lines(info, skip={scene_item_id(spec, t, d) for t, ds in new_dates.items() for d in ds})
    started, total, done, n_cogs = time.perf_counter(), sum(len(d) for d in new_dates.values()), 0, 0
    new_lines: dict[str, list[str]] = {t: [] for t in targets}
    staging = Path(tempfile.mkdtemp(prefix=".extending-", dir=root))
    try:
        os.chmod(staging, 0o755)
        moves = []
        collection_href = info.collection_paths[S2_COLLECTION].as_uri()
        for tile_id in targets:
            tile = tile_info(spec, tile_id)
            for date in new_dates[tile_id]:
                rel_dir, line, cogs = _write_scene_item(staging, root, grown, tile, date, collection_href)
                new_lines[tile_id].append(line)
                n_cogs += cogs
                moves.append(rel_dir)
                done += 1
                if progress is not None:
                    progress(done, total)
        for rel_dir in moves:  # 1. the new scenes' files, each folder renamed into place complete
            if (root / rel_dir).exists():
                continue  # left by an interrupted run of this extension: complete, and the same bytes
            (root / rel_dir).parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging / rel_dir, root / rel_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    tile_until = {t: new_end if t in targets else info.tile_until[t] for t in spec.tiles}
    lines = [
        *(line for t in spec.tiles for line in (*kept[t], *new_lines.get(t, []))),
        *kept[LABELS_COLLECTION],
    ]
    manifest = json.loads((root / _MANIFEST).read_text(encoding="utf-8"))
    manifest["spec"] = dataclasses.replace(spec, until=min(tile_until.values())).to_dict()
    manifest.pop("tile_until", None)
    if len(set(tile_until.values())) > 1:
        manifest["tile_until"] = {t: end.isoformat() for t, end in tile_until.items()}
    manifest["counts"]["scene_items"] = len(lines) - len(kept[LABELS_COLLECTION])
    manifest["counts"]["cogs"] += n_cogs
    # 2. what points at the files, last the manifest, each replaced whole
    latest = dataclasses.replace(spec, until=max(tile_until.values()))
    _replace_text(info.collection_paths[S2_COLLECTION], _json_text(s2_collection(latest, tile_grid(spec))))
    _replace_text(info.items_path, "\n".join(lines) + "\n")
    _replace_text(root / _MANIFEST, _json_text(manifest))
    logger.info(
        "extended sample archive %s: %d scenes on %s up to %s in %.1f s",
        root,
        total,
        ", ".join(targets),
        new_end,
        time.perf_counter() - started,
    )
    return _info_from_manifest(root, manifest, built=True)


def _as_date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as err:
        raise InvalidDateRangeError(f"until must be a day as YYYY-MM-DD, got {value!r}") from err


def _existing_archive(root: Path) -> ArchiveInfo:
    """The current, complete sample archive at ``root``, or a StorageError naming the command that makes one."""
    if not (root / _MANIFEST).is_file():
        raise StorageError(
            f"no sample archive at {root} (no {_MANIFEST}); build one first: pimc archive build --out {root}"
        )
    try:
        info = _read_existing(root)
    except OutputExistsError as err:
        raise StorageError(f"{root} does not hold a pimc-ray sample archive ({err})") from err
    if info is None:
        raise StorageError(
            f"the sample archive at {root} is of another format version, was moved or is incomplete; "
            f"rebuild it: pimc archive build --out {root} --rebuild"
        )
    return info


def _tiles_to_extend(info: ArchiveInfo, tiles: Sequence[str] | None) -> list[str]:
    """``tiles`` (default: all) checked against the archive's, in the archive's order."""
    if tiles is None:
        return list(info.spec.tiles)
    if isinstance(tiles, str):
        tiles = tiles.split(",")
    wanted = {t.strip() for t in tiles if t.strip()}
    unknown = sorted(wanted - set(info.spec.tiles))
    if unknown or not wanted:
        raise InvalidConfigError(
            f"no tile {','.join(unknown) or repr(tiles)} in the archive at {info.root}; "
            f"give some of {','.join(info.spec.tiles)}"
        )
    return [t for t in info.spec.tiles if t in wanted]


def _kept_item_lines(info: ArchiveInfo, *, skip: set[str]) -> dict[str, list[str]]:
    """The lines of ``items.ndjson`` by tile (scene items, by date) and ``LABELS_COLLECTION`` (label items).

    Every item ``archive.json`` accounts for must be there, and nothing else but the items of ``skip`` (those
    an interrupted run of the same extension may have listed already; they are written again).

    Raises:
        StorageError: if ``items.ndjson`` and ``archive.json`` disagree.
    """
    by_id: dict[str, str] = {}
    with info.items_path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                by_id[json.loads(line)["id"]] = line.rstrip("\n")
    expected = {
        t: [scene_item_id(info.spec, t, d) for d in info.acquisitions(t)] for t in info.spec.tiles
    } | {LABELS_COLLECTION: [f"{LABELS_COLLECTION}-{t}" for t in info.spec.tiles]}
    kept = {key: [by_id.pop(i) for i in ids if i in by_id] for key, ids in expected.items()}
    missing = sum(len(ids) for ids in expected.values()) - sum(len(lines) for lines in kept.values())
    extra = sorted(set(by_id) - skip)
    if missing or extra:
        raise StorageError(
            f"{info.items_path} disagrees with {_MANIFEST} ({missing} items missing, "
            f"{len(extra)} unexpected{': ' + extra[0] if extra else ''}); rebuild the archive: "
            f"pimc archive build --out {info.root} --rebuild"
        )
    return kept


def _json_text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def _replace_text(path: Path, text: str) -> None:
    """Replace ``path`` whole: write a temporary file beside it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --- command line -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pimc_ray.local.archive build|extend --out DIR [options]``; returns the exit code."""
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
    build.add_argument(
        "--until", metavar="YYYY-MM-DD", help="last day with acquisitions (default: the end of --year)"
    )
    build.add_argument("--rebuild", action="store_true", help="regenerate even if a matching archive exists")
    build.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    extend = commands.add_parser(
        "extend", help="add the acquisitions up to --until to some or all tiles of the archive at --out"
    )
    extend.add_argument("--out", required=True, type=Path, help="the archive's folder, e.g. data/archive")
    extend.add_argument("--until", required=True, metavar="YYYY-MM-DD", help="new last day with acquisitions")
    extend.add_argument("--tiles", help="comma-separated tile ids (default: every tile of the archive)")
    extend.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        if args.command == "extend":
            tiles = None if args.tiles is None else _split_tiles(args.tiles)
            progress = _print_progress("new scenes")
            info = extend_archive(args.out, args.until, tiles=tiles, progress=progress)
        else:
            spec = ArchiveSpec(
                seed=args.seed,
                tile_size=args.tile_size,
                year=args.year,
                revisit_days=args.revisit_days,
                convention=args.convention,
                tiles=_split_tiles(args.tiles),
                cloud_rate=args.cloud_rate,
                calendar=args.calendar,
                field_size=args.field_size,
                class_set=args.class_set,
                haze=args.haze,
                years=args.years,
                until=args.until,
            )
            info = build_archive(args.out, spec, rebuild=args.rebuild, progress=_print_progress("items"))
    except PimcError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    done = "extended" if args.command == "extend" else "built"
    verb = f"{done} in {time.perf_counter() - started:.1f} s" if info.built else "already up to date"
    print(f"sample archive {verb}: {info.root}")
    print(f"  items:       {info.items_path} ({info.n_scene_items} scenes, {info.n_label_items} labels)")
    for tile, end in info.tile_until.items():
        dates = info.acquisitions(tile)
        print(f"  {tile}:       {len(dates)} acquisitions, {dates[0]} .. {dates[-1]} (period up to {end})")
    for collection, path in info.collection_paths.items():
        print(f"  collection:  {path} ({collection})")
    for tile, path in info.label_paths.items():
        print(f"  labels:      {path} ({tile})")
    return 0


def _split_tiles(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _print_progress(what: str, *, lines: int = 10) -> ProgressCallback:
    """A progress callback printing ``what done/total`` about ``lines`` times, on stdout right away."""

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // lines) == 0:
            print(f"  {what} {done}/{total}", flush=True)

    return progress


if __name__ == "__main__":
    raise SystemExit(main())
