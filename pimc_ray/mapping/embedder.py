"""Per-window inference: regular series -> recurrence plots or image patches -> encoder -> embedding block.

:class:`WindowEmbedder` owns an encoder and turns one :class:`~pimc_ray.data.tiles.Window` of an output grid into an
embedding block. It is a plain class so tests and notebooks call it directly; jobs run it on Ray actors through
:func:`pimc_ray.mapping.runner.run_groups` (one model load per worker), after the read stage :func:`series_reader`
picks for the encoder. Recurrence plots are built batch by batch right before the encoder and dropped after (see
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
never draws such a pixel (:mod:`pimc_ray.training.pairs`). The joint encoder (``pimc-joint``: both towers) reads like an
image-patch encoder; its plot encoder takes the blue, red and NIR series of the window's own pixels, its patch
encoder the patches, and a pixel's embedding is the two side by side (nodata where either is).

Both paths run the same code on the CPU and on a GPU: a window's series go to the device once, stay there through
indices, plots or patches (reaching torch through DLPack) and the encoder, and the window's embeddings come back
to the host once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.series import INDEX_BANDS, SeriesReader, SeriesSpec, WindowSeries, crop_halo, iso_dates
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.kernels.indices import INDEX_NAMES, vegetation_indices
from pimc_ray.kernels.patches import MEDIAN, check_composite, composite, patch_ok, patches_at
from pimc_ray.kernels.recurrence import rp_from_reflectance
from pimc_ray.kernels.xp import import_cupy, to_numpy, to_torch
from pimc_ray.models.checkpoint import EncoderRef
from pimc_ray.models.encoders import parts

logger = logging.getLogger(__name__)

__all__ = [
    "PRECISIONS",
    "EmbedderFactory",
    "WindowEmbedder",
    "WindowResult",
    "embedding_bands",
    "read_plan",
    "series_reader",
]

#: The precisions the encoders can run in (:class:`WindowEmbedder`'s ``precision``).
PRECISIONS = ("float32", "bfloat16")
#: The bands each kind of encoder input is made from, by the ``inputs`` an encoder (or a joint encoder's part)
#: declares: recurrence plots or index series of blue, red and NIR, or patches of all ten bands.
_INPUT_BANDS: Mapping[str, tuple[str, ...]] = {"plots": INDEX_BANDS, "series": INDEX_BANDS, "patches": BANDS}


@dataclass(frozen=True)
class WindowResult:
    """One window's embedding outputs."""

    window: Window
    embedding: np.ndarray
    """(D, h, w) float32, NaN nodata."""
    valid_count: np.ndarray
    """(h, w) uint16 valid observations per pixel."""
    substituted: int = 0
    """Asset reads of the window that failed and became nodata (:attr:`WindowSeries.substituted`)."""


def read_plan(encoder: Any) -> tuple[tuple[str, ...], int]:
    """``(bands, halo)`` the read stage must deliver for ``encoder`` (a module, or an
    :class:`~pimc_ray.models.checkpoint.EncoderConfig`, built to ask it): the bands its parts need, in
    :data:`~pimc_ray.data.catalogs.BANDS` order, and the pixels of context it needs on each side of a pixel."""
    model = encoder.build() if hasattr(encoder, "build") else encoder
    needed = {band for part in parts(model) for band in _INPUT_BANDS[part.inputs]}
    return tuple(b for b in BANDS if b in needed), int(model.halo)


def embedding_bands(encoder: Any, spec: SeriesSpec) -> tuple[str, ...]:
    """One description per dimension of ``encoder``'s embedding (a module or an EncoderConfig): ``emb_00`` ...
    for a single encoder; for one made of parts, ``NDVI_2022-01-06`` ... for an index series, ``rp_00`` ... for
    an RP encoder, ``rsi_00`` ... for an image-patch encoder, in the embedding's order."""
    model = encoder.build() if hasattr(encoder, "build") else encoder
    if len(parts(model)) == 1 and model.inputs != "series":
        return tuple(f"emb_{i:02d}" for i in range(int(model.embed_dim)))
    names: list[str] = []
    for part in parts(model):
        if part.inputs == "series":
            dates = iso_dates(spec.grid_dates())
            names += [f"{index}_{date}" for index in INDEX_NAMES for date in dates]
        else:
            prefix = "rp" if part.inputs == "plots" else "rsi"
            names += [f"{prefix}_{i:02d}" for i in range(int(part.embed_dim))]
    return tuple(names)


def series_reader(spec: SeriesSpec, items: Sequence[Mapping[str, Any]], encoder: Any) -> SeriesReader:
    """The read stage ``encoder`` needs: what :meth:`WindowEmbedder.compute` expects for it.

    Args:
        spec: the series specification (blue, red and NIR; the dates, time grid and mask are kept).
        items: the run's items.
        encoder: an encoder module or an :class:`~pimc_ray.models.checkpoint.EncoderConfig`.

    Returns:
        For a plot encoder, the spec's bands on the window; for an image-patch (or joint) encoder, all ten bands
        on the window grown by the encoder's halo.
    """
    bands, halo = read_plan(encoder)
    return SeriesReader(replace(spec, bands=bands), [dict(i) for i in items], halo)


class WindowEmbedder:
    """Holds an encoder; embeds windows of an output grid from their regular-grid series.

    The encoder's parts (:func:`~pimc_ray.models.encoders.parts`: itself, or both towers of a joint encoder) each
    embed the window from the input they declare, and a pixel's embedding is theirs side by side.

    Args:
        spec: the series specification (its bands must be blue, red, NIR; an image-patch encoder reads all ten
            bands on the same dates and time grid, see :func:`series_reader`).
        encoder: a torch module mapping (n, 3, T, T) plots, or (n, 10, k, k) patches when its ``inputs`` are
            ``"patches"``, to (n, D), or a joint encoder (``"plots+patches"``: its ``rp`` and ``rsi`` parts);
            put in eval mode here.
        batch_size: pixels per encoder batch.
        threads: torch intra-op threads (1 per Ray CPU actor).
        device: ``cpu``, or ``cuda`` to build plots (CuPy) or cut patches there and run the encoder on the GPU.
        composite: what an image-patch encoder's patches are cut from (see :mod:`pimc_ray.kernels.patches`): the
            composite it was pretrained on.
        precision: ``float32``, or ``bfloat16`` to run the encoders under torch's bf16 autocast (convolutions
            and matrix products in bf16; the index series and the embeddings stay float32).
    """

    def __init__(
        self,
        spec: SeriesSpec,
        encoder: Any,
        *,
        batch_size: int = 1024,
        threads: int = 1,
        device: str = "cpu",
        composite: str = MEDIAN,
        precision: str = "float32",
    ):
        import torch

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if tuple(spec.bands) != INDEX_BANDS:
            raise ValueError(f"the embedder reads {INDEX_BANDS}, got bands {spec.bands}")
        check_composite(composite)
        for part in parts(encoder):
            if part.inputs == "patches" and part.in_channels != len(BANDS):
                raise ValueError(
                    f"an image-patch encoder for mapping takes the {len(BANDS)} bands {BANDS}, "
                    f"this one takes {part.in_channels}"
                )
        torch.set_num_threads(threads)
        self.spec = spec
        self.batch_size = batch_size
        self.device = device
        self.composite = composite
        self.precision = precision
        self.encoder = encoder.eval().to(device)
        self.embed_dim = int(encoder.embed_dim)
        self.bands, self.halo = read_plan(self.encoder)
        """What the read stage delivers for this encoder (:func:`read_plan`)."""
        self._parts: dict[str, Any] = {part.inputs: part for part in parts(self.encoder)}
        self._by_input: dict[str, Callable[[Any, WindowSeries, Window, np.ndarray], np.ndarray]] = {
            "plots": self._window_plots,
            "series": self._window_index_series,
            "patches": self._window_patches,
        }

    def _autocast(self) -> Any:
        """The context the encoders run in: bf16 autocast on the embedder's device, or nothing."""
        import torch

        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=torch.bfloat16)

    def _part(self, inputs: str, hint: str) -> Any:
        if inputs not in self._parts:
            raise ValueError(f"this encoder takes {', '.join(self._parts)}, not {hint}")
        return self._parts[inputs]

    def embed_series(self, series: np.ndarray) -> np.ndarray:
        """Embeddings ``(P, D)`` float32 of regular series ``(T, 3, P)``; NaN rows where a series or plot has NaN.

        On ``device="cuda"`` the series are copied to the GPU once; indices, plots (the fused CuPy kernel) and the
        encoder run there batch by batch, the plots reaching torch through DLPack without a copy, and the
        embeddings come back in one copy.
        """
        return self._embed_plots(self._part("plots", "series: use embed_patches()"), series)

    def _embed_plots(self, encoder: Any, series: np.ndarray) -> np.ndarray:
        """Embeddings ``(P, D)`` of regular series ``(T, 3, P)`` through an encoder of their plots."""
        return self._embed_from_series(encoder, series, rp_from_reflectance)  # plots (n, 3, T, T)

    def _embed_index_series(self, encoder: Any, series: np.ndarray) -> np.ndarray:
        """Embeddings ``(P, D)`` of regular series ``(T, 3, P)`` through an encoder of their index series
        ``(n, 3, T)`` (NDVI, EVI, SAVI)."""
        return self._embed_from_series(
            encoder,
            series,
            lambda blue, red, nir: vegetation_indices(blue, red, nir, axis=1).astype("float32", copy=False),
        )

    def _embed_from_series(
        self, encoder: Any, series: np.ndarray, inputs: Callable[[Any, Any, Any], Any]
    ) -> np.ndarray:
        """Embeddings ``(P, D)`` of regular series ``(T, 3, P)``: per batch, ``inputs(blue, red, nir)`` (each
        ``(n, T)``, on the embedder's device) makes the encoder's input; NaN rows where a series or an input has
        NaN (e.g. a black pixel's NDVI)."""
        import torch

        n_pix = series.shape[-1]
        out = np.full((n_pix, int(encoder.embed_dim)), np.nan, dtype=np.float32)
        ok = np.flatnonzero(np.isfinite(series).all(axis=(0, 1)))
        by_band = np.ascontiguousarray(series[:, :, ok].transpose(1, 2, 0))  # (3, n, T): blue, red, nir
        xp = import_cupy() if self.device == "cuda" else np
        on_device = xp.asarray(by_band)  # host -> device once per window
        with torch.inference_mode(), self._autocast():
            embeddings = []  # stay on the device until the window is done
            for start in range(0, len(ok), self.batch_size):
                batch = on_device[:, start : start + self.batch_size]
                x = to_torch(xp.ascontiguousarray(inputs(batch[0], batch[1], batch[2])))
                emb = encoder(x).float()
                emb[~torch.isfinite(x).flatten(1).all(dim=1)] = torch.nan
                embeddings.append(emb)
            if embeddings:
                out[ok] = torch.cat(embeddings).cpu().numpy()  # device -> host once per window
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
        encoder = self._part("patches", "patches: use embed_series()")
        return self._embed_patches(encoder, values, height, width, keep)

    def _embed_patches(
        self, encoder: Any, values: np.ndarray, height: int, width: int, keep: np.ndarray | None
    ) -> np.ndarray:
        import torch

        m = int(encoder.halo)
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
        rows_on, cols_on = xp.asarray(rows), xp.asarray(cols)
        with torch.inference_mode(), self._autocast():
            embeddings = []  # stay on the device until the window is done
            for start in range(0, len(idx), self.batch_size):
                part = slice(start, start + self.batch_size)
                batch = patches_at(image, rows_on[part], cols_on[part], k)
                embeddings.append(encoder(to_torch(batch)).float())  # (n, 10, k, k) -> (n, D)
            if embeddings:
                out[idx] = torch.cat(embeddings).cpu().numpy()  # device -> host once per window
        return out

    def _own_series(self, series: WindowSeries, window: Window, inside: np.ndarray) -> np.ndarray:
        """``(T, 3, P)`` blue, red and NIR series of the window's own pixels (the read may be grown by another
        part's halo), NaN outside the AOI."""
        positions = [self.bands.index(b) for b in INDEX_BANDS]
        own = crop_halo(series.values[:, positions], window.height, window.width, self.halo)
        return np.where(inside, own, np.nan)

    def _window_plots(
        self, encoder: Any, series: WindowSeries, window: Window, inside: np.ndarray
    ) -> np.ndarray:
        """A plot part on a window: the plots of the window's own pixels."""
        return self._embed_plots(encoder, self._own_series(series, window, inside))

    def _window_index_series(
        self, encoder: Any, series: WindowSeries, window: Window, inside: np.ndarray
    ) -> np.ndarray:
        """A series part on a window: the index series of the window's own pixels."""
        return self._embed_index_series(encoder, self._own_series(series, window, inside))

    def _window_patches(
        self, encoder: Any, series: WindowSeries, window: Window, inside: np.ndarray
    ) -> np.ndarray:
        """A patch part on a window: patches of the grown window's composite around its own pixels."""
        return self._embed_patches(encoder, series.values, window.height, window.width, inside)

    def compute(self, grid: OutputGrid, window: Window, series: WindowSeries) -> WindowResult:
        """Embed a window whose series were read by :func:`series_reader` (the compute stage of a run)."""
        h, w = window.height, window.width
        inside = grid.inside(window).reshape(-1)  # pixels outside the AOI are not embedded at all
        embeddings = [
            self._by_input[part.inputs](part, series, window, inside) for part in parts(self.encoder)
        ]  # each (P, D_part)
        emb = embeddings[0]
        if len(embeddings) > 1:  # a joint encoder: the parts side by side, nodata where either is
            emb = np.concatenate(embeddings, axis=1)
            emb[~np.isfinite(emb).all(axis=1)] = np.nan
        valid_count = crop_halo(series.valid_count, h, w, self.halo).reshape(h, w)
        return WindowResult(window, emb.T.reshape(self.embed_dim, h, w), valid_count, series.substituted)


@dataclass(frozen=True)
class EmbedderFactory:
    """Picklable recipe of the compute stage: each Ray actor calls it once (one model load)."""

    spec: SeriesSpec
    encoder: EncoderRef
    batch_size: int = 1024
    threads: int = 1
    device: str = "cpu"
    precision: str = "float32"

    def __call__(self) -> Callable[[OutputGrid, Window, WindowSeries], WindowResult]:
        model, _ = self.encoder.load()
        embedder = WindowEmbedder(
            self.spec,
            model,
            batch_size=self.batch_size,
            threads=self.threads,
            device=self.device,
            composite=self.encoder.composite,
            precision=self.precision,
        )
        return embedder.compute
