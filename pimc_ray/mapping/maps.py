"""AOI -> per-tile embedding and classification COGs on a tile grid, to a folder or a bucket, resumable.

:func:`map_aoi` is what ``jobs/embed_aoi.py`` and ``jobs/classify_aoi.py`` run:

1. items: a frozen snapshot, or a STAC search (then frozen into the output);
2. the tiles of a :class:`~pimc_ray.data.tiles.TileGrid` the AOI touches, and their windows;
3. the output checked (:func:`prepare_run`): a run key (items, model weights, parameters) other than the
   manifest's (:class:`~pimc_ray.io.manifest.RunManifest`) is refused; with ``update`` (``--update``,
   ``pimc run execute``) only another layout is (name, area, tiles, products), and each tile is keyed by its own
   inputs (:mod:`pimc_ray.mapping.updates`): finished tiles are skipped, and with ``update`` so are unchanged ones,
   while changed ones get a new version;
4. the head: loaded (``--head``), or fit on labels of a held-out area (:func:`pimc_ray.mapping.heads.fit_head`);
5. the tiles on worker actors (:func:`pimc_ray.mapping.runner.run_groups`): a worker reads a tile's windows (read
   threads ahead of the encoder), embeds them, writes the tile's COGs and publishes them, its STAC item and its
   status object itself (:class:`TilePublisher`, :class:`TileWriter`), and draws the tile's quicklooks as its
   blocks arrive (:mod:`pimc_ray.io.quicklooks`: the embedding in false colour from a PCA basis the driver fit
   once on a sample, :func:`quicklook_basis`; the classes in the head's colours); the driver gets one small
   :class:`TileRecord` per tile. For an image-patch encoder every window is read grown by the encoder's halo
   (:func:`pimc_ray.mapping.embedder.series_reader`), so pixels at tile edges get the same context as interiors;
6. derived from the published tiles at the end: the manifest, the collection, the mosaics and the run's
   quicklooks (composed from the tiles').

Layout under the output location (a folder or ``s3://bucket/prefix``)::

    manifest.json                  run key, model, parameters (at the start), and every tile's status (at the end)
    status/<tile_id>.json          a tile's status, written when it is published or fails (what a rerun reads):
                                   its version, its inputs and their key, its files
    items.ndjson                   the frozen STAC items the run read
    collection.json                STAC collection of the outputs
    tiles/<tile_id>/v<N>/<product>.tif  COGs of the tile's version N: embedding, classes, forecast, qa
                                   (see :func:`tile_products`); a rerun in place writes version N+1 beside them
    tiles/<tile_id>/v<N>/quicklook.png, quicklook_classes.png
                                   the version's quicklooks, at most 512 px a side (:func:`tile_quicklooks`)
    tiles/<tile_id>/item.json      STAC item of the tile's current version (proj, raster with statistics, eo,
                                   processing, file and classification extensions, mlm for trained weights;
                                   ``pimc:version``, ``pimc:inputs``; see :mod:`pimc_ray.io.stac_items`)
    mosaic_<product>_<zone>.vrt    GDAL VRT per product and UTM zone over the finished tiles (at the root:
                                   GDAL's /vsis3/ does not resolve '../' in a source path)
    quicklook.png, quicklook_classes.png, quicklook_classes_legend.svg
                                   the run's quicklooks (at most 1024 px a side) and the classes' legend
    head/                          the classification head, when one was fit
    quicklook/pca.json             the PCA basis of the embedding's quicklooks (kept while the model and
                                   parameters are, so that tiles mapped by later reruns get the same colours)

Failed windows fail their tile, not the run: failed tiles are listed at the end and the job exits with code 3
(:class:`~pimc_ray.errors.TilesFailedError`); rerunning redoes only them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import shapely.geometry

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.labels import StacLabels
from pimc_ray.data.stac import Item, dumps_ndjson, search_items
from pimc_ray.data.tiles import OutputGrid, Tile, TileGrid, Window, ZoneTiles
from pimc_ray.errors import (
    AllCloudError,
    InvalidConfigError,
    OutputExistsError,
    PimcError,
    StorageError,
    TilesFailedError,
)
from pimc_ray.io.manifest import STATUS, RunManifest, publish_status, status_entry
from pimc_ray.io.mosaic import write_mosaics
from pimc_ray.io.quicklooks import PcaBasis, Quicklook, class_palette, write_run_quicklooks
from pimc_ray.io.rasters import RasterProduct, RasterSet
from pimc_ray.io.stac_items import ModelCard, output_collection, slim_item, tile_item
from pimc_ray.kernels.indices import INDEX_NAMES
from pimc_ray.mapping.embedder import EmbedderFactory, WindowResult, embedding_bands, read_plan, series_reader
from pimc_ray.mapping.forecast import check_forecaster, forecast, forecast_bands
from pimc_ray.mapping.heads import classify, fit_head, load_head, save_head
from pimc_ray.mapping.requests import MapRequest, digest
from pimc_ray.mapping.runner import GridWindows, GroupFailure, WindowFailure, run_groups
from pimc_ray.mapping.updates import TileInputs, superseded_files, tile_folder, tile_inputs, to_map
from pimc_ray.models.checkpoint import WEIGHTS, sha256_file
from pimc_ray.models.encoders import parts
from pimc_ray.models.heads import HEAD_WEIGHTS, Head, LinearClassifier, LinearForecaster
from pimc_ray.progress import Meter, Progress
from pimc_ray.scratch import scratch_dir
from pimc_ray.storage import Store, gdal_s3_env, is_local, join_uri, normalize_location, open_store

logger = logging.getLogger(__name__)

__all__ = [
    "MapRun",
    "MapSummary",
    "RunMonitor",
    "TilePublisher",
    "TileRecord",
    "TileWriter",
    "derive_run",
    "dry_run",
    "embedder_factory",
    "map_aoi",
    "prepare_run",
    "quicklook_basis",
    "run_items",
    "tile_products",
    "tile_quicklooks",
    "write_run_products",
]

#: Where a run keeps the head it fit (``--head-train-aoi``), so that a resumed run maps with the same one.
_HEAD_PREFIX = "head"
#: Where a run keeps the PCA basis of its embedding quicklooks, so that a resumed run draws with the same one.
_QUICKLOOK_BASIS = "quicklook/pca.json"
#: Each quicklook of a tile: its STAC asset key and its file's name in the tile's version folder (the run's
#: quicklooks take the same names at the output's root).
QUICKLOOK_FILES = {"thumbnail": "quicklook.png", "thumbnail_classes": "quicklook_classes.png"}


@dataclass(frozen=True)
class MapSummary:
    """What a mapping run did."""

    out: str
    tiles_total: int
    tiles_written: int
    tiles_skipped: int
    pixels: int
    """Valid pixels written by this run."""
    keys: list[str]
    """Keys (relative paths) of everything this run wrote."""


def embedder_factory(request: MapRequest) -> EmbedderFactory:
    """The compute stage of a mapping request: its encoder, batch size, threads and device."""
    p = request.parallel
    return EmbedderFactory(
        request.spec, request.encoder, request.batch_size, p.torch_threads, p.device, request.precision
    )


def tile_products(
    bands: Sequence[str],
    head: Head | None,
    *,
    with_embedding: bool = True,
    forecast: Sequence[str] = (),
) -> dict[str, RasterProduct]:
    """The products a run writes per tile: the embedding (unless a classification-only run; one band per
    dimension, described by ``bands``, see :func:`~pimc_ray.mapping.embedder.embedding_bands`), the classes
    (with a head), the index forecast (with a forecast head: one band per index and date, described by
    ``forecast``, see :func:`~pimc_ray.mapping.forecast.forecast_bands`) and the QA."""
    out = {}
    if with_embedding:
        out["embedding"] = RasterProduct(
            "embedding", "float32", float("nan"), tuple(bands), f"PIMC embedding ({len(bands)} bands)"
        )
    if head is not None:
        tags = {"pimc_classes": json.dumps(head.class_names), "pimc_confidence": "band 2, percent"}
        out["classes"] = RasterProduct(
            "classes",
            "uint8",
            0,
            ("class_id", "confidence_pct"),
            "Land-cover class id and confidence (%)",
            tags=tags,
            colormap=head.colormap(),
        )
    if forecast:
        steps = len(forecast) // len(INDEX_NAMES)
        out["forecast"] = RasterProduct(
            "forecast",
            "float32",
            float("nan"),
            tuple(forecast),
            f"{'/'.join(INDEX_NAMES)} forecast of the {steps} steps after the run's dates",
        )
    out["qa"] = RasterProduct("qa", "uint16", 0, ("valid_observations",), "Cloud-free observations per pixel")
    return out


def tile_quicklooks(
    products: Mapping[str, RasterProduct], basis: PcaBasis | None, *, max_size: int = 512
) -> dict[str, Quicklook]:
    """The quicklooks a run draws per tile, by STAC asset key (their files: :data:`QUICKLOOK_FILES`): the
    embedding in false colour from ``basis`` (``thumbnail``; none without an embedding product or a basis), and
    the class map in the head's colours (``thumbnail_classes``, with a head)."""
    out = {}
    if "embedding" in products and basis is not None:
        out["thumbnail"] = Quicklook("embedding", basis=basis, max_size=max_size)
    if "classes" in products:
        classes = products["classes"]
        ids = [int(k) for k in json.loads(classes.tags.get("pimc_classes", "{}"))]
        palette = class_palette(classes.colormap, ids)
        out["thumbnail_classes"] = Quicklook("classes", colormap=palette, max_size=max_size)
    return out


@dataclass(frozen=True)
class TileRecord:
    """What a worker sends the driver for a tile: its status entry (also published as ``status/<tile>.json``)."""

    tile_id: str
    status: dict[str, Any]
    """``{"status": "done", "files": [...], "pixels": n, "seconds": s, "worker": {...}}``, or ``failed`` with
    the error."""


@dataclass(frozen=True)
class TilePublisher:
    """The sink factory of a mapping run (:class:`~pimc_ray.mapping.runner.GroupSink`): shipped once to each
    worker, it opens a :class:`TileWriter` per tile, which writes and publishes the tile from the worker.

    A tile is published as its COGs (validated, uploaded), then its STAC item, then its status object; a tile
    with a failed window publishes only a ``failed`` status with the first error.
    """

    out: str
    """The run's output location (each worker opens its own connection to it)."""
    products: Mapping[str, RasterProduct]
    head: Head | None
    collection: str
    dates: tuple[dt.date, dt.date]
    tags: Mapping[str, str]
    """GeoTIFF tags of every COG."""
    properties: Mapping[str, Any]
    """STAC properties of every item."""
    inputs: Mapping[str, TileInputs]
    """Each tile's inputs and key (:func:`~pimc_ray.mapping.updates.tile_inputs`), kept in its status and item."""
    versions: Mapping[str, int]
    """The published version of each tile this run replaces (a rerun in place); other tiles get version 1."""
    model: ModelCard | None = None
    """The encoder for the items' mlm extension (None for a random initialisation: no weights to point at)."""
    quicklooks: Mapping[str, Quicklook] = field(default_factory=dict)
    """The quicklooks each tile gets, by asset key (:func:`tile_quicklooks`)."""
    forecaster: LinearForecaster | None = None
    """The forecast head, with a ``forecast`` product."""

    @classmethod
    def for_run(
        cls,
        request: MapRequest,
        manifest: RunManifest,
        products: Mapping[str, RasterProduct],
        head: Head | None,
        inputs: Mapping[str, TileInputs],
        versions: Mapping[str, int],
        *,
        encoder: Any = None,
        basis: PcaBasis | None = None,
        forecaster: LinearForecaster | None = None,
    ) -> TilePublisher:
        """The run's publisher; ``encoder`` (the loaded module) describes a checkpoint's encoder in the items,
        ``basis`` colours the embedding's quicklooks (none without), ``forecaster`` forecasts the indices."""
        dates = request.spec.dates
        return cls(
            normalize_location(request.out),
            dict(products),
            head,
            request.collection_id,
            (dates.start, dates.end),
            {
                "pimc_weights": manifest.model,
                "pimc_run": manifest.key,
                "pimc_encoder": json.dumps(request.encoder.config.to_dict()),
            },
            {
                "pimc:model": manifest.model,
                "pimc:run": manifest.key,
                "pimc:encoder": request.encoder.config.describe(),
            },
            dict(inputs),
            dict(versions),
            None if encoder is None else _model_card(request, encoder, manifest.model),
            tile_quicklooks(products, basis),
            forecaster,
        )

    @cached_property
    def store(self) -> Store:
        """The output store, opened once per worker (never pickled: see ``__getstate__``)."""
        return open_store(self.out)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "store"}

    def __call__(self, tile: OutputGrid, windows: Sequence[Window]) -> TileWriter:
        if not isinstance(tile, Tile):
            raise TypeError(f"a mapping run's groups are tiles, got {type(tile).__name__}")
        return TileWriter(self, tile)


class TileWriter:
    """One tile on a worker: its windows' results go into local COG writers, :meth:`finish` publishes it."""

    def __init__(self, publisher: TilePublisher, tile: Tile) -> None:
        self.publisher, self.tile = publisher, tile
        self.folder = Path(tempfile.mkdtemp(prefix=f"{tile.tile_id}-", dir=scratch_dir()))
        tags = {**publisher.tags, "pimc_tile": tile.tile_id}
        self.rasters = RasterSet(tile, self.folder, publisher.products, tags, quicklooks=publisher.quicklooks)
        self.failures: list[str] = []
        self.pixels = 0
        self.substituted = 0
        self.meter = Meter(0)

    def add(self, window: Window, result: WindowResult | WindowFailure) -> None:
        if isinstance(result, WindowFailure):
            self.failures.append(result.error)
        elif not self.failures:  # a failed tile is dropped: no need to write the rest
            self.pixels += self._write(result)
            self.substituted += result.substituted

    def _write(self, result: WindowResult) -> int:
        """Write one window into the tile's products; returns its count of valid pixels."""
        w, products, head = result.window, self.publisher.products, self.publisher.head
        valid = np.isfinite(result.embedding[0])
        if "embedding" in products:
            self.rasters.write("embedding", result.embedding, w.row, w.col)
        if head is not None:
            classes, confidence = classify(result.embedding, head)
            percent = np.where(valid, np.round(np.nan_to_num(confidence) * 100), 0).astype(np.uint8)
            self.rasters.write("classes", np.stack([classes, percent]), w.row, w.col)
        if self.publisher.forecaster is not None:
            self.rasters.write(
                "forecast", forecast(result.embedding, self.publisher.forecaster), w.row, w.col
            )
        qa = np.where(valid, result.valid_count, 0).astype(np.uint16)
        self.rasters.write("qa", qa[None], w.row, w.col)
        return int(valid.sum())

    def abort(self) -> None:
        """Drop the tile (a window could not be written): nothing of it is published."""
        self.rasters.abort()
        shutil.rmtree(self.folder, ignore_errors=True)

    def finish(self) -> TileRecord:
        """Publish the tile (COGs, item, status) or its failure; returns the record for the driver.

        A failed replacement of a published version publishes nothing: the old version stays as it was (its
        status too, so the next rerun tries again), and the record says which version was kept.
        """
        tile_id, store = self.tile.tile_id, self.publisher.store
        kept = self.publisher.versions.get(tile_id)
        try:
            if self.failures:
                self.rasters.abort()
                entry = status_entry("failed", error=self.failures[0])
                if kept is not None:
                    return TileRecord(tile_id, {**entry, "kept_version": kept})
            else:
                entry = self._publish()
            publish_status(store, tile_id, entry)
        except BaseException:
            self.rasters.abort()
            raise
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        return TileRecord(tile_id, entry)

    def _publish(self) -> dict[str, Any]:
        """The COGs under the tile's next version folder, then its item, which switches to them; returns the
        status entry (published last, by :meth:`finish`)."""
        p, tile = self.publisher, self.tile
        version = p.versions.get(tile.tile_id, 0) + 1
        inputs = p.inputs[tile.tile_id].to_dict()
        folder = tile_folder(tile.tile_id, version)
        keys = self.rasters.publish(
            p.store,
            {name: f"{folder}/{name}.tif" for name in p.products}
            | {name: f"{folder}/{QUICKLOOK_FILES[name]}" for name in p.quicklooks},
        )
        degraded = {"substituted_reads": self.substituted} if self.substituted else {}
        entry = status_entry(
            "done",
            version=version,
            inputs=inputs,
            files=sorted(keys.values()),
            pixels=self.pixels,
            seconds=round(self.meter.elapsed, 2),
            worker=worker_identity(),
            **degraded,
        )
        properties = {**p.properties, "pimc:version": version, "pimc:inputs": inputs, "updated": entry["at"]}
        if self.substituted:  # reads that failed and became nodata: the tile is degraded
            properties["pimc:substituted_reads"] = self.substituted
        item = tile_item(
            tile,
            keys,
            p.products,
            collection=p.collection,
            dates=p.dates,
            properties=properties,
            files=self.rasters.files,
            model=p.model,
            quicklooks=p.quicklooks,
        )
        p.store.put_json(item, f"tiles/{tile.tile_id}/item.json")
        return entry


def _model_card(request: MapRequest, encoder: Any, weights: str) -> ModelCard | None:
    """The run's encoder as the items' mlm extension describes it: name, parts, inputs (one per part: recurrence
    plots ``(N, 3, T, T)``, index series ``(N, 3, T)`` or reflectance patches ``(N, B, k, k)``), embedding size
    and weights (``weights``: :meth:`~pimc_ray.models.checkpoint.EncoderRef.load`'s label). None for a random
    initialisation, which has no weights file."""
    import torch

    ref, steps, indices = request.encoder, request.spec.timegrid.steps, "/".join(INDEX_NAMES)
    if ref.checkpoint is None or not weights.startswith("checkpoint sha256:"):
        return None
    inputs = []
    for part in parts(encoder):
        if part.inputs == "patches":
            k = 2 * int(part.halo) + 1
            shape, dims = [-1, int(part.in_channels), k, k], ["batch", "channel", "height", "width"]
            text = f"{k} x {k} pixels of Sentinel-2 L2A reflectance ({' '.join(BANDS)}), {ref.composite} composite"
        elif part.inputs == "series":
            shape, dims = [-1, len(INDEX_NAMES), steps], ["batch", "channel", "time"]
            text = f"the pixel's {indices} series on the regular {steps}-step time grid"
        else:
            shape, dims = [-1, len(INDEX_NAMES), steps, steps], ["batch", "channel", "height", "width"]
            text = f"recurrence plots of the pixel's {indices} series on the regular {steps}-step time grid"
        structure = {"shape": shape, "dim_order": dims, "data_type": "float32"}
        inputs.append({"name": str(part.inputs), "description": text, "input": structure})
    href = join_uri(ref.checkpoint, WEIGHTS)
    return ModelCard(
        ref.config.name,
        ref.config.describe(),
        Path(href).as_uri() if is_local(href) else href,
        weights.removeprefix("checkpoint sha256:"),
        len(embedding_bands(encoder, request.spec)),
        tuple(inputs),
        framework_version=torch.__version__,
        total_parameters=sum(int(p.numel()) for p in encoder.parameters()),
    )


def worker_identity() -> dict[str, Any]:
    """Which process published a tile (kept in its status): host, process id, and Ray node id on Ray."""
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    return {"host": socket.gethostname(), "pid": os.getpid(), "ray_node": node}


class RunMonitor(Protocol):
    """What follows a mapping run tile by tile (``pimc run execute``'s status layer,
    :class:`~pimc_ray.runs.status.StatusLayer`); the driver calls it, never a worker."""

    def start(
        self, tiles: Sequence[Tile], status: Mapping[str, Mapping[str, Any]], todo: Sequence[Tile]
    ) -> None:
        """Before mapping: every tile of the run, the status objects published so far, the tiles to map."""

    def tile(self, tile_id: str, entry: Mapping[str, Any]) -> None:
        """A tile finished: its status entry (``done``, or ``failed``, with ``kept_version`` when the old
        version stays published)."""

    def finish(self) -> None:
        """The run's tiles are all back (before its collection and mosaics are derived)."""


def _head(request: MapRequest, store: Store, reuse: bool, progress: Progress) -> LinearClassifier | None:
    """The run's head: the one given, the one this run already fit (``reuse``: resuming with the same model and
    parameters), or one fit now (and saved in the output)."""
    if request.head is not None:
        return LinearClassifier.load(request.head)
    if request.head_train_aoi is None:
        if not request.write_embedding:
            raise PimcError("a classification run needs --head or --head-train-aoi")
        return None
    if reuse and (head := load_head(store, _HEAD_PREFIX)) is not None:
        return head
    area, dates, url = request.head_train_aoi, request.spec.dates, request.stac_url
    items = search_items(area, dates, stac_url=url, collection=request.collection)
    label_items = search_items(area, dates, stac_url=url, collection=request.labels_collection)
    head, _ = fit_head(
        StacLabels(tuple(label_items)),
        TileGrid(request.tile_size).tiles(area),
        reader=series_reader(request.spec, items, request.encoder.config),
        embedder=embedder_factory(request),
        parallel=request.parallel,
        window_size=request.window_size,
        per_class=request.per_class,
        progress=progress,
    )
    save_head(head, store, _HEAD_PREFIX)
    return head


def _sample_window(tile: Tile, size: int) -> Window | None:
    """A ``size``-pixel window of ``tile`` around a point of its AOI part (None when it has none)."""
    import shapely

    area = shapely.intersection(tile.footprint, shapely.box(*tile.bounds))
    if area.is_empty:
        return None
    point = area.representative_point()
    height, width = tile.shape
    size = min(size, height, width)
    r, (x0, _, _, y1) = tile.resolution, tile.bounds
    row = min(max(int((y1 - point.y) / r) - size // 2, 0), height - size)
    col = min(max(int((point.x - x0) / r) - size // 2, 0), width - size)
    bounds = (x0 + col * r, y1 - (row + size) * r, x0 + (col + size) * r, y1 - row * r)
    return Window(row, col, size, size, bounds)


def _embedding_sample(
    request: MapRequest,
    items: list[Item],
    tiles: Sequence[Tile],
    *,
    windows: int,
    size: int,
    progress: Progress,
) -> np.ndarray:
    """The valid embeddings ``(n, d)`` of up to ``windows`` small windows, on tiles spread over the run, embedded
    in this process (on its GPU if the workers use one and it has one, else on its CPU). A window that cannot
    be read is left out (the tiles it meets will fail or degrade on their own)."""
    import torch

    factory = embedder_factory(request)
    device = "cuda" if factory.device == "cuda" and torch.cuda.is_available() else "cpu"
    compute = replace(factory, device=device, threads=len(os.sched_getaffinity(0)) or 1)()
    reader = series_reader(request.spec, items, request.encoder.config)
    picks = sorted(
        {round(i * (len(tiles) - 1) / max(1, windows - 1)) for i in range(min(windows, len(tiles)))}
    )
    out = []
    for tile in (tiles[i] for i in picks):
        window = _sample_window(tile, size)
        if window is None:
            continue
        try:
            embedding = compute(tile, window, reader(tile, window)).embedding  # (d, h, w)
        except PimcError as err:
            progress(f"quicklooks: the sample window on tile {tile.tile_id} is left out ({err})")
            continue
        flat = embedding.reshape(embedding.shape[0], -1).T
        out.append(flat[np.isfinite(flat).all(axis=1)])
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def quicklook_basis(
    run: MapRun, *, reuse: bool, progress: Progress = logger.info, windows: int = 4, size: int = 32
) -> PcaBasis | None:
    """The PCA basis of a run's embedding quicklooks: the one the output keeps (``reuse``: the same model and
    parameters), or one fit now on the embeddings of ``windows`` windows of ``size`` pixels spread over the run's
    tiles, and kept (``quicklook/pca.json``). None when the sample holds no valid pixel: the tiles then get no
    embedding quicklook.

    One basis per run (not per tile) so that a colour means the same embedding on neighbouring tiles and on
    tiles mapped by later reruns; fit on the driver on a few thousand pixels (seconds, docs/design.md,
    "Quicklooks")."""
    store = run.store
    if reuse and (kept := store.get_json(_QUICKLOOK_BASIS)) is not None:
        return PcaBasis.from_dict(kept)
    meter = Meter(0)
    sample = _embedding_sample(
        run.request, run.items, run.tiles, windows=windows, size=size, progress=progress
    )
    if len(sample) < 16:
        progress(f"quicklooks: {len(sample)} valid pixels in the sample windows, no embedding quicklooks")
        return None
    basis = PcaBasis.fit(sample)
    store.put_json(basis.to_dict(), _QUICKLOOK_BASIS)
    progress(f"quicklooks: PCA basis of the embedding fit on {len(sample)} pixels ({meter.elapsed:.1f}s)")
    return basis


@dataclass
class MapRun:
    """A mapping run checked and ready to go, nothing written yet (:func:`prepare_run`): its items, model and
    tiles, and what the output already holds."""

    request: MapRequest
    store: Store
    items: list[Item]
    model: Any
    """The encoder module (to name the embedding's bands)."""
    weights: str
    """The encoder's weights digest."""
    tiles: list[Tile]
    before: RunManifest | None
    """The output's run (its manifest and every published status object), None for a new output."""
    forecaster: LinearForecaster | None = None
    """The forecast head (``forecast_head``), checked against the encoder and the grid."""

    def map(self, *, progress: Progress = logger.info, monitor: RunMonitor | None = None) -> MapSummary:
        """Map the tiles to map (all of them, the unfinished ones of a resumed run, or with ``update`` also the
        changed ones), then derive the run's manifest, collection and mosaics; see the module docstring.

        Raises:
            TilesFailedError: after writing every tile that could be written.
        """
        request, store, tiles, meter = self.request, self.store, self.tiles, Meter(0)
        params = request.params(self.weights)
        before = self.before
        run_params = _run_params(request, params)
        reuse = before is not None and before.params.get("digest") == run_params["digest"]
        head = _head(request, store, reuse, progress)
        if head is not None and request.head is None:  # fit by this run: its weights decide the classes too
            params["head_fit"] = sha256_file(join_uri(store.uri(_HEAD_PREFIX), HEAD_WEIGHTS))
        manifest = RunManifest(
            request.key([i["id"] for i in self.items], self.weights),
            self.weights,
            run_params,
            dict(before.tiles) if before is not None else {},
        )
        inputs = tile_inputs(
            tiles, self.items, model=self.weights, params=digest(params), halo=read_plan(self.model)[1]
        )
        todo = to_map(
            tiles, manifest.tiles, inputs, update=request.update, accept_degraded=request.accept_degraded
        )
        versions = {
            t.tile_id: int(manifest.tiles[t.tile_id].get("version", 0))
            for t in todo
            if manifest.tiles.get(t.tile_id, {}).get("status") == "done"
        }
        new = len(todo) - len(versions)
        progress(
            f"{len(self.items)} items; {len(tiles)} tiles of {request.tile_size} px: {len(tiles) - len(todo)} "
            f"{'unchanged' if request.update else 'already done'}, {len(versions)} changed, {new} to map; "
            f"encoder {request.encoder.config.describe()} ({self.weights})"
        )
        bands = embedding_bands(self.model, request.spec)
        if head is not None and head.dim != len(bands):
            raise InvalidConfigError(
                f"the head {request.head or _HEAD_PREFIX} classifies {head.dim}-d embeddings, and this encoder "
                f"({request.encoder.config.describe()}) gives {len(bands)}-d ones: fit a head on this encoder "
                "(jobs/train_head.py --checkpoint ...), or map with the encoder the head was fit on"
            )
        horizon = self.forecaster.horizon if self.forecaster is not None else 0
        forecast_names = forecast_bands(request.spec, horizon) if horizon else ()
        products = tile_products(bands, head, with_embedding=request.write_embedding, forecast=forecast_names)
        basis = None
        if "embedding" in products:
            basis = quicklook_basis(self, reuse=reuse, progress=progress)
        if before is None or request.update:  # what the run is: written before any tile
            manifest.save(store)
            store.put_bytes(dumps_ndjson(self.items), "items.ndjson")
        if monitor is not None:
            monitor.start(tiles, manifest.tiles, todo)
        todo_inputs = {t.tile_id: inputs[t.tile_id] for t in todo}  # what the workers need: not every tile's
        publisher = TilePublisher.for_run(
            request,
            manifest,
            products,
            head,
            todo_inputs,
            versions,
            encoder=self.model,
            basis=basis,
            forecaster=self.forecaster,
        )
        written, pixels, failed = _map_tiles(
            request, self.items, todo, publisher, manifest, progress, monitor
        )
        if written and not any(e.get("pixels") for e in manifest.tiles.values() if e.get("status") == "done"):
            self._discard(todo, manifest)  # an empty map is a mistake, not a result: keep nothing of it
            raise AllCloudError(self._empty_message(written))
        if monitor is not None:
            monitor.finish()
        manifest.save(store)  # the run-level manifest, derived from the tiles' status objects
        published = manifest.done()  # before this run and by it
        finished = sorted(
            (t for t in tiles if t.tile_id in published), key=lambda t: t.tile_id
        )  # as derive_run
        keys = [k for t in todo for k in manifest.tiles.get(t.tile_id, {}).get("files", [])
                if t.tile_id not in failed]  # fmt: skip
        if finished:
            description = _description(manifest, request.encoder.config.describe())
            items = run_items(store, [t.tile_id for t in finished])
            keys += write_run_products(
                store, finished, items, products, request.collection_id, description, _folders(manifest)
            )
        if before is not None:  # the collection and mosaics point at the new versions: drop the old ones
            old = superseded_files(before.tiles, manifest.tiles)
            for key in old:
                store.delete(key)
            if old:
                progress(f"removed {len(old)} files of superseded tile versions")
        progress(
            f"tiles: {written} written ({len(versions) - sum(1 for t in versions if t in failed)} of them new "
            f"versions), {len(tiles) - len(todo)} skipped, {len(failed)} failed of {len(tiles)}  "
            f"({meter.elapsed:.0f}s)"
        )
        done = {t: e for t, e in manifest.tiles.items() if e.get("status") == "done"}
        degraded = sorted(t for t, e in done.items() if e.get("substituted_reads"))
        if degraded:
            progress(
                f"degraded: {len(degraded)} tiles kept reads that failed as nodata ({', '.join(degraded[:5])}"
                f"{', ...' if len(degraded) > 5 else ''}; pimc:substituted_reads in their items): a rerun maps them "
                f"again{'' if request.accept_degraded else ', or --accept-degraded keeps them'}"
            )
        if failed:
            lines = "\n".join(f"  {tile_id}: {error}" for tile_id, error in failed.items())
            raise TilesFailedError(
                f"{len(failed)} of {len(tiles)} tiles failed (the others are written):\n{lines}\n"
                "rerun the same command to retry only the failed tiles"
            )
        return MapSummary(request.out, len(tiles), written, len(tiles) - len(todo), pixels, keys)

    def _empty_message(self, tiles: int) -> str:
        """Why a run can map tiles and find no valid pixel, and what to change."""
        request = self.request
        dates, grid = request.spec.dates, request.spec.timegrid
        acquisitions = len({str(i["properties"].get("datetime", ""))[:10] for i in self.items})
        return (
            f"no pixel of the AOI has {grid.min_valid} or more cloud-free observations between {dates.start} and "
            f"{dates.end} ({tiles} tiles mapped from {len(self.items)} items on {acquisitions} days, all empty); "
            f"likely: --min-valid above the clear acquisitions, a --catalog convention that does not match the "
            f"items, a --snapshot of another area, or a date range too short. Nothing was kept"
        )

    def _discard(self, todo: Sequence[Tile], manifest: RunManifest) -> None:
        """Remove what this run published (its tiles' files, items and status objects, and for a new output its
        manifest, items and head), so that a rerun starts clean."""
        store, keys = self.store, []
        for tile in todo:
            entry = manifest.tiles.get(tile.tile_id, {})
            if entry.get("status") == "done":
                keys += [*entry.get("files", []), f"tiles/{tile.tile_id}/item.json"]
            keys.append(f"{STATUS}{tile.tile_id}.json")
        if self.before is None:
            keys += ["manifest.json", "items.ndjson", *store.list(f"{_HEAD_PREFIX}/"), _QUICKLOOK_BASIS]
        for key in keys:
            store.delete(key)


def _run_params(request: MapRequest, params: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``params``: the series spec and tile size (read by :func:`derive_run`), the patches, the
    layout (what reruns in place must keep, :meth:`MapRequest.layout`) and the digest of the pixel parameters
    (``params``, with the model's weights: a rerun with the same digest keeps the head the run fit)."""
    out: dict[str, Any] = {"spec": request.spec.to_dict(), "tile_size": request.tile_size}
    patches = request.patch_params()
    if patches is not None:
        out["patches"] = patches
    return {**out, "layout": request.layout(), "digest": digest(dict(params))}


def prepare_run(request: MapRequest) -> MapRun:
    """Check a mapping run without writing anything: its items, its model, its tiles, and that the output is new,
    holds this run (to resume) or, with ``update``, a run of the same layout (to rerun in place).

    Raises:
        NoItemsFoundError, CatalogUnreachableError, InvalidAOIError, CheckpointError, OutputExistsError,
            StorageError.
    """
    store = open_store(request.out)
    items = request.search()
    model, weights = request.encoder.load()  # fails early on a bad checkpoint
    forecaster = None
    if request.forecast_head is not None:
        forecaster = LinearForecaster.load(request.forecast_head)
        check_forecaster(forecaster, model, request.spec, request.forecast_head)
    tiles = TileGrid(request.tile_size).tiles(request.aoi)
    before = RunManifest.load(store)
    if before is not None:
        if request.update:
            before.check_same_layout(request.layout(), request.out)
        else:
            before.check_same_run(request.key([i["id"] for i in items], weights), weights, request.out)
    return MapRun(request, store, items, model, weights, tiles, before, forecaster)


def map_aoi(request: MapRequest, *, progress: Progress = logger.info) -> MapSummary:
    """Run a mapping job; see the module docstring.

    Raises:
        NoItemsFoundError, CatalogUnreachableError, InvalidAOIError, CheckpointError, OutputExistsError,
            StorageError: before anything is written.
        TilesFailedError: after writing every tile that could be written.
    """
    return prepare_run(request).map(progress=progress)


def _folders(manifest: RunManifest) -> dict[str, str]:
    """Each published tile's folder, from the files of its status (tiles published before versions existed
    keep theirs, ``tiles/<tile>``)."""
    out = {}
    for tile_id, entry in manifest.tiles.items():
        if entry.get("status") == "done" and entry.get("files"):
            out[tile_id] = entry["files"][0].rsplit("/", 1)[0]
    return out


def run_items(store: Store, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The published items of ``tile_ids``, read many at a time (:meth:`~pimc_ray.storage.Store.get_json_many`),
    each kept whole where it is the first or the first with one of its quicklooks, else slimmed to what the
    run-level outputs read (:func:`~pimc_ray.io.stac_items.slim_item`)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for item in store.get_json_many([f"tiles/{tile_id}/item.json" for tile_id in tile_ids]):
        keys = set(QUICKLOOK_FILES) & set(item.get("assets", {}))
        out.append(item if not out or keys - seen else slim_item(item))
        seen |= keys
    return out


def write_run_products(
    store: Store,
    tiles: Sequence[Tile],
    items: Sequence[Mapping[str, Any]],
    products: Mapping[str, RasterProduct],
    collection: str,
    description: str,
    folders: Mapping[str, str],
) -> list[str]:
    """The run-level outputs derived from its published tiles (``tiles``, all done, their files in ``folders``,
    their items in ``items``: :func:`run_items`): the mosaics, the run's quicklooks (composed from the tiles',
    :func:`~pimc_ray.io.quicklooks.write_run_quicklooks`), and the STAC collection of their items with the mosaics
    and quicklooks as its assets. Returns the keys written."""
    mosaics = write_mosaics(store, tiles, products, folders=folders)
    quicklooks = write_run_quicklooks(store, items)
    store.put_json(
        output_collection(
            items, collection=collection, description=description, mosaics=mosaics, assets=quicklooks
        ),
        "collection.json",
    )
    return [*mosaics, *(a["href"].removeprefix("./") for a in quicklooks.values()), "collection.json"]


def _description(manifest: RunManifest, encoder: str) -> str:
    return f"PIMC maps of run {manifest.key}: {encoder}, {manifest.model}"


def derive_run(out: str, *, progress: Progress = logger.info) -> list[str]:
    """Derive a mapping run's ``manifest.json``, ``collection.json`` and mosaics from what its tiles published
    (their status objects, items and COGs): what a run does at its end, and ``pimc derive`` at any time, also
    while the run goes on or after it stopped. Returns the keys written.

    Raises:
        OutputExistsError: ``out`` holds no mapping run (no ``manifest.json``, or one of another job).
    """
    store = open_store(out)
    manifest = RunManifest.load(store)
    if manifest is None or "tile_size" not in manifest.params:
        raise OutputExistsError(
            f"{out} holds no mapping run (no manifest.json of embed/classify); check --out"
        )
    manifest.save(store)
    done = sorted(manifest.done())
    progress(f"{len(manifest.tiles)} tiles with a status, {len(done)} done")
    if not done:
        return ["manifest.json"]
    items = run_items(store, done)
    tiles = [_tile_of_item(item) for item in items]
    products = _products_of_tile(store, items[0])
    encoder = items[0]["properties"].get("pimc:encoder", "")
    description = _description(manifest, encoder)
    folders = _folders(manifest)
    keys = write_run_products(store, tiles, items, products, items[0]["collection"], description, folders)
    return ["manifest.json", *keys]


def _tile_of_item(item: Mapping[str, Any]) -> Tile:
    """The tile a published item describes (its grid, from the projection extension)."""
    props = item["properties"]
    bounds = tuple(float(v) for v in props["proj:bbox"])
    epsg = int(str(props["proj:code"]).removeprefix("EPSG:"))
    resolution = float(props["proj:transform"][0])
    return Tile(epsg, bounds, resolution, shapely.geometry.box(*bounds), props["pimc:tile"])  # type: ignore[arg-type]


def _nodata(dtype: str, value: float | None) -> float:
    """A COG's nodata as the run wrote it: NaN for floats, an integer for integer bands."""
    if np.issubdtype(np.dtype(dtype), np.floating):
        return float("nan") if value is None else float(value)
    return int(value or 0)


def _products_of_tile(store: Store, item: Mapping[str, Any]) -> dict[str, RasterProduct]:
    """What a run's tiles hold, read back from one published tile's COGs (dtype, nodata, bands, colour map)."""
    import rasterio

    out = {}
    folder = f"tiles/{item['properties']['pimc:tile']}/"
    with rasterio.Env(**gdal_s3_env()):
        for name, asset in item["assets"].items():
            if not asset["href"].endswith(".tif"):
                continue
            with rasterio.open(store.gdal_path(folder + asset["href"].removeprefix("./"))) as src:
                colormap = src.colormap(1) if src.colorinterp[0].name == "palette" else None
                out[name] = RasterProduct(
                    name,
                    src.dtypes[0],
                    _nodata(src.dtypes[0], src.nodata),
                    tuple(d or "" for d in src.descriptions),
                    asset.get("title", name),
                    colormap=colormap,
                )
    return out


def _map_tiles(
    request: MapRequest,
    items: list[Item],
    todo: Sequence[Tile],
    publisher: TilePublisher,
    manifest: RunManifest,
    progress: Progress,
    monitor: RunMonitor | None,
) -> tuple[int, int, dict[str, str]]:
    """Map the ``todo`` tiles on the workers, each tile read, embedded, written and published by one worker;
    the driver only records each tile's status. Returns tiles written, valid pixels, and failed tiles' errors.

    A tile whose replacement failed keeps its published version (and its entry in ``manifest``)."""
    written, pixels, failed = 0, 0, {}
    records = run_groups(
        GridWindows(todo, request.window_size),
        series_reader(request.spec, items, request.encoder.config),
        embedder_factory(request),
        publisher,
        parallel=request.parallel,
        progress=progress,
        label="tiles",
    )
    for index, record in records:
        tile_id = todo[index].tile_id
        if isinstance(record, GroupFailure):  # the worker could not publish, or died: not published
            if record.exception is not None and issubclass(record.exception, StorageError):
                _check_store_answers(publisher.store, tile_id, record.error)
            entry = status_entry("failed", error=record.error)
            if tile_id in publisher.versions:
                entry["kept_version"] = publisher.versions[tile_id]
        else:
            entry = record.status
        if entry["status"] == "done":
            written += 1
            pixels += int(entry["pixels"])
        else:
            failed[tile_id] = entry["error"]
        if "kept_version" not in entry:
            manifest.tiles[tile_id] = entry
        if monitor is not None:
            monitor.tile(tile_id, entry)
    return written, pixels, failed


def _check_store_answers(store: Store, tile_id: str, error: str) -> None:
    """After a tile failed to publish: end the run if the output store itself stopped answering (every tile
    after it would wait out the same retries and fail alike), else let the tile fail on its own.

    Raises:
        StorageError: one line naming the store and the first error; the tiles published before are kept.
    """
    try:
        store.exists("manifest.json")  # any request: the answer does not matter, getting one does
    except StorageError:
        raise StorageError(
            f"the output store {store.uri('')} stopped answering (tile {tile_id}: {error}); the tiles published "
            "before are kept: rerun the same command when it answers again"
        ) from None


def dry_run(request: MapRequest, *, progress: Progress = print) -> dict[str, Any]:
    """Plan a run without writing anything: tiles, pixels, windows, bytes to read, and the estimated time.

    Tiles and pixels come from the tile grid's vectorised areas (:meth:`~pimc_ray.data.tiles.TileGrid.zone_tiles`,
    a continent in seconds), said before the items are searched; windows are counted from pixels. The time is
    measured on whole windows of the tile the AOI fills most (read, plots, encoder: the unit a worker repeats),
    not on a corner of one, which left out each window's set-up and under-estimated a run 250-fold.
    """
    meter = Meter(0)
    if request.forecast_head is not None:  # refused now, as the run would refuse it
        forecaster = LinearForecaster.load(request.forecast_head)
        check_forecaster(forecaster, request.encoder.config, request.spec, request.forecast_head)
    grid = TileGrid(request.tile_size)
    zones = grid.zone_tiles(request.aoi)
    n_tiles = sum(len(z) for z in zones)
    pixels = int(round(sum(float(z.inside_m2.sum()) for z in zones) / grid.resolution**2))
    progress(f"dry run: {n_tiles} tiles, ~{pixels:,} pixels ({meter.elapsed:.0f}s); searching items ...")
    items = request.search()
    # uint16 bands (B02, B04, B08; all ten for an image-patch encoder, 20 m ones counted as 10 m: an upper bound)
    # plus uint8 SCL at 20 m, for every acquisition that covers the AOI
    dates = len({i["properties"]["datetime"][:10] for i in items})
    reader = series_reader(request.spec, items, request.encoder.config)
    bytes_to_read = int(pixels * dates * (len(reader.spec.bands) * 2 + 0.25))
    tile = _timed_tile(grid, zones, items)
    progress(f"dry run: {len(items)} items, {dates} acquisitions; timing windows of tile {tile.tile_id} ...")
    window_seconds, window_pixels = _measure_window(request, reader, tile)  # a bad checkpoint fails here
    windows = max(n_tiles, math.ceil(pixels / window_pixels))
    workers = max(1, request.parallel.workers)
    seconds = windows * window_seconds / workers
    plan = {
        "tiles": n_tiles,
        "windows": windows,
        "pixels": pixels,
        "acquisitions": dates,
        "bytes_to_read": bytes_to_read,
        "seconds_per_window": round(window_seconds, 3),
        "pixels_per_second_per_worker": round(window_pixels / window_seconds),
        "workers": workers,
        "estimated_seconds": round(seconds),
    }
    progress(
        f"dry run: {n_tiles} tiles, ~{windows} windows, ~{pixels:,} pixels, {dates} acquisitions, "
        f"~{bytes_to_read / 1e9:.2f} GB to read; measured {window_seconds:.2f} s per window "
        f"({plan['pixels_per_second_per_worker']:,} pixels/s per worker) x {workers} workers "
        f"-> ~{dt.timedelta(seconds=round(seconds))} (nothing was written)"
    )
    return plan


def _timed_tile(grid: TileGrid, zones: Sequence[ZoneTiles], items: Sequence[Item]) -> Tile:
    """The tile the AOI fills most among those whose centre the items cover (any tile if none is covered)."""
    from pyproj import Transformer

    covered = shapely.union_all([shapely.geometry.shape(i["geometry"]) for i in items])
    best: tuple[float, Tile] | None = None
    for zone in zones:
        w = grid.width_m
        lon, lat = Transformer.from_crs(zone.epsg, 4326, always_xy=True).transform(
            (zone.cols + 0.5) * w, (zone.rows + 0.5) * w
        )
        area = np.where(shapely.contains_xy(covered, lon, lat), zone.inside_m2, zone.inside_m2 * 1e-9)
        i = int(np.argmax(area))
        if best is None or area[i] > best[0]:
            best = (
                float(area[i]),
                grid.tile(zone.epsg, int(zone.cols[i]), int(zone.rows[i]), zone.footprint),
            )
    assert best is not None, "an AOI has at least one tile"
    return best[1]


def _measure_window(request: MapRequest, reader: Any, tile: Tile) -> tuple[float, int]:
    """``(seconds, pixels)`` of one worker's window of ``tile``: the window with the most AOI pixels, computed
    once to warm up (model, GDAL and dask start-up) and then timed."""
    windows = tile.windows(request.window_size)
    window = max(windows, key=lambda w: int(tile.inside(w).sum()))
    compute = embedder_factory(request)()
    compute(tile, window, reader(tile, window))
    meter = Meter(0)
    compute(tile, window, reader(tile, window))
    return meter.elapsed, max(1, int(tile.inside(window).sum()))
