"""PASTIS (Sainte Fare Garnot & Landrieu 2021) read as it is distributed, into pixel index series.

The layout of the dataset (https://github.com/VSainteuf/pastis-benchmark), which nothing else is needed to read::

    <root>/metadata.geojson              one feature per patch: ID_PATCH, Fold (1..5), dates-S2 {"0": YYYYMMDD, ...}
    <root>/DATA_S2/S2_<id>.npy           (T, 10, H, W) int16 surface reflectance x 10000 (no offset), bands
                                         B2 B3 B4 B5 B6 B7 B8 B8A B11 B12 (pimc-ray's BANDS order), T = len(dates-S2)
    <root>/ANNOTATIONS/TARGET_<id>.npy   (3, H, W); channel 0 the semantic class 0..19 (0 background, 19 void)

Two pixel sets come out of it, both as NDVI, EVI and SAVI from :func:`pimc_ray.kernels.indices.vegetation_indices`
(B2 blue, B4 red, B8 NIR, reflectance divided by 10,000):

* :func:`forecast_set`: the first ``context + horizon`` observations of a pixel as they are (PASTIS has no cloud
  mask, as in the paper): the first ``context`` are the history, the next ``horizon`` the values to forecast;
* :func:`classify_set`: the pixel's reflectance interpolated onto a regular grid of ``steps`` dates over the
  dataset's date range (:func:`pimc_ray.data.timegrid.regularize`, what the mapping jobs do), and its class.

Pixels are drawn evenly over the patches of the requested folds, seeded per patch (``(seed, ID_PATCH)``), so a
patch gives the same pixels whatever other patches are read.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.timegrid import grid_dates, regularize
from pimc_ray.errors import DatasetError
from pimc_ray.kernels.indices import vegetation_indices
from pimc_ray.progress import Meter, Progress

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_NAMES",
    "PASTIS_LAYOUT",
    "REFLECTANCE_SCALE",
    "VOID_CLASS",
    "ClassifySet",
    "ForecastSet",
    "PastisDataset",
    "PastisPatch",
    "PixelPlaces",
    "classify_set",
    "forecast_set",
    "open_pastis",
]

#: The layout every error about a PASTIS folder names.
PASTIS_LAYOUT = (
    "expected the PASTIS layout: <root>/metadata.geojson (features with ID_PATCH, Fold 1..5 and dates-S2), "
    "<root>/DATA_S2/S2_<ID_PATCH>.npy (T x 10 x H x W: B2 B3 B4 B5 B6 B7 B8 B8A B11 B12, reflectance x 10000) and "
    "<root>/ANNOTATIONS/TARGET_<ID_PATCH>.npy (3 x H x W, channel 0 the class 0..19)"
)
#: PASTIS stores surface reflectance times 10,000, without the L2A offset of processing baseline 04.00.
REFLECTANCE_SCALE = 10_000.0
#: The semantic class of pixels without a label ("void"): never drawn, never scored.
VOID_CLASS = 19
#: The 20 semantic classes of PASTIS, by class id.
CLASS_NAMES: tuple[str, ...] = (
    "Background",
    "Meadow",
    "Soft winter wheat",
    "Corn",
    "Winter barley",
    "Winter rapeseed",
    "Spring barley",
    "Sunflower",
    "Grapevine",
    "Beet",
    "Winter triticale",
    "Winter durum wheat",
    "Fruits, vegetables, flowers",
    "Potatoes",
    "Leguminous fodder",
    "Soybeans",
    "Orchard",
    "Mixed cereal",
    "Sorghum",
    "Void label",
)
#: Positions of B2 (blue), B4 (red) and B8 (NIR) among the ten bands of a PASTIS cube.
_BLUE_RED_NIR = [BANDS.index(b) for b in ("B02", "B04", "B08")]


@dataclass(frozen=True)
class PastisPatch:
    """One patch of ``metadata.geojson``."""

    patch_id: int
    """``ID_PATCH``: names its files ``S2_<id>.npy`` and ``TARGET_<id>.npy``."""
    fold: int
    """``Fold``: 1..5, the dataset's cross-validation folds."""
    dates: np.ndarray
    """``(T,)`` datetime64[D] acquisition dates of its observations, in the order of the cube's first axis."""


@dataclass(frozen=True)
class PastisDataset:
    """A PASTIS folder whose metadata was read and checked (:func:`open_pastis`)."""

    root: Path
    patches: tuple[PastisPatch, ...]
    """Every patch of ``metadata.geojson``, by ``ID_PATCH``."""

    def select(
        self, folds: Iterable[int], *, max_patches: int | None = None, seed: int = 0
    ) -> list[PastisPatch]:
        """The patches of ``folds`` (all of them, or ``max_patches`` drawn with ``seed``), by ``ID_PATCH``.

        Raises:
            DatasetError: no patch is in those folds.
        """
        wanted = set(folds)
        chosen = [p for p in self.patches if p.fold in wanted]
        if not chosen:
            raise DatasetError(
                f"PASTIS root {self.root}: no patch in folds {sorted(wanted)} (metadata.geojson has folds "
                f"{sorted({p.fold for p in self.patches})}); {PASTIS_LAYOUT}"
            )
        if max_patches is not None and max_patches < len(chosen):
            keep = np.random.default_rng(seed).choice(len(chosen), size=max_patches, replace=False)
            chosen = [chosen[i] for i in sorted(keep)]
        return chosen

    def data_path(self, patch: PastisPatch) -> Path:
        return self.root / "DATA_S2" / f"S2_{patch.patch_id}.npy"

    def target_path(self, patch: PastisPatch) -> Path:
        return self.root / "ANNOTATIONS" / f"TARGET_{patch.patch_id}.npy"

    def check_files(self, patches: Sequence[PastisPatch], *, targets: bool) -> None:
        """Fail before any long work when a patch's data (or, with ``targets``, annotation) file is missing.

        Raises:
            DatasetError: naming the first missing file.
        """
        for patch in patches:
            for path in (self.data_path(patch), *((self.target_path(patch),) if targets else ())):
                if not path.is_file():
                    raise DatasetError(
                        f"PASTIS root {self.root}: {path.relative_to(self.root)} is missing (patch {patch.patch_id} "
                        f"of metadata.geojson); {PASTIS_LAYOUT}"
                    )

    def reflectance(self, patch: PastisPatch) -> np.ndarray:
        """The patch's ``(T, 10, H, W)`` cube, memory-mapped (read lazily), checked against its metadata.

        Raises:
            DatasetError: unreadable, another shape or band count, or another T than its dates.
        """
        path = self.data_path(patch)
        cube = _load(path, self.root)
        if cube.ndim != 4 or cube.shape[1] != len(BANDS):
            bands = f"{cube.shape[1]} bands" if cube.ndim == 4 else f"{cube.ndim} dimensions"
            raise DatasetError(
                f"PASTIS root {self.root}: {path.relative_to(self.root)} has shape {cube.shape} ({bands}); "
                f"{PASTIS_LAYOUT}"
            )
        if cube.shape[0] != len(patch.dates):
            raise DatasetError(
                f"PASTIS root {self.root}: {path.relative_to(self.root)} holds {cube.shape[0]} observations but "
                f"metadata.geojson gives patch {patch.patch_id} {len(patch.dates)} dates-S2; {PASTIS_LAYOUT}"
            )
        return cube

    def semantic(self, patch: PastisPatch, shape: tuple[int, int]) -> np.ndarray:
        """The patch's ``(H, W)`` semantic classes (channel 0 of its target).

        Raises:
            DatasetError: unreadable, or not ``(3, H, W)`` for the cube's ``H, W``.
        """
        path = self.target_path(patch)
        target = _load(path, self.root)
        if target.ndim != 3 or target.shape[0] < 1 or tuple(target.shape[1:]) != shape:
            raise DatasetError(
                f"PASTIS root {self.root}: {path.relative_to(self.root)} has shape {target.shape}, not "
                f"(3, {shape[0]}, {shape[1]}); {PASTIS_LAYOUT}"
            )
        return np.asarray(target[0], dtype=np.int64)

    def date_range(self) -> tuple[dt.date, dt.date]:
        """The first and last acquisition date over every patch."""
        first = min(p.dates.min() for p in self.patches)
        last = max(p.dates.max() for p in self.patches)
        return first.astype(dt.date), last.astype(dt.date)


def _load(path: Path, root: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DatasetError(
            f"PASTIS root {root}: cannot read {path.relative_to(root)} as a .npy array ({err}); {PASTIS_LAYOUT}"
        ) from err


def open_pastis(root: str | Path) -> PastisDataset:
    """Read and check ``metadata.geojson`` of a PASTIS folder (the arrays are read later, patch by patch).

    Raises:
        DatasetError: not a folder, no ``metadata.geojson`` or ``DATA_S2``, or metadata without a patch's
            ``ID_PATCH``, ``Fold`` or ``dates-S2``; the message names the expected layout.
    """
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise DatasetError(f"PASTIS root {folder} is not a folder; {PASTIS_LAYOUT}")
    meta_path = folder / "metadata.geojson"
    if not meta_path.is_file():
        raise DatasetError(f"PASTIS root {folder} has no metadata.geojson; {PASTIS_LAYOUT}")
    if not (folder / "DATA_S2").is_dir():
        raise DatasetError(f"PASTIS root {folder} has no DATA_S2 folder; {PASTIS_LAYOUT}")
    try:
        features = json.loads(meta_path.read_text())["features"]
        patches = tuple(sorted((_patch(f["properties"]) for f in features), key=lambda p: p.patch_id))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise DatasetError(
            f"PASTIS root {folder}: metadata.geojson is not a feature collection of patches ({type(err).__name__}: "
            f"{err}); {PASTIS_LAYOUT}"
        ) from err
    if not patches:
        raise DatasetError(f"PASTIS root {folder}: metadata.geojson lists no patch; {PASTIS_LAYOUT}")
    logger.debug("PASTIS %s: %d patches in folds %s", folder, len(patches), sorted({p.fold for p in patches}))
    return PastisDataset(folder, patches)


def _patch(props: dict[str, Any]) -> PastisPatch:
    """A patch from a feature's properties; ``dates-S2`` is a mapping (or its JSON text) index -> YYYYMMDD."""
    dates = props["dates-S2"]
    if isinstance(dates, str):
        dates = json.loads(dates)
    ordered = [dates[k] for k in sorted(dates, key=int)]
    days = np.array([_day(str(d)) for d in ordered], dtype="datetime64[D]")
    if len(days) > 1 and np.any(np.diff(days) < np.timedelta64(0, "D")):
        raise ValueError(f"dates-S2 of patch {props['ID_PATCH']} are not in ascending order")
    fold = int(props["Fold"])
    if not 1 <= fold <= 5:
        raise ValueError(f"Fold {fold} of patch {props['ID_PATCH']} is not in 1..5")
    return PastisPatch(int(props["ID_PATCH"]), fold, days)


def _day(text: str) -> np.datetime64:
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"date {text!r} is not YYYYMMDD")
    return np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:]}", "D")


@dataclass(frozen=True)
class PixelPlaces:
    """Where sampled pixels come from: one entry per pixel."""

    patch_id: np.ndarray
    """``(N,)`` int64 ``ID_PATCH``."""
    row: np.ndarray
    """``(N,)`` int64 row in the patch."""
    col: np.ndarray
    """``(N,)`` int64 column in the patch."""
    fold: np.ndarray
    """``(N,)`` int64 fold of the patch."""

    def take(self, keep: np.ndarray) -> PixelPlaces:
        return PixelPlaces(self.patch_id[keep], self.row[keep], self.col[keep], self.fold[keep])


@dataclass(frozen=True)
class ForecastSet:
    """Pixels for forecasting: the first ``context`` observations and the ``horizon`` after them."""

    history: np.ndarray
    """``(N, 3, context)`` float32 NDVI, EVI, SAVI of the first observations."""
    future: np.ndarray
    """``(N, 3, horizon)`` float32 NDVI, EVI, SAVI of the next observations: what is forecast."""
    places: PixelPlaces
    patches: int
    """Patches the pixels were drawn from."""
    short_patches: int
    """Patches left out: fewer than ``context + horizon`` observations."""

    def __len__(self) -> int:
        return len(self.history)


@dataclass(frozen=True)
class ClassifySet:
    """Pixels for classification: index series on a regular grid, and the class."""

    series: np.ndarray
    """``(N, 3, steps)`` float32 NDVI, EVI, SAVI on the regular grid."""
    labels: np.ndarray
    """``(N,)`` int64 semantic class 0..18 (void pixels are never drawn)."""
    places: PixelPlaces
    grid: np.ndarray
    """``(steps,)`` datetime64[s] dates of the grid."""
    patches: int
    """Patches the pixels were drawn from."""

    def __len__(self) -> int:
        return len(self.series)


def _per_patch(max_pixels: int, n_patches: int) -> int:
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    return max(1, math.ceil(max_pixels / max(n_patches, 1)))


def _draw(candidates: np.ndarray, n: int, seed: int, patch_id: int) -> np.ndarray:
    """Up to ``n`` of the flat pixel indices ``candidates``, seeded per patch, in ascending order."""
    if len(candidates) <= n:
        return candidates
    rng = np.random.default_rng([seed, patch_id])
    return np.sort(rng.choice(candidates, size=n, replace=False))


def _blue_red_nir(cube: np.ndarray, flat: np.ndarray, steps: int) -> np.ndarray:
    """``(3, T', n)`` float32 reflectance (B2, B4, B8) of pixels ``flat`` over the first ``steps`` observations."""
    rows, cols = np.divmod(flat, cube.shape[-1])
    out = np.empty((3, steps, len(flat)), dtype=np.float32)
    for i, band in enumerate(_BLUE_RED_NIR):
        out[i] = cube[:steps, band][:, rows, cols]  # reads only this band's planes of the memory map
    out /= np.float32(REFLECTANCE_SCALE)
    return out


def _cap(n_total: int, max_pixels: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_pixels`` of ``n_total`` pixels (all of them, in order, when they fit)."""
    if n_total <= max_pixels:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=max_pixels, replace=False))


def _report(progress: Progress | None, meter: Meter, done: int, total: int, what: str) -> None:
    if progress is not None and (done == total or done % max(1, total // 10) == 0):
        progress(f"  read {done}/{total} patches ({what})  {meter.times(done)}")


def forecast_set(
    dataset: PastisDataset,
    folds: Iterable[int],
    *,
    context: int = 32,
    horizon: int = 10,
    max_pixels: int = 50_000,
    max_patches: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ForecastSet:
    """Forecasting pixels of the patches of ``folds``: up to ``max_pixels``, drawn evenly over the patches.

    A patch with fewer than ``context + horizon`` observations is left out (counted in ``short_patches``); a
    pixel whose indices are undefined at one of those observations (a zero-reflectance pixel) is dropped.

    Raises:
        DatasetError: a missing or malformed file (naming it and the layout).
    """
    folds = sorted(set(folds))
    patches = dataset.select(folds, max_patches=max_patches, seed=seed)
    dataset.check_files(patches, targets=False)
    steps = context + horizon
    usable = [p for p in patches if len(p.dates) >= steps]
    if len(usable) < len(patches):
        logger.debug(
            "%d of %d patches have fewer than %d observations",
            len(patches) - len(usable),
            len(patches),
            steps,
        )
    if not usable:
        raise DatasetError(
            f"PASTIS root {dataset.root}: no patch of folds {folds} has {steps} observations ({context} + "
            f"{horizon}); {PASTIS_LAYOUT}"
        )
    per_patch = _per_patch(max_pixels, len(usable))
    series, places = [], []
    meter = Meter(len(usable))
    for i, patch in enumerate(usable, 1):
        cube = dataset.reflectance(patch)
        flat = _draw(np.arange(cube.shape[-2] * cube.shape[-1]), per_patch, seed, patch.patch_id)
        blue, red, nir = _blue_red_nir(cube, flat, steps)  # each (steps, n)
        idx = vegetation_indices(blue.T, red.T, nir.T, axis=1)  # (n, 3, steps)
        ok = np.isfinite(idx).all(axis=(1, 2))
        series.append(idx[ok])
        places.append(_places(patch, flat[ok], cube.shape[-1]))
        _report(progress, meter, i, len(usable), f"folds {','.join(map(str, folds))}")
    all_series = np.concatenate(series)
    keep = _cap(len(all_series), max_pixels, seed)
    all_series = all_series[keep]
    return ForecastSet(
        history=np.ascontiguousarray(all_series[:, :, :context]),
        future=np.ascontiguousarray(all_series[:, :, context:]),
        places=_concat(places).take(keep),
        patches=len(usable),
        short_patches=len(patches) - len(usable),
    )


def classify_set(
    dataset: PastisDataset,
    folds: Iterable[int],
    *,
    steps: int = 36,
    max_pixels: int = 50_000,
    max_patches: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ClassifySet:
    """Labelled pixels of the patches of ``folds``: up to ``max_pixels`` non-void pixels, drawn evenly over the
    patches, with their series interpolated onto ``steps`` dates over the whole dataset's date range (so every
    fold is on one grid).

    Raises:
        DatasetError: a missing or malformed file (naming it and the layout).
    """
    folds = sorted(set(folds))
    patches = dataset.select(folds, max_patches=max_patches, seed=seed)
    dataset.check_files(patches, targets=True)
    start, end = dataset.date_range()
    grid = grid_dates(start, end, steps)
    per_patch = _per_patch(max_pixels, len(patches))
    series, labels, places = [], [], []
    meter = Meter(len(patches))
    for i, patch in enumerate(patches, 1):
        cube = dataset.reflectance(patch)
        classes = dataset.semantic(patch, (cube.shape[-2], cube.shape[-1])).reshape(-1)
        flat = _draw(np.flatnonzero(classes != VOID_CLASS), per_patch, seed, patch.patch_id)
        if len(flat):
            bands = _blue_red_nir(cube, flat, cube.shape[0])  # (3, T, n)
            regular = regularize(bands.transpose(1, 0, 2), patch.dates, grid).values  # (steps, 3, n)
            idx = vegetation_indices(
                regular[:, 0].T, regular[:, 1].T, regular[:, 2].T, axis=1
            )  # (n, 3, steps)
            ok = np.isfinite(idx).all(axis=(1, 2))
            series.append(idx[ok])
            labels.append(classes[flat[ok]])
            places.append(_places(patch, flat[ok], cube.shape[-1]))
        _report(progress, meter, i, len(patches), f"folds {','.join(map(str, folds))}")
    if not series:
        raise DatasetError(
            f"PASTIS root {dataset.root}: folds {folds} hold no labelled (non-void) pixel; {PASTIS_LAYOUT}"
        )
    all_series, all_labels = np.concatenate(series), np.concatenate(labels)
    keep = _cap(len(all_series), max_pixels, seed)
    return ClassifySet(
        series=np.ascontiguousarray(all_series[keep], dtype=np.float32),
        labels=all_labels[keep].astype(np.int64),
        places=_concat(places).take(keep),
        grid=grid,
        patches=len(patches),
    )


def _places(patch: PastisPatch, flat: np.ndarray, width: int) -> PixelPlaces:
    rows, cols = np.divmod(flat.astype(np.int64), width)
    n = len(flat)
    return PixelPlaces(
        np.full(n, patch.patch_id, dtype=np.int64), rows, cols, np.full(n, patch.fold, dtype=np.int64)
    )


def _concat(parts: Sequence[PixelPlaces]) -> PixelPlaces:
    return PixelPlaces(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("patch_id", "row", "col", "fold"))
    )
