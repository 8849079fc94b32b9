"""Mosaics over tiles, one per product and UTM zone: a GDAL VRT, a GDAL raster tile index (GTI), or both.

Both are small files that GDAL, QGIS and rasterio open as one raster whose pixels come from the tiles' COGs,
referenced by paths relative to the mosaic, so a mosaic stays valid wherever the output folder (or bucket prefix)
is copied. Tiles of one grid share pixel edges (see :mod:`pimc_ray.data.tiles`), so the mosaic's pixels are the
tiles' pixels unchanged.

- A **VRT** (``mosaic_<product>_epsg<zone>.vrt``) is XML listing every tile once per band: every GDAL reads it,
  but it grows with tiles x bands (200 MB for 10,000 tiles of 64 bands) and GDAL parses all of it on open.
- A **GTI index** (``mosaic_<product>_epsg<zone>.gti.gpkg``, GDAL >= 3.9) is a GeoPackage with one row per tile
  (its footprint, a thousandth of a pixel inside its bounds: see :data:`FOOTPRINT_INSET`, and its location)
  under an R-tree; the mosaic's grid, bands, nodata and colour map are layer
  metadata. It grows with tiles only and GDAL reads only the rows a request meets (docs/benchmarks.md,
  "Mosaics"). GDAL resolves a relative location against the index file's folder, local or ``/vsis3/``.

The GeoPackage is written with the standard library's :mod:`sqlite3` (no GDAL bindings needed): the tables the
GeoPackage 1.4 standard requires, one features table, the R-tree extension with its triggers, and GDAL's layer
metadata in ``gpkg_metadata`` (see :func:`build_gti`).
"""

from __future__ import annotations

import math
import sqlite3
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict
from xml.sax.saxutils import escape

import rasterio
from pyproj import CRS
from rasterio.errors import RasterioError

from pimc_ray.data.tiles import Tile
from pimc_ray.errors import InternalError
from pimc_ray.io.rasters import RasterProduct
from pimc_ray.scratch import temporary_folder
from pimc_ray.storage import Store

__all__ = ["MosaicKind", "MosaicSource", "build_gti", "build_vrt", "write_mosaics"]

#: GDAL data type names of the numpy dtypes we write.
_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "int32": "Int32", "float32": "Float32"}

MosaicKind = Literal["auto", "vrt", "gti", "both"]
"""Which mosaics :func:`write_mosaics` writes: ``"auto"`` a GTI index always, and a VRT too for small zones."""


class _Layout(TypedDict):
    """The keyword arguments :func:`build_vrt` and :func:`build_gti` share: the grid and the bands."""

    epsg: int
    resolution: float
    count: int
    dtype: str
    nodata: float
    band_descriptions: Sequence[str]
    colormap: dict[int, tuple[int, int, int, int]] | None


@dataclass(frozen=True)
class MosaicSource:
    """One tile's file in a mosaic."""

    path: str
    """Path of the tile's COG relative to the mosaic file (the VRT or the GTI index)."""
    bounds: tuple[float, float, float, float]
    """(xmin, ymin, xmax, ymax) in the zone's CRS."""


def _extent(sources: Sequence[MosaicSource]) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of all ``sources``."""
    if not sources:
        raise ValueError("a mosaic needs at least one tile")
    return (
        min(s.bounds[0] for s in sources),
        min(s.bounds[1] for s in sources),
        max(s.bounds[2] for s in sources),
        max(s.bounds[3] for s in sources),
    )


def _nodata_text(nodata: float) -> str:
    return "nan" if isinstance(nodata, float) and math.isnan(nodata) else repr(nodata)


def _color_table(colormap: Mapping[int, tuple[int, int, int, int]], indent: str) -> list[str]:
    """``<ColorInterp>`` and ``<ColorTable>`` lines of a palette band (VRT and GTI share the syntax)."""
    lines = [f"{indent}<ColorInterp>Palette</ColorInterp>", f"{indent}<ColorTable>"]
    for value in range(max(colormap) + 1):
        r, g, b, a = colormap.get(value, (0, 0, 0, 0))
        lines.append(f'{indent}  <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>')
    return [*lines, f"{indent}</ColorTable>"]


def _band_header(
    opening: str,
    description: str,
    nodata_text: str,
    colormap: Mapping[int, tuple[int, int, int, int]] | None,
    indent: str,
) -> list[str]:
    """The opening tag of a band in GDAL's VRT or GTI XML, its description, nodata and colour table, indented."""
    lines = [
        f"{indent}{opening}",
        f"{indent}  <Description>{escape(description)}</Description>",
        f"{indent}  <NoDataValue>{nodata_text}</NoDataValue>",
    ]
    return lines + (_color_table(colormap, indent + "  ") if colormap else [])


def build_vrt(
    sources: Sequence[MosaicSource],
    *,
    epsg: int,
    resolution: float,
    count: int,
    dtype: str,
    nodata: float,
    band_descriptions: Sequence[str],
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
) -> str:
    """The XML of a VRT mosaicking ``sources`` (all in ``EPSG:epsg`` on one pixel grid)."""
    xmin, _, _, ymax = extent = _extent(sources)
    width, height = round((extent[2] - xmin) / resolution), round((ymax - extent[1]) / resolution)
    gdal_type = _GDAL_TYPES[dtype]
    nodata_text = _nodata_text(nodata)
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"  <SRS>{escape(CRS.from_epsg(epsg).to_wkt())}</SRS>",
        f"  <GeoTransform>{xmin!r}, {resolution!r}, 0.0, {ymax!r}, 0.0, {-resolution!r}</GeoTransform>",
    ]
    for band in range(1, count + 1):
        opening = f'<VRTRasterBand dataType="{gdal_type}" band="{band}">'
        lines += _band_header(
            opening, band_descriptions[band - 1], nodata_text, colormap if band == 1 else None, "  "
        )
        for s in sources:
            w = round((s.bounds[2] - s.bounds[0]) / resolution)
            h = round((s.bounds[3] - s.bounds[1]) / resolution)
            x_off = round((s.bounds[0] - xmin) / resolution)
            y_off = round((ymax - s.bounds[3]) / resolution)
            lines += [
                "    <ComplexSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(s.path)}</SourceFilename>',
                f"      <SourceBand>{band}</SourceBand>",
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="{x_off}" yOff="{y_off}" xSize="{w}" ySize="{h}"/>',
                f"      <NODATA>{nodata_text}</NODATA>",
                "    </ComplexSource>",
            ]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


# --- GTI index: a minimal GeoPackage 1.4 written with sqlite3 --------------------------------------------------
# The tables and columns below are those of the GeoPackage standard (https://www.geopackage.org/spec140/):
# the SRS table with its three required rows, contents, geometry columns, extensions, metadata; one features
# table `tiles`; the R-tree spatial index `rtree_tiles_geom` with the standard's triggers (which keep it right
# if someone edits the file; they call ST_* functions that GDAL registers, so they are created after the rows
# are in). GDAL reads a layer's metadata from `gpkg_metadata` rows with standard URI http://gdal.org (its
# GDALMultiDomainMetadata XML); the GTI driver takes its settings from that XML's `xml:GTI` domain.

_GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
_GPKG_VERSION = 10400  # GeoPackage 1.4.0
_LAYER = "tiles"

_GPKG_SCHEMA = f"""
CREATE TABLE gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
  description TEXT DEFAULT '', last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE gpkg_geometry_columns (
  table_name TEXT NOT NULL UNIQUE REFERENCES gpkg_contents(table_name), column_name TEXT NOT NULL,
  geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL REFERENCES gpkg_spatial_ref_sys(srs_id),
  z TINYINT NOT NULL, m TINYINT NOT NULL, PRIMARY KEY (table_name, column_name));
CREATE TABLE gpkg_extensions (
  table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, definition TEXT NOT NULL,
  scope TEXT NOT NULL, UNIQUE (table_name, column_name, extension_name));
CREATE TABLE gpkg_metadata (
  id INTEGER PRIMARY KEY ASC NOT NULL, md_scope TEXT NOT NULL DEFAULT 'dataset',
  md_standard_uri TEXT NOT NULL, mime_type TEXT NOT NULL DEFAULT 'text/xml', metadata TEXT NOT NULL DEFAULT '');
CREATE TABLE gpkg_metadata_reference (
  reference_scope TEXT NOT NULL, table_name TEXT, column_name TEXT, row_id_value INTEGER,
  timestamp DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  md_file_id INTEGER NOT NULL REFERENCES gpkg_metadata(id), md_parent_id INTEGER REFERENCES gpkg_metadata(id));
CREATE TABLE {_LAYER} (
  fid INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, geom POLYGON, location TEXT NOT NULL);
CREATE VIRTUAL TABLE rtree_{_LAYER}_geom USING rtree(id, minx, maxx, miny, maxy);
"""

_RTREE_TRIGGERS = """
CREATE TRIGGER rtree_{t}_geom_insert AFTER INSERT ON {t} WHEN (new.geom NOT NULL AND NOT ST_IsEmpty(NEW.geom))
BEGIN INSERT OR REPLACE INTO rtree_{t}_geom VALUES ({new_box}); END;
CREATE TRIGGER rtree_{t}_geom_update2 AFTER UPDATE OF geom ON {t}
  WHEN OLD.fid = NEW.fid AND (NEW.geom ISNULL OR ST_IsEmpty(NEW.geom))
BEGIN DELETE FROM rtree_{t}_geom WHERE id = OLD.fid; END;
CREATE TRIGGER rtree_{t}_geom_update4 AFTER UPDATE ON {t}
  WHEN OLD.fid != NEW.fid AND (NEW.geom ISNULL OR ST_IsEmpty(NEW.geom))
BEGIN DELETE FROM rtree_{t}_geom WHERE id IN (OLD.fid, NEW.fid); END;
CREATE TRIGGER rtree_{t}_geom_update5 AFTER UPDATE ON {t}
  WHEN OLD.fid != NEW.fid AND (NEW.geom NOTNULL AND NOT ST_IsEmpty(NEW.geom))
BEGIN
  DELETE FROM rtree_{t}_geom WHERE id = OLD.fid;
  INSERT OR REPLACE INTO rtree_{t}_geom VALUES ({new_box});
END;
CREATE TRIGGER rtree_{t}_geom_update6 AFTER UPDATE OF geom ON {t}
  WHEN OLD.fid = NEW.fid AND (NEW.geom NOTNULL AND NOT ST_IsEmpty(NEW.geom))
   AND (OLD.geom NOTNULL AND NOT ST_IsEmpty(OLD.geom))
BEGIN
  UPDATE rtree_{t}_geom SET minx = ST_MinX(NEW.geom), maxx = ST_MaxX(NEW.geom),
    miny = ST_MinY(NEW.geom), maxy = ST_MaxY(NEW.geom) WHERE id = NEW.fid;
END;
CREATE TRIGGER rtree_{t}_geom_update7 AFTER UPDATE OF geom ON {t}
  WHEN OLD.fid = NEW.fid AND (NEW.geom NOTNULL AND NOT ST_IsEmpty(NEW.geom))
   AND (OLD.geom ISNULL OR ST_IsEmpty(OLD.geom))
BEGIN INSERT INTO rtree_{t}_geom VALUES ({new_box}); END;
CREATE TRIGGER rtree_{t}_geom_delete AFTER DELETE ON {t} WHEN old.geom NOT NULL
BEGIN DELETE FROM rtree_{t}_geom WHERE id = OLD.fid; END;
"""
_RTREE_TRIGGERS = _RTREE_TRIGGERS.replace("{t}", _LAYER).replace(
    "{new_box}", "NEW.fid, ST_MinX(NEW.geom), ST_MaxX(NEW.geom), ST_MinY(NEW.geom), ST_MaxY(NEW.geom)"
)

_SPEC = "http://www.geopackage.org/spec140/index.html"
_EXTENSIONS = [
    (_LAYER, "geom", "gpkg_rtree_index", f"{_SPEC}#extension_rtree", "write-only"),
    ("gpkg_metadata", None, "gpkg_metadata", f"{_SPEC}#extension_metadata", "read-write"),
    ("gpkg_metadata_reference", None, "gpkg_metadata", f"{_SPEC}#extension_metadata", "read-write"),
]


#: Each tile's footprint in a GTI index is its bounds inset by this fraction of a pixel. GDAL's GTI driver (seen in
#: GDAL 3.10, rasterio 1.4's) takes every tile whose footprint meets a request, edges included, and when one that
#: only touches the request (so gives it no pixel) comes before one that does in the index's order, it drops the
#: latter too (``GDALTileIndexDataset::CollectSources`` truncates its list at the last source it skipped): the
#: request reads as nodata where a tile is. An inset footprint meets only the requests its tile has pixels in; a
#: tile's pixels are placed by its own geotransform, not its footprint, so the inset moves no pixel.
FOOTPRINT_INSET = 1e-3


def _footprint(
    bounds: tuple[float, float, float, float], resolution: float
) -> tuple[float, float, float, float]:
    """A tile's footprint in a GTI index: its ``bounds`` inset by :data:`FOOTPRINT_INSET` pixel."""
    inset = FOOTPRINT_INSET * resolution
    return bounds[0] + inset, bounds[1] + inset, bounds[2] - inset, bounds[3] - inset


def _gpkg_polygon(bounds: tuple[float, float, float, float], srs_id: int) -> bytes:
    """A rectangle as a GeoPackage geometry blob: header (magic ``GP``, version 0, flags: little-endian with
    an [minx, maxx, miny, maxy] envelope; SRS id; envelope), then the polygon as little-endian WKB."""
    xmin, ymin, xmax, ymax = bounds
    header = b"GP" + bytes([0, 0b0000_0011]) + struct.pack("<i4d", srs_id, xmin, xmax, ymin, ymax)
    ring = (xmin, ymin, xmax, ymin, xmax, ymax, xmin, ymax, xmin, ymin)  # closed, counter-clockwise
    return header + struct.pack("<BIII10d", 1, 3, 1, 5, *ring)  # byte order, Polygon, 1 ring, 5 points


def _gti_metadata(
    extent: tuple[float, float, float, float],
    *,
    resolution: float,
    count: int,
    dtype: str,
    nodata: float,
    band_descriptions: Sequence[str],
    colormap: Mapping[int, tuple[int, int, int, int]] | None,
) -> str:
    """GDAL's layer metadata XML holding the GTI settings in its ``xml:GTI`` domain (GDAL's GTI XML format:
    https://gdal.org/drivers/raster/gti.html), so that nothing is read from a tile when the mosaic opens."""
    gdal_type, nodata_text = _GDAL_TYPES[dtype], _nodata_text(nodata)
    xmin, ymin, xmax, ymax = extent
    lines = [
        "<GDALMultiDomainMetadata>",
        '  <Metadata domain="xml:GTI" format="xml">',
        "    <GDALTileIndexDataset>",
        f"      <ResX>{resolution!r}</ResX>",
        f"      <ResY>{resolution!r}</ResY>",
        f"      <MinX>{xmin!r}</MinX>",
        f"      <MinY>{ymin!r}</MinY>",
        f"      <MaxX>{xmax!r}</MaxX>",
        f"      <MaxY>{ymax!r}</MaxY>",
    ]
    for band in range(1, count + 1):
        opening = f'<Band band="{band}" dataType="{gdal_type}">'
        lines += _band_header(
            opening, band_descriptions[band - 1], nodata_text, colormap if band == 1 else None, "      "
        )
        lines.append("      </Band>")
    lines += ["    </GDALTileIndexDataset>", "  </Metadata>", "</GDALMultiDomainMetadata>"]
    return "\n".join(lines) + "\n"


def build_gti(
    path: str | Path,
    sources: Sequence[MosaicSource],
    *,
    epsg: int,
    resolution: float,
    count: int,
    dtype: str,
    nodata: float,
    band_descriptions: Sequence[str],
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
) -> Path:
    """Write a GDAL raster tile index (GTI) of ``sources`` (all in ``EPSG:epsg`` on one pixel grid) at ``path``.

    The index is a GeoPackage; name it ``*.gti.gpkg`` and GDAL >= 3.9 opens it as a raster (rasterio:
    ``rasterio.open(path)``). Sources' paths are stored as given: relative ones are resolved by GDAL against
    the index file's folder. Settings (grid, band types, descriptions, nodata, colour map) are layer metadata,
    so opening the mosaic reads no tile.

    Raises:
        FileExistsError: ``path`` exists (write to a new temporary name, then move or upload it).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; build_gti writes a new file")
    extent = _extent(sources)
    crs, wgs84 = CRS.from_epsg(epsg), CRS.from_epsg(4326)
    srs_rows: list[tuple[str, int, str, int, str, str | None]] = [  # the three rows the standard requires
        ("Undefined Cartesian SRS", -1, "NONE", -1, "undefined", None),
        ("Undefined geographic SRS", 0, "NONE", 0, "undefined", None),
        ("WGS 84 geodetic", 4326, "EPSG", 4326, wgs84.to_wkt("WKT1_GDAL"), "longitude/latitude on WGS 84"),
    ]
    if epsg != 4326:
        srs_rows.append((crs.name, epsg, "EPSG", epsg, crs.to_wkt("WKT1_GDAL"), None))
    metadata = _gti_metadata(
        extent,
        resolution=resolution,
        count=count,
        dtype=dtype,
        nodata=nodata,
        band_descriptions=band_descriptions,
        colormap=colormap,
    )
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA synchronous = OFF")  # no fsync: a new file, checked before it is published
        with con:  # commits (executescript commits what came before it, too)
            con.execute(f"PRAGMA application_id = {_GPKG_APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {_GPKG_VERSION}")
            con.executescript(_GPKG_SCHEMA)
            con.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", srs_rows)
            con.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
                "min_x, min_y, max_x, max_y, srs_id) VALUES (?, 'features', ?, ?, ?, ?, ?, ?, ?)",
                (_LAYER, _LAYER, "GDAL raster tile index (GTI) of a PIMC mosaic", *extent, epsg),
            )
            con.execute(
                f"INSERT INTO gpkg_geometry_columns VALUES ('{_LAYER}', 'geom', 'POLYGON', ?, 0, 0)", (epsg,)
            )
            con.executemany("INSERT INTO gpkg_extensions VALUES (?, ?, ?, ?, ?)", _EXTENSIONS)
            footprints = [_footprint(s.bounds, resolution) for s in sources]
            rows = [
                (i, _gpkg_polygon(f, epsg), s.path)
                for i, (f, s) in enumerate(zip(footprints, sources, strict=True), 1)
            ]
            con.executemany(f"INSERT INTO {_LAYER} (fid, geom, location) VALUES (?, ?, ?)", rows)
            boxes = [(i, f[0], f[2], f[1], f[3]) for i, f in enumerate(footprints, 1)]
            con.executemany(f"INSERT INTO rtree_{_LAYER}_geom VALUES (?, ?, ?, ?, ?)", boxes)
            con.executescript(_RTREE_TRIGGERS)
            con.execute(
                "INSERT INTO gpkg_metadata (id, md_scope, md_standard_uri, mime_type, metadata) "
                "VALUES (1, 'dataset', 'http://gdal.org', 'text/xml', ?)",
                (metadata,),
            )
            con.execute(
                "INSERT INTO gpkg_metadata_reference (reference_scope, table_name, md_file_id) "
                "VALUES ('table', ?, 1)",
                (_LAYER,),
            )
    finally:
        con.close()
    _check_gti(path, epsg=epsg, count=count, extent=extent, resolution=resolution)
    return path


def _check_gti(
    path: Path, *, epsg: int, count: int, extent: tuple[float, float, float, float], resolution: float
) -> None:
    """Open the index with GDAL (which reads no tile) and check its grid, so a bad index is never published."""
    try:
        with rasterio.open(path, driver="GTI") as src:
            found = (src.crs.to_epsg() if src.crs else None, src.count, tuple(src.bounds), src.res)
    except RasterioError as err:
        raise InternalError(f"GDAL cannot open the tile index written at {path}: {err}") from err
    close = all(
        math.isclose(a, b, abs_tol=resolution * 1e-6)
        for a, b in zip(found[2] + found[3], extent + (resolution,) * 2, strict=True)
    )
    if found[:2] != (epsg, count) or not close:
        raise InternalError(
            f"the tile index written at {path} opens as EPSG:{found[0]}, {found[1]} bands, bounds {found[2]}, "
            f"resolution {found[3]}; expected EPSG:{epsg}, {count} bands, bounds {extent}, resolution {resolution}"
        )


def write_mosaics(
    store: Store,
    tiles: Sequence[Tile],
    prods: Mapping[str, RasterProduct],
    *,
    kind: MosaicKind = "auto",
    vrt_max_tiles: int = 64,
    folders: Mapping[str, str] | None = None,
) -> list[str]:
    """Mosaics of ``tiles`` per product and UTM zone, at the store's root; returns the keys written.

    Tiles' COGs are at ``<folder>/<product>.tif``, the folder of a tile given by ``folders`` (tile id -> key
    prefix; a mapping run's ``tiles/<tile>/v<version>``), else ``tiles/<tile_id>``. Each zone gets
    ``mosaic_<product>_epsg<zone>.vrt`` and/or ``mosaic_<product>_epsg<zone>.gti.gpkg`` (see the module docstring).

    Args:
        store: where the tiles are, and where the mosaics go (a GTI index is written to a local temporary
            file, checked, then uploaded).
        tiles: the finished tiles, any zones.
        prods: the products of every tile, by name.
        kind: ``"gti"``, ``"vrt"``, ``"both"``, or ``"auto"``: a GTI index always, and a VRT too for zones of at
            most ``vrt_max_tiles`` tiles (docs/design.md, "Mosaics").
        vrt_max_tiles: the largest zone (in tiles) that gets a VRT under ``"auto"``.
    """
    if kind not in ("auto", "vrt", "gti", "both"):
        raise ValueError(f"kind must be 'auto', 'vrt', 'gti' or 'both', got {kind!r}")

    def folder(tile: Tile) -> str:
        return folders[tile.tile_id] if folders is not None else f"tiles/{tile.tile_id}"

    keys = []
    with temporary_folder("pimc-mosaic-") as tmp:
        for epsg in sorted({t.epsg for t in tiles}):
            zone_tiles = [t for t in tiles if t.epsg == epsg]
            with_vrt = kind in ("vrt", "both") or (kind == "auto" and len(zone_tiles) <= vrt_max_tiles)
            with_gti = kind != "vrt"
            for name, p in prods.items():
                sources = [MosaicSource(f"{folder(t)}/{name}.tif", t.bounds) for t in zone_tiles]
                options: _Layout = {
                    "epsg": epsg,
                    "resolution": zone_tiles[0].resolution,
                    "count": len(p.bands),
                    "dtype": p.dtype,
                    "nodata": p.nodata,
                    "band_descriptions": p.bands,
                    "colormap": dict(p.colormap) if p.colormap else None,
                }
                stem = f"mosaic_{name}_epsg{epsg}"
                if with_vrt:
                    store.put_bytes(build_vrt(sources, **options).encode(), f"{stem}.vrt")
                    keys.append(f"{stem}.vrt")
                if with_gti:
                    store.put_file(
                        build_gti(Path(tmp) / f"{stem}.gti.gpkg", sources, **options), f"{stem}.gti.gpkg"
                    )
                    keys.append(f"{stem}.gti.gpkg")
    return keys
