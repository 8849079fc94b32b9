"""STAC metadata of a mapping run's outputs: one item per tile, and the run's collection.

Items carry the projection, raster, eo and processing extensions, the code version and the run's
``pimc:*`` properties; asset hrefs are relative to the item, so a run's tree can be moved or copied as a whole.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely.geometry
from pyproj import Transformer

from pimc_ray import __version__
from pimc_ray.data.tiles import Tile
from pimc_ray.io.rasters import RasterProduct
from pimc_ray.storage import COG_MEDIA_TYPE, content_type

__all__ = ["EXTENSIONS", "code_version", "output_collection", "tile_item"]

EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
]


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}"


def _lonlat_footprint(tile: Tile) -> dict[str, Any]:
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    box = shapely.geometry.box(*tile.bounds).segmentize(tile.bounds[2] - tile.bounds[0])
    xs, ys = to_lonlat.transform(*box.exterior.coords.xy)
    return shapely.geometry.mapping(shapely.geometry.Polygon(zip(xs, ys, strict=True)))


def tile_item(
    tile: Tile,
    keys: Mapping[str, str],
    prods: Mapping[str, RasterProduct],
    *,
    collection: str,
    dates: tuple[dt.date, dt.date],
    properties: Mapping[str, Any],
) -> dict[str, Any]:
    """The STAC item of a finished tile, at ``tiles/<tile>/item.json``; ``keys`` (product -> key) are below
    ``tiles/<tile>/`` (asset hrefs relative to the item, so the tree can move)."""
    geometry = _lonlat_footprint(tile)
    shape = shapely.geometry.shape(geometry)
    height, width = tile.shape
    assets = {}
    for name, key in keys.items():
        p = prods[name]
        names = p.bands
        raster_bands = [
            {
                "data_type": p.dtype,
                "nodata": "nan" if p.dtype == "float32" else int(p.nodata),
                "spatial_resolution": tile.resolution,
            }
            for _ in names
        ]
        asset: dict[str, Any] = {
            "href": "./" + key.removeprefix(f"tiles/{tile.tile_id}/"),
            "type": COG_MEDIA_TYPE,
            "title": p.title,
            "roles": ["data"],
            "raster:bands": raster_bands,
            "eo:bands": [{"name": n, "description": n} for n in names],
        }
        if name == "classes":
            asset["description"] = "band 1: class id; band 2: confidence of the predicted class in percent"
        assets[name] = asset
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": EXTENSIONS,
        "id": f"{collection}-{tile.tile_id}",
        "collection": collection,
        "geometry": geometry,
        "bbox": list(shape.bounds),
        "properties": {
            "datetime": None,
            "start_datetime": f"{dates[0].isoformat()}T00:00:00Z",
            "end_datetime": f"{dates[1].isoformat()}T23:59:59Z",
            "proj:code": f"EPSG:{tile.epsg}",
            "proj:bbox": list(tile.bounds),
            "proj:shape": [height, width],
            "proj:transform": list(tile.transform)[:6],
            "processing:software": {"pimc-ray": code_version()},
            "processing:lineage": "Sentinel-2 L2A -> regular-grid NDVI/EVI/SAVI -> recurrence plots -> PIMC encoder",
            "pimc:tile": tile.tile_id,
            **properties,
        },
        "assets": assets,
        "links": [
            {"rel": "collection", "href": "../../collection.json", "type": "application/json"},
            {"rel": "parent", "href": "../../collection.json", "type": "application/json"},
            {"rel": "root", "href": "../../collection.json", "type": "application/json"},
        ],
    }


def output_collection(
    items: Sequence[Mapping[str, Any]],
    *,
    collection: str,
    description: str,
    mosaics: Sequence[str] = (),
) -> dict[str, Any]:
    """The STAC collection of a run's tile items; ``mosaics`` (keys beside the collection) become its assets,
    so a user finds the mosaics of a run from its collection."""
    bboxes = np.array([i["bbox"] for i in items])
    start = min(i["properties"]["start_datetime"] for i in items)
    end = max(i["properties"]["end_datetime"] for i in items)
    links = [{"rel": "root", "href": "./collection.json", "type": "application/json"}]
    links += [
        {
            "rel": "item",
            "href": f"./tiles/{i['properties']['pimc:tile']}/item.json",
            "type": "application/geo+json",
        }
        for i in items
    ]
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection,
        "description": description,
        "license": "other",
        "extent": {
            "spatial": {"bbox": [[*bboxes[:, :2].min(axis=0).tolist(), *bboxes[:, 2:].max(axis=0).tolist()]]},
            "temporal": {"interval": [[start, end]]},
        },
        "links": links,
        **({"assets": {_mosaic_asset_key(key): _mosaic_asset(key) for key in mosaics}} if mosaics else {}),
    }


def _mosaic_asset_key(key: str) -> str:
    """``mosaic_embedding_epsg32632.gti.gpkg`` -> ``mosaic_embedding_epsg32632_gti``."""
    name = Path(key).name
    stem, _, suffixes = name.partition(".")
    return f"{stem}_{suffixes.split('.')[0]}"


def _mosaic_asset(key: str) -> dict[str, Any]:
    kind = "GDAL tile index (GTI)" if ".gti." in key else "GDAL VRT"
    return {
        "href": f"./{key}",
        "type": content_type(key),
        "title": f"{kind} mosaic over the run's tiles",
        "roles": ["data", "mosaic"],
    }
