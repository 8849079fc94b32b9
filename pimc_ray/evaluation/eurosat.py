"""EuroSAT multispectral (Helber et al. 2019) read as it is distributed, and its train/test split.

The layout of ``EuroSAT_MS`` (27,000 Sentinel-2 L1C images), which nothing else is needed to read::

    <root>/<ClassName>/<ClassName>_<n>.tif   13 bands B01 B02 B03 B04 B05 B06 B07 B08 B09 B10 B11 B12 B8A,
                                             64 x 64 px, uint16 top-of-atmosphere reflectance x 10000

with the ten class folders of :data:`EUROSAT_CLASSES`. :func:`list_eurosat` finds the images (reading none),
:func:`stratified_split` or :func:`split_from_files` splits them, and :func:`read_images` reads the chosen ones:
the ten bands the image-patch encoder takes (pimc-ray's ``BANDS`` order: B01, B09 and B10 are left out) and, for
the raw baseline, the mean and standard deviation of all 13 bands.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pimc_ray.data.catalogs import BANDS
from pimc_ray.errors import DatasetError, InvalidConfigError
from pimc_ray.progress import Meter, Progress

logger = logging.getLogger(__name__)

__all__ = [
    "EUROSAT_BANDS",
    "EUROSAT_CLASSES",
    "EUROSAT_LAYOUT",
    "EUROSAT_SIZE",
    "REFLECTANCE_SCALE",
    "EuroSATCatalog",
    "EuroSATImages",
    "cap_per_class",
    "list_eurosat",
    "read_images",
    "split_from_files",
    "stratified_split",
]

#: The ten classes, in the order of their class ids 0..9.
EUROSAT_CLASSES: tuple[str, ...] = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
#: The bands of a EuroSAT multispectral GeoTIFF, in file order.
EUROSAT_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip
#: Side of a EuroSAT image in pixels.
EUROSAT_SIZE = 64
#: EuroSAT stores reflectance times 10,000.
REFLECTANCE_SCALE = 10_000.0
#: The layout every error about a EuroSAT folder names.
EUROSAT_LAYOUT = (
    "expected the EuroSAT multispectral layout: <root>/<ClassName>/<ClassName>_<n>.tif, 13-band "
    f"({' '.join(EUROSAT_BANDS)}) {EUROSAT_SIZE} x {EUROSAT_SIZE} GeoTIFFs in the class folders "
    f"{', '.join(EUROSAT_CLASSES)}"
)
#: Positions of the encoder's ten bands (pimc-ray's BANDS: B02 ... B8A, B11, B12) in a EuroSAT file.
_ENCODER_BANDS = [EUROSAT_BANDS.index(b) for b in BANDS]


@dataclass(frozen=True)
class EuroSATCatalog:
    """The images of a EuroSAT folder, found but not read."""

    root: Path
    paths: tuple[Path, ...]
    labels: np.ndarray
    """``(N,)`` int64 class id (index into :data:`EUROSAT_CLASSES`)."""

    @property
    def names(self) -> list[str]:
        """File names without their suffix, e.g. ``AnnualCrop_1``."""
        return [p.stem for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class EuroSATImages:
    """Images read for the encoder and for the raw baseline."""

    bands: np.ndarray
    """``(N, 10, 64, 64)`` uint16 reflectance x 10000 of the encoder's bands, in pimc-ray's BANDS order."""
    band_stats: np.ndarray
    """``(N, 26)`` float32 mean then standard deviation over the image of each of the 13 bands (reflectance)."""
    labels: np.ndarray
    """``(N,)`` int64 class id."""

    def __len__(self) -> int:
        return len(self.labels)


def list_eurosat(root: str | Path) -> EuroSATCatalog:
    """The images of a EuroSAT folder: ``<root>/<ClassName>/<ClassName>_<n>.tif`` in each class folder, in
    class order, then by ``n``.

    Raises:
        DatasetError: not a folder, a class folder missing, or a class folder without its images.
    """
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise DatasetError(f"EuroSAT root {folder} is not a folder; {EUROSAT_LAYOUT}")
    missing = [c for c in EUROSAT_CLASSES if not (folder / c).is_dir()]
    if missing:
        raise DatasetError(
            f"EuroSAT root {folder} has no class folder {', '.join(missing)}; {EUROSAT_LAYOUT}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for class_id, name in enumerate(EUROSAT_CLASSES):
        pattern = re.compile(rf"^{name}_(\d+)\.tif$")
        found = sorted(
            ((int(m.group(1)), p) for p in (folder / name).iterdir() if (m := pattern.match(p.name))),
            key=lambda item: item[0],
        )
        if not found:
            others = sorted(p.suffix for p in (folder / name).iterdir() if p.is_file())
            hint = f" (it holds {', '.join(sorted(set(others)))} files)" if others else ""
            raise DatasetError(
                f"EuroSAT root {folder}: {name}/ has no {name}_<n>.tif image{hint}; {EUROSAT_LAYOUT}"
            )
        paths += [p for _, p in found]
        labels += [class_id] * len(found)
    logger.debug("EuroSAT %s: %d images", folder, len(paths))
    return EuroSATCatalog(folder, tuple(paths), np.asarray(labels, dtype=np.int64))


def cap_per_class(labels: np.ndarray, indices: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """At most ``max_per_class`` of ``indices`` per class of ``labels`` (drawn with ``seed``), in ascending order."""
    rng = np.random.default_rng(seed)
    kept = []
    for c in np.unique(labels[indices]):
        members = indices[labels[indices] == c]
        kept.append(
            members if len(members) <= max_per_class else rng.choice(members, max_per_class, replace=False)
        )
    return np.sort(np.concatenate(kept))


def stratified_split(
    labels: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices: in each class, ``round(n * test_fraction)`` images (at least one when the class
    has two) drawn with ``seed`` for the test set, the rest for training.

    Raises:
        InvalidConfigError: ``test_fraction`` not strictly between 0 and 1.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InvalidConfigError(f"--test-fraction {test_fraction} must lie strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(max(round(len(members) * test_fraction), 1 if len(members) > 1 else 0), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def split_from_files(catalog: EuroSATCatalog, files: Sequence[str | Path]) -> tuple[np.ndarray, ...]:
    """Indices of the images each split file lists, one image name per line (``AnnualCrop_1.tif``; the suffix
    is ignored, so torchgeo's ``eurosat-train.txt`` with ``.jpg`` names works too).

    Raises:
        DatasetError: a file cannot be read, or lists an image that is not in the catalog.
    """
    index = {name: i for i, name in enumerate(catalog.names)}
    splits = []
    for file in files:
        try:
            lines = Path(file).read_text().split()
        except OSError as err:
            raise DatasetError(
                f"cannot read split file {file} ({err}); give one image name per line"
            ) from err
        names = [Path(line).stem for line in lines]
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DatasetError(
                f"split file {file} lists {len(unknown)} images not under {catalog.root} (first: {unknown[0]}); "
                f"{EUROSAT_LAYOUT}"
            )
        if not names:
            raise DatasetError(f"split file {file} lists no image; give one image name per line")
        splits.append(np.asarray(sorted(index[n] for n in names), dtype=np.int64))
    return tuple(splits)


def read_images(
    catalog: EuroSATCatalog, indices: np.ndarray, *, progress: Progress | None = None
) -> EuroSATImages:
    """Read the images ``indices`` of ``catalog``.

    Raises:
        DatasetError: a file that is not a readable GeoTIFF, without 13 bands, or not 64 x 64.
    """
    import rasterio
    from rasterio.errors import RasterioError

    n = len(indices)
    bands = np.empty((n, len(BANDS), EUROSAT_SIZE, EUROSAT_SIZE), dtype=np.uint16)
    stats = np.empty((n, 2 * len(EUROSAT_BANDS)), dtype=np.float32)
    meter = Meter(n)
    for i, k in enumerate(indices):
        path = catalog.paths[int(k)]
        rel = path.relative_to(catalog.root)
        try:
            with rasterio.open(path) as src:
                if src.count != len(EUROSAT_BANDS):
                    raise DatasetError(
                        f"EuroSAT root {catalog.root}: {rel} has {src.count} bands, not {len(EUROSAT_BANDS)} "
                        f"(the RGB release has 3); {EUROSAT_LAYOUT}"
                    )
                if (src.height, src.width) != (EUROSAT_SIZE, EUROSAT_SIZE):
                    raise DatasetError(
                        f"EuroSAT root {catalog.root}: {rel} is {src.height} x {src.width} px; {EUROSAT_LAYOUT}"
                    )
                image = src.read()  # (13, 64, 64)
        except RasterioError as err:
            raise DatasetError(
                f"EuroSAT root {catalog.root}: cannot read {rel} as a GeoTIFF ({err}); {EUROSAT_LAYOUT}"
            ) from err
        bands[i] = image[_ENCODER_BANDS]
        scaled = image.reshape(len(EUROSAT_BANDS), -1).astype(np.float32) / np.float32(REFLECTANCE_SCALE)
        stats[i] = np.concatenate([scaled.mean(axis=1), scaled.std(axis=1)])
        if progress is not None and (i + 1 == n or (i + 1) % max(1, n // 10) == 0):
            progress(f"  read {i + 1}/{n} images  {meter.times(i + 1)}")
    return EuroSATImages(bands, stats, catalog.labels[indices])
