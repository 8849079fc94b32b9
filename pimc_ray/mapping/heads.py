"""Classification heads on frozen embeddings: fitting one from labels, and classifying embedding blocks.

:func:`fit_head` is the one head-fitting path, used by ``jobs/train_head.py`` (labels from a GeoJSON, a raster or
a STAC collection) and by the mapping jobs' ``--head-train-aoi``:

1. the windows that hold labels are found on the driver (:func:`~pimc_ray.data.labels.labelled_windows`);
2. only those windows are read and embedded, through :func:`~pimc_ray.mapping.runner.run_windows` (the workers
   of a mapping run, or this process), and each keeps up to ``per_class`` random labelled pixels per class;
3. a class-balanced draw of ``per_class`` pixels per class fits a
   :class:`~pimc_ray.models.heads.LinearClassifier`.

Memory is bounded by the samples, not by the labelled area, and the result does not depend on how many workers
ran it (samples are gathered in window order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pimc_ray.data.labels import LabelSource, balanced_sample, labelled_windows, sample_pixels
from pimc_ray.data.series import SeriesReader, WindowSeries
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.errors import LabelError, NoItemsFoundError, PimcError
from pimc_ray.mapping.embedder import EmbedderFactory
from pimc_ray.mapping.runner import Parallelism, WindowFailure, run_windows
from pimc_ray.models.heads import HEAD_CONFIG, HEAD_WEIGHTS, Head, LinearClassifier
from pimc_ray.progress import Progress
from pimc_ray.storage import Store

logger = logging.getLogger(__name__)

__all__ = ["HEAD_FILES", "classify", "fit_head", "gather_samples", "load_head", "save_head"]

#: The files of a saved head (:meth:`~pimc_ray.models.heads.LinearClassifier.save`).
HEAD_FILES = (HEAD_CONFIG, HEAD_WEIGHTS)

Samples = tuple[np.ndarray, np.ndarray]


def _window_key(grid: OutputGrid, window: Window) -> tuple[int, tuple[float, float, float, float]]:
    """A window's identity across the grids of a run: its zone and its bounds in the zone's metres."""
    return grid.epsg, window.bounds


@dataclass(frozen=True)
class _SamplerFactory:
    """Picklable compute stage of head fitting: embed a window, keep up to ``per_class`` labelled pixels per
    class (the labels of every labelled window travel once per actor)."""

    embedder: EmbedderFactory
    labels: Mapping[tuple[int, tuple[float, float, float, float]], np.ndarray]
    per_class: int
    seed: int

    def __call__(self) -> Callable[[OutputGrid, Window, WindowSeries], Samples]:
        embed = self.embedder()

        def sample(grid: OutputGrid, window: Window, series: WindowSeries) -> Samples:
            result = embed(grid, window, series)
            labels = self.labels[_window_key(grid, window)]
            return sample_pixels(result.embedding, labels, per_class=self.per_class, seed=self.seed)

        return sample


def fit_head(
    source: LabelSource,
    grids: Sequence[OutputGrid],
    *,
    reader: SeriesReader,
    embedder: EmbedderFactory,
    parallel: Parallelism,
    window_size: int = 128,
    per_class: int = 400,
    seed: int = 0,
    progress: Progress = logger.info,
) -> tuple[LinearClassifier, dict[str, Any]]:
    """Fit a logistic-regression head on the embeddings of the labelled pixels of ``grids``.

    Args:
        source: where the labels come from.
        grids: the grids (a zone's grid, or tiles) whose windows are searched for labels.
        reader: the read stage the encoder needs (:func:`~pimc_ray.mapping.embedder.series_reader`).
        embedder: the compute stage's encoder recipe.
        parallel: the workers (``workers=0``: this process).
        window_size: window edge in pixels.
        per_class: labelled pixels per class kept per window, and drawn in the end.
        seed: seed of the pixel draws.
        progress: receives progress lines.

    Returns:
        ``(head, stats)``: the fitted head, and the pixels, per-class counts and training accuracy of the fit.

    Raises:
        LabelError: no label inside the grids, or fewer than two classes with valid pixels.
        NoItemsFoundError: no labelled pixel has a valid embedding.
        PimcError: a labelled window could not be read or embedded.
    """
    labelled = labelled_windows(source, grids, window_size)
    if not labelled:
        raise LabelError(
            "no label falls inside the area; check the labels' CRS (GeoJSON is lon/lat) and the area"
        )
    progress(f"[head] {len(labelled)} windows hold labels")
    factory = _SamplerFactory(
        embedder, {_window_key(g, w): labels for g, w, labels in labelled}, per_class, seed
    )
    tasks = [(g, w) for g, w, _ in labelled]
    x, y = gather_samples(tasks, reader, factory, parallel=parallel, progress=progress, label="head")
    if len(y) == 0:
        raise NoItemsFoundError(
            "no labelled pixel has a valid embedding (too cloudy?); widen the dates or the labels"
        )
    x, y = balanced_sample(x, y, per_class=per_class, seed=seed)
    classes = sorted(int(c) for c in np.unique(y))
    if len(classes) < 2:
        raise LabelError(
            f"the labels hold {len(classes)} class(es) with valid pixels; a head needs two or more: "
            "widen the labelled area"
        )
    names, colors = source.legend()
    progress(f"[head] fitting on {len(y)} labelled pixels of {len(classes)} classes")
    head = LinearClassifier(x.shape[1], classes, {c: names.get(c, str(c)) for c in classes}, colors).fit(x, y)
    pred, _ = head.predict(x)
    counts = {int(c): int((y == c).sum()) for c in classes}
    stats = {"pixels": int(len(y)), "per_class": counts, "train_accuracy": float(np.mean(pred == y))}
    return head, stats


def gather_samples(
    tasks: Sequence[tuple[OutputGrid, Window]],
    reader: Any,
    factory: Callable[[], Callable[..., Samples]],
    *,
    parallel: Parallelism,
    progress: Progress,
    label: str,
) -> Samples:
    """The ``(x, y)`` samples a head is fit on: every task's, in task order, from the workers of
    :func:`~pimc_ray.mapping.runner.run_windows` (a window that fails fails the fit: a head must not depend on
    which windows could be read)."""
    xs, ys = [], []
    for _, result in run_windows(tasks, reader, factory, parallel=parallel, progress=progress, label=label):
        if isinstance(result, WindowFailure):
            raise PimcError(f"embedding the training area of the {label} head failed: {result.error}")
        xs.append(result[0])
        ys.append(result[1])
    return np.concatenate(xs), np.concatenate(ys)


def save_head(head: LinearClassifier, store: Store, prefix: str) -> None:
    """Put a head's files under ``prefix/`` of a store."""
    head.save(store.uri(prefix))


def load_head(store: Store, prefix: str) -> LinearClassifier | None:
    """The head saved under ``prefix/`` of a store, or None when there is none."""
    if not all(store.exists(f"{prefix}/{name}") for name in HEAD_FILES):
        return None
    return LinearClassifier.load(store.uri(prefix))


def classify(embedding: np.ndarray, head: Head) -> tuple[np.ndarray, np.ndarray]:
    """Class ids ``(h, w)`` uint8 (0 = nodata) and confidence ``(h, w)`` float32 (NaN nodata) from embeddings."""
    d, height, width = embedding.shape
    flat = embedding.reshape(d, -1).T
    ok = np.isfinite(flat).all(axis=1)
    classes = np.zeros(height * width, dtype=np.uint8)
    confidence = np.full(height * width, np.nan, dtype=np.float32)
    if ok.any():
        ids, conf = head.predict(flat[ok])
        classes[ok], confidence[ok] = ids.astype(np.uint8), conf
    return classes.reshape(height, width), confidence.reshape(height, width)
