"""AOI -> per-tile embedding and classification COGs on a tile grid, to a folder or a bucket, resumable.

:func:`map_aoi` is what ``jobs/embed_aoi.py`` and ``jobs/classify_aoi.py`` run:

1. items: a frozen snapshot, or a STAC search (then frozen into the output);
2. the tiles of a :class:`~pimc_ray.tiles.TileGrid` the AOI touches, and their windows;
3. the run key (items, model weights, parameters) checked against the output's manifest: finished tiles are
   skipped, a different model or different parameters are refused;
4. the head: loaded (``--head``), or fit on labels of a held-out area;
5. windows streamed through :func:`pimc_ray.runner.run_windows` (read tasks, then encoder actors), written
   into the tile's COG writers as they arrive; a tile whose windows are all in is published (COGs, STAC item,
   manifest entry) before the next. For an image-patch encoder every window is read grown by the encoder's
   halo (:func:`pimc_ray.infer.series_reader`), so pixels at tile edges get the same context as interiors;
6. the collection, the VRT mosaics and the frozen items.

Failed windows fail their tile, not the run: failed tiles are listed at the end and the job exits non-zero
(:class:`TilesFailedError`); rerunning redoes only them. See :mod:`pimc_ray.tile_outputs` for the layout.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.aoi import AOI
from pimc_ray.catalogs import BANDS
from pimc_ray.errors import InvalidConfigError, NoItemsFoundError, PimcError
from pimc_ray.infer import WindowEmbedder, balanced_sample, read_labels, sample_pixels, series_reader
from pimc_ray.labels import class_legend
from pimc_ray.models.checkpoint import EncoderConfig, load_checkpoint, sha256_file
from pimc_ray.patches import MEDIAN, check_composite
from pimc_ray.runner import AreaRequest, WindowFailure, run_windows
from pimc_ray.stac import search_items
from pimc_ray.storage import Store, open_store
from pimc_ray.tile_outputs import (
    RunManifest,
    TileWriters,
    dumps_items,
    output_collection,
    products,
    tile_item,
    write_mosaics,
)
from pimc_ray.tiles import Tile, TileGrid

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


class TilesFailedError(PimcError):
    """Some tiles failed; the others were written. Rerunning the same command redoes only the failed ones."""


@dataclass(frozen=True)
class MapRequest(AreaRequest):
    """One mapping run: the area (see :class:`~pimc_ray.runner.AreaRequest`), the model, the head, the tiles."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    checkpoint: Path | None = None
    """Trained encoder checkpoint; None means a random initialisation (labelled as such in the outputs)."""
    head: Path | None = None
    """A saved classification head; else one is fit on ``head_train_aoi``'s labels."""
    head_train_aoi: AOI | None = None
    labels_collection: str = "pimc-sample-labels"
    per_class: int = 400
    """Labelled pixels per class used to fit the head."""
    batch_size: int = 1024
    """Pixels per encoder batch."""
    tile_size: int = 1024
    """Tile edge in pixels (the unit of output)."""
    write_embedding: bool = True
    """False for classification-only runs."""
    collection_id: str = "pimc-maps"
    """Id of the STAC collection describing the outputs."""
    composite: str = MEDIAN
    """For an image-patch encoder: the composite its patches are cut from (``median`` or an ISO date), the one it
    was pretrained on (``jobs/embed_aoi.py`` takes it from the checkpoint). Plot encoders ignore it."""

    def __post_init__(self) -> None:
        if self.tile_size < 16 or self.tile_size % 16:
            raise InvalidConfigError(
                f"--tile-size must be a multiple of 16 pixels (COG blocks), got {self.tile_size}"
            )
        if self.window_size < 1 or self.batch_size < 1:
            raise InvalidConfigError(
                f"window and batch sizes must be positive: {self.window_size}, {self.batch_size}"
            )
        try:
            check_composite(self.composite)
        except ValueError as err:
            raise InvalidConfigError(str(err)) from err

    def patch_params(self) -> dict[str, Any] | None:
        """What decides an image-patch encoder's input besides its config: bands, composite and the read halo
        (None for plot encoders, whose run keys stay as they were)."""
        if self.encoder.inputs == "plots":
            return None
        return {"bands": list(BANDS), "composite": self.composite, "halo": self.encoder.halo}

    def key(self, item_ids: Sequence[str], weights: str) -> str:
        """Hash of everything that decides the outputs' pixels (``weights``: see :func:`load_encoder`).

        The encoder config decides the patch size and with it the halo; :meth:`patch_params` adds the bands and
        the composite an image-patch encoder's patches come from.
        """
        patches = self.patch_params()
        return self.base_key(
            item_ids,
            job="map",
            encoder=self.encoder.to_dict(),
            weights=weights,
            head=sha256_file(self.head / "head.safetensors") if self.head else None,
            head_train_aoi=self.head_train_aoi.__geo_interface__ if self.head_train_aoi else None,
            per_class=self.per_class,
            tile_size=self.tile_size,
            write_embedding=self.write_embedding,
            **({"patches": patches} if patches is not None else {}),
        )


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


def load_encoder(config: EncoderConfig, checkpoint: Path | None) -> tuple[Any, str]:
    """The encoder (eval mode) and a label of its weights: ``random-init ...`` or ``checkpoint sha256:...``.

    Raises:
        CheckpointError: the checkpoint is missing, corrupt or does not match ``config``.
    """
    if checkpoint is None:
        return config.build().eval(), f"random-init (untrained, seed {config.seed})"
    model, meta = load_checkpoint(checkpoint, expect=config)
    return model, f"checkpoint sha256:{meta['sha256']}"


@dataclass(frozen=True)
class EmbedderFactory:
    """Picklable recipe of the compute stage: each Ray actor calls it once (one model load)."""

    request: MapRequest

    def __call__(self) -> Callable[..., Any]:
        r = self.request
        model, _ = load_encoder(r.encoder, r.checkpoint)
        embedder = WindowEmbedder(
            r.spec,
            None,
            model,
            batch_size=r.batch_size,
            threads=r.parallel.torch_threads,
            device=r.parallel.device,
            composite=r.composite,
        )
        return embedder.compute


def fit_head(request: MapRequest, progress: Progress) -> Any:
    """Fit a logistic-regression head on embeddings of ``head_train_aoi`` against the labels collection.

    Window by window, up to ``per_class`` random labelled pixels per class are kept, then ``per_class`` per class
    are drawn from those: memory is bounded by the samples, not by the training area.
    """
    from pimc_ray.models.heads import LinearClassifier

    assert request.head_train_aoi is not None
    area, dates, url = request.head_train_aoi, request.spec.dates, request.stac_url
    items = search_items(area, dates, stac_url=url, collection=request.collection)
    label_items = search_items(area, dates, stac_url=url, collection=request.labels_collection)
    tasks = [(t, w) for t in TileGrid(request.tile_size).tiles(area) for w in t.windows(request.window_size)]
    xs, ys = [], []
    results = run_windows(
        tasks,
        series_reader(request.spec, items, request.encoder),
        EmbedderFactory(request),
        parallel=request.parallel,
        progress=progress,
        label="head",
    )
    for index, result in results:
        if isinstance(result, WindowFailure):
            raise PimcError(f"embedding the head's training area failed: {result.error}")
        grid, window = tasks[index]
        labels = read_labels(label_items, grid, window)
        x, y = sample_pixels(result.embedding, labels, per_class=request.per_class)
        xs.append(x)
        ys.append(y)
    x, y = balanced_sample(np.concatenate(xs), np.concatenate(ys), per_class=request.per_class)
    classes = sorted(int(c) for c in np.unique(y))
    if len(classes) < 2:
        raise NoItemsFoundError(
            f"the head's training area holds labels of {len(classes)} class(es); pick a larger --head-train-aoi"
        )
    names, colors = class_legend(label_items)
    progress(f"[head] fitting on {len(y)} labelled pixels of {len(classes)} classes")
    head = LinearClassifier(x.shape[1], classes, {c: names.get(c, str(c)) for c in classes}, colors)
    return head.fit(x, y)


def _load_or_fit_head(request: MapRequest, store: Store, resuming: bool, progress: Progress) -> Any:
    from pimc_ray.models.heads import LinearClassifier

    if request.head is not None:
        return LinearClassifier.load(request.head)
    if request.head_train_aoi is None:
        if not request.write_embedding:
            raise PimcError("a classification run needs --head or --head-train-aoi")
        return None
    if resuming and store.get_bytes("head/head.json") is not None:  # the head this run already fit
        with tempfile.TemporaryDirectory(prefix="pimc-head-") as tmp:
            for name in ("head.json", "head.safetensors"):
                Path(tmp, name).write_bytes(store.get_bytes(f"head/{name}") or b"")
            return LinearClassifier.load(tmp)
    head = fit_head(request, progress)
    with tempfile.TemporaryDirectory(prefix="pimc-head-") as tmp:
        head.save(tmp)
        for name in ("head.json", "head.safetensors"):
            store.put_file(Path(tmp, name), f"head/{name}")
    return head


def map_aoi(request: MapRequest, *, progress: Progress = logger.info) -> MapSummary:
    """Run a mapping job; see the module docstring.

    Raises:
        NoItemsFoundError, CatalogUnreachableError, InvalidAOIError, CheckpointError, OutputExistsError,
            StorageError: before anything is written.
        TilesFailedError: after writing every tile that could be written.
    """
    t0 = time.perf_counter()
    store = open_store(request.out)
    items = request.search()
    model, weights = load_encoder(request.encoder, request.checkpoint)  # fails early on a bad checkpoint
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
        f"encoder {request.encoder.name} ({weights})"
    )
    head = _load_or_fit_head(request, store, resuming, progress)
    embed_dim = int(model.embed_dim)
    prods = products(embed_dim, with_classes=head is not None, with_embedding=request.write_embedding)
    if not resuming:
        manifest.save(store)
        store.put_bytes(dumps_items(items), "items.ndjson")
    written, pixels, failed = _write_tiles(
        request, items, todo, prods, embed_dim, head, store, manifest, progress, t0
    )
    finished = [t for t in tiles if t.tile_id in manifest.done()]
    keys = [f"tiles/{t.tile_id}/{p}.tif" for t in todo if t.tile_id in manifest.done() for p in prods]
    if finished:
        item_dicts = [store.get_json(f"tiles/{t.tile_id}/item.json") for t in finished]
        desc = f"PIMC maps of run {key}: {request.encoder.name}, {weights}"
        store.put_json(
            output_collection(item_dicts, collection=request.collection_id, description=desc),
            "collection.json",
        )
        keys += write_mosaics(store, finished, prods, embed_dim, head) + ["collection.json"]
    progress(
        f"tiles: {written} written, {len(tiles) - len(todo)} skipped, {len(failed)} failed of {len(tiles)}"
    )
    if failed:
        lines = "\n".join(f"  {tile_id}: {error}" for tile_id, error in failed.items())
        raise TilesFailedError(
            f"{len(failed)} of {len(tiles)} tiles failed (the others are written):\n{lines}\n"
            "rerun the same command to retry only the failed tiles"
        )
    return MapSummary(request.out, len(tiles), written, len(tiles) - len(todo), pixels, keys)


def _write_tiles(
    request: MapRequest,
    items: list[dict[str, Any]],
    todo: Sequence[Tile],
    prods: Mapping[str, Any],
    embed_dim: int,
    head: Any,
    store: Store,
    manifest: RunManifest,
    progress: Progress,
    t0: float,
) -> tuple[int, int, dict[str, str]]:
    """Stream the windows of ``todo`` tiles into their writers; publish each tile when complete."""
    tasks = [(t, w) for t in todo for w in t.windows(request.window_size)]
    per_tile = {t.tile_id: sum(1 for tt, _ in tasks if tt.tile_id == t.tile_id) for t in todo}
    tags = {
        "pimc_weights": manifest.model,
        "pimc_run": manifest.key,
        "pimc_encoder": json.dumps(request.encoder.to_dict()),
    }
    props = {"pimc:model": manifest.model, "pimc:run": manifest.key, "pimc:encoder": request.encoder.name}
    open_tiles: dict[str, TileWriters] = {}
    written = pixels = 0
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="pimc-tiles-") as tmp:
        results = run_windows(
            tasks,
            series_reader(request.spec, items, request.encoder),
            EmbedderFactory(request),
            parallel=request.parallel,
            progress=progress,
            label="windows",
        )
        for index, result in results:
            tile = tasks[index][0]
            writers = open_tiles.get(tile.tile_id)
            if writers is None:
                folder = Path(tmp, tile.tile_id)
                folder.mkdir()
                writers = open_tiles[tile.tile_id] = TileWriters(tile, folder, prods, embed_dim, head, tags)
            if isinstance(result, WindowFailure):
                writers.failures.append(result.error)
            else:
                pixels += writers.write(result)
            writers.windows_done += 1
            if writers.windows_done < per_tile[tile.tile_id]:
                continue
            del open_tiles[tile.tile_id]
            if writers.failures:
                writers.abort()
                failed[tile.tile_id] = writers.failures[0]
                manifest.mark(tile.tile_id, "failed", error=writers.failures[0])
            else:
                keys = writers.publish(store)
                item = tile_item(
                    tile,
                    keys,
                    prods,
                    collection=request.collection_id,
                    embed_dim=embed_dim,
                    dates=(request.spec.dates.start, request.spec.dates.end),
                    properties=props,
                    head=head,
                )
                store.put_json(item, f"tiles/{tile.tile_id}/item.json")
                manifest.mark(tile.tile_id, "done", files=sorted(keys.values()))
                written += 1
            manifest.save(store)
            _report(progress, written, len(failed), len(todo), t0)
    return written, pixels, failed


def _report(progress: Progress, written: int, failed: int, total: int, t0: float) -> None:
    elapsed = time.perf_counter() - t0
    finished = written + failed
    eta = elapsed / finished * (total - finished) if finished else math.nan
    progress(f"[tiles] {written} done, {failed} failed, {total} to do  {elapsed:.0f}s  eta {eta:.0f}s")


def dry_run(request: MapRequest, *, progress: Progress = print) -> dict[str, Any]:
    """Plan a run without writing anything: tiles, pixels, bytes to read, and the estimated time."""
    items = request.search()
    tiles = TileGrid(request.tile_size).tiles(request.aoi)
    tasks = [(t, w) for t in tiles for w in t.windows(request.window_size)]
    pixels = int(sum(t.inside(w).sum() for t, w in tasks))
    # uint16 bands (B02, B04, B08; all ten for an image-patch encoder, 20 m ones counted as 10 m: an upper bound)
    # plus uint8 SCL at 20 m, for every acquisition that covers the AOI
    dates = len({i["properties"]["datetime"][:10] for i in items})
    rate = _measure_throughput(request, items, tasks)  # loads the encoder first: a bad checkpoint fails here
    n_bands = len(series_reader(request.spec, [], request.encoder).spec.bands)
    bytes_to_read = int(pixels * dates * (n_bands * 2 + 0.25))
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


def _measure_throughput(request: MapRequest, items: list[dict[str, Any]], tasks: Sequence[Any]) -> float:
    """Pixels per second of one worker, measured on a 64 x 64 corner of the first window (read + embed)."""
    from pimc_ray.tiles import Window

    grid, window = tasks[0]
    size = min(64, window.height, window.width)
    r = grid.resolution
    x0, y1 = window.bounds[0], window.bounds[3]
    probe = Window(window.row, window.col, size, size, (x0, y1 - size * r, x0 + size * r, y1))
    compute = EmbedderFactory(request)()
    reader = series_reader(request.spec, items, request.encoder)
    compute(grid, probe, reader(grid, probe))  # warm-up: model, GDAL and dask start-up
    t0 = time.perf_counter()
    compute(grid, probe, reader(grid, probe))
    return probe.pixels / (time.perf_counter() - t0)
