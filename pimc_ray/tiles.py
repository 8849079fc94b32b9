"""Output grids: an AOI -> one pixel grid per UTM zone, cut into windows (the unit of work).

UTM zone rule: a pixel belongs to the UTM zone of its longitude (6-degree bands), and each zone's part of the AOI
is mapped in that zone's own CRS, so no output is ever warped across a zone edge. Grids are snapped to
multiples of the resolution in the zone's coordinates, so every run over overlapping AOIs shares pixel edges.
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

from pimc_ray.aoi import AOI


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

    def inside(self, window: Window) -> np.ndarray:
        """(h, w) bool mask of a window's pixels whose centre is inside the footprint."""
        transform = self.transform * Affine.translation(window.col, window.row)
        shape = (window.height, window.width)
        return geometry_mask([self.footprint], out_shape=shape, transform=transform, invert=True)

    def windows(self, size: int) -> list[Window]:
        """Row-major windows of at most ``size`` x ``size`` pixels covering the grid."""
        height, width = self.shape
        xmin, _, _, ymax = self.bounds
        r = self.resolution
        out = []
        for row in range(0, height, size):
            for col in range(0, width, size):
                h, w = min(size, height - row), min(size, width - col)
                x0, y1 = xmin + col * r, ymax - row * r
                out.append(Window(row, col, h, w, (x0, y1 - h * r, x0 + w * r, y1)))
        return out


def aoi_grids(aoi: AOI, resolution: float = 10.0) -> list[OutputGrid]:
    """One output grid per UTM zone the AOI touches, in zone order."""
    return [OutputGrid.for_aoi_part(part, epsg, resolution) for epsg, part in split_by_zone(aoi).items()]
