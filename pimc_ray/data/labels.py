"""Labels: where each pixel's class comes from (0 = no label), and class-balanced samples of labelled pixels.

Three kinds of label sources, each able to say which class every pixel of a window has:

* :class:`GeoJSONLabels`: points or polygons in a GeoJSON FeatureCollection (lon/lat, RFC 7946) with a class
  property (integer ids, or names that become ids 1, 2, ... in sorted order). A point labels the pixel that holds
  it; a polygon the pixels whose centre lies inside it.
* :class:`RasterLabels`: a label raster (GeoTIFF or anything GDAL reads) with class ids, 0 or its nodata for
  none; read onto each window with nearest-neighbour resampling.
* :class:`StacLabels`: label items of a STAC collection (such as ``pimc-sample-labels``) with a ``labels``
  asset; class names and colours from its ``classification:classes``.

A GeoJSON or a label raster is a local path or a URI (``s3://bucket/labels/fields.geojson``, see
:mod:`pimc_ray.storage`); GDAL reads a raster in S3 through ``/vsis3/``.

:func:`labelled_windows` finds the windows that hold labels; :func:`sample_pixels` and :func:`balanced_sample`
draw class-balanced samples from them. Fitting a head on those samples is :func:`pimc_ray.mapping.heads.fit_head`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from pyproj import Transformer

from pimc_ray.data.aoi import AOI
from pimc_ray.data.stack import read_window, stackstac_ready
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.errors import LabelError, StorageError
from pimc_ray.storage import UriLike, gdal_s3_env, gdal_uri, normalize_uri, read_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "GeoJSONLabels",
    "LabelSource",
    "RasterLabels",
    "StacLabels",
    "balanced_sample",
    "class_legend",
    "labelled_windows",
    "read_labels",
    "sample_pixels",
]


@dataclass(frozen=True)
class GeoJSONLabels:
    """Labelled points or polygons of a GeoJSON file."""

    path: str
    """The file, a local path or a URI."""
    class_property: str = "class"
    geometries: tuple[Any, ...] = field(default=(), repr=False)
    """Shapely geometries in lon/lat (filled by :meth:`load`)."""
    ids: tuple[int, ...] = ()
    names: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: UriLike, *, class_property: str = "class") -> GeoJSONLabels:
        """Read and check the features of a local file or a URI.

        Raises:
            LabelError: unreadable file, a feature without ``class_property`` or geometry, or mixed id types.
        """
        try:
            path = normalize_uri(path)
            doc = json.loads(read_bytes(path))
        except (StorageError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LabelError(f"cannot read labels {path} ({err}); pass a GeoJSON FeatureCollection") from err
        features = doc.get("features") if doc.get("type") == "FeatureCollection" else [doc]
        geometries, values = [], []
        for number, feature in enumerate(features or []):
            props = feature.get("properties") or {}
            if class_property not in props or not feature.get("geometry"):
                raise LabelError(
                    f"feature {number} of {path} has no geometry or no {class_property!r} property; "
                    "pass --class-property with the name of the property that holds the class"
                )
            geometries.append(shapely.geometry.shape(feature["geometry"]))
            values.append(props[class_property])
        if not geometries:
            raise LabelError(f"{path} holds no features")
        if all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 256 for v in values):
            ids, names = [int(v) for v in values], {}
        elif all(isinstance(v, str) for v in values):
            lookup = {name: i for i, name in enumerate(sorted(set(values)), start=1)}
            ids, names = [lookup[v] for v in values], {i: n for n, i in lookup.items()}
        else:
            raise LabelError(
                f"the {class_property!r} values of {path} must all be integer ids in 1..255 or all names, "
                f"got {sorted({repr(v) for v in values})[:5]}"
            )
        return cls(path, class_property, tuple(geometries), tuple(ids), names)

    def area(self) -> AOI:
        """The lon/lat bbox of the features, grown by ~50 m so points on its edge keep their pixel."""
        xmin, ymin, xmax, ymax = shapely.GeometryCollection(list(self.geometries)).bounds
        pad = 0.0005
        return AOI(shapely.geometry.box(xmin - pad, ymin - pad, xmax + pad, ymax + pad))

    def read(self, grid: OutputGrid, window: Window) -> np.ndarray:
        """``(h, w)`` uint8 class ids of a window, 0 where no feature lies."""
        from rasterio.features import rasterize

        to_grid = Transformer.from_crs(4326, grid.epsg, always_xy=True)
        shapes = [
            (shapely.transform(g, to_grid.transform, interleaved=False), cid)
            for g, cid in zip(self.geometries, self.ids, strict=True)
        ]
        out = rasterize(
            shapes,
            out_shape=(window.height, window.width),
            transform=grid.window_transform(window),
            fill=0,
            dtype="uint8",
        )
        return np.asarray(out, dtype=np.uint8)

    def legend(self) -> tuple[dict[int, str], dict[int, str]]:
        return dict(self.names), {}


@dataclass(frozen=True)
class RasterLabels:
    """A label raster: class ids, 0 (or the raster's nodata) for none."""

    path: str
    """The raster, a local path or a URI."""

    def _open(self) -> Any:
        """The raster opened with rasterio (through ``/vsis3/`` for an S3 URI), in a ``with`` block."""
        import rasterio

        return rasterio.open(gdal_uri(self.path))

    def area(self) -> AOI:
        import rasterio
        from rasterio.warp import transform_bounds

        try:
            with rasterio.Env(**gdal_s3_env()), self._open() as src:
                bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        except (rasterio.errors.RasterioIOError, StorageError) as err:
            raise LabelError(f"cannot read the label raster {self.path} ({err})") from err
        return AOI(shapely.geometry.box(*bounds))

    def read(self, grid: OutputGrid, window: Window) -> np.ndarray:
        import rasterio
        from rasterio.warp import Resampling, reproject

        out = np.zeros((window.height, window.width), dtype=np.uint8)
        with rasterio.Env(**gdal_s3_env()), self._open() as src:
            band = src.read(1)
            if src.nodata is not None:
                band = np.where(band == src.nodata, 0, band)
            reproject(
                band.astype(np.uint8),
                out,
                src_transform=src.transform,
                src_crs=src.crs,
                src_nodata=0,
                dst_transform=grid.window_transform(window),
                dst_crs=f"EPSG:{grid.epsg}",
                dst_nodata=0,
                resampling=Resampling.nearest,
            )
        return out

    def legend(self) -> tuple[dict[int, str], dict[int, str]]:
        return {}, {}


@dataclass(frozen=True)
class StacLabels:
    """Label items of a STAC collection whose ``asset`` holds class ids."""

    items: tuple[dict[str, Any], ...]
    asset: str = "labels"

    def read(self, grid: OutputGrid, window: Window) -> np.ndarray:
        return read_labels(list(self.items), grid, window, asset=self.asset)

    def legend(self) -> tuple[dict[int, str], dict[int, str]]:
        """Class names and hex colours from ``classification:classes``."""
        return class_legend(self.items)


def class_legend(label_items: Sequence[Mapping[str, Any]]) -> tuple[dict[int, str], dict[int, str]]:
    """Class names and hex colours from the label items' ``classification:classes``."""
    for item in label_items:
        for asset in item.get("assets", {}).values():
            classes = asset.get("classification:classes") or []
            if classes:
                names = {int(c["value"]): str(c.get("name", c["value"])) for c in classes}
                colors = {int(c["value"]): str(c["color_hint"]) for c in classes if "color_hint" in c}
                return names, colors
    return {}, {}


LabelSource = GeoJSONLabels | RasterLabels | StacLabels


def labelled_windows(
    source: LabelSource, grids: Sequence[OutputGrid], window_size: int
) -> list[tuple[OutputGrid, Window, np.ndarray]]:
    """``(grid, window, labels (h, w))`` of every window holding at least one label (inside the footprint)."""
    out = []
    for grid in grids:
        for window in grid.windows(window_size):
            labels = source.read(grid, window)
            labels[~grid.inside(window)] = 0
            if labels.any():
                out.append((grid, window, labels))
    return out


def read_labels(
    items: Sequence[Mapping[str, Any]], grid: OutputGrid, window: Window, *, asset: str = "labels"
) -> np.ndarray:
    """Ground-truth class ids ``(h, w)`` uint8 (0 = no label) of label items on a window (nearest resampling)."""
    import stackstac

    if not items:
        return np.zeros((window.height, window.width), dtype=np.uint8)
    stack = stackstac.stack(
        stackstac_ready(items),
        assets=[asset],
        epsg=grid.epsg,
        resolution=grid.resolution,
        bounds=window.bounds,
        dtype="uint8",
        fill_value=np.uint8(0),
        rescale=False,
    )
    labels = read_window(stack).values.max(axis=(0, 1)).astype(np.uint8)  # mosaic: 0 is nodata
    labels[~grid.inside(window)] = 0
    return labels


def balanced_sample(
    x: np.ndarray, y: np.ndarray, *, per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` random rows of ``x`` (n, D) per label value of ``y`` (n,), in their original order."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(idx, size=min(per_class, len(idx)), replace=False)
        for idx in (np.flatnonzero(y == c) for c in np.unique(y))
    ]
    pick = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)
    return x[pick], y[pick]


def sample_pixels(
    embedding: np.ndarray, labels: np.ndarray, *, per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` random labelled, valid pixels per class of an embedding block: ``(x (n, D), y (n,))``.

    Args:
        embedding: (D, h, w) embeddings (or any per-pixel features), NaN nodata.
        labels: (h, w) class ids, 0 = unlabelled.
    """
    flat = embedding.reshape(embedding.shape[0], -1).T  # (P, D)
    y = labels.reshape(-1)
    usable = (y > 0) & np.isfinite(flat).all(axis=1)
    return balanced_sample(flat[usable], y[usable], per_class=per_class, seed=seed)
