"""STAC metadata of a mapping run's outputs: one item per tile, and the run's collection, built with pystac.

An item carries the projection, raster (with each band's statistics), eo and processing extensions, the file
extension (size and SHA2-256 multihash of each COG, computed where it was written:
:class:`~pimc_ray.io.rasters.RasterFile`), the classification extension on the class map's first band (the
head's class values, names and colours), the code version and the run's ``pimc:*`` properties. A run whose
encoder has trained weights also carries the machine-learning-model (mlm) extension: the encoder's name,
architecture, inputs and embedding size, and its weights as the ``model`` asset with their hash
(:class:`ModelCard`; a random initialisation has no weights file to point at, and its items say so in
``pimc:model`` only). The tile's quicklooks are ``thumbnail`` assets (PNG, their own ``proj:shape`` and
``proj:transform``, file size and checksum; a class quicklook carries its classes as its legend). Asset hrefs are
relative to the item, so a run's tree can be moved or copied as a whole.

The collection derives from the items alone (:func:`~pimc_ray.mapping.maps.derive_run` rebuilds it from them):
their extent, ``item_assets`` describing every product, the licence link, the mosaics and the run's quicklooks as
assets, and the encoder's mlm fields and ``model`` asset.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import shapely.geometry
from affine import Affine
from pyproj import Transformer
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension, Statistics
from pystac.utils import str_to_datetime

from pimc_ray import __version__
from pimc_ray.data.tiles import Tile
from pimc_ray.io.quicklooks import PNG_MEDIA_TYPE, Quicklook, decimation
from pimc_ray.io.rasters import BandStatistics, RasterFile, RasterProduct
from pimc_ray.storage import COG_MEDIA_TYPE, content_type

__all__ = [
    "EXTENSIONS",
    "LICENSE_LINK",
    "MLM",
    "PROCESSING",
    "ModelCard",
    "code_version",
    "output_collection",
    "slim_item",
    "tile_item",
]

#: The processing extension (no pystac class: its fields are written as properties).
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
#: The machine-learning-model extension (no pystac class: its fields are written as properties).
MLM = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
#: The extensions every tile item declares; file, classification and mlm come with their fields.
EXTENSIONS = [
    ProjectionExtension.get_schema_uri(),
    RasterExtension.get_schema_uri(),
    EOExtension.get_schema_uri(),
    PROCESSING,
]
#: The maps derive from Copernicus Sentinel-2 data, whose legal notice asks derived products to say so: the
#: collection's licence is ``other``, with this link (as Earth Search's Sentinel-2 collections have it).
LICENSE_LINK = {
    "rel": "license",
    "href": "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice",
    "title": "Contains modified Copernicus Sentinel data: the Sentinel data legal notice",
}
#: Key of the encoder's weights among the assets of items and of the collection.
MODEL_ASSET = "model"
#: What an mlm name may be (the extension's pattern).
_MLM_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.\-\s]+[a-zA-Z0-9]$")
#: A semantic version, as ``mlm:framework_version`` must be.
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
#: What a classification class name may be (the extension's pattern).
_CLASS_NAME = re.compile(r"[^0-9A-Za-z_-]+")


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


@dataclass(frozen=True)
class ModelCard:
    """The encoder a run maps with, as the STAC machine-learning-model (mlm) extension describes it."""

    name: str
    """``mlm:name``: the encoder's registry name (``rp-resnet``)."""
    architecture: str
    """``mlm:architecture``: the encoder with its parts (``pimc-concat(index-series, rp-resnet)``)."""
    weights: str
    """URI of the weights file (``s3://.../model.safetensors``, ``file:///.../model.safetensors``)."""
    weights_sha256: str
    """Hex SHA-256 of the weights file (as the checkpoint's ``config.json`` has it)."""
    embedding_size: int
    """Dimensions of the embedding it outputs per pixel."""
    inputs: tuple[Mapping[str, Any], ...]
    """``mlm:input``: one Model Input Object per input tensor (name, input shape, dim order, data type)."""
    tasks: tuple[str, ...] = ("similarity-search",)
    """``mlm:tasks`` of the embedding: an embedding model's nearest in the extension's list."""
    framework_version: str | None = None
    """The PyTorch version it ran with (its ``X.Y.Z`` part is kept: the extension wants a semantic version)."""
    total_parameters: int | None = None
    artifact_type: str = "safetensors.torch.save_file"
    """How the weights were written (``mlm:artifact_type``)."""

    def __post_init__(self) -> None:
        if not _MLM_NAME.match(self.name):
            raise ValueError(f"mlm:name {self.name!r} must match {_MLM_NAME.pattern}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.weights_sha256):
            raise ValueError(f"weights_sha256 must be 64 hex digits, got {self.weights_sha256!r}")
        if not self.inputs or self.embedding_size < 1:
            raise ValueError("a model card needs its inputs and a positive embedding size")

    def properties(self) -> dict[str, Any]:
        """The ``mlm:*`` fields of an item's properties (and of the collection)."""
        out: dict[str, Any] = {
            "mlm:name": self.name,
            "mlm:architecture": self.architecture,
            "mlm:tasks": list(self.tasks),
            "mlm:framework": "PyTorch",
            "mlm:input": [dict(i) for i in self.inputs],
            "mlm:output": [
                {
                    "name": "embedding",
                    "description": f"{self.embedding_size}-d embedding per pixel: the bands of the embedding asset",
                    "tasks": list(self.tasks),
                    "result": {
                        "shape": [-1, self.embedding_size],
                        "dim_order": ["batch", "embedding"],
                        "data_type": "float32",
                    },
                }
            ],
        }
        version = _SEMVER.match(self.framework_version or "")
        if version:
            out["mlm:framework_version"] = version.group(0)
        if self.total_parameters is not None:
            out["mlm:total_parameters"] = self.total_parameters
        return out

    def asset(self) -> pystac.Asset:
        """The weights as the ``model`` asset (``mlm:model`` role, artifact type, ``file:checksum``)."""
        return pystac.Asset(
            self.weights,
            title="Encoder weights",
            media_type="application/octet-stream",
            roles=["mlm:model", "mlm:weights"],
            extra_fields={
                "mlm:artifact_type": self.artifact_type,
                "file:checksum": "1220" + self.weights_sha256,
            },
        )


def _lonlat_footprint(tile: Tile) -> dict[str, Any]:
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    box = shapely.geometry.box(*tile.bounds).segmentize(tile.bounds[2] - tile.bounds[0])
    xs, ys = to_lonlat.transform(*box.exterior.coords.xy)
    return shapely.geometry.mapping(shapely.geometry.Polygon(zip(xs, ys, strict=True)))


def _statistics(stats: BandStatistics) -> Statistics:
    return Statistics.create(
        minimum=stats.minimum,
        maximum=stats.maximum,
        mean=stats.mean,
        stddev=stats.stddev,
        valid_percent=stats.valid_percent,
    )


def _classes(product: RasterProduct) -> list[Classification]:
    """The class map's classes (the head's ids, names and colours, as its COG's tags and colour map have them),
    0 as nodata first; names are made to fit the extension's pattern, the head's own name is kept as title."""
    names = {int(k): str(v) for k, v in json.loads(product.tags.get("pimc_classes", "{}")).items()}
    colormap = dict(product.colormap or {})
    out = [Classification.create(value=0, name="nodata", description="no valid observation")]
    out[0].properties["nodata"] = True
    # the classes the head predicts; its colour map may hold more (the whole legend of its labels)
    for value in sorted(names or {v for v in colormap if v != 0}):
        title = names.get(value, f"class {value}")
        name = _CLASS_NAME.sub("_", title).strip("_") or f"class_{value}"
        rgb = colormap.get(value)
        out.append(
            Classification.create(
                value=value,
                name=name,
                title=title,
                color_hint=None if rgb is None else "".join(f"{c:02X}" for c in rgb[:3]),
            )
        )
    return out


def _asset(
    item: pystac.Item, key: str, href: str, product: RasterProduct, tile: Tile, file: RasterFile | None
) -> None:
    """Add ``product``'s COG to ``item`` as asset ``key`` with its raster, eo, file and classification fields."""
    asset = pystac.Asset(href, title=product.title, media_type=COG_MEDIA_TYPE, roles=["data"])
    if key == "classes":
        asset.description = "band 1: class id; band 2: confidence of the predicted class in percent"
    item.add_asset(key, asset)
    bands = []
    for i, _ in enumerate(product.bands):
        band = RasterBand.create(
            data_type=DataType(product.dtype),
            nodata=NoDataStrings.NAN if np.isnan(product.nodata) else int(product.nodata),
            spatial_resolution=tile.resolution,
            statistics=None if file is None else _statistics(file.statistics[i]),
        )
        if i == 0 and "pimc_classes" in product.tags:
            ClassificationExtension.ext(band).apply(classes=_classes(product))
            ClassificationExtension.add_to(item)
        bands.append(band)
    RasterExtension.ext(asset, add_if_missing=True).apply(bands=bands)
    EOExtension.ext(asset, add_if_missing=True).apply(
        bands=[Band.create(n, description=n) for n in product.bands]
    )
    if file is not None:
        FileExtension.ext(asset, add_if_missing=True).apply(size=file.size, checksum=file.checksum)


def _thumbnail(
    item: pystac.Item,
    key: str,
    href: str,
    quicklook: Quicklook,
    product: RasterProduct,
    tile: Tile,
    file: RasterFile | None,
) -> None:
    """Add a quicklook PNG of ``product`` to ``item`` as asset ``key``: its grid (the tile's, every ``step``-th
    pixel), size and checksum, and for a class quicklook the classes its pixel values are."""
    asset = pystac.Asset(
        href,
        title=f"Quicklook: {product.title}",
        description=quicklook.description,
        media_type=PNG_MEDIA_TYPE,
        roles=["thumbnail"],
    )
    item.add_asset(key, asset)
    height, width = tile.shape
    step = decimation(height, width, quicklook.max_size)
    proj = ProjectionExtension.ext(asset)
    proj.shape = [-(-height // step), -(-width // step)]
    proj.transform = list(tile.transform * Affine.scale(step))[:6]
    if quicklook.colormap is not None and "pimc_classes" in product.tags:
        classes = _classes(replace(product, colormap=quicklook.colormap))
        ClassificationExtension.ext(asset, add_if_missing=True).apply(classes=classes)
    if file is not None:
        FileExtension.ext(asset, add_if_missing=True).apply(size=file.size, checksum=file.checksum)


def tile_item(
    tile: Tile,
    keys: Mapping[str, str],
    prods: Mapping[str, RasterProduct],
    *,
    collection: str,
    dates: tuple[dt.date, dt.date],
    properties: Mapping[str, Any],
    files: Mapping[str, RasterFile] | None = None,
    model: ModelCard | None = None,
    quicklooks: Mapping[str, Quicklook] | None = None,
) -> dict[str, Any]:
    """The STAC item of a finished tile, at ``tiles/<tile>/item.json``; ``keys`` (product or quicklook -> key)
    are below ``tiles/<tile>/`` (asset hrefs relative to the item, so the tree can move).

    Args:
        files: each product's and quicklook's published file (size, checksum, band statistics): the file
            extension and the ``statistics`` of ``raster:bands``.
        model: the encoder, for the mlm extension (None: a random initialisation, which has no weights file).
        quicklooks: the tile's quicklooks, by asset key (``thumbnail``...): PNGs of products, in ``keys`` too.
    """
    geometry = _lonlat_footprint(tile)
    shape = shapely.geometry.shape(geometry)
    height, width = tile.shape
    item = pystac.Item(
        f"{collection}-{tile.tile_id}",
        geometry,
        list(shape.bounds),
        None,
        {
            "start_datetime": f"{dates[0].isoformat()}T00:00:00Z",
            "end_datetime": f"{dates[1].isoformat()}T23:59:59Z",
        },
        stac_extensions=list(EXTENSIONS),
        collection=collection,
    )
    ProjectionExtension.ext(item).apply(
        code=f"EPSG:{tile.epsg}",
        bbox=list(tile.bounds),
        shape=[height, width],
        transform=list(tile.transform)[:6],
    )
    for name, key in keys.items():
        href = "./" + key.removeprefix(f"tiles/{tile.tile_id}/")
        file = None if files is None else files[name]
        if name in prods:
            _asset(item, name, href, prods[name], tile, file)
        else:
            quicklook = (quicklooks or {})[name]
            _thumbnail(item, name, href, quicklook, prods[quicklook.product], tile, file)
    if model is not None:
        item.add_asset(MODEL_ASSET, model.asset())
        FileExtension.add_to(item)
        item.stac_extensions.append(MLM)
        item.properties.update(model.properties())
    item.properties.update(
        {
            "processing:software": {"pimc-ray": code_version()},
            "processing:lineage": "Sentinel-2 L2A -> regular-grid NDVI/EVI/SAVI -> recurrence plots -> PIMC encoder",
            "pimc:tile": tile.tile_id,
            **properties,
        }
    )
    for rel in ("collection", "parent", "root"):
        item.add_link(pystac.Link(rel, "../../collection.json", media_type=pystac.MediaType.JSON))
    return item.to_dict(include_self_link=False, transform_hrefs=False)


#: What the run-level outputs read of every tile's item but the first (:func:`slim_item`): the collection's extent
#: and links, the tiles' grids (:func:`~pimc_ray.mapping.maps.derive_run`) and where their quicklooks lie.
_SLIM_PROPERTIES = ("start_datetime", "end_datetime", "pimc:tile", "proj:code", "proj:bbox", "proj:transform")


def slim_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A tile's item cut to what :func:`output_collection` and
    :func:`~pimc_ray.io.quicklooks.write_run_quicklooks` read of every item but the first (bbox, dates, tile id
    and grid, and each quicklook's href and grid): about 0.5 kB instead of tens, so a run of 100,000 tiles holds
    them all in the driver."""
    props = item["properties"]
    thumbnails = {
        key: {k: v for k, v in asset.items() if k in ("href", "roles", "proj:transform")}
        for key, asset in item.get("assets", {}).items()
        if "thumbnail" in asset.get("roles", ())
    }
    return {
        "bbox": item["bbox"],
        "properties": {k: props[k] for k in _SLIM_PROPERTIES if k in props},
        "assets": thumbnails,
    }


def output_collection(
    items: Sequence[Mapping[str, Any]],
    *,
    collection: str,
    description: str,
    mosaics: Sequence[str] = (),
    assets: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The STAC collection of a run's tile items; ``mosaics`` (keys beside the collection) become its assets,
    so a user finds the mosaics of a run from its collection, and so do ``assets`` (key -> STAC asset: the run's
    quicklooks, :func:`~pimc_ray.io.quicklooks.write_run_quicklooks`).

    ``items`` after the first may be slim (:func:`slim_item`): the first is read whole. It describes every
    product of the items in ``item_assets`` (their fields less what differs per file:
    href, size, checksum, statistics), links the licence, and with an mlm encoder carries its fields (as
    pystac's mlm extension keeps them on a collection: beside its other fields) and its ``model`` asset.
    No summaries: with the mlm extension declared (v1.5.2) every summary must be an object, which the
    usual lists of values (``proj:code``) are not.
    """
    bboxes = np.array([i["bbox"] for i in items])
    start = min(i["properties"]["start_datetime"] for i in items)
    end = max(i["properties"]["end_datetime"] for i in items)
    first = items[0]
    product_keys = [k for k in first["assets"] if k != MODEL_ASSET]
    mlm = {k: v for k, v in first["properties"].items() if k.startswith("mlm:")}
    uses = {*first.get("stac_extensions", [])}
    wanted = [
        RasterExtension.get_schema_uri(),
        EOExtension.get_schema_uri(),
        ClassificationExtension.get_schema_uri(),
    ]
    if mlm:
        wanted += [FileExtension.get_schema_uri(), MLM]
    if any(k.startswith("proj:") for a in (assets or {}).values() for k in a):  # the quicklooks' grids
        wanted.append(ProjectionExtension.get_schema_uri())
    out = pystac.Collection(
        collection,
        description,
        pystac.Extent(
            pystac.SpatialExtent(
                [[*bboxes[:, :2].min(axis=0).tolist(), *bboxes[:, 2:].max(axis=0).tolist()]]
            ),
            pystac.TemporalExtent([[str_to_datetime(start), str_to_datetime(end)]]),
        ),
        license="other",
        stac_extensions=[u for u in wanted if u in uses],
    )
    out.item_assets = {k: _item_asset(first["assets"][k]) for k in product_keys}
    out.extra_fields.update(mlm)
    if mlm and MODEL_ASSET in first["assets"]:
        out.add_asset(MODEL_ASSET, pystac.Asset.from_dict(first["assets"][MODEL_ASSET]))
    for key in mosaics:
        out.add_asset(_mosaic_asset_key(key), _mosaic_asset(key))
    for key, asset in (assets or {}).items():
        out.add_asset(key, pystac.Asset.from_dict(dict(asset)))
    out.add_link(pystac.Link("root", "./collection.json", media_type=pystac.MediaType.JSON))
    for i in items:
        href = f"./tiles/{i['properties']['pimc:tile']}/item.json"
        out.add_link(pystac.Link("item", href, media_type=pystac.MediaType.GEOJSON))
    out.add_link(pystac.Link.from_dict(LICENSE_LINK))
    return out.to_dict(include_self_link=False, transform_hrefs=False)


def _item_asset(asset: Mapping[str, Any]) -> dict[str, Any]:
    """An item's asset as an item asset definition: without what differs between items' files (and a
    quicklook's grid, which is each tile's)."""
    out = {k: v for k, v in asset.items() if k not in ("href", "file:size", "file:checksum")}
    out = {k: v for k, v in out.items() if not k.startswith("proj:")}
    if "raster:bands" in out:
        out["raster:bands"] = [{k: v for k, v in b.items() if k != "statistics"} for b in out["raster:bands"]]
    return out


def _mosaic_asset_key(key: str) -> str:
    """``mosaic_embedding_epsg32632.gti.gpkg`` -> ``mosaic_embedding_epsg32632_gti``."""
    name = Path(key).name
    stem, _, suffixes = name.partition(".")
    return f"{stem}_{suffixes.split('.')[0]}"


def _mosaic_asset(key: str) -> pystac.Asset:
    kind = "GDAL tile index (GTI)" if ".gti." in key else "GDAL VRT"
    return pystac.Asset(
        f"./{key}",
        title=f"{kind} mosaic over the run's tiles",
        media_type=content_type(key),
        roles=["data", "mosaic"],
    )
