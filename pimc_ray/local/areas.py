"""Areas of the sample archive, as lon/lat bboxes: a tile (or part of one), the demo's AOI, the head's area."""

from __future__ import annotations

from pyproj import Transformer

from pimc_ray.errors import PimcError
from pimc_ray.local.archive_grid import ArchiveSpec, tile_grid

__all__ = ["demo_aoi", "demo_train_aoi", "tile_bbox"]


def tile_bbox(
    tile_id: str, spec: ArchiveSpec, fractions: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
) -> str:
    """A lon/lat bbox ``"minx,miny,maxx,maxy"`` of the part ``fractions`` (x0, y0, x1, y1 in 0..1 of the tile) of
    a sample tile (the whole tile by default).

    Raises:
        PimcError: no such tile in ``spec``.
    """
    tile = next((t for t in tile_grid(spec) if t.tile_id == tile_id), None)
    if tile is None:
        raise PimcError(f"no sample tile {tile_id!r}; use one of {[t.tile_id for t in tile_grid(spec)]}")
    xmin, ymin, xmax, ymax = tile.bounds
    fx0, fy0, fx1, fy1 = fractions
    x0, x1 = xmin + fx0 * (xmax - xmin), xmin + fx1 * (xmax - xmin)
    y0, y1 = ymin + fy0 * (ymax - ymin), ymin + fy1 * (ymax - ymin)
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    lon0, lat0 = to_lonlat.transform(x0, y0)
    lon1, lat1 = to_lonlat.transform(x1, y1)
    return f"{min(lon0, lon1):.6f},{min(lat0, lat1):.6f},{max(lon0, lon1):.6f},{max(lat0, lat1):.6f}"


def demo_aoi(spec: ArchiveSpec) -> str:
    """The demo AOI: the east half of tile 32TQR and the west half of 32TQS (same-day items are merged)."""
    west = tile_bbox("32TQR", spec, (0.5, 0.1, 1.0, 0.9)).split(",")
    east = tile_bbox("32TQS", spec, (0.0, 0.1, 0.5, 0.9)).split(",")
    return ",".join([west[0], max(west[1], east[1]), east[2], min(west[3], east[3])])


def demo_train_aoi(spec: ArchiveSpec) -> str:
    """The area whose labels fit the demo's classification head: tile 33TTL, held out from the demo AOI."""
    return tile_bbox("33TTL", spec, (0.1, 0.1, 0.9, 0.9))
