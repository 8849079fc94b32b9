"""AOI -> per-tile embedding and classification COGs on a tile grid, to a folder or a bucket, resumable.

:func:`map_aoi` is what ``jobs/embed_aoi.py`` and ``jobs/classify_aoi.py`` run:

1. items: a frozen snapshot, or a STAC search (then frozen into the output);
2. the tiles of a :class:`~pimc_ray.data.tiles.TileGrid` the AOI touches, and their windows;
3. the run key (items, model weights, parameters) checked against the output's manifest
   (:class:`~pimc_ray.io.manifest.RunManifest`): finished tiles are skipped, a different model or different
   parameters are refused;
4. the head: loaded (``--head``), or fit on labels of a held-out area (:func:`pimc_ray.mapping.heads.fit_head`);
5. windows streamed through :func:`pimc_ray.mapping.runner.run_windows` (read actors, then encoder actors) into
   the tile's writers as they arrive (:class:`TilePublisher`); a tile whose windows are all in is published (COGs,
   STAC item, manifest entry) before the next. For an image-patch encoder every window is read grown by the
   encoder's halo (:func:`pimc_ray.mapping.embedder.series_reader`), so pixels at tile edges get the same context
   as interiors;
6. the collection, the VRT mosaics and the frozen items.

Layout under the output location (a folder or ``s3://bucket/prefix``)::

    manifest.json                  run key, model, parameters (at the start), and every tile's status (at the end)
    status/<tile_id>.json          a tile's status, written when it is published or fails (what a rerun reads)
    items.ndjson                   the frozen STAC items the run read
    collection.json                STAC collection of the outputs
    tiles/<tile_id>/<product>.tif  COGs: embedding, classes, qa (see :func:`tile_products`)
    tiles/<tile_id>/item.json      STAC item of the tile (proj, raster, eo, processing extensions)
    mosaic_<product>_<zone>.vrt    GDAL VRT per product and UTM zone over the finished tiles (at the root:
                                   GDAL's /vsis3/ does not resolve '../' in a source path)
    head/                          the classification head, when one was fit

Failed windows fail their tile, not the run: failed tiles are listed at the end and the job exits with code 3
(:class:`~pimc_ray.errors.TilesFailedError`); rerunning redoes only them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.data.labels import StacLabels
from pimc_ray.data.stac import Item, dumps_ndjson, search_items
from pimc_ray.data.tiles import Tile, TileGrid, Window
from pimc_ray.errors import PimcError, TilesFailedError
from pimc_ray.io.manifest import RunManifest
from pimc_ray.io.mosaic import write_mosaics
from pimc_ray.io.rasters import RasterProduct, RasterSet
from pimc_ray.io.stac_items import output_collection, tile_item
from pimc_ray.io.storage import Store, open_store
from pimc_ray.mapping.embedder import EmbedderFactory, WindowResult, embedding_bands, series_reader
from pimc_ray.mapping.heads import classify, fit_head, load_head, save_head
from pimc_ray.mapping.requests import MapRequest
from pimc_ray.mapping.runner import WindowFailure, run_windows
from pimc_ray.models.heads import Head, LinearClassifier
from pimc_ray.progress import Meter, Progress

logger = logging.getLogger(__name__)

__all__ = ["MapSummary", "TilePublisher", "dry_run", "embedder_factory", "map_aoi", "tile_products"]

#: Where a run keeps the head it fit (``--head-train-aoi``), so that a resumed run maps with the same one.
_HEAD_PREFIX = "head"


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
    return EmbedderFactory(request.spec, request.encoder, request.batch_size, p.torch_threads, p.device)


def tile_products(
    bands: Sequence[str], head: Head | None, *, with_embedding: bool = True
) -> dict[str, RasterProduct]:
    """The products a run writes per tile: the embedding (unless a classification-only run; one band per
    dimension, described by ``bands``, see :func:`~pimc_ray.mapping.embedder.embedding_bands`), the classes
    (with a head) and the QA."""
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
    out["qa"] = RasterProduct("qa", "uint16", 0, ("valid_observations",), "Cloud-free observations per pixel")
    return out


@dataclass
class _OpenTile:
    """A tile whose windows are still arriving."""

    rasters: RasterSet
    windows_left: int
    failures: list[str] = field(default_factory=list)


class TilePublisher:
    """Takes window results in any interleaving of tiles; publishes each tile when its last window is in.

    A tile is published as its COGs (validated, uploaded), then its STAC item, then its manifest entry ``done``;
    a tile with a failed window is dropped and marked ``failed`` with the first error.

    Args:
        request: the run.
        store: where the outputs go.
        manifest: the run's manifest (saved after every tile).
        products: what each tile holds (:func:`tile_products`).
        head: the classification head, if the run classifies.
        windows: how many windows each tile id has.
        folder: a local folder for the tiles' temporary files.
    """

    def __init__(
        self,
        request: MapRequest,
        store: Store,
        manifest: RunManifest,
        products: Mapping[str, RasterProduct],
        head: Head | None,
        windows: Mapping[str, int],
        folder: Path,
    ) -> None:
        self.request, self.store, self.manifest = request, store, manifest
        self.products, self.head, self.windows, self.folder = products, head, windows, folder
        self.tags = {
            "pimc_weights": manifest.model,
            "pimc_run": manifest.key,
            "pimc_encoder": json.dumps(request.encoder.config.to_dict()),
        }
        self.properties = {
            "pimc:model": manifest.model,
            "pimc:run": manifest.key,
            "pimc:encoder": request.encoder.config.describe(),
        }
        self.open: dict[str, _OpenTile] = {}
        self.written = 0
        self.pixels = 0
        self.failed: dict[str, str] = {}

    def add(self, tile: Tile, result: WindowResult | WindowFailure) -> bool:
        """Take one window's result; returns True when it finished its tile (published or failed)."""
        state = self.open.get(tile.tile_id)
        if state is None:
            folder = self.folder / tile.tile_id
            folder.mkdir()
            rasters = RasterSet(tile, folder, self.products, {**self.tags, "pimc_tile": tile.tile_id})
            state = self.open[tile.tile_id] = _OpenTile(rasters, self.windows[tile.tile_id])
        if isinstance(result, WindowFailure):
            state.failures.append(result.error)
        else:
            self.pixels += self._write(state.rasters, result)
        state.windows_left -= 1
        if state.windows_left > 0:
            return False
        del self.open[tile.tile_id]
        if state.failures:
            state.rasters.abort()
            self.failed[tile.tile_id] = state.failures[0]
            self.manifest.mark(tile.tile_id, "failed", error=state.failures[0])
        else:
            self._publish(tile, state.rasters)
        self.manifest.publish(self.store, tile.tile_id)
        return True

    def _write(self, rasters: RasterSet, result: WindowResult) -> int:
        """Write one window into its tile's products; returns its count of valid pixels."""
        w: Window = result.window
        valid = np.isfinite(result.embedding[0])
        if "embedding" in self.products:
            rasters.write("embedding", result.embedding, w.row, w.col)
        if self.head is not None:
            classes, confidence = classify(result.embedding, self.head)
            percent = np.where(valid, np.round(np.nan_to_num(confidence) * 100), 0).astype(np.uint8)
            rasters.write("classes", np.stack([classes, percent]), w.row, w.col)
        qa = np.where(valid, result.valid_count, 0).astype(np.uint16)
        rasters.write("qa", qa[None], w.row, w.col)
        return int(valid.sum())

    def _publish(self, tile: Tile, rasters: RasterSet) -> None:
        keys = rasters.publish(
            self.store, {name: f"tiles/{tile.tile_id}/{name}.tif" for name in self.products}
        )
        dates = self.request.spec.dates
        item = tile_item(
            tile,
            keys,
            self.products,
            collection=self.request.collection_id,
            dates=(dates.start, dates.end),
            properties=self.properties,
        )
        self.store.put_json(item, f"tiles/{tile.tile_id}/item.json")
        self.manifest.mark(tile.tile_id, "done", files=sorted(keys.values()))
        self.written += 1


def _head(request: MapRequest, store: Store, resuming: bool, progress: Progress) -> LinearClassifier | None:
    """The run's head: the one given, the one this run already fit (when resuming), or one fit now."""
    if request.head is not None:
        return LinearClassifier.load(request.head)
    if request.head_train_aoi is None:
        if not request.write_embedding:
            raise PimcError("a classification run needs --head or --head-train-aoi")
        return None
    if resuming and (head := load_head(store, _HEAD_PREFIX)) is not None:
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


def map_aoi(request: MapRequest, *, progress: Progress = logger.info) -> MapSummary:
    """Run a mapping job; see the module docstring.

    Raises:
        NoItemsFoundError, CatalogUnreachableError, InvalidAOIError, CheckpointError, OutputExistsError,
            StorageError: before anything is written.
        TilesFailedError: after writing every tile that could be written.
    """
    meter = Meter(0)
    store = open_store(request.out)
    items = request.search()
    model, weights = request.encoder.load()  # fails early on a bad checkpoint
    key = request.key([i["id"] for i in items], weights)
    tiles = TileGrid(request.tile_size).tiles(request.aoi)
    manifest = RunManifest.load(store)
    resuming = manifest is not None
    if manifest is None:
        params: dict[str, Any] = {"spec": request.spec.to_dict(), "tile_size": request.tile_size}
        patches = request.patch_params()
        if patches is not None:
            params["patches"] = patches
        manifest = RunManifest(key, weights, params, {})
    else:
        manifest.check_same_run(key, weights, request.out)
    done = manifest.done()
    todo = [t for t in tiles if t.tile_id not in done]
    progress(
        f"{len(items)} items; {len(tiles)} tiles of {request.tile_size} px ({len(tiles) - len(todo)} already done); "
        f"encoder {request.encoder.config.describe()} ({weights})"
    )
    head = _head(request, store, resuming, progress)
    bands = embedding_bands(model, request.spec)
    products = tile_products(bands, head, with_embedding=request.write_embedding)
    if not resuming:
        manifest.save(store)
        store.put_bytes(dumps_ndjson(items), "items.ndjson")
    publisher = _map_tiles(request, items, todo, products, head, store, manifest, progress)
    manifest.save(store)  # the run-level manifest, derived from the tiles' status objects
    published = manifest.done()  # before this run and by it
    finished = [t for t in tiles if t.tile_id in published]
    keys = [f"tiles/{t.tile_id}/{p}.tif" for t in todo if t.tile_id in published for p in products]
    if finished:
        item_dicts = [store.get_json(f"tiles/{t.tile_id}/item.json") for t in finished]
        desc = f"PIMC maps of run {key}: {request.encoder.config.describe()}, {weights}"
        store.put_json(
            output_collection(item_dicts, collection=request.collection_id, description=desc),
            "collection.json",
        )
        keys += write_mosaics(store, finished, products) + ["collection.json"]
    failed = publisher.failed
    progress(
        f"tiles: {publisher.written} written, {len(tiles) - len(todo)} skipped, {len(failed)} failed of "
        f"{len(tiles)}  ({meter.elapsed:.0f}s)"
    )
    if failed:
        lines = "\n".join(f"  {tile_id}: {error}" for tile_id, error in failed.items())
        raise TilesFailedError(
            f"{len(failed)} of {len(tiles)} tiles failed (the others are written):\n{lines}\n"
            "rerun the same command to retry only the failed tiles"
        )
    return MapSummary(
        request.out, len(tiles), publisher.written, len(tiles) - len(todo), publisher.pixels, keys
    )


def _map_tiles(
    request: MapRequest,
    items: list[Item],
    todo: Sequence[Tile],
    products: Mapping[str, RasterProduct],
    head: Head | None,
    store: Store,
    manifest: RunManifest,
    progress: Progress,
) -> TilePublisher:
    """Stream the windows of the ``todo`` tiles through the pipeline into a :class:`TilePublisher`."""
    tasks = [(t, w) for t in todo for w in t.windows(request.window_size)]
    windows = {t.tile_id: 0 for t in todo}
    for tile, _ in tasks:
        windows[tile.tile_id] += 1
    meter = Meter(len(todo))
    with tempfile.TemporaryDirectory(prefix="pimc-tiles-") as tmp:
        publisher = TilePublisher(request, store, manifest, products, head, windows, Path(tmp))
        results = run_windows(
            tasks,
            series_reader(request.spec, items, request.encoder.config),
            embedder_factory(request),
            parallel=request.parallel,
            progress=progress,
            label="windows",
        )
        for index, result in results:
            if publisher.add(tasks[index][0], result):
                finished = publisher.written + len(publisher.failed)
                progress(
                    f"[tiles] {publisher.written} done, {len(publisher.failed)} failed, {len(todo)} to do  "
                    f"{meter.times(finished)}"
                )
    return publisher


def dry_run(request: MapRequest, *, progress: Progress = print) -> dict[str, Any]:
    """Plan a run without writing anything: tiles, pixels, bytes to read, and the estimated time."""
    items = request.search()
    tiles = TileGrid(request.tile_size).tiles(request.aoi)
    tasks = [(t, w) for t in tiles for w in t.windows(request.window_size)]
    pixels = int(sum(t.inside(w).sum() for t, w in tasks))
    # uint16 bands (B02, B04, B08; all ten for an image-patch encoder, 20 m ones counted as 10 m: an upper bound)
    # plus uint8 SCL at 20 m, for every acquisition that covers the AOI
    dates = len({i["properties"]["datetime"][:10] for i in items})
    reader = series_reader(request.spec, items, request.encoder.config)
    rate = _measure_throughput(request, reader, tasks)  # loads the encoder first: a bad checkpoint fails here
    bytes_to_read = int(pixels * dates * (len(reader.spec.bands) * 2 + 0.25))
    workers = max(1, request.parallel.workers)
    seconds = pixels / (rate * workers)
    plan = {
        "tiles": len(tiles),
        "windows": len(tasks),
        "pixels": pixels,
        "acquisitions": dates,
        "bytes_to_read": bytes_to_read,
        "pixels_per_second_per_worker": round(rate),
        "workers": workers,
        "estimated_seconds": round(seconds),
    }
    progress(
        f"dry run: {len(tiles)} tiles, {len(tasks)} windows, {pixels:,} pixels, {dates} acquisitions, "
        f"~{bytes_to_read / 1e9:.2f} GB to read; measured {rate:,.0f} pixels/s per worker x {workers} workers "
        f"-> ~{dt.timedelta(seconds=round(seconds))} (nothing was written)"
    )
    return plan


def _measure_throughput(request: MapRequest, reader: Any, tasks: Sequence[tuple[Tile, Window]]) -> float:
    """Pixels per second of one worker, measured on a 64 x 64 corner of the first window (read + embed)."""
    grid, window = tasks[0]
    size = min(64, window.height, window.width)
    r = grid.resolution
    x0, y1 = window.bounds[0], window.bounds[3]
    probe = Window(window.row, window.col, size, size, (x0, y1 - size * r, x0 + size * r, y1))
    compute = embedder_factory(request)()
    compute(grid, probe, reader(grid, probe))  # warm-up: model, GDAL and dask start-up
    meter = Meter(0)
    compute(grid, probe, reader(grid, probe))
    return probe.pixels / meter.elapsed
