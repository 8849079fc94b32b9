"""User labels -> a classification head on frozen embeddings (what ``jobs/train_head.py`` runs).

Three kinds of label sources, each able to say which class every pixel of a window has (0 = no label):

* :class:`GeoJSONLabels`: points or polygons in a GeoJSON FeatureCollection (lon/lat, RFC 7946) with a class
  property (integer ids, or names that become ids 1, 2, ... in sorted order). A point labels the pixel that holds
  it; a polygon the pixels whose centre lies inside it.
* :class:`RasterLabels`: a label raster (GeoTIFF or anything GDAL reads) with class ids, 0 or its nodata for
  none; read onto each window with nearest-neighbour resampling.
* :class:`StacLabels`: label items of a STAC collection (such as ``pimc-sample-labels``) with a ``labels``
  asset; class names and colours from its ``classification:classes``.

:func:`fit_head` embeds only the windows that hold labels (on Ray Data actors, or in this process), keeps up to
``per_class`` random labelled pixels per class and window, and fits a
:class:`~pimc_ray.models.heads.LinearClassifier` on a class-balanced draw of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.geometry
from affine import Affine
from pyproj import Transformer

from pimc_ray.aoi import AOI
from pimc_ray.errors import NoItemsFoundError, PimcError
from pimc_ray.series import SeriesSpec
from pimc_ray.tiles import OutputGrid, Window

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class LabelError(PimcError, ValueError):
    """Labels that cannot be used: unreadable, without the class property, or with fewer than two classes."""


def _window_transform(grid: OutputGrid, window: Window) -> Affine:
    return grid.transform * Affine.translation(window.col, window.row)


@dataclass(frozen=True)
class GeoJSONLabels:
    """Labelled points or polygons of a GeoJSON file."""

    path: Path
    class_property: str = "class"
    geometries: tuple[Any, ...] = field(default=(), repr=False)
    """Shapely geometries in lon/lat (filled by :meth:`load`)."""
    ids: tuple[int, ...] = ()
    names: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, *, class_property: str = "class") -> GeoJSONLabels:
        """Read and check the features.

        Raises:
            LabelError: unreadable file, a feature without ``class_property`` or geometry, or mixed id types.
        """
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
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
            transform=_window_transform(grid, window),
            fill=0,
            dtype="uint8",
        )
        return np.asarray(out, dtype=np.uint8)

    def legend(self) -> tuple[dict[int, str], dict[int, str]]:
        return dict(self.names), {}


@dataclass(frozen=True)
class RasterLabels:
    """A label raster: class ids, 0 (or the raster's nodata) for none."""

    path: Path

    def area(self) -> AOI:
        import rasterio
        from rasterio.warp import transform_bounds

        try:
            with rasterio.open(self.path) as src:
                bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        except rasterio.errors.RasterioIOError as err:
            raise LabelError(f"cannot read the label raster {self.path} ({err})") from err
        return AOI(shapely.geometry.box(*bounds))

    def read(self, grid: OutputGrid, window: Window) -> np.ndarray:
        import rasterio
        from rasterio.warp import Resampling, reproject

        out = np.zeros((window.height, window.width), dtype=np.uint8)
        with rasterio.open(self.path) as src:
            band = src.read(1)
            if src.nodata is not None:
                band = np.where(band == src.nodata, 0, band)
            reproject(
                band.astype(np.uint8),
                out,
                src_transform=src.transform,
                src_crs=src.crs,
                src_nodata=0,
                dst_transform=_window_transform(grid, window),
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
        from pimc_ray.infer import read_labels

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


class LabelledSampler:
    """One window -> up to ``per_class`` labelled embeddings per class: ``(x (n, D), y (n,))``.

    Picklable (the encoder is loaded lazily, once per process), so Ray Data actors each build their own.

    Args:
        spec: the series specification (blue, red, NIR on the regular grid).
        items: Sentinel-2 items covering the labelled area.
        encoder: the encoder's configuration.
        checkpoint: its trained weights (None: the seeded random initialisation).
        source: where the labels come from.
        per_class: labelled pixels kept per class and window.
        seed: seed of the pixel draw.
        threads: torch threads of the encoder.
    """

    def __init__(
        self,
        spec: SeriesSpec,
        items: Sequence[Mapping[str, Any]],
        encoder: Any,
        checkpoint: Path | None,
        source: LabelSource,
        per_class: int,
        *,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        self.spec, self.items, self.encoder, self.checkpoint = spec, list(items), encoder, checkpoint
        self.source, self.per_class, self.seed, self.threads = source, per_class, seed, threads
        self._embedder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_embedder": None}  # every process loads its own encoder

    def __call__(self, grid: OutputGrid, window: Window, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from pimc_ray.infer import WindowEmbedder, sample_pixels
        from pimc_ray.models.checkpoint import load_checkpoint
        from pimc_ray.patches import composite_of

        if self._embedder is None:
            meta: dict[str, Any] = {}
            if self.checkpoint is None:
                model = self.encoder.build().eval()
            else:
                model, meta = load_checkpoint(self.checkpoint, expect=self.encoder)
            # an image-patch encoder cuts its patches from the composite it was pretrained on
            self._embedder = WindowEmbedder(
                self.spec, self.items, model, threads=self.threads, composite=composite_of(meta)
            )
        result = self._embedder(grid, window)
        return sample_pixels(result.embedding, labels, per_class=self.per_class, seed=self.seed)


class _SamplerActor:
    """Ray Data UDF: window indices -> samples, with the encoder loaded once per actor."""

    def __init__(
        self, sampler: LabelledSampler, tasks: Sequence[tuple[OutputGrid, Window, np.ndarray]]
    ) -> None:
        self.sampler, self.tasks = sampler, list(tasks)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs, ys = [], []
        for index in batch["task"]:
            x, y = self.sampler(*self.tasks[int(index)])
            xs.append(x.astype(np.float32))
            ys.append(y.astype(np.int64))
        return {"x": np.concatenate(xs), "y": np.concatenate(ys)}


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


def fit_head(
    sampler: LabelledSampler,
    grids: Sequence[OutputGrid],
    *,
    window_size: int = 128,
    workers: int = 0,
    progress: Progress = logger.info,
) -> tuple[Any, dict[str, Any]]:
    """Fit a logistic-regression head on the embeddings of the labelled pixels; returns ``(head, stats)``.

    Raises:
        LabelError: no labelled pixel with a valid embedding, or fewer than two classes.
    """
    from pimc_ray.infer import balanced_sample
    from pimc_ray.models.heads import LinearClassifier

    tasks = labelled_windows(sampler.source, grids, window_size)
    if not tasks:
        raise LabelError(
            "no label falls inside the area; check the labels' CRS (GeoJSON is lon/lat) and --aoi"
        )
    progress(f"[head] {len(tasks)} windows hold labels")
    if workers > 0:
        import ray.data

        ds = ray.data.from_items([{"task": i} for i in range(len(tasks))], override_num_blocks=len(tasks))
        rows = ds.map_batches(
            _SamplerActor,
            fn_constructor_kwargs={"sampler": sampler, "tasks": tasks},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(tasks))),
        ).take_all()
        x = np.array([r["x"] for r in rows], dtype=np.float32).reshape(len(rows), -1)
        y = np.array([r["y"] for r in rows], dtype=np.int64)
    else:
        parts = [sampler(*task) for task in tasks]
        x = np.concatenate([p[0] for p in parts]).astype(np.float32)
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if len(y) == 0:
        raise NoItemsFoundError(
            "no labelled pixel has a valid embedding (too cloudy?); widen the dates or the labels"
        )
    x, y = balanced_sample(x, y, per_class=sampler.per_class, seed=sampler.seed)
    classes = sorted(int(c) for c in np.unique(y))
    if len(classes) < 2:
        raise LabelError(
            f"the labels hold {len(classes)} class(es) with valid pixels; a head needs two or more"
        )
    names, colors = sampler.source.legend()
    progress(f"[head] fitting on {len(y)} labelled pixels of {len(classes)} classes")
    head = LinearClassifier(x.shape[1], classes, {c: names.get(c, str(c)) for c in classes}, colors).fit(x, y)
    pred, _ = head.predict(x)
    counts = {int(c): int((y == c).sum()) for c in classes}
    stats = {"pixels": int(len(y)), "per_class": counts, "train_accuracy": float(np.mean(pred == y))}
    return head, stats
