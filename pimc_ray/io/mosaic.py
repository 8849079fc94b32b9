"""Mosaics over tiles: a GDAL VRT per product and UTM zone that references the tiles' COGs by relative path.

A VRT is a small XML file: GDAL, QGIS and rasterio open it as one raster whose pixels come from the tiles, so the
mosaic costs nothing to build and stays valid wherever the output folder (or bucket prefix) is copied. Tiles of
one grid share pixel edges (see :mod:`pimc_ray.data.tiles`), so the mosaic's pixels are the tiles' pixels unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from pyproj import CRS

from pimc_ray.data.tiles import Tile
from pimc_ray.io.rasters import RasterProduct
from pimc_ray.io.storage import Store

__all__ = ["MosaicSource", "build_vrt", "write_mosaics"]

#: GDAL data type names of the numpy dtypes we write.
_GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "int32": "Int32", "float32": "Float32"}


@dataclass(frozen=True)
class MosaicSource:
    """One tile's file in a mosaic."""

    path: str
    """Path of the tile's COG relative to the VRT."""
    bounds: tuple[float, float, float, float]
    """(xmin, ymin, xmax, ymax) in the zone's CRS."""


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
    if not sources:
        raise ValueError("a mosaic needs at least one tile")
    xmin = min(s.bounds[0] for s in sources)
    ymax = max(s.bounds[3] for s in sources)
    xmax = max(s.bounds[2] for s in sources)
    ymin = min(s.bounds[1] for s in sources)
    width, height = round((xmax - xmin) / resolution), round((ymax - ymin) / resolution)
    gdal_type = _GDAL_TYPES[dtype]
    nodata_text = "nan" if isinstance(nodata, float) and math.isnan(nodata) else repr(nodata)
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"  <SRS>{escape(CRS.from_epsg(epsg).to_wkt())}</SRS>",
        f"  <GeoTransform>{xmin!r}, {resolution!r}, 0.0, {ymax!r}, 0.0, {-resolution!r}</GeoTransform>",
    ]
    for band in range(1, count + 1):
        lines += [
            f'  <VRTRasterBand dataType="{gdal_type}" band="{band}">',
            f"    <Description>{escape(band_descriptions[band - 1])}</Description>",
            f"    <NoDataValue>{nodata_text}</NoDataValue>",
        ]
        if band == 1 and colormap:
            lines.append("    <ColorInterp>Palette</ColorInterp>")
            lines.append("    <ColorTable>")
            for value in range(max(colormap) + 1):
                r, g, b, a = colormap.get(value, (0, 0, 0, 0))
                lines.append(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>')
            lines.append("    </ColorTable>")
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


def write_mosaics(store: Store, tiles: Sequence[Tile], prods: Mapping[str, RasterProduct]) -> list[str]:
    """One VRT per product and UTM zone over ``tiles``; returns the keys written."""
    keys = []
    for epsg in sorted({t.epsg for t in tiles}):
        zone_tiles = [t for t in tiles if t.epsg == epsg]
        for name, p in prods.items():
            sources = [MosaicSource(f"tiles/{t.tile_id}/{name}.tif", t.bounds) for t in zone_tiles]
            vrt = build_vrt(
                sources,
                epsg=epsg,
                resolution=zone_tiles[0].resolution,
                count=len(p.bands),
                dtype=p.dtype,
                nodata=p.nodata,
                band_descriptions=p.bands,
                colormap=dict(p.colormap) if p.colormap else None,
            )
            key = f"mosaic_{name}_epsg{epsg}.vrt"
            store.put_bytes(vrt.encode(), key)
            keys.append(key)
    return keys
