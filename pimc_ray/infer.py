"""Per-window inference: reflectance -> regular series -> recurrence plots -> encoder -> embedding map.

:class:`WindowEmbedder` owns an encoder and turns one :class:`~pimc_ray.tiles.Window` of an output grid into an
embedding block. It is a plain class so tests and notebooks call it directly; jobs wrap it in Ray actors (one
model load per actor). Recurrence plots are built batch by batch right before the encoder and dropped after
(see docs/design.md: one tile's plots would be terabytes).

Array flow for a window of P = h x w pixels (T steps, D embedding dims)::

    stack_reflectance   (obs, band=3, h, w)  float32, NaN = cloud / nodata
    regularize          (T, 3, P)            float32 on the regular time grid, NaN for too-few-valid pixels
    rp_from_reflectance (n, 3, T, T)         per batch of n valid pixels (NDVI, EVI, SAVI plots)
    encoder             (n, D)
    -> embedding        (D, h, w)            float32, NaN nodata
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pimc_ray.recurrence import rp_from_reflectance
from pimc_ray.stac import DateRange
from pimc_ray.stack import StackSpec, read_window, stack_reflectance
from pimc_ray.tiles import OutputGrid, Window
from pimc_ray.timegrid import TimeGridSpec, grid_dates, regularize
from pimc_ray.xp import import_cupy, to_torch

logger = logging.getLogger(__name__)

#: Bands the recurrence plots need (blue for EVI, red, NIR), in the order rp_from_reflectance takes them.
RP_BANDS = ("B02", "B04", "B08")


@dataclass(frozen=True)
class EmbedSpec:
    """Everything that decides an embedding map's pixel values (besides the items)."""

    dates: DateRange
    """Date range of the regular time grid."""
    timegrid: TimeGridSpec = field(default_factory=TimeGridSpec)
    """Steps of the regular grid (the plots are steps x steps) and the minimum valid count."""
    mask_classes: frozenset[int] | None = None
    """SCL classes to mask; :data:`pimc_ray.stack.DEFAULT_MASK_CLASSES` when None."""
    catalog: str | None = None
    """Catalog convention; detected from the items when None."""
    batch_size: int = 1024
    """Pixels per encoder batch."""

    def stack_spec(self) -> StackSpec:
        kwargs: dict[str, Any] = {"bands": RP_BANDS, "catalog": self.catalog}
        if self.mask_classes is not None:
            kwargs["mask_classes"] = frozenset(self.mask_classes)
        return StackSpec(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.dates.start.isoformat(),
            "end": self.dates.end.isoformat(),
            "steps": self.timegrid.steps,
            "min_valid": self.timegrid.min_valid,
            "mask_classes": sorted(self.stack_spec().mask_classes),
            "catalog": self.catalog,
        }


@dataclass(frozen=True)
class WindowResult:
    """One window's outputs."""

    window: Window
    embedding: np.ndarray
    """(D, h, w) float32, NaN nodata."""
    valid_count: np.ndarray
    """(h, w) uint16 valid observations per pixel."""


class WindowEmbedder:
    """Holds an encoder; embeds windows of an output grid from a fixed list of items.

    Args:
        spec: the embedding specification.
        items: Sentinel-2 L2A item dicts covering the grid.
        encoder: a torch module mapping (n, 3, T, T) to (n, D); put in eval mode here.
        threads: torch intra-op threads (1 per Ray CPU actor).
    """

    def __init__(
        self,
        spec: EmbedSpec,
        items: Sequence[Mapping[str, Any]],
        encoder: Any,
        *,
        threads: int = 1,
        device: str = "cpu",
    ):
        import torch

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        torch.set_num_threads(threads)
        self.spec = spec
        self.items = list(items)
        self.device = device
        self.encoder = encoder.eval().to(device)
        self.embed_dim = int(encoder.embed_dim)
        self.grid_times = grid_dates(spec.dates.start, spec.dates.end, spec.timegrid.steps)

    def series(self, grid: OutputGrid, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Regular-grid reflectance ``(T, 3, P)`` and valid counts ``(P,)`` of a window."""
        stack = read_window(
            stack_reflectance(self.items, bounds=window.bounds, epsg=grid.epsg, spec=self.spec.stack_spec())
        )
        if stack.shape[-2:] != (window.height, window.width):
            raise RuntimeError(f"stack shape {stack.shape} does not match window {window}")
        values = stack.values.reshape(stack.shape[0], stack.shape[1], -1)  # (obs, 3, P)
        regular = regularize(
            values, stack["time"].values, self.grid_times, min_valid=self.spec.timegrid.min_valid
        )
        return regular.values, regular.valid_count

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
            for start in range(0, len(ok), self.spec.batch_size):
                batch = xp.asarray(by_band[:, start : start + self.spec.batch_size])  # host -> device once
                plots = to_torch(rp_from_reflectance(batch[0], batch[1], batch[2]))  # (n, 3, T, T)
                emb = self.encoder(plots)
                emb[~torch.isfinite(plots).flatten(1).all(dim=1)] = torch.nan  # e.g. a black pixel's NDVI
                out[ok[start : start + len(plots)]] = emb.float().cpu().numpy()
        return out

    def __call__(self, grid: OutputGrid, window: Window) -> WindowResult:
        series, count = self.series(grid, window)
        emb = self.embed_series(series)  # (P, D)
        embedding = emb.T.reshape(self.embed_dim, window.height, window.width)
        return WindowResult(window, embedding, count.reshape(window.height, window.width))


def assemble(
    grid: OutputGrid, results: Sequence[WindowResult], embed_dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic window results into ``(D, H, W)`` embeddings and ``(H, W)`` valid counts; outside the AOI is NaN/0."""
    height, width = grid.shape
    embedding = np.full((embed_dim, height, width), np.nan, dtype=np.float32)
    count = np.zeros((height, width), dtype=np.uint16)
    for r in results:
        w = r.window
        embedding[:, w.row : w.row + w.height, w.col : w.col + w.width] = r.embedding
        count[w.row : w.row + w.height, w.col : w.col + w.width] = r.valid_count
    outside = ~grid.inside()
    embedding[:, outside] = np.nan
    count[outside] = 0
    return embedding, count


def read_labels(items: Sequence[Mapping[str, Any]], grid: OutputGrid, *, asset: str = "labels") -> np.ndarray:
    """Ground-truth class ids ``(H, W)`` uint8 (0 = no label) of label items on ``grid`` (nearest resampling)."""
    import stackstac

    from pimc_ray.stack import stackstac_ready

    stack = stackstac.stack(
        stackstac_ready(items),
        assets=[asset],
        epsg=grid.epsg,
        resolution=grid.resolution,
        bounds=grid.bounds,
        dtype="uint8",
        fill_value=np.uint8(0),
        rescale=False,
    )
    labels = read_window(stack).values.max(axis=(0, 1)).astype(np.uint8)  # mosaic: 0 is nodata
    labels[~grid.inside()] = 0
    return labels


def sample_pixels(
    embedding: np.ndarray, labels: np.ndarray, *, per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_class`` random labelled, valid pixels per class: ``(x (n, D), y (n,))``."""
    rng = np.random.default_rng(seed)
    flat = embedding.reshape(embedding.shape[0], -1).T  # (P, D)
    y_all = labels.reshape(-1)
    usable = (y_all > 0) & np.isfinite(flat).all(axis=1)
    chosen = []
    for cls in np.unique(y_all[usable]):
        idx = np.flatnonzero(usable & (y_all == cls))
        chosen.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
    pick = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)
    return flat[pick], y_all[pick]


def classify(embedding: np.ndarray, head: Any) -> tuple[np.ndarray, np.ndarray]:
    """Class ids ``(H, W)`` uint8 (0 = nodata) and confidence ``(H, W)`` float32 (NaN nodata) from embeddings."""
    d, height, width = embedding.shape
    flat = embedding.reshape(d, -1).T
    ok = np.isfinite(flat).all(axis=1)
    classes = np.zeros(height * width, dtype=np.uint8)
    confidence = np.full(height * width, np.nan, dtype=np.float32)
    if ok.any():
        ids, conf = head.predict(flat[ok])
        classes[ok], confidence[ok] = ids.astype(np.uint8), conf
    return classes.reshape(height, width), confidence.reshape(height, width)
