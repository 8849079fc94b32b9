"""Per-window inference: regular series -> recurrence plots or image patches -> encoder -> embedding block.

:class:`WindowEmbedder` owns an encoder and turns one :class:`~pimc_ray.tiles.Window` of an output grid into an
embedding block. It is a plain class so tests and notebooks call it directly; jobs run it on Ray actors through
:func:`pimc_ray.runner.run_windows` (one model load per actor), after the read stage :func:`series_reader` picks
for the encoder. Recurrence plots are built batch by batch right before the encoder and dropped after (see
docs/design.md: one tile's plots would be terabytes).

Array flow for a window of P = h x w pixels (T steps, D embedding dims) and a plot encoder (``rp-resnet``)::

    read_series         (T, 3, P)     float32 blue/red/NIR on the regular grid, NaN for nodata pixels
    rp_from_reflectance (n, 3, T, T)  per batch of n valid pixels (NDVI, EVI, SAVI plots)
    encoder             (n, D)
    -> embedding        (D, h, w)     float32, NaN nodata (and outside the AOI)

and for an image-patch encoder (``rsi-cnn``, patch side k, halo m = k // 2), whose window is read grown by the halo
on every side, on the same grid and not clipped to the tile or the AOI, so edge pixels see their real neighbours::

    read_series         (T, 10, (h + 2m) (w + 2m))  all ten bands of the grown window, NaN nodata
    composite           (10, h + 2m, w + 2m)        median over the steps (or one step), as in pretraining
    patches_at          (n, 10, k, k)  per batch of n pixels whose whole patch is free of nodata
    encoder             (n, D)
    -> embedding        (D, h, w)     float32, NaN outside the AOI and where the patch holds nodata

A pixel whose patch reaches nodata (no cloud-free data there, or the edge of the archive) is nodata, as pretraining
never draws such a pixel (:mod:`pimc_ray.pairs`). The joint encoder (``pimc-joint``: both towers) reads like an
image-patch encoder; its plot encoder takes the blue, red and NIR series of the window's own pixels, its patch
encoder the patches, and a pixel's embedding is the two side by side (nodata where either is).

Both paths run the same code on the CPU and on a GPU: series go to the device once (per batch for plots, per
window for patches) and reach torch through DLPack.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pimc_ray.catalogs import BANDS
from pimc_ray.patches import MEDIAN, check_composite, composite, patch_ok, patches_at
from pimc_ray.recurrence import rp_from_reflectance
from pimc_ray.series import (
    INDEX_BAND_POSITIONS,
    INDEX_BANDS,
    SeriesSpec,
    WindowSeries,
    crop_halo,
    read_series,
)
from pimc_ray.stack import read_window, stackstac_ready
from pimc_ray.tiles import OutputGrid, Window
from pimc_ray.xp import import_cupy, to_numpy, to_torch

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
        spec: the series specification (its bands must be blue, red, NIR; an image-patch encoder reads all ten
            bands on the same dates and time grid, see :func:`series_reader`).
        items: Sentinel-2 L2A item dicts covering the grid (only needed to read windows: ``__call__``).
        encoder: a torch module mapping (n, 3, T, T) plots, or (n, 10, k, k) patches when its ``inputs`` are
            ``"patches"``, to (n, D), or a joint encoder (``"plots+patches"``: its ``rp`` and ``rsi`` parts);
            put in eval mode here.
        batch_size: pixels per encoder batch.
        threads: torch intra-op threads (1 per Ray CPU actor).
        device: ``cpu``, or ``cuda`` to build plots (CuPy) or cut patches there and run the encoder on the GPU.
        composite: what an image-patch encoder's patches are cut from (see :mod:`pimc_ray.patches`): the
            composite it was pretrained on.
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
        composite: str = MEDIAN,
    ):
        import torch

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if tuple(spec.bands) != INDEX_BANDS:
            raise ValueError(f"the embedder reads {INDEX_BANDS}, got bands {spec.bands}")
        check_composite(composite)
        if encoder.inputs != "plots" and encoder.in_channels != len(BANDS):
            raise ValueError(
                f"an image-patch encoder for mapping takes the {len(BANDS)} bands {BANDS}, "
                f"this one takes {encoder.in_channels}"
            )
        torch.set_num_threads(threads)
        self.spec = spec
        self.items = list(items or [])
        self.batch_size = batch_size
        self.device = device
        self.composite = composite
        self.encoder = encoder.eval().to(device)
        self.embed_dim = int(encoder.embed_dim)
        joint = encoder.inputs == "plots+patches"
        self.plot_encoder = encoder.rp if joint else encoder if encoder.inputs == "plots" else None
        """What :meth:`embed_series` runs: the encoder, or the joint encoder's plot part (None: patches only)."""
        self.patch_encoder = encoder.rsi if joint else encoder if encoder.inputs == "patches" else None
        """What :meth:`embed_patches` runs: the encoder, or the joint encoder's patch part (None: plots only)."""

    @property
    def halo(self) -> int:
        """Pixels the read stage adds on each side of a window for this encoder (0 for plot encoders)."""
        return int(self.encoder.halo)

    def embed_series(self, series: np.ndarray) -> np.ndarray:
        """Embeddings ``(P, D)`` float32 of regular series ``(T, 3, P)``; NaN rows where a series or plot has NaN.

        On ``device="cuda"`` each batch of series is copied to the GPU once; indices, plots (the fused CuPy
        kernel) and the encoder then run there, the plots reaching torch through DLPack without a copy.
        """
        import torch

        encoder = self.plot_encoder
        if encoder is None:
            raise ValueError("this encoder takes image patches, not series: use embed_patches()")
        n_pix = series.shape[-1]
        out = np.full((n_pix, int(encoder.embed_dim)), np.nan, dtype=np.float32)
        ok = np.flatnonzero(np.isfinite(series).all(axis=(0, 1)))
        by_band = np.ascontiguousarray(series[:, :, ok].transpose(1, 2, 0))  # (3, n, T): blue, red, nir
        xp = import_cupy() if self.device == "cuda" else np
        with torch.inference_mode():
            for start in range(0, len(ok), self.batch_size):
                batch = xp.asarray(by_band[:, start : start + self.batch_size])  # host -> device once
                plots = to_torch(rp_from_reflectance(batch[0], batch[1], batch[2]))  # (n, 3, T, T)
                emb = encoder(plots)
                emb[~torch.isfinite(plots).flatten(1).all(dim=1)] = torch.nan  # e.g. a black pixel's NDVI
                out[ok[start : start + len(plots)]] = emb.float().cpu().numpy()
        return out

    def embed_patches(
        self, values: np.ndarray, height: int, width: int, keep: np.ndarray | None = None
    ) -> np.ndarray:
        """Embeddings ``(h * w, D)`` float32 of a window's pixels, from the series of the window grown by the halo.

        Args:
            values: ``(T, 10, (h + 2m) (w + 2m))`` regular series of all ten bands on the grown window.
            height: ``h``, rows of the window.
            width: ``w``, columns of the window.
            keep: optional ``(h * w,)`` bool, False for pixels to leave out (NaN), e.g. outside the AOI.

        Returns:
            One row per pixel of the window, row-major; NaN where the pixel's ``k x k`` patch of the composite
            holds nodata or ``keep`` is False. On ``device="cuda"`` the series go to the GPU once per window;
            the composite, the patches and the encoder run there.
        """
        import torch

        encoder = self.patch_encoder
        if encoder is None:
            raise ValueError("this encoder takes recurrence plots, not patches: use embed_series()")
        m = self.halo
        k = 2 * m + 1
        grown = (height + 2 * m, width + 2 * m)
        if values.shape[-1] != grown[0] * grown[1]:
            raise ValueError(
                f"expected the series of the {height} x {width} window grown by {m} px per side "
                f"({grown[0]} x {grown[1]} pixels), got {values.shape[-1]} pixels: read it with series_reader()"
            )
        xp = import_cupy() if self.device == "cuda" else np
        on_device = xp.asarray(values)  # host -> device once per window
        image = composite(on_device, self.composite, self.spec.grid_dates()).reshape(values.shape[1], *grown)
        ok = to_numpy(patch_ok(image, k)).reshape(-1)  # (h * w,): the whole patch is free of nodata
        if keep is not None:
            ok &= keep
        idx = np.flatnonzero(ok)
        rows, cols = np.divmod(idx, width)
        out = np.full((height * width, int(encoder.embed_dim)), np.nan, dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(idx), self.batch_size):
                part = slice(start, start + self.batch_size)
                batch = patches_at(image, xp.asarray(rows[part]), xp.asarray(cols[part]), k)
                emb = encoder(to_torch(batch))  # (n, 10, k, k) -> (n, D)
                out[idx[part]] = emb.float().cpu().numpy()
        return out

    def compute(self, grid: OutputGrid, window: Window, series: WindowSeries) -> WindowResult:
        """Embed a window whose series were already read by :func:`series_reader` (the compute stage of a run)."""
        h, w = window.height, window.width
        inside = grid.inside(window).reshape(-1)  # pixels outside the AOI are not embedded at all
        if self.encoder.inputs == "plots":
            emb = self.embed_series(np.where(inside, series.values, np.nan))  # (P, D)
            valid_count = series.valid_count.reshape(h, w)
        else:
            m = self.halo
            emb = self.embed_patches(series.values, h, w, keep=inside)  # (P, D)
            valid_count = crop_halo(series.valid_count, h, w, m).reshape(h, w)
            if self.plot_encoder is not None:  # joint: the window's own pixels' plots first
                own = crop_halo(series.values[:, INDEX_BAND_POSITIONS], h, w, m)  # (T, 3, P)
                emb = np.concatenate([self.embed_series(np.where(inside, own, np.nan)), emb], axis=1)
                emb[~np.isfinite(emb).all(axis=1)] = np.nan  # nodata where either part is
        embedding = emb.T.reshape(self.embed_dim, h, w)
        return WindowResult(window, embedding, valid_count)

    def __call__(self, grid: OutputGrid, window: Window) -> WindowResult:
        """Read and embed one window."""
        return self.compute(grid, window, series_reader(self.spec, self.items, self.encoder)(grid, window))


@dataclass(frozen=True)
class SeriesReader:
    """The read stage of a run: regular-grid series of a window (picklable; runs as a Ray task)."""

    spec: SeriesSpec
    items: list[dict[str, Any]]
    halo: int = 0
    """Pixels read beyond the window on every side (an image-patch encoder's context): the result is the series
    of the grown window, read on the same grid and not clipped to the tile or the AOI."""

    def __call__(self, grid: OutputGrid, window: Window) -> WindowSeries:
        return read_series(self.items, self.spec, grid, window.grown(self.halo, grid.resolution))


def series_reader(spec: SeriesSpec, items: Sequence[Mapping[str, Any]], encoder: Any) -> SeriesReader:
    """The read stage ``encoder`` needs: what :meth:`WindowEmbedder.compute` expects for it.

    Args:
        spec: the series specification (blue, red and NIR; the dates, time grid and mask are kept).
        items: the run's items.
        encoder: an encoder module or an :class:`~pimc_ray.models.checkpoint.EncoderConfig` (both tell their
            ``inputs`` and ``halo``).

    Returns:
        For a plot encoder, the spec's bands on the window; for an image-patch (or joint) encoder, all ten bands
        on the window grown by the encoder's halo.
    """
    if encoder.inputs == "plots":
        return SeriesReader(spec, list(items))
    return SeriesReader(replace(spec, bands=BANDS), list(items), int(encoder.halo))


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
