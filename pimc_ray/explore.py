"""A mapping run's outputs for a person: open a run from its collection, read its mosaics at a bounded number of
pixels, and turn the layers into pictures. The notebooks in ``notebooks/`` are built on it.

- :func:`open_run` opens a run from its ``collection.json`` (or the folder or prefix that holds it), local or
  ``s3://``: the collection, the tiles' STAC items, the class legend and, per product and UTM zone, the mosaic.
- :func:`read_raster` reads a mosaic, or a window of it, with at most ``max_pixels`` pixels per band: a decimated
  read that GDAL serves from the COGs' overviews, never a whole mosaic in memory. :func:`sample_points` reads
  the values under a few lon/lat points.
- :func:`pca_rgb`, :func:`nearest_pixels`, :func:`class_rgba`, :func:`to_web_mercator` and :func:`png_data_uri`
  turn what was read into images: a false-colour view of the embeddings, the pixels nearest to one in embedding
  space, a class map in its legend's colours, an overlay for a web map.

Only :mod:`pimc_ray.storage` is imported from the package, so the module sits beside it, below every layer.
GDAL reads S3 objects through ``/vsis3/`` inside :meth:`Run.gdal_env` (:func:`~pimc_ray.storage.gdal_s3_env`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.errors import InvalidConfigError, StorageError
from pimc_ray.storage import Store, gdal_s3_env, normalize_uri, open_store, split_uri

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_VALUES",
    "FIGURES_ENV",
    "RUN_ENV",
    "ClassInfo",
    "Raster",
    "Run",
    "class_rgba",
    "figures_folder",
    "nearest_pixels",
    "open_run",
    "pca_rgb",
    "png_data_uri",
    "read_raster",
    "run_location",
    "sample_points",
    "to_web_mercator",
]

#: The environment variable naming the run a notebook opens: its ``collection.json``, or the folder or prefix.
RUN_ENV = "PIMC_RUN"
#: The environment variable naming the folder a notebook saves its figures in.
FIGURES_ENV = "PIMC_FIGURES"
#: Pixels per band of one read by default: a 1000 x 1000 picture.
DEFAULT_MAX_PIXELS = 1_000_000
#: Values (pixels x bands) of one read by default: 64 MiB of float32, so a 236-band embedding is read at about
#: 71,000 pixels (266 x 266).
DEFAULT_MAX_VALUES = 2**24

_MOSAIC = re.compile(r"^mosaic_(?P<product>[a-z0-9_]+)_epsg(?P<epsg>\d+)\.(?P<kind>gti\.gpkg|vrt)$")


def run_location(value: str | None = None, *, env: str = RUN_ENV) -> str:
    """The run a notebook opens: ``value`` when given, else the environment variable ``env``.

    Raises:
        InvalidConfigError: neither is set (the message says how to set it).
    """
    text = (value if value is not None else os.environ.get(env, "")).strip()
    if not text:
        raise InvalidConfigError(
            f"no run to open: set {env} to a run's collection.json, local or in a bucket, e.g. "
            f"{env}=s3://pimc-demo/demo/collection.json (with AWS_ENDPOINT_URL and the credentials set, as "
            "`pimc s3 serve --env-file` writes them) or {env}=out/run1/collection.json"
        )
    return text


def figures_folder(value: str | None = None, *, env: str = FIGURES_ENV, default: str = "figures") -> Path:
    """The folder figures are saved in (created): ``value``, else the environment variable ``env``, else
    ``default`` in the current folder."""
    folder = Path(value or os.environ.get(env) or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- a run ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassInfo:
    """One class of a run's class map."""

    value: int
    """The class id in band 1 of ``classes.tif``."""
    name: str
    color: tuple[int, int, int]
    """RGB, 0-255."""


@dataclass(frozen=True)
class Run:
    """A mapping run's outputs, as :func:`open_run` found them."""

    location: str
    """The folder or prefix holding ``collection.json`` (normalised: an absolute path or ``s3://...``)."""
    store: Store
    collection: dict[str, Any] = field(repr=False)
    items: dict[str, dict[str, Any]] = field(repr=False)
    """Each tile's STAC item, by tile id."""
    mosaics: dict[tuple[str, int], str]
    """The key of each mosaic beside the collection, by ``(product, EPSG code)``: the GTI index where GDAL can
    read one (>= 3.9), else the VRT."""

    @property
    def products(self) -> list[str]:
        """The products mapped (``embedding``, ``classes``, ``qa``), in the items' order."""
        first = next(iter(self.items.values()))
        return [k for k, a in first["assets"].items() if "data" in a.get("roles", []) and k != "model"]

    @property
    def zones(self) -> list[int]:
        """EPSG codes of the run's UTM zones, the zone with the most tiles first."""
        counts: dict[int, int] = {}
        for item in self.items.values():
            epsg = int(item["properties"]["proj:code"].split(":")[1])
            counts[epsg] = counts.get(epsg, 0) + 1
        return sorted(counts, key=lambda e: (-counts[e], e))

    def mosaic(self, product: str, epsg: int | None = None) -> str:
        """GDAL's path of the mosaic of ``product`` in zone ``epsg`` (the first of :attr:`zones` when None).

        Raises:
            StorageError: the run has no such mosaic (the message lists those it has).
        """
        zone = self.zones[0] if epsg is None else epsg
        key = self.mosaics.get((product, zone))
        if key is None:
            have = ", ".join(f"{p} in EPSG:{e}" for p, e in sorted(self.mosaics)) or "none"
            raise StorageError(
                f"{self.location} has no mosaic of {product!r} in EPSG:{zone} (it has: {have}); "
                f"`pimc derive {self.location}` rebuilds a run's mosaics from its tiles"
            )
        return self.store.gdal_path(key)

    def band_names(self, product: str) -> list[str]:
        """The band names of ``product`` (``eo:bands`` of the first item): ``NDVI_2022-01-06`` ..., ``rp_00``..."""
        first = next(iter(self.items.values()))
        asset = first["assets"].get(product, {})
        return [str(b.get("name", "")) for b in asset.get("eo:bands", [])]

    def legend(self) -> dict[int, ClassInfo]:
        """The class map's classes (nodata left out), from the items' ``classification:classes``."""
        out: dict[int, ClassInfo] = {}
        for item in self.items.values():
            bands = item["assets"].get("classes", {}).get("raster:bands", [{}])
            for entry in bands[0].get("classification:classes", []):
                if entry.get("nodata") or int(entry["value"]) in out:
                    continue
                hint = str(entry.get("color_hint") or "808080")
                rgb = (int(hint[0:2], 16), int(hint[2:4], 16), int(hint[4:6], 16))
                out[int(entry["value"])] = ClassInfo(
                    int(entry["value"]), entry.get("title", entry["name"]), rgb
                )
        return dict(sorted(out.items()))

    def tile_footprints(self) -> dict[str, Any]:
        """The tiles' lon/lat footprints as a GeoJSON FeatureCollection (tile id, version and CRS as properties)."""
        features = []
        for tile, item in sorted(self.items.items()):
            props = item["properties"]
            features.append(
                {
                    "type": "Feature",
                    "id": tile,
                    "geometry": item["geometry"],
                    "properties": {
                        "tile": tile,
                        "version": props.get("pimc:version"),
                        "crs": props.get("proj:code"),
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}

    @contextmanager
    def gdal_env(self) -> Iterator[None]:
        """GDAL's settings for reading this run's rasters (``/vsis3/`` endpoint and addressing; no listing of
        S3 folders on open)."""
        import rasterio

        with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", **gdal_s3_env()):
            yield


def _gti_readable() -> bool:
    """True when this GDAL reads GTI indexes (3.9 or newer)."""
    import rasterio

    major, minor = (int(v) for v in rasterio.__gdal_version__.split(".")[:2])
    return (major, minor) >= (3, 9)


def open_run(location: str | None = None) -> Run:
    """Open a run from its ``collection.json`` or the folder or prefix that holds it (``location``, else the
    :data:`RUN_ENV` environment variable): a local path, ``file://`` or ``s3://bucket/prefix``.

    Only JSON is read here (the collection, then each tile's item); rasters are read later, a bounded part at a
    time (:func:`read_raster`).

    Raises:
        InvalidConfigError: no location given and :data:`RUN_ENV` unset.
        StorageError: the location cannot be reached or holds no run's ``collection.json``, or the collection
            links no item.
    """
    text = run_location(location)
    uri = normalize_uri(text)
    base = split_uri(uri)[0] if uri.endswith(".json") else uri
    store = open_store(base)
    collection = store.get_json("collection.json")
    if collection is None:
        raise StorageError(
            f"{store.uri('collection.json')} does not exist: {text} is not a mapping run's output (or the run has "
            "not ended yet: `pimc derive` writes the collection of the tiles published so far)"
        )
    items: dict[str, dict[str, Any]] = {}
    for link in collection.get("links", []):
        if link.get("rel") != "item":
            continue
        key = str(link["href"]).removeprefix("./")
        item = store.get_json(key)
        if item is None:
            raise StorageError(f"{store.uri(key)}, an item of the run's collection, does not exist")
        items[item["properties"].get("pimc:tile", key.split("/")[1])] = item
    if not items:
        raise StorageError(f"the collection {store.uri('collection.json')} links no tile item")
    found: dict[tuple[str, int], dict[str, str]] = {}
    for asset in collection.get("assets", {}).values():
        name = str(asset["href"]).removeprefix("./")
        match = _MOSAIC.match(name)
        if match and "mosaic" in asset.get("roles", []):
            found.setdefault((match["product"], int(match["epsg"])), {})[match["kind"]] = name
    prefer = ("gti.gpkg", "vrt") if _gti_readable() else ("vrt",)
    mosaics = {}
    for zone_product, kinds in found.items():
        usable = [kinds[k] for k in prefer if k in kinds]
        if usable:
            mosaics[zone_product] = usable[0]
    return Run(normalize_uri(base), store, collection, items, mosaics)


# --- reading rasters ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raster:
    """Bands read from a raster, with the grid they lie on."""

    data: np.ndarray
    """``(band, y, x)``."""
    transform: Any
    """The affine transform of ``data``'s grid (coarser than the source's after a decimated read)."""
    crs: Any
    """A :class:`rasterio.crs.CRS`."""
    nodata: float | None
    descriptions: tuple[str | None, ...] = ()
    factor: int = 1
    """Source pixels per read pixel along each axis (1: full resolution)."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return int(self.data.shape[1]), int(self.data.shape[2])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in :attr:`crs`."""
        from rasterio.transform import array_bounds

        height, width = self.shape
        west, south, east, north = array_bounds(height, width, self.transform)
        return float(west), float(south), float(east), float(north)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)``: matplotlib's ``imshow(extent=...)``."""
        west, south, east, north = self.bounds
        return west, east, south, north

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` in degrees."""
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(self.crs, "EPSG:4326", *self.bounds, densify_pts=21)
        return float(west), float(south), float(east), float(north)

    def valid(self) -> np.ndarray:
        """``(y, x)`` bool: pixels where every band holds data (not NaN, not the nodata value)."""
        ok = np.ones(self.shape, dtype=bool)
        if np.issubdtype(self.data.dtype, np.floating):
            ok &= np.isfinite(self.data).all(axis=0)
        if self.nodata is not None and not (isinstance(self.nodata, float) and math.isnan(self.nodata)):
            ok &= (self.data != self.nodata).all(axis=0)
        return ok

    def rowcol(self, lon: float, lat: float) -> tuple[int, int] | None:
        """The pixel holding a lon/lat point, None when outside."""
        from rasterio.transform import rowcol
        from rasterio.warp import transform

        xs, ys = transform("EPSG:4326", self.crs, [lon], [lat])
        row, col = rowcol(self.transform, xs[0], ys[0])
        height, width = self.shape
        return (int(row), int(col)) if 0 <= row < height and 0 <= col < width else None

    def lonlat(self, rows: Sequence[int] | np.ndarray, cols: Sequence[int] | np.ndarray) -> np.ndarray:
        """``(N, 2)`` lon/lat of the centres of pixels ``(rows[i], cols[i])``."""
        from rasterio.transform import xy
        from rasterio.warp import transform

        xs, ys = xy(self.transform, np.asarray(rows), np.asarray(cols))
        lons, lats = transform(self.crs, "EPSG:4326", np.atleast_1d(xs), np.atleast_1d(ys))
        return np.column_stack([lons, lats])


def _decimation(height: int, width: int, max_pixels: int) -> int:
    """The smallest integer factor that brings ``height x width`` to at most ``max_pixels`` pixels."""
    if max_pixels < 1:
        raise InvalidConfigError(f"max_pixels must be >= 1, got {max_pixels}")
    factor = max(1, math.ceil(math.sqrt(height * width / max_pixels)))
    while math.ceil(height / factor) * math.ceil(width / factor) > max_pixels:
        factor += 1
    return factor


def read_raster(
    path: str,
    *,
    bands: Sequence[int] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_values: int = DEFAULT_MAX_VALUES,
    factor: int | None = None,
    resampling: str = "nearest",
) -> Raster:
    """Read ``bands`` (1-based; all when None) of a raster, or of the window ``bounds`` of it (in its CRS), with
    at most ``max_pixels`` pixels per band and ``max_values`` values in all.

    Larger areas are read decimated by an integer factor (``out_shape``), which GDAL serves from the COGs'
    overviews when they have one at that level, so memory and bytes read stay bounded whatever the mosaic's
    size. Open it inside :meth:`Run.gdal_env` for ``/vsis3/`` paths.

    Args:
        factor: read decimated by this factor instead of the smallest one within the budgets (to read a
            second product on the grid of a first: ``factor=first.factor``); refused above the budgets.
        resampling: a :class:`rasterio.enums.Resampling` name: ``nearest`` for class ids and counts,
            ``average`` for continuous bands.

    Raises:
        StorageError: GDAL cannot open or read ``path``.
        InvalidConfigError: ``bounds`` miss the raster, a budget below one pixel, or a ``factor`` that reads
            more than the budgets allow.
    """
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.windows import Window, from_bounds

    try:
        with rasterio.open(path) as src:
            indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
            full = Window(0, 0, src.width, src.height)
            if bounds is None:
                window = full
            else:
                window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths()
                try:
                    window = window.intersection(full)
                except rasterio.errors.WindowError as err:
                    raise InvalidConfigError(
                        f"bounds {bounds} miss the raster {path} ({src.bounds})"
                    ) from err
            height, width = int(window.height), int(window.width)
            budget = min(max_pixels, max(1, max_values // max(1, len(indexes))))
            least = _decimation(height, width, budget)
            if factor is None:
                factor = least
            elif factor < least:
                raise InvalidConfigError(
                    f"factor {factor} reads more than {budget} pixels per band of {path}; use {least} or more"
                )
            out_h, out_w = math.ceil(height / factor), math.ceil(width / factor)
            data = src.read(
                indexes,
                window=window,
                out_shape=(len(indexes), out_h, out_w),
                resampling=Resampling[resampling],
            )
            transform = src.window_transform(window) * rasterio.Affine.scale(width / out_w, height / out_h)
            descriptions = tuple(src.descriptions[i - 1] for i in indexes)
            return Raster(data, transform, src.crs, src.nodata, descriptions, factor)
    except RasterioError as err:
        raise StorageError(
            f"GDAL cannot read {path} ({err}); for /vsis3/ paths check AWS_ENDPOINT_URL and the credentials, "
            "and read inside Run.gdal_env()"
        ) from err


def sample_points(
    path: str, lonlat: Sequence[tuple[float, float]] | np.ndarray, *, bands: Sequence[int] | None = None
) -> np.ndarray:
    """``(N, band)`` values of a raster at full resolution under ``N`` lon/lat points (the nodata value, or NaN,
    outside it): a block read per point, however large the raster."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.warp import transform

    points = np.asarray(lonlat, dtype=float).reshape(-1, 2)
    try:
        with rasterio.open(path) as src:
            indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
            xs, ys = transform("EPSG:4326", src.crs, points[:, 0].tolist(), points[:, 1].tolist())
            values = list(src.sample(zip(xs, ys, strict=True), indexes=indexes, masked=False))
    except RasterioError as err:
        raise StorageError(f"GDAL cannot read {path} ({err})") from err
    return np.asarray(values).reshape(len(points), len(indexes))


# --- pictures -----------------------------------------------------------------------------------------------


def pca_rgb(
    embedding: np.ndarray, *, sample: int = 20_000, seed: int = 0, percentiles: tuple[float, float] = (2, 98)
) -> tuple[np.ndarray, np.ndarray]:
    """A false-colour view of embeddings: their first three principal components as red, green and blue.

    Pixels with similar embeddings (similar temporal signatures) share a colour. The components are fit on up
    to ``sample`` valid pixels; each is stretched between its ``percentiles``.

    Args:
        embedding: ``(dim, y, x)`` float; NaN is nodata.

    Returns:
        ``(rgba, components)``: ``(y, x, 4)`` float32 in [0, 1] (alpha 0 on nodata) and the ``(3, dim)``
        principal axes.
    """
    dim, height, width = embedding.shape
    flat = embedding.reshape(dim, -1).T.astype(np.float64)  # (pixel, dim)
    ok = np.isfinite(flat).all(axis=1)
    rgba = np.zeros((height * width, 4), np.float32)
    components = np.zeros((3, dim))
    if ok.sum() >= 2:
        values = flat[ok]
        mean = values.mean(axis=0)
        rng = np.random.default_rng(seed)
        fit = values[rng.choice(len(values), min(sample, len(values)), replace=False)] - mean
        _, _, vt = np.linalg.svd(fit, full_matrices=False)
        components[: min(3, len(vt))] = vt[:3]
        pcs = (values - mean) @ components.T  # (pixel, 3)
        lo, hi = np.percentile(pcs, percentiles, axis=0)
        rgba[ok, :3] = np.clip((pcs - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
        rgba[ok, 3] = 1
    return rgba.reshape(height, width, 4), components


def nearest_pixels(
    embedding: np.ndarray,
    query: np.ndarray,
    *,
    k: int = 10,
    metric: str = "cosine",
    exclude: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` pixels of ``embedding`` nearest to the vector ``query`` in embedding space.

    Args:
        embedding: ``(dim, y, x)`` float; NaN is nodata (never a neighbour).
        query: ``(dim,)``, e.g. one pixel's embedding read at full resolution (:func:`sample_points`).
        metric: ``cosine`` (1 - cosine similarity) or ``euclidean``.
        exclude: a pixel ``(row, col)`` left out (the query's own, to find others).

    Returns:
        ``(rows, cols, distances)``, nearest first (fewer than ``k`` when fewer pixels hold data).

    Raises:
        InvalidConfigError: ``query`` is not a valid ``(dim,)`` vector, or an unknown metric.
    """
    dim, height, width = embedding.shape
    query = np.asarray(query, dtype=np.float64).reshape(-1)
    if query.shape != (dim,) or not np.isfinite(query).all():
        raise InvalidConfigError(
            f"the query must be a finite ({dim},) embedding, got shape {query.shape}: pick a pixel with data"
        )
    flat = embedding.reshape(dim, -1).T.astype(np.float64)  # (pixel, dim)
    ok = np.asarray(np.isfinite(flat).all(axis=1))
    if exclude is not None:
        ok[exclude[0] * width + exclude[1]] = False
    candidates = np.flatnonzero(ok)
    values = flat[candidates]
    if metric == "cosine":
        norms = np.linalg.norm(values, axis=1) * np.linalg.norm(query)
        dist = 1 - (values @ query) / np.where(norms > 0, norms, 1.0)
    elif metric == "euclidean":
        dist = np.linalg.norm(values - query, axis=1)
    else:
        raise InvalidConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    order = np.argsort(dist, kind="stable")[:k]
    rows, cols = np.divmod(candidates[order], width)
    return rows, cols, dist[order]


def class_rgba(classes: np.ndarray, legend: Mapping[int, ClassInfo]) -> np.ndarray:
    """``(y, x, 4)`` uint8 picture of class ids in their legend's colours; 0 (nodata) and ids not in the legend
    are transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for value, info in legend.items():
        lut[value] = (*info.color, 255)
    return lut[np.asarray(classes, dtype=np.uint8)]


def to_web_mercator(raster: Raster, *, resampling: str = "nearest") -> Raster:
    """``raster`` warped to Web Mercator (EPSG:3857) at about its own pixel size: what a web map's image overlay
    stretches between its lon/lat corners."""
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    height, width = raster.shape
    transform, out_w, out_h = calculate_default_transform(
        raster.crs, "EPSG:3857", width, height, *raster.bounds
    )
    nodata = raster.nodata if raster.nodata is not None else 0
    out = np.full((raster.data.shape[0], out_h, out_w), nodata, dtype=raster.data.dtype)
    reproject(
        raster.data,
        out,
        src_transform=raster.transform,
        src_crs=raster.crs,
        src_nodata=nodata,
        dst_transform=transform,
        dst_crs="EPSG:3857",
        dst_nodata=nodata,
        resampling=Resampling[resampling],
    )
    from rasterio.crs import CRS

    return Raster(out, transform, CRS.from_epsg(3857), nodata, raster.descriptions, raster.factor)


def png_data_uri(rgba: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an ``(y, x, 3 or 4)`` picture (uint8, or float in [0, 1]), written
    with GDAL's PNG driver: an image a web page shows with no file or server beside it."""
    import base64
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile

    image = np.asarray(rgba)
    if np.issubdtype(image.dtype, np.floating):
        image = np.round(np.clip(np.nan_to_num(image), 0, 1) * 255)
    image = image.astype(np.uint8)
    height, width, count = image.shape
    profile = {"driver": "PNG", "width": width, "height": height, "count": count, "dtype": "uint8"}
    with warnings.catch_warnings(), rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile() as memory:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture, not a raster
        with memory.open(**profile) as dst:
            dst.write(np.moveaxis(image, -1, 0))
        data = bytes(memory.read())
    return "data:image/png;base64," + base64.b64encode(data).decode()
