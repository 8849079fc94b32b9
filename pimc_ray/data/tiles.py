"""Output grids: an AOI -> pixel grids per UTM zone (whole-AOI grids, or tiles of a fixed grid) -> windows.

UTM zone rule: a pixel belongs to the UTM zone of its longitude (6-degree bands) with Sentinel-2's (MGRS's)
exceptions (:data:`ZONE_EXCEPTIONS`: zone 32 widened over south-western Norway, zones 31, 33, 35 and 37 widened
over Svalbard), so a tile lies in the zone of the Sentinel-2 granules under it; each zone's part of the AOI is
mapped in that zone's own CRS, so no output is ever warped across a zone edge. Grids are snapped to multiples of
the resolution in the zone's coordinates, so every run over overlapping AOIs shares pixel edges.

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
from functools import lru_cache

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry.base import BaseGeometry

from pimc_ray.data.aoi import AOI

__all__ = [
    "ZONE_EXCEPTIONS",
    "aoi_grids",
    "split_by_zone",
    "utm_epsg",
    "utm_zone",
    "zone_area",
    "zone_footprint",
    "OutputGrid",
    "Tile",
    "TileGrid",
    "Window",
    "ZoneTiles",
]

#: Where the Sentinel-2 tiling grid (MGRS) departs from 6-degree UTM zones, north of the equator:
#: ``(south, north, ((west, east, zone), ...))`` in degrees. 56-64 N (latitude band V): zone 31 narrowed to
#: 0-3 E and zone 32 widened to 3-12 E, so south-western Norway is one zone (32V). 72-84 N (band X): zones 31, 33,
#: 35 and 37 widened to 0-9, 9-21, 21-33 and 33-42 E, and 32X, 34X and 36X do not exist (Svalbard). North of
#: 84 N MGRS switches to UPS and Sentinel-2 has no tiles; the band X rule is kept up to the pole there.
ZONE_EXCEPTIONS: tuple[tuple[float, float, tuple[tuple[float, float, int], ...]], ...] = (
    (56.0, 64.0, ((0.0, 3.0, 31), (3.0, 12.0, 32))),
    (72.0, 90.0, ((0.0, 9.0, 31), (9.0, 21.0, 33), (21.0, 33.0, 35), (33.0, 42.0, 37))),
)


def utm_zone(lon: float, lat: float) -> int:
    """The UTM zone number (1-60) of a lon/lat point as Sentinel-2 assigns it: the 6-degree zone of its
    longitude, except in :data:`ZONE_EXCEPTIONS` (Bergen, 5.3 E 60.4 N, is in zone 32; Svalbard's 10 E 78 N in 33).

    A point on a zone edge belongs to the zone east of it, one on a band edge to the band north of it.
    """
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    for south, north, cuts in ZONE_EXCEPTIONS:
        if south <= lat < north or lat == north == 90.0:
            for west, east, special in cuts:
                if west <= lon < east:
                    return special
    return zone


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding a lon/lat point (:func:`utm_zone`; south of the equator 327NN)."""
    return (32600 if lat >= 0 else 32700) + utm_zone(lon, lat)


@lru_cache(maxsize=128)
def zone_area(epsg: int) -> BaseGeometry:
    """The lon/lat (multi)polygon a UTM zone covers (``EPSG:326NN`` north of the equator, ``327NN`` south of it):
    its 6-degree column, with :data:`ZONE_EXCEPTIONS` cut out of it or added to it."""
    zone, north = epsg % 100, epsg < 32700
    if not (32601 <= epsg <= 32660 or 32701 <= epsg <= 32760):
        raise ValueError(f"EPSG:{epsg} is not a WGS84 UTM zone (326NN or 327NN, NN = 01..60)")
    west = (zone - 1) * 6.0 - 180.0
    area: BaseGeometry = (
        shapely.box(west, 0.0, west + 6.0, 90.0) if north else shapely.box(west, -90.0, west + 6.0, 0.0)
    )
    if north:
        for south, top, cuts in ZONE_EXCEPTIONS:
            band = shapely.box(min(c[0] for c in cuts), south, max(c[1] for c in cuts), top)
            area = area.difference(band)
            for lon0, lon1, special in cuts:
                if special == zone:
                    area = area.union(shapely.box(lon0, south, lon1, top))
    return shapely.normalize(area)


def split_by_zone(aoi: AOI) -> dict[int, BaseGeometry]:
    """The AOI cut along UTM zone edges (:func:`zone_area`) and the equator: EPSG code -> lon/lat part."""
    minx, miny, maxx, maxy = aoi.bounds
    bounds = shapely.box(minx, miny, maxx, maxy)
    parts: dict[int, BaseGeometry] = {}
    first_zone = int(math.floor((minx + 180.0) / 6.0))
    last_zone = int(math.floor((min(maxx, 179.999999) + 180.0) / 6.0))
    # an exception widens a zone by at most one zone's width, so the neighbours on each side are candidates too
    for index in range(max(first_zone - 1, 0), min(last_zone + 1, 59) + 1):
        for base in (32700, 32600):
            epsg = base + index + 1
            area = zone_area(epsg)
            if not area.intersects(bounds):
                continue
            part = aoi.geometry.intersection(area)
            if part.is_empty or part.area == 0:
                continue
            parts[epsg] = part
    return dict(sorted(parts.items()))


def zone_footprint(part: BaseGeometry, epsg: int) -> BaseGeometry:
    """A lon/lat AOI part projected to ``EPSG:epsg``, repaired when projecting made it invalid (a valid lon/lat
    border can self-intersect once projected: Europe's zone 36 part does)."""
    footprint = AOI(part).to_crs(epsg)
    if not footprint.is_valid:
        footprint = shapely.make_valid(footprint, method="structure", keep_collapsed=False)
    return footprint


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
        """The tiles the AOI touches (overlaps with a positive area), zone by zone, row-major from the north-west;
        each tile's footprint is the AOI part in its zone."""
        return [
            self.tile(zone.epsg, int(col), int(row), zone.footprint)
            for zone in self.zone_tiles(aoi)
            for col, row in zip(zone.cols, zone.rows, strict=True)
        ]

    def zone_tiles(self, aoi: AOI, *, max_boxes: int = 65_536) -> list[ZoneTiles]:
        """The tiles of :meth:`tiles` as arrays per zone, with the AOI's area in each: for a continent.

        Vectorised (shapely 2): the candidate tiles of a band of rows are tested against the footprint clipped to
        that band at once; tiles wholly inside it are whole, and only the others are intersected. Europe's 98,946
        tiles of 1024 px take about a second (docs/benchmarks.md, "Planning a continent").

        Args:
            aoi: the area.
            max_boxes: candidate tiles tested at once (bounds memory for very large areas or small tiles).
        """
        w = self.width_m
        out = []
        for epsg, part in split_by_zone(aoi).items():
            footprint = zone_footprint(part, epsg)
            xmin, ymin, xmax, ymax = footprint.bounds
            cols = np.arange(math.floor(xmin / w), math.floor(xmax / w) + 1, dtype=np.int64)
            top, bottom = math.floor(ymax / w), math.floor(ymin / w)
            step = max(1, max_boxes // len(cols))
            found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
            for first in range(top, bottom - 1, -step):  # bands of rows, north to south
                rows = np.arange(first, max(first - step, bottom - 1), -1, dtype=np.int64)
                band = footprint.intersection(
                    shapely.box(cols[0] * w, rows[-1] * w, (cols[-1] + 1) * w, (rows[0] + 1) * w)
                )
                if band.is_empty:
                    continue
                rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))  # row-major
                boxes = shapely.box(cc * w, rr * w, (cc + 1) * w, (rr + 1) * w)
                shapely.prepare(band)
                hit = np.flatnonzero(shapely.intersects(band, boxes))
                whole = shapely.contains_properly(band, boxes[hit])
                area = np.zeros(len(hit))
                area[whole] = w * w
                edge = hit[~whole]
                area[~whole] = shapely.area(shapely.intersection(band, boxes[edge]))
                keep = area > 0
                found.append((cc[hit][keep], rr[hit][keep], area[keep]))
            if found:
                c, r, a = (np.concatenate(arrays) for arrays in zip(*found, strict=True))
                out.append(ZoneTiles(epsg, footprint, c, r, a))
        return out


@dataclass(frozen=True, eq=False)
class ZoneTiles:
    """The tiles of one UTM zone an AOI touches (:meth:`TileGrid.zone_tiles`), as arrays in the order of
    :meth:`TileGrid.tiles`: row-major from the north-west."""

    epsg: int
    footprint: BaseGeometry
    """The AOI part in this zone, in its CRS."""
    cols: np.ndarray
    """(n,) int64 tile columns (a tile's west edge is ``col * width``)."""
    rows: np.ndarray
    """(n,) int64 tile rows (a tile's south edge is ``row * width``)."""
    inside_m2: np.ndarray
    """(n,) float64 area of the footprint inside each tile, in square metres of the zone's CRS."""

    def __len__(self) -> int:
        return len(self.cols)
