"""Output grids: an AOI -> pixel grids per UTM zone (whole-AOI grids, or tiles of a fixed grid) -> windows.

UTM zone rule: a pixel belongs to the UTM zone of its longitude (6-degree bands), and each zone's part of the AOI
is mapped in that zone's own CRS, so no output is ever warped across a zone edge. Grids are snapped to
multiples of the resolution in the zone's coordinates, so every run over overlapping AOIs shares pixel edges.

The tile grid (:class:`TileGrid`) cuts every UTM zone into square tiles of ``size`` pixels aligned to multiples
of the tile's width in zone coordinates: a tile's id (``32N_071_0492``: zone, hemisphere, column, row) and its
pixels never depend on the AOI, so runs over different AOIs share tiles and a rerun finds the same tiles again.
Tiles are the unit of output; windows (a few hundred pixels a side) are the unit of work inside a tile. An
encoder that needs spatial context reads each window grown by its halo (:meth:`Window.grown`) on the same grid,
across tile edges, so the pixels it writes never depend on where the tile or window edges fall.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry

from pimc_ray.data.aoi import AOI

__all__ = [
    "aoi_grids",
    "split_by_zone",
    "utm_epsg",
    "OutputGrid",
    "Tile",
    "TileGrid",
    "Window",
]


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding a lon/lat point."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def split_by_zone(aoi: AOI) -> dict[int, BaseGeometry]:
    """The AOI cut along UTM zone meridians (and the equator): EPSG code -> lon/lat part."""
    minx, miny, maxx, maxy = aoi.bounds
    parts: dict[int, BaseGeometry] = {}
    first_zone = int(math.floor((minx + 180.0) / 6.0))
    last_zone = int(math.floor((min(maxx, 179.999999) + 180.0) / 6.0))
    for zone in range(first_zone, last_zone + 1):
        west = zone * 6.0 - 180.0
        for south, north in ((-90.0, 0.0), (0.0, 90.0)):
            part = aoi.geometry.intersection(shapely.geometry.box(west, south, west + 6.0, north))
            if part.is_empty or part.area == 0:
                continue
            epsg = utm_epsg(west + 3.0, (south + north) / 2.0)
            parts[epsg] = part
    return dict(sorted(parts.items()))


@dataclass(frozen=True)
class Window:
    """A rectangle of an :class:`OutputGrid`, in pixels and in CRS metres."""

    row: int
    col: int
    height: int
    width: int
    bounds: tuple[float, float, float, float]
    """(xmin, ymin, xmax, ymax) in the grid's CRS."""

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def grown(self, margin: int, resolution: float) -> Window:
        """This window grown by ``margin`` pixels on every side, on the same pixel grid.

        The grown window may reach past its grid (into the neighbouring tile, or past the AOI): reads are never
        clipped, so a pixel at a tile edge sees the same neighbourhood as one inside the tile. Where no item
        covers the pixels they read as nodata.
        """
        if margin < 0:
            raise ValueError(f"margin must not be negative, got {margin}")
        xmin, ymin, xmax, ymax = self.bounds
        pad = margin * resolution
        return Window(
            self.row - margin,
            self.col - margin,
            self.height + 2 * margin,
            self.width + 2 * margin,
            (xmin - pad, ymin - pad, xmax + pad, ymax + pad),
        )


@dataclass(frozen=True)
class OutputGrid:
    """A north-up pixel grid in one UTM zone covering (part of) an AOI."""

    epsg: int
    bounds: tuple[float, float, float, float]
    """(xmin, ymin, xmax, ymax) in metres, multiples of ``resolution``."""
    resolution: float
    footprint: BaseGeometry
    """The AOI part in this grid's CRS (pixels outside it are nodata)."""

    @classmethod
    def for_aoi_part(cls, part_lonlat: BaseGeometry, epsg: int, resolution: float = 10.0) -> OutputGrid:
        """The grid covering ``part_lonlat`` (lon/lat) in ``EPSG:epsg``, snapped outwards to the resolution."""
        footprint = AOI(part_lonlat).to_crs(epsg)
        xmin, ymin, xmax, ymax = footprint.bounds
        r = resolution
        snapped = (
            math.floor(xmin / r) * r,
            math.floor(ymin / r) * r,
            math.ceil(xmax / r) * r,
            math.ceil(ymax / r) * r,
        )
        return cls(epsg, snapped, resolution, footprint)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        xmin, ymin, xmax, ymax = self.bounds
        return round((ymax - ymin) / self.resolution), round((xmax - xmin) / self.resolution)

    @property
    def transform(self) -> Affine:
        """Affine transform of the top-left corner."""
        return Affine(self.resolution, 0.0, self.bounds[0], 0.0, -self.resolution, self.bounds[3])

    def window_transform(self, window: Window) -> Affine:
        """Affine transform of a window's top-left corner."""
        return self.transform * Affine.translation(window.col, window.row)

    def inside(self, window: Window) -> np.ndarray:
        """(h, w) bool mask of a window's pixels whose centre is inside the footprint."""
        shape = (window.height, window.width)
        return geometry_mask(
            [self.footprint], out_shape=shape, transform=self.window_transform(window), invert=True
        )

    def windows(self, size: int) -> list[Window]:
        """Row-major windows of at most ``size`` x ``size`` pixels covering the grid's part of the footprint.

        Windows that do not touch the footprint are left out: their pixels stay nodata at no cost.
        """
        height, width = self.shape
        xmin, _, _, ymax = self.bounds
        r = self.resolution
        out = []
        for row in range(0, height, size):
            for col in range(0, width, size):
                h, w = min(size, height - row), min(size, width - col)
                x0, y1 = xmin + col * r, ymax - row * r
                bounds = (x0, y1 - h * r, x0 + w * r, y1)
                if self.footprint.intersects(shapely.geometry.box(*bounds)):
                    out.append(Window(row, col, h, w, bounds))
        return out


def aoi_grids(aoi: AOI, resolution: float = 10.0) -> list[OutputGrid]:
    """One output grid per UTM zone the AOI touches, in zone order."""
    return [OutputGrid.for_aoi_part(part, epsg, resolution) for epsg, part in split_by_zone(aoi).items()]


@dataclass(frozen=True)
class Tile(OutputGrid):
    """One tile of a :class:`TileGrid`: a full square of pixels, with the AOI part it serves as footprint."""

    tile_id: str = ""
    """Stable id, ``<zone><N|S>_<column>_<row>``."""


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of ``size`` x ``size`` pixels per UTM zone, aligned to multiples of their width."""

    size: int = 1024
    """Tile edge in pixels."""
    resolution: float = 10.0
    """Pixel size in metres."""

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16:
            raise ValueError(f"tile size must be a multiple of 16 pixels, at least 16; got {self.size}")

    @property
    def width_m(self) -> float:
        return self.size * self.resolution

    def tile_id(self, epsg: int, col: int, row: int) -> str:
        zone, hemisphere = epsg % 100, "N" if epsg < 32700 else "S"
        return f"{zone:02d}{hemisphere}_{col:03d}_{row:04d}"

    def tile(self, epsg: int, col: int, row: int, footprint: BaseGeometry) -> Tile:
        w = self.width_m
        bounds = (col * w, row * w, (col + 1) * w, (row + 1) * w)
        return Tile(epsg, bounds, self.resolution, footprint, self.tile_id(epsg, col, row))

    def tiles(self, aoi: AOI) -> list[Tile]:
        """The tiles the AOI touches, zone by zone, row-major from the north-west; each tile's footprint is the
        AOI part in its zone."""
        out = []
        w = self.width_m
        for epsg, part in split_by_zone(aoi).items():
            footprint = AOI(part).to_crs(epsg)
            xmin, ymin, xmax, ymax = footprint.bounds
            cols = range(math.floor(xmin / w), math.floor(xmax / w) + 1)
            rows = range(math.floor(ymax / w), math.floor(ymin / w) - 1, -1)
            for row in rows:
                for col in cols:
                    box = shapely.geometry.box(col * w, row * w, (col + 1) * w, (row + 1) * w)
                    if footprint.intersection(box).area > 0:
                        out.append(self.tile(epsg, col, row, footprint))
        return out
