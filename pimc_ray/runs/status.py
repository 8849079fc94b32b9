"""A run's live status layer: ``status.geojson`` and ``status.png`` beside its collection, updated as tiles finish.

``pimc run execute`` hands a :class:`StatusLayer` to the mapping run (a
:class:`~pimc_ray.mapping.maps.RunMonitor`): the driver tells it each tile's status as the tile's record comes
back, and it rewrites both files at most every ``interval`` seconds and once at the end, so that a continent's
layer (about 100,000 features, some 20 MB) costs the driver a write per interval, not one per tile.

- ``status.geojson``: a FeatureCollection of every tile of the run, its lon/lat area (its square, cut to the
  region and its UTM zone where it crosses their edges) and
  ``{"tile_id", "status", "version", "pixels", "at", "error"}``; the status is one of :data:`STATES`. Its foreign
  members ``pimc:counts`` (tiles per status) and ``pimc:updated`` say how far the run is.
- ``status.png``: a quicklook of the same, tiles painted in the colours of :data:`COLORS` on a lon/lat grid of at
  most ``png_size`` pixels a side spanning the GeoJSON's ``bbox`` (a palette PNG, written with GDAL's PNG
  driver).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from pimc_ray.data.tiles import Tile
from pimc_ray.storage import Store

__all__ = ["COLORS", "STATES", "STATUS_GEOJSON", "STATUS_PNG", "StatusLayer"]

logger = logging.getLogger(__name__)

STATUS_GEOJSON = "status.geojson"
STATUS_PNG = "status.png"

#: A tile's status in the layer: ``pending`` (to map, not back yet), ``done`` (mapped by this run),
#: ``unchanged`` (published before with the same inputs: skipped), ``failed`` (this run could not map it; with a
#: ``version`` when an older version stays published).
STATES = ("pending", "done", "unchanged", "failed")

#: RGB colour of each status in ``status.png`` (background: transparent).
COLORS: dict[str, tuple[int, int, int]] = {
    "pending": (189, 189, 189),
    "done": (26, 150, 65),
    "unchanged": (43, 131, 186),
    "failed": (215, 25, 28),
}


def _lonlat_areas(tiles: Sequence[Tile]) -> np.ndarray:
    """Each tile's area in lon/lat: its square, cut to its footprint where it crosses the footprint's edge (the
    zone's border, the region's edge), so that tiles of neighbouring zones do not overlap. Vectorised per
    footprint (a zone's tiles share theirs); a continent's 100,000 tiles take seconds."""
    out = np.empty(len(tiles), dtype=object)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, tile in enumerate(tiles):
        groups.setdefault((tile.epsg, id(tile.footprint)), []).append(i)
    for (epsg, _), rows in groups.items():
        footprint = tiles[rows[0]].footprint
        shapely.prepare(footprint)
        bounds = np.array([tiles[i].bounds for i in rows], dtype=float).reshape(-1, 4)
        squares = shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])
        inside = shapely.contains_properly(footprint, squares)
        areas = squares.copy()
        areas[~inside] = shapely.intersection(squares[~inside], footprint)
        to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
        out[rows] = shapely.transform(areas, to_lonlat.transform, interleaved=False)
    return out


class StatusLayer:
    """Keeps a run's status layer in ``store`` (see the module docstring).

    Args:
        store: the run's output.
        interval: seconds between rewrites while tiles come back (the first tile and the end always write).
        png_size: the quicklook's longer side in pixels.
        clock: the time source (tests pass their own).
    """

    def __init__(
        self,
        store: Store,
        *,
        interval: float = 30.0,
        png_size: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.interval, self.png_size, self.clock = store, interval, png_size, clock
        self.tiles: list[Tile] = []
        self.entries: dict[str, dict[str, Any]] = {}
        self.geometries: list[str] = []
        """Each tile's area as GeoJSON text, made once (a rewrite only adds the properties)."""
        self.bbox: list[float] = []
        self.index = np.zeros((1, 1), np.uint32)
        """The quicklook's pixels: 1 + the index of the tile painted there, 0 for none (made once)."""
        self.transform: Any = None
        self.written_at: float | None = None
        self.writes = 0

    # --- RunMonitor ---------------------------------------------------------------------------------------

    def start(
        self, tiles: Sequence[Tile], status: Mapping[str, Mapping[str, Any]], todo: Sequence[Tile]
    ) -> None:
        from rasterio.features import rasterize
        from rasterio.transform import from_bounds

        if not tiles:
            raise ValueError("a status layer needs the run's tiles")
        self.tiles = list(tiles)
        areas = _lonlat_areas(self.tiles)
        self.geometries = list(shapely.to_geojson(shapely.set_precision(areas, 1e-6)))
        self.bbox = [float(v) for v in shapely.total_bounds(areas)]
        west, south, east, north = self.bbox
        step = max(east - west, north - south) / self.png_size
        width, height = max(1, round((east - west) / step)), max(1, round((north - south) / step))
        self.transform = from_bounds(west, south, east, north, width, height)
        shapes = ((area, i + 1) for i, area in enumerate(areas) if not area.is_empty)
        self.index = rasterize(
            shapes, out_shape=(height, width), transform=self.transform, all_touched=True, dtype="uint32"
        )
        mapping = {t.tile_id for t in todo}
        for tile in self.tiles:
            old = status.get(tile.tile_id, {})
            entry = {"status": "pending" if tile.tile_id in mapping else "unchanged"}
            if old.get("status") == "done":
                entry |= {k: old[k] for k in ("version", "pixels", "at") if k in old}
            self.entries[tile.tile_id] = entry
        self.flush(force=True)

    def tile(self, tile_id: str, entry: Mapping[str, Any]) -> None:
        row = self.entries.setdefault(tile_id, {})
        if entry["status"] == "done":
            row |= {"status": "done", "version": entry.get("version"), "pixels": entry.get("pixels")}
            row.pop("error", None)
        else:
            row |= {"status": "failed", "error": entry.get("error")}
            if "kept_version" in entry:
                row["version"] = entry["kept_version"]
        row["at"] = entry.get("at")
        self.flush()

    def finish(self) -> None:
        self.flush(force=True)

    # --- writing ------------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Tiles per status."""
        found = Counter(e["status"] for e in self.entries.values())
        return {state: found.get(state, 0) for state in STATES}

    def flush(self, *, force: bool = False) -> bool:
        """Rewrite both files if ``interval`` has passed since the last write (or ``force``); returns whether it
        wrote."""
        now = self.clock()
        if not force and self.written_at is not None and now - self.written_at < self.interval:
            return False
        self.store.put_bytes(self.geojson_bytes(), STATUS_GEOJSON)
        self.store.put_bytes(self.png(), STATUS_PNG)
        self.written_at, self.writes = now, self.writes + 1
        return True

    def geojson_bytes(self) -> bytes:
        """The layer as a GeoJSON FeatureCollection (see the module docstring), written out from the geometries'
        text made at the start: a continent's 100,000 features in about a second."""
        header = {
            "type": "FeatureCollection",
            "bbox": self.bbox,
            "pimc:counts": self.counts(),
            "pimc:updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "pimc:colors": {state: "#{:02x}{:02x}{:02x}".format(*rgb) for state, rgb in COLORS.items()},
        }
        features = []
        for tile, geometry in zip(self.tiles, self.geometries, strict=True):
            entry = self.entries[tile.tile_id]
            properties = {"tile_id": tile.tile_id, "status": entry["status"]}
            properties |= {k: entry.get(k) for k in ("version", "pixels", "at", "error")}
            features.append(
                f'{{"type":"Feature","id":{json.dumps(tile.tile_id)},"geometry":{geometry},'
                f'"properties":{json.dumps(properties)}}}'
            )
        return (json.dumps(header)[:-1] + ',"features":[' + ",".join(features) + "]}").encode()

    def png(self) -> bytes:
        """The quicklook: each tile's area painted in its status's colour (a palette PNG)."""
        import rasterio
        from rasterio.io import MemoryFile

        if not self.tiles:
            raise ValueError("a status layer without tiles has no quicklook")
        value = {state: i + 1 for i, state in enumerate(STATES)}
        lut = np.zeros(len(self.tiles) + 1, np.uint8)
        lut[1:] = [value[self.entries[t.tile_id]["status"]] for t in self.tiles]
        image = lut[self.index]
        height, width = image.shape
        colormap = {0: (0, 0, 0, 0)} | {value[s]: (*rgb, 255) for s, rgb in COLORS.items()}
        profile = {"driver": "PNG", "width": width, "height": height, "count": 1, "dtype": "uint8"}
        with rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile() as memory:  # no .aux.xml: the bytes are all
            with memory.open(**profile, crs="EPSG:4326", transform=self.transform) as dst:
                dst.write(image, 1)
                dst.write_colormap(1, colormap)
            return bytes(memory.read())
