"""Per-tile outputs of the mapping jobs: products, writers, STAC items, mosaics and the run manifest.

Layout under the output location (a folder or ``s3://bucket/prefix``)::

    manifest.json                  run key, model, snapshot, parameters, and every tile's status
    items.ndjson                   the frozen STAC items the run read
    collection.json                STAC collection of the outputs
    tiles/<tile_id>/<product>.tif  COGs: embedding, classes, qa (see PRODUCTS)
    tiles/<tile_id>/item.json      STAC item of the tile (proj, raster, eo, processing extensions)
    mosaic_<product>_<zone>.vrt    GDAL VRT per product and UTM zone over the finished tiles (at the
                                   root: GDAL's /vsis3/ does not resolve '../' in a source path)
    head/                          the classification head, when there is one

A tile counts as written only when its manifest entry says ``done``: its files are uploaded first, then the
manifest. A rerun skips done tiles and redoes the rest; a run whose model or parameters differ from the
manifest's is refused, so one mosaic never mixes model versions.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely.geometry
from pyproj import Transformer

from pimc_ray import __version__
from pimc_ray.cog import COGWriter
from pimc_ray.errors import OutputExistsError
from pimc_ray.infer import WindowResult, classify
from pimc_ray.mosaic import MosaicSource, build_vrt
from pimc_ray.storage import Store
from pimc_ray.tiles import Tile

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
]


@dataclass(frozen=True)
class Product:
    """One raster product of a tile."""

    name: str
    dtype: str
    nodata: float
    title: str


def products(embed_dim: int, with_classes: bool, with_embedding: bool = True) -> dict[str, Product]:
    """The products a run writes per tile."""
    out = {}
    if with_embedding:
        out["embedding"] = Product(
            "embedding", "float32", float("nan"), f"PIMC embedding ({embed_dim} bands)"
        )
    if with_classes:
        out["classes"] = Product("classes", "uint8", 0, "Land-cover class id and confidence (%)")
    out["qa"] = Product("qa", "uint16", 0, "Cloud-free observations per pixel")
    return out


def band_names(product: str, embed_dim: int) -> list[str]:
    return {
        "embedding": [f"emb_{i:02d}" for i in range(embed_dim)],
        "classes": ["class_id", "confidence_pct"],
        "qa": ["valid_observations"],
    }[product]


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


class TileWriters:
    """The COG writers of one tile, fed window by window, published through a :class:`Store`."""

    def __init__(
        self,
        tile: Tile,
        folder: Path,
        prods: Mapping[str, Product],
        embed_dim: int,
        head: Any,
        tags: Mapping[str, str],
    ) -> None:
        self.tile, self.folder, self.products, self.head = tile, folder, prods, head
        self.embed_dim = embed_dim
        self.windows_done = 0
        self.failures: list[str] = []
        height, width = tile.shape
        self.writers = {
            name: COGWriter(
                folder / f"{name}.tif",
                height=height,
                width=width,
                count=len(band_names(name, embed_dim)),
                dtype=p.dtype,
                transform=tile.transform,
                epsg=tile.epsg,
                nodata=p.nodata,
                band_descriptions=band_names(name, embed_dim),
                tags={**tags, "pimc_tile": tile.tile_id, **self._class_tags(name)},
                colormap=head.colormap() if name == "classes" else None,
            )
            for name, p in prods.items()
        }

    def _class_tags(self, product: str) -> dict[str, str]:
        if product != "classes":
            return {}
        return {"pimc_classes": json.dumps(self.head.class_names), "pimc_confidence": "band 2, percent"}

    def write(self, result: WindowResult) -> int:
        """Write one window; returns its count of valid pixels."""
        w = result.window
        valid = np.isfinite(result.embedding[0])
        if "embedding" in self.writers:
            self.writers["embedding"].write(result.embedding, w.row, w.col)
        if "classes" in self.writers:
            classes, confidence = classify(result.embedding, self.head)
            percent = np.where(valid, np.round(np.nan_to_num(confidence) * 100), 0).astype(np.uint8)
            self.writers["classes"].write(np.stack([classes, percent]), w.row, w.col)
        qa = np.where(valid, result.valid_count, 0).astype(np.uint16)
        self.writers["qa"].write(qa[None], w.row, w.col)
        return int(valid.sum())

    def publish(self, store: Store) -> dict[str, str]:
        """Convert to COGs and upload; returns product -> key."""
        keys = {}
        for name, writer in self.writers.items():
            path = writer.close()
            key = f"tiles/{self.tile.tile_id}/{name}.tif"
            store.put_file(path, key)
            path.unlink()
            keys[name] = key
        return keys

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def _lonlat_footprint(tile: Tile) -> dict[str, Any]:
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    box = shapely.geometry.box(*tile.bounds).segmentize(tile.bounds[2] - tile.bounds[0])
    xs, ys = to_lonlat.transform(*box.exterior.coords.xy)
    return shapely.geometry.mapping(shapely.geometry.Polygon(zip(xs, ys, strict=True)))


def tile_item(
    tile: Tile,
    keys: Mapping[str, str],
    prods: Mapping[str, Product],
    *,
    collection: str,
    embed_dim: int,
    dates: tuple[dt.date, dt.date],
    properties: Mapping[str, Any],
    head: Any = None,
) -> dict[str, Any]:
    """The STAC item of a finished tile (asset hrefs relative to the item, so the tree can move)."""
    geometry = _lonlat_footprint(tile)
    shape = shapely.geometry.shape(geometry)
    height, width = tile.shape
    assets = {}
    for name, key in keys.items():
        p = prods[name]
        names = band_names(name, embed_dim)
        raster_bands = [
            {
                "data_type": p.dtype,
                "nodata": "nan" if p.dtype == "float32" else int(p.nodata),
                "spatial_resolution": tile.resolution,
            }
            for _ in names
        ]
        asset: dict[str, Any] = {
            "href": f"./{Path(key).name}",
            "type": COG_MEDIA_TYPE,
            "title": p.title,
            "roles": ["data"],
            "raster:bands": raster_bands,
            "eo:bands": [{"name": n, "description": n} for n in names],
        }
        if name == "classes" and head is not None:
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
    items: Sequence[Mapping[str, Any]], *, collection: str, description: str
) -> dict[str, Any]:
    """The STAC collection of a run's tile items."""
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
    }


def write_mosaics(
    store: Store, tiles: Sequence[Tile], prods: Mapping[str, Product], embed_dim: int, head: Any
) -> list[str]:
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
                count=len(band_names(name, embed_dim)),
                dtype=p.dtype,
                nodata=p.nodata,
                band_descriptions=band_names(name, embed_dim),
                colormap=head.colormap() if name == "classes" else None,
            )
            key = f"mosaic_{name}_epsg{epsg}.vrt"
            store.put_bytes(vrt.encode(), key)
            keys.append(key)
    return keys


@dataclass
class RunManifest:
    """What a run is (key, model, parameters) and which tiles it has finished."""

    key: str
    model: str
    params: dict[str, Any]
    tiles: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, store: Store) -> RunManifest | None:
        data = store.get_json(MANIFEST)
        if data is None:
            return None
        return cls(data["key"], data["model"], data["params"], data.get("tiles", {}))

    def save(self, store: Store) -> None:
        store.put_json(
            {
                "format": MANIFEST_FORMAT,
                "key": self.key,
                "model": self.model,
                "params": self.params,
                "tiles": self.tiles,
            },
            MANIFEST,
        )

    def done(self) -> set[str]:
        return {t for t, entry in self.tiles.items() if entry.get("status") == "done"}

    def check_same_run(self, key: str, model: str, where: str) -> None:
        """Refuse to add tiles of another model or other parameters to this output."""
        if model != self.model:
            raise OutputExistsError(
                f"{where} holds tiles made with {self.model}, not {model}; one mosaic must not mix model versions: "
                "write to a new --out"
            )
        if key != self.key:
            raise OutputExistsError(
                f"{where} holds a run with other parameters or items (run {self.key}, this one {key}); write to a "
                "new --out, or rerun with the same arguments to resume"
            )

    def mark(self, tile_id: str, status: str, **details: Any) -> None:
        self.tiles[tile_id] = {
            "status": status,
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **details,
        }


def dumps_items(items: Sequence[Mapping[str, Any]]) -> bytes:
    """Items as newline-delimited JSON."""
    return "".join(json.dumps(i, sort_keys=True, separators=(",", ":")) + "\n" for i in items).encode()
