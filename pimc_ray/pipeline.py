"""AOI -> embedding and classification COGs: search, per-zone grids, windows on Ray actors, head, writing.

:func:`map_aoi` is what ``jobs/embed_aoi.py`` runs. With ``workers=0`` everything runs in this process (tests,
notebooks); otherwise windows are spread over a pool of Ray actors, each holding the encoder once.

Outputs in ``out_dir`` (one set per UTM zone the AOI touches, ``<zone>`` = ``epsg32632`` etc.)::

    embedding_<zone>.tif   float32 (D bands ``emb_00``..), NaN nodata
    classes_<zone>.tif     uint8 class ids with a colour map, 0 nodata
    confidence_<zone>.tif  float32 softmax probability of the predicted class, NaN nodata
    valid_count_<zone>.tif uint16 cloud-free observations per pixel
    head/                  the classification head (safetensors + JSON)
    run.json               parameters, item ids, model, timings; written last

Files are first written to a hidden staging folder inside ``out_dir`` and moved in place only when every one is
complete, so a failed run leaves no outputs behind; a rerun with the same parameters finds ``run.json`` and
skips the work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.aoi import AOI
from pimc_ray.cog import write_cog
from pimc_ray.errors import AllCloudError, NoItemsFoundError
from pimc_ray.infer import (
    EmbedSpec,
    WindowEmbedder,
    WindowResult,
    assemble,
    classify,
    read_labels,
    sample_pixels,
)
from pimc_ray.models.checkpoint import EncoderConfig, load_checkpoint, sha256_file
from pimc_ray.stac import search_items
from pimc_ray.tiles import OutputGrid, Window, split_by_zone

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class MapRequest:
    """One AOI mapping run."""

    aoi: AOI
    spec: EmbedSpec
    stac_url: str
    out_dir: Path
    collection: str = "sentinel-2-l2a"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    checkpoint: Path | None = None
    """Trained encoder checkpoint; None means a random initialisation (labelled as such in the outputs)."""
    head: Path | None = None
    """A saved classification head; else one is fit on ``head_train_aoi``'s labels."""
    head_train_aoi: AOI | None = None
    labels_collection: str = "pimc-sample-labels"
    per_class: int = 400
    """Labelled pixels per class used to fit the head."""
    max_cloud_cover: float | None = None
    workers: int = 2
    """Ray actors (0: run in this process)."""
    gpus_per_worker: float = 0.0
    """GPUs per actor (fractions allowed); > 0 runs indices, plots and encoder on CUDA with CuPy."""
    window_size: int = 128
    """Window edge in pixels (the unit of work)."""

    @property
    def device(self) -> str:
        """Where indices, plots and the encoder run."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"

    def key(self, item_ids: Sequence[str], weights: str) -> str:
        """Hash of everything that decides the outputs' pixels (``weights``: see :func:`load_encoder`)."""
        payload = {
            "aoi": self.aoi.__geo_interface__,
            "spec": self.spec.to_dict(),
            "encoder": self.encoder.to_dict(),
            "weights": weights,
            "head": sha256_file(self.head / "head.safetensors") if self.head else None,
            "head_train_aoi": self.head_train_aoi.__geo_interface__ if self.head_train_aoi else None,
            "per_class": self.per_class,
            "items": sorted(item_ids),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class MapSummary:
    """What a run produced."""

    out_dir: Path
    files: list[Path]
    pixels: int
    """Valid (embedded) AOI pixels."""
    seconds: float
    skipped: bool = False


def load_encoder(config: EncoderConfig, checkpoint: Path | None) -> tuple[Any, str]:
    """The encoder (eval mode) and a label of its weights: ``random-init ...`` or ``checkpoint <sha256>``.

    Raises:
        CheckpointError: the checkpoint is missing, corrupt or does not match ``config``.
    """
    if checkpoint is None:
        return config.build().eval(), f"random-init (untrained, seed {config.seed})"
    model, meta = load_checkpoint(checkpoint, expect=config)
    return model, f"checkpoint sha256:{meta['sha256']}"


class _EmbedActor:
    """Ray actor body: builds the encoder once, then embeds windows."""

    def __init__(self, request: MapRequest, items: list[dict[str, Any]]):
        model, _ = load_encoder(request.encoder, request.checkpoint)
        self.embedder = WindowEmbedder(request.spec, items, model, threads=1, device=request.device)

    def embed(self, index: int, grid: OutputGrid, window: Window) -> tuple[int, WindowResult]:
        return index, self.embedder(grid, window)


def embed_grids(
    grids: Sequence[OutputGrid],
    items: list[dict[str, Any]],
    request: MapRequest,
    *,
    progress: Progress,
    label: str,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Embed every window of ``grids``; returns per grid ``(embedding (D, H, W), valid_count (H, W))``."""
    tasks = [(g, w) for g in grids for w in g.windows(request.window_size)]
    total_px = sum(w.pixels for _, w in tasks)
    results: list[list[WindowResult]] = [[] for _ in grids]
    t0 = time.perf_counter()
    done_px = 0
    for i, (task, result) in enumerate(_run_windows(tasks, items, request), start=1):
        results[grids.index(tasks[task][0])].append(result)
        done_px += result.window.pixels
        elapsed = time.perf_counter() - t0
        eta = elapsed / done_px * (total_px - done_px)
        progress(
            f"[{label}] windows {i}/{len(tasks)}  pixels {done_px}/{total_px}  {elapsed:.0f}s  eta {eta:.0f}s"
        )
    embed_dim = next(r.embedding.shape[0] for rs in results for r in rs)
    return [assemble(g, r, embed_dim) for g, r in zip(grids, results, strict=True)]


def _run_windows(
    tasks: Sequence[tuple[OutputGrid, Window]], items: list[dict[str, Any]], request: MapRequest
) -> Iterator[tuple[int, WindowResult]]:
    """Yield ``(task index, result)`` as windows finish, in this process or on a pool of Ray actors."""
    if request.workers == 0:
        model, _ = load_encoder(request.encoder, request.checkpoint)
        embedder = WindowEmbedder(
            request.spec, items, model, threads=os.cpu_count() or 1, device=request.device
        )
        for i, (grid, window) in enumerate(tasks):
            yield i, embedder(grid, window)
        return
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    actor_cls = ray.remote(num_cpus=1, num_gpus=request.gpus_per_worker)(_EmbedActor)
    items_ref = ray.put(items)
    n_actors = min(request.workers, len(tasks))
    actors = [actor_cls.remote(request, items_ref) for _ in range(n_actors)]  # type: ignore[attr-defined]
    try:
        pool = ActorPool(actors)
        yield from pool.map_unordered(lambda actor, i: actor.embed.remote(i, *tasks[i]), range(len(tasks)))
    finally:
        for actor in actors:
            ray.kill(actor)


def _grids(aoi: AOI, resolution: float) -> list[OutputGrid]:
    return [OutputGrid.for_aoi_part(part, epsg, resolution) for epsg, part in split_by_zone(aoi).items()]


def fit_head(request: MapRequest, progress: Progress) -> Any:
    """Fit a logistic-regression head on embeddings of ``head_train_aoi`` against the labels collection."""
    from pimc_ray.models.heads import LinearClassifier

    assert request.head_train_aoi is not None
    area, dates, url = request.head_train_aoi, request.spec.dates, request.stac_url
    items = search_items(area, dates, stac_url=url, collection=request.collection)
    label_items = search_items(area, dates, stac_url=url, collection=request.labels_collection)
    grids = _grids(area, 10.0)
    maps = embed_grids(grids, items, request, progress=progress, label="head")
    samples = [
        sample_pixels(embedding, read_labels(label_items, grid), per_class=request.per_class)
        for grid, (embedding, _) in zip(grids, maps, strict=True)
    ]
    x = np.concatenate([s[0] for s in samples])
    y = np.concatenate([s[1] for s in samples])
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


def map_aoi(request: MapRequest, *, progress: Progress = logger.info) -> MapSummary:
    """Run the whole AOI mapping; see the module docstring for the outputs.

    Raises:
        NoItemsFoundError, CatalogUnreachableError, InvalidAOIError, AllCloudError, CheckpointError: with a
            message naming the fix; nothing is written to ``out_dir`` in that case.
    """
    t0 = time.perf_counter()
    items = search_items(
        request.aoi,
        request.spec.dates,
        stac_url=request.stac_url,
        collection=request.collection,
        max_cloud_cover=request.max_cloud_cover,
    )
    _, weights = load_encoder(request.encoder, request.checkpoint)  # fails early on a bad checkpoint
    key = request.key([i["id"] for i in items], weights)
    run_json = request.out_dir / "run.json"
    if run_json.exists() and json.loads(run_json.read_text()).get("key") == key:
        files = sorted(p for p in request.out_dir.iterdir() if p.suffix == ".tif")
        progress(f"outputs for run {key} already in {request.out_dir}; nothing to do")
        meta = json.loads(run_json.read_text())
        return MapSummary(request.out_dir, files, int(meta["pixels"]), float(meta["seconds"]), skipped=True)
    progress(f"{len(items)} items; encoder {request.encoder.name} ({weights})")

    grids = _grids(request.aoi, 10.0)
    maps = embed_grids(grids, items, request, progress=progress, label="aoi")
    pixels = int(sum(np.isfinite(e[0]).sum() for e, _ in maps))
    if pixels == 0:
        raise AllCloudError(
            f"no AOI pixel has {request.spec.timegrid.min_valid} or more cloud-free observations between "
            f"{request.spec.dates.start} and {request.spec.dates.end}; widen the dates or lower --min-valid"
        )
    if request.head is not None:
        from pimc_ray.models.heads import LinearClassifier

        head = LinearClassifier.load(request.head)
    elif request.head_train_aoi is not None:
        head = fit_head(request, progress)
    else:
        head = None
    seconds = time.perf_counter() - t0
    meta = {
        "key": key,
        "pixels": pixels,
        "seconds": round(seconds, 3),
        "weights": weights,
        "checkpoint": str(request.checkpoint.resolve()) if request.checkpoint else None,
        "encoder": request.encoder.to_dict(),
        "spec": request.spec.to_dict(),
        "stac_url": request.stac_url,
        "collection": request.collection,
        "items": [i["id"] for i in items],
        "aoi": request.aoi.__geo_interface__,
    }
    files = _write_outputs(request.out_dir, grids, maps, head, meta)
    progress(f"wrote {len(files)} files to {request.out_dir}")
    return MapSummary(request.out_dir, files, pixels, seconds)


def _write_outputs(
    out_dir: Path,
    grids: Sequence[OutputGrid],
    maps: Sequence[tuple[np.ndarray, np.ndarray]],
    head: Any,
    meta: dict[str, Any],
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".staging-"))
    tags = {
        "pimc_weights": meta["weights"],
        "pimc_encoder": json.dumps(meta["encoder"]),
        "pimc_run": meta["key"],
    }
    try:
        names: list[str] = []
        for grid, (embedding, count) in zip(grids, maps, strict=True):
            zone = f"epsg{grid.epsg}"
            common = {"transform": grid.transform, "epsg": grid.epsg}
            dims = embedding.shape[0]
            write_cog(
                staging / f"embedding_{zone}.tif",
                embedding,
                nodata=float("nan"),
                band_descriptions=[f"emb_{i:02d}" for i in range(dims)],
                tags=tags,
                **common,
            )
            write_cog(
                staging / f"valid_count_{zone}.tif",
                count[None],
                nodata=0,
                band_descriptions=["valid_observations"],
                tags=tags,
                **common,
            )
            names += [f"embedding_{zone}.tif", f"valid_count_{zone}.tif"]
            if head is not None:
                classes, confidence = classify(embedding, head)
                class_tags = {**tags, "pimc_classes": json.dumps(head.class_names)}
                write_cog(
                    staging / f"classes_{zone}.tif",
                    classes[None],
                    nodata=0,
                    band_descriptions=["class_id"],
                    tags=class_tags,
                    colormap=head.colormap(),
                    **common,
                )
                write_cog(
                    staging / f"confidence_{zone}.tif",
                    confidence[None],
                    nodata=float("nan"),
                    band_descriptions=["confidence"],
                    tags=tags,
                    **common,
                )
                names += [f"classes_{zone}.tif", f"confidence_{zone}.tif"]
        if head is not None:
            head.save(staging / "head")
            names.append("head")
        (staging / "run.json").write_text(json.dumps(meta, indent=2))
        for name in names:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging / name, target)
        os.replace(staging / "run.json", out_dir / "run.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / n for n in names]
