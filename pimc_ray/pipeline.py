"""AOI -> embedding and classification COGs: search, per-zone grids, windows on Ray actors, head, writing.

:func:`map_aoi` is what ``jobs/embed_aoi.py`` runs. Windows are embedded by :func:`pimc_ray.runner.run_windows`
(Ray actors, or this process with ``workers=0``) and streamed into windowed COG writers as they finish, so the
driver's memory is bounded by a window, not by the AOI.

Outputs in ``out_dir`` (one set per UTM zone the AOI touches, ``<zone>`` = ``epsg32632`` etc.)::

    embedding_<zone>.tif   float32 (D bands ``emb_00``..), NaN nodata
    classes_<zone>.tif     uint8 class ids with a colour map, 0 nodata        (when a head is given or fit)
    confidence_<zone>.tif  float32 softmax probability of the predicted class, NaN nodata
    valid_count_<zone>.tif uint16 cloud-free observations per pixel, 0 nodata
    head/                  the classification head (safetensors + JSON)
    run.json               parameters, item ids, model, timings; written last

Everything is staged (:class:`pimc_ray.outputs.Staging`): a failed run leaves no outputs behind, and a rerun
with the same parameters finds ``run.json`` and skips the work.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.aoi import AOI
from pimc_ray.cog import COGWriter
from pimc_ray.errors import NoItemsFoundError
from pimc_ray.infer import (
    WindowEmbedder,
    WindowResult,
    balanced_sample,
    classify,
    read_labels,
    sample_pixels,
)
from pimc_ray.models.checkpoint import EncoderConfig, load_checkpoint, sha256_file
from pimc_ray.outputs import RunSummary, Staging, finished_run, write_windows
from pimc_ray.runner import AreaRequest, run_windows
from pimc_ray.stac import save_snapshot, search_items
from pimc_ray.tiles import OutputGrid, aoi_grids

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MapRequest(AreaRequest):
    """One AOI mapping run: the area (see :class:`~pimc_ray.runner.AreaRequest`), the model and the head."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    checkpoint: Path | None = None
    """Trained encoder checkpoint; None means a random initialisation (labelled as such in the outputs)."""
    head: Path | None = None
    """A saved classification head; else one is fit on ``head_train_aoi``'s labels."""
    head_train_aoi: AOI | None = None
    labels_collection: str = "pimc-sample-labels"
    per_class: int = 400
    """Labelled pixels per class used to fit the head."""
    gpus_per_worker: float = 0.0
    """GPUs per actor (fractions allowed); > 0 runs indices, plots and encoder on CUDA with CuPy."""
    batch_size: int = 1024
    """Pixels per encoder batch."""

    @property
    def device(self) -> str:
        """Where indices, plots and the encoder run."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    def key(self, item_ids: Sequence[str], weights: str) -> str:
        """Hash of everything that decides the outputs' pixels (``weights``: see :func:`load_encoder`)."""
        return self.base_key(
            item_ids,
            job="embed",
            encoder=self.encoder.to_dict(),
            weights=weights,
            head=sha256_file(self.head / "head.safetensors") if self.head else None,
            head_train_aoi=self.head_train_aoi.__geo_interface__ if self.head_train_aoi else None,
            per_class=self.per_class,
        )


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
    """Picklable recipe of a :class:`WindowEmbedder`: each Ray actor calls it once (one model load)."""

    request: MapRequest
    items: list[dict[str, Any]]

    def __call__(self) -> WindowEmbedder:
        r = self.request
        model, _ = load_encoder(r.encoder, r.checkpoint)
        threads = 1 if r.workers > 0 else (os.cpu_count() or 1)
        return WindowEmbedder(
            r.spec, self.items, model, batch_size=r.batch_size, threads=threads, device=r.device
        )


def _tasks(grids: Sequence[OutputGrid], size: int) -> list[tuple[OutputGrid, Any]]:
    return [(g, w) for g in grids for w in g.windows(size)]


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
    tasks = _tasks(aoi_grids(area), request.window_size)
    xs, ys = [], []
    factory = EmbedderFactory(request, items)
    for index, result in run_windows(
        tasks,
        factory,
        workers=request.workers,
        gpus_per_worker=request.gpus_per_worker,
        progress=progress,
        label="head",
    ):
        grid, window = tasks[index]
        x, y = sample_pixels(
            result.embedding, read_labels(label_items, grid, window), per_class=request.per_class
        )
        xs.append(x)
        ys.append(y)
    x, y = balanced_sample(np.concatenate(xs), np.concatenate(ys), per_class=request.per_class)
    classes = sorted(int(c) for c in np.unique(y))
    if len(classes) < 2:
        raise NoItemsFoundError(
            f"the head's training area holds labels of {len(classes)} class(es); pick a larger --head-train-aoi"
        )
    names, colors = _class_legend(label_items)
    progress(f"[head] fitting on {len(y)} labelled pixels of {len(classes)} classes")
    head = LinearClassifier(x.shape[1], classes, {c: names.get(c, str(c)) for c in classes}, colors)
    return head.fit(x, y)


def _class_legend(label_items: Sequence[Mapping[str, Any]]) -> tuple[dict[int, str], dict[int, str]]:
    """Class names and hex colours from the labels' ``classification:classes``."""
    for item in label_items:
        for asset in item.get("assets", {}).values():
            classes = asset.get("classification:classes") or []
            if classes:
                names = {int(c["value"]): str(c.get("name", c["value"])) for c in classes}
                colors = {int(c["value"]): str(c["color_hint"]) for c in classes if "color_hint" in c}
                return names, colors
    return {}, {}


class _GridWriters:
    """The COG writers of one output grid (one UTM zone)."""

    def __init__(
        self, staging: Staging, grid: OutputGrid, embed_dim: int, head: Any, tags: Mapping[str, str]
    ):
        zone = f"epsg{grid.epsg}"
        height, width = grid.shape
        common = {
            "height": height,
            "width": width,
            "transform": grid.transform,
            "epsg": grid.epsg,
            "tags": tags,
        }
        self.embedding = COGWriter(
            staging.path(f"embedding_{zone}.tif"),
            count=embed_dim,
            dtype="float32",
            nodata=float("nan"),
            band_descriptions=[f"emb_{i:02d}" for i in range(embed_dim)],
            **common,
        )
        self.count = COGWriter(
            staging.path(f"valid_count_{zone}.tif"),
            count=1,
            dtype="uint16",
            nodata=0,
            band_descriptions=["valid_observations"],
            **common,
        )
        self.head = head
        self.classes = self.confidence = None
        if head is not None:
            class_tags = {**tags, "pimc_classes": json.dumps(head.class_names)}
            self.classes = COGWriter(
                staging.path(f"classes_{zone}.tif"),
                count=1,
                dtype="uint8",
                nodata=0,
                colormap=head.colormap(),
                band_descriptions=["class_id"],
                **{**common, "tags": class_tags},
            )
            self.confidence = COGWriter(
                staging.path(f"confidence_{zone}.tif"),
                count=1,
                dtype="float32",
                nodata=float("nan"),
                band_descriptions=["confidence"],
                **common,
            )

    def writers(self) -> list[COGWriter]:
        return [w for w in (self.embedding, self.count, self.classes, self.confidence) if w is not None]

    def write(self, result: WindowResult) -> None:
        w = result.window
        self.embedding.write(result.embedding, w.row, w.col)
        count = np.where(np.isfinite(result.embedding[0]), result.valid_count, 0).astype(np.uint16)
        self.count.write(count[None], w.row, w.col)
        if self.head is not None:
            classes, confidence = classify(result.embedding, self.head)
            self.classes.write(classes[None], w.row, w.col)  # type: ignore[union-attr]
            self.confidence.write(confidence[None], w.row, w.col)  # type: ignore[union-attr]


def map_aoi(request: MapRequest, *, progress: Progress = logger.info) -> RunSummary:
    """Run the whole AOI mapping; see the module docstring for the outputs.

    Raises:
        NoItemsFoundError, CatalogUnreachableError, InvalidAOIError, AllCloudError, CheckpointError: with a
            message naming the fix; nothing is written to ``out_dir`` in that case.
    """
    t0 = time.perf_counter()
    items = request.search()
    model, weights = load_encoder(request.encoder, request.checkpoint)  # fails early on a bad checkpoint
    key = request.key([i["id"] for i in items], weights)
    done = finished_run(request.out_dir, key)
    if done is not None:
        progress(f"outputs for run {key} already in {request.out_dir}; nothing to do")
        return RunSummary.of_finished(request.out_dir, done)
    progress(f"{len(items)} items; encoder {request.encoder.name} ({weights})")

    if request.head is not None:
        from pimc_ray.models.heads import LinearClassifier

        head = LinearClassifier.load(request.head)
    elif request.head_train_aoi is not None:
        head = fit_head(request, progress)
    else:
        head = None

    grids = aoi_grids(request.aoi)
    tasks = _tasks(grids, request.window_size)
    tags = {"pimc_weights": weights, "pimc_encoder": json.dumps(request.encoder.to_dict()), "pimc_run": key}
    with Staging(request.out_dir) as staging:
        writers = [_GridWriters(staging, g, int(model.embed_dim), head, tags) for g in grids]
        results = run_windows(
            tasks,
            EmbedderFactory(request, items),
            workers=request.workers,
            gpus_per_worker=request.gpus_per_worker,
            progress=progress,
            label="aoi",
        )

        def write(index: int, result: WindowResult) -> int:
            writers[grids.index(tasks[index][0])].write(result)
            return int(np.isfinite(result.embedding[0]).sum())

        pixels = write_windows(results, write, [w for gw in writers for w in gw.writers()], request.spec)
        save_snapshot(items, staging.path("items.ndjson"))  # the run's frozen item list
        if head is not None:
            head.save(staging.path("head"))
        meta = {
            "key": key,
            "pixels": pixels,
            "seconds": round(time.perf_counter() - t0, 3),
            "weights": weights,
            "checkpoint": str(request.checkpoint.resolve()) if request.checkpoint else None,
            "encoder": request.encoder.to_dict(),
            "spec": request.spec.to_dict(),
            "stac_url": request.stac_url,
            "collection": request.collection,
            "items": [i["id"] for i in items],
            "aoi": request.aoi.__geo_interface__,
        }
        files = staging.commit(meta)
    progress(f"wrote {len(files)} outputs to {request.out_dir}")
    return RunSummary(request.out_dir, files, pixels)
