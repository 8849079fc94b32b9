"""Per-window inference: regular series -> recurrence plots -> encoder -> embedding block; heads on embeddings.

:class:`WindowEmbedder` owns an encoder and turns one :class:`~pimc_ray.tiles.Window` of an output grid into an
embedding block. It is a plain class so tests and notebooks call it directly; jobs run it on Ray actors through
:func:`pimc_ray.runner.run_windows` (one model load per actor). Recurrence plots are built batch by batch right
before the encoder and dropped after (see docs/design.md: one tile's plots would be terabytes).

Array flow for a window of P = h x w pixels (T steps, D embedding dims)::

    read_series         (T, 3, P)     float32 blue/red/NIR on the regular grid, NaN for nodata pixels
    rp_from_reflectance (n, 3, T, T)  per batch of n valid pixels (NDVI, EVI, SAVI plots)
    encoder             (n, D)
    -> embedding        (D, h, w)     float32, NaN nodata (and outside the AOI)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pimc_ray.recurrence import rp_from_reflectance
from pimc_ray.series import INDEX_BANDS, SeriesSpec, WindowSeries, read_series
from pimc_ray.stack import read_window, stackstac_ready
from pimc_ray.tiles import OutputGrid, Window
from pimc_ray.xp import import_cupy, to_torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowResult:
    """One window's embedding outputs."""

    window: Window
    embedding: np.ndarray
    """(D, h, w) float32, NaN nodata."""
    valid_count: np.ndarray
    """(h, w) uint16 valid observations per pixel."""


class WindowEmbedder:
    """Holds an encoder; embeds windows of an output grid from a fixed list of items.

    Args:
        spec: the series specification (its bands must be blue, red, NIR).
        items: Sentinel-2 L2A item dicts covering the grid (only needed to read windows: ``__call__``).
        encoder: a torch module mapping (n, 3, T, T) to (n, D); put in eval mode here.
        batch_size: pixels per encoder batch.
        threads: torch intra-op threads (1 per Ray CPU actor).
        device: ``cpu``, or ``cuda`` to build plots with CuPy and run the encoder on the GPU.
    """

    def __init__(
        self,
        spec: SeriesSpec,
        items: Sequence[Mapping[str, Any]] | None,
        encoder: Any,
        *,
        batch_size: int = 1024,
        threads: int = 1,
        device: str = "cpu",
    ):
        import torch

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if tuple(spec.bands) != INDEX_BANDS:
            raise ValueError(f"the embedder reads {INDEX_BANDS}, got bands {spec.bands}")
        torch.set_num_threads(threads)
        self.spec = spec
        self.items = list(items or [])
        self.batch_size = batch_size
        self.device = device
        self.encoder = encoder.eval().to(device)
        self.embed_dim = int(encoder.embed_dim)

    def embed_series(self, series: np.ndarray) -> np.ndarray:
        """Embeddings ``(P, D)`` float32 of regular series ``(T, 3, P)``; NaN rows where a series or plot has NaN.

        On ``device="cuda"`` each batch of series is copied to the GPU once; indices, plots (the fused CuPy
        kernel) and the encoder then run there, the plots reaching torch through DLPack without a copy.
        """
        import torch

        n_pix = series.shape[-1]
        out = np.full((n_pix, self.embed_dim), np.nan, dtype=np.float32)
        ok = np.flatnonzero(np.isfinite(series).all(axis=(0, 1)))
        by_band = np.ascontiguousarray(series[:, :, ok].transpose(1, 2, 0))  # (3, n, T): blue, red, nir
        xp = import_cupy() if self.device == "cuda" else np
        with torch.inference_mode():
            for start in range(0, len(ok), self.batch_size):
                batch = xp.asarray(by_band[:, start : start + self.batch_size])  # host -> device once
                plots = to_torch(rp_from_reflectance(batch[0], batch[1], batch[2]))  # (n, 3, T, T)
                emb = self.encoder(plots)
                emb[~torch.isfinite(plots).flatten(1).all(dim=1)] = torch.nan  # e.g. a black pixel's NDVI
                out[ok[start : start + len(plots)]] = emb.float().cpu().numpy()
        return out

    def compute(self, grid: OutputGrid, window: Window, series: WindowSeries) -> WindowResult:
        """Embed a window whose series were already read (the compute stage of a run)."""
        inside = grid.inside(window).reshape(-1)
        values = np.where(inside, series.values, np.nan)  # pixels outside the AOI are not embedded at all
        emb = self.embed_series(values)  # (P, D)
        embedding = emb.T.reshape(self.embed_dim, window.height, window.width)
        return WindowResult(window, embedding, series.valid_count.reshape(window.height, window.width))

    def __call__(self, grid: OutputGrid, window: Window) -> WindowResult:
        """Read and embed one window."""
        return self.compute(grid, window, read_series(self.items, self.spec, grid, window))


@dataclass(frozen=True)
class SeriesReader:
    """The read stage of a run: regular-grid series of a window (picklable; runs as a Ray task)."""

    spec: SeriesSpec
    items: list[dict[str, Any]]

    def __call__(self, grid: OutputGrid, window: Window) -> WindowSeries:
        return read_series(self.items, self.spec, grid, window)


def read_labels(
    items: Sequence[Mapping[str, Any]], grid: OutputGrid, window: Window, *, asset: str = "labels"
) -> np.ndarray:
    """Ground-truth class ids ``(h, w)`` uint8 (0 = no label) of label items on a window (nearest resampling)."""
    import stackstac

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
        embedding: (D, h, w) embeddings, NaN nodata.
        labels: (h, w) class ids, 0 = unlabelled.
    """
    flat = embedding.reshape(embedding.shape[0], -1).T  # (P, D)
    y = labels.reshape(-1)
    usable = (y > 0) & np.isfinite(flat).all(axis=1)
    return balanced_sample(flat[usable], y[usable], per_class=per_class, seed=seed)


def classify(embedding: np.ndarray, head: Any) -> tuple[np.ndarray, np.ndarray]:
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
