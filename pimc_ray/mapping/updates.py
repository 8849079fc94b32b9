"""Tiles keyed by their own inputs, and versions: what lets a rerun map only the tiles whose inputs changed.

A tile's **inputs** are the items that touch it (their ids and ``updated`` times), the model's weights and the
parameters that decide its pixels (:meth:`~pimc_ray.mapping.requests.MapRequest.params`, plus the digest of the
head a run fit). Their hash is the tile's **key**, kept in its status object. A rerun in place
(:attr:`~pimc_ray.mapping.requests.MapRequest.update`, what ``pimc run execute`` does) maps a tile again only when
its key changed: a new or reprocessed acquisition over it, another model, other parameters. Tiles elsewhere keep
their files, items and status untouched.

Every mapping of a tile is a **version**, its files under ``tiles/<tile>/v<version>/``. A changed tile is written
as the next version beside the current one, then its item (``tiles/<tile>/item.json``) and its status switch to
it: until the new version is complete the old one stays whole and readable, and the run's mosaics and collection
keep pointing at it until they are derived again at the run's end, after which the superseded files are removed
(:func:`superseded_files`). A replacement that fails leaves the old version published and its status untouched,
so the next rerun tries again.

Items "touching" a tile are those whose footprint meets the tile's square grown by the encoder's read halo (the
windows a worker reads are inside it): a superset of what its pixels see, so a key never misses a change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pimc_ray.data.footprints import ItemIndex
from pimc_ray.data.stac import Item
from pimc_ray.data.tiles import Tile
from pimc_ray.mapping.requests import digest

__all__ = ["TileInputs", "tile_folder", "tile_inputs", "superseded_files", "to_map"]


def tile_folder(tile_id: str, version: int) -> str:
    """Where version ``version`` of a tile's files are: ``tiles/<tile>/v<version>``."""
    return f"tiles/{tile_id}/v{version}"


@dataclass(frozen=True)
class TileInputs:
    """What a tile's pixels are made from, and its key (kept in its status and its STAC item)."""

    key: str
    """Hash of the rest: equal keys, equal pixels."""
    items: int
    """Items touching the tile."""
    items_key: str
    """Hash of their ids and ``updated`` times."""
    model: str
    """The encoder's weights (``sha256:...``)."""
    params: str
    """Hash of the parameters that decide pixels (and the head's digest)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "items": self.items,
            "items_key": self.items_key,
            "model": self.model,
            "params": self.params,
        }


def _item_stamp(item: Item) -> tuple[str, str]:
    """An item's id and the time it was last changed (``updated``, else ``created``, else nothing)."""
    props = item.get("properties", {})
    return str(item["id"]), str(props.get("updated") or props.get("created") or "")


def tile_inputs(
    tiles: Sequence[Tile], items: Sequence[Item], *, model: str, params: str, halo: int = 0
) -> dict[str, TileInputs]:
    """Each tile's inputs (by tile id): the items whose footprint meets it grown by ``halo`` pixels, ``model``
    (the weights' digest) and ``params`` (the digest of the pixel-deciding parameters)."""
    index = ItemIndex(items, margin=1 + halo)
    out = {}
    for tile in tiles:
        stamps = sorted(_item_stamp(item) for item in index.over(tile.epsg, tile.bounds, tile.resolution))
        items_key = digest(stamps)
        key = digest({"items": items_key, "model": model, "params": params})
        out[tile.tile_id] = TileInputs(key, len(stamps), items_key, model, params)
    return out


def to_map(
    tiles: Sequence[Tile],
    status: Mapping[str, Mapping[str, Any]],
    inputs: Mapping[str, TileInputs],
    *,
    update: bool,
    accept_degraded: bool = False,
) -> list[Tile]:
    """The tiles a run maps: every tile not published yet, every degraded one (published with reads that became
    nodata, ``substituted_reads``) unless ``accept_degraded``, and with ``update`` also every published tile whose
    key differs from its inputs' now (``status``: tile id -> its status object)."""
    out = []
    for tile in tiles:
        entry = status.get(tile.tile_id)
        if entry is None or entry.get("status") != "done":
            out.append(tile)
        elif entry.get("substituted_reads") and not accept_degraded:
            out.append(tile)
        elif update and entry.get("inputs", {}).get("key") != inputs[tile.tile_id].key:
            out.append(tile)
    return out


def superseded_files(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """The files of tile versions that ``after`` (status objects now) replaced in ``before`` (at the run's
    start): what a run removes once its collection and mosaics point at the new versions."""
    out = []
    for tile_id, old in before.items():
        new = after.get(tile_id, {})
        if old.get("status") == "done" and new.get("status") == "done":
            current = set(new.get("files", []))
            out += [key for key in old.get("files", []) if key not in current]
    return sorted(out)
