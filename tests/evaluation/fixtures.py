"""Tiny seeded PASTIS and EuroSAT folders in the exact layouts of the real datasets, written by the tests.

Both carry a learnable signal: a PASTIS class is a seasonal greenness curve peaking on its own day of the year
(the NDVI of its pixels rises and falls with it), a EuroSAT class has its own mean spectrum. Each band has its
own offset, so a loader that swaps two bands reads other values than the ones written.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: PASTIS band order (B2 B3 B4 B5 B6 B7 B8 B8A B11 B12), and each band's reflectance offset in the fixtures.
PASTIS_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: Classes drawn in the PASTIS fixture (19 is void); each non-void class peaks on its own day.
PASTIS_CLASSES = (0, 1, 2, 3, 4, 5, 19)
_PEAK_DAY = {0: 20, 1: 80, 2: 140, 3: 200, 4: 260, 5: 320, 19: 170}


@dataclass(frozen=True)
class PastisPatchData:
    """What the fixture wrote for one patch."""

    patch_id: int
    fold: int
    dates: list[dt.date]
    cube: np.ndarray
    """``(T, 10, H, W)`` int16 as written (reflectance x 10000)."""
    semantic: np.ndarray
    """``(H, W)`` class ids as written in channel 0 of the target."""


def _greenness(days: np.ndarray, peak: float) -> np.ndarray:
    """0..1 bell of ~45 days around ``peak`` (day of the year, wrapping over the year's end)."""
    gap = np.abs(((days - peak) + 182.5) % 365 - 182.5)
    return np.exp(-((gap / 45.0) ** 2))


def write_pastis(
    root: Path,
    *,
    patches: tuple[tuple[int, int, int], ...] = tuple((10000 + i, i + 1, 44) for i in range(5)),
    size: int = 128,
    block: int = 16,
    seed: int = 0,
) -> dict[int, PastisPatchData]:
    """A PASTIS folder: ``(ID_PATCH, Fold, T)`` per patch (by default five patches 10000..10004, one per fold,
    44 observations each), ``size x size`` px, fields of ``block x block`` px (one class each, void included),
    observations 6 to 10 days apart from mid-September 2018.

    Returns what was written, by patch id.
    """
    rng = np.random.default_rng(seed)
    (root / "DATA_S2").mkdir(parents=True)
    (root / "ANNOTATIONS").mkdir()
    features, written = [], {}
    for patch_id, fold, n_obs in patches:
        start = dt.date(2018, 9, 15) + dt.timedelta(days=int(rng.integers(0, 5)))
        steps = np.cumsum(rng.integers(6, 11, size=n_obs)) - 6  # 6 to 10 days apart, the first on `start`
        dates = [start + dt.timedelta(days=int(d)) for d in steps]
        doy = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)  # (T,)

        side = size // block
        field_class = np.resize(np.array(PASTIS_CLASSES), side * side)[rng.permutation(side * side)]
        field = (
            np.arange(side * side).reshape(side, side).repeat(block, axis=0).repeat(block, axis=1)
        )  # (H, W)
        semantic = field_class[field]
        # each field its own sowing: its class's peak day moved by up to 15 days, and its own vigour
        peak = np.array([_PEAK_DAY[c] for c in field_class]) + rng.uniform(-15, 15, size=side * side)
        vigour = rng.uniform(0.6, 1.0, size=side * side)
        green = vigour[:, None] * np.stack([_greenness(doy, d) for d in peak])  # (fields, T)
        g = np.moveaxis(green[field], -1, 0)  # (T, H, W)
        base = {  # reflectance of each band as a function of greenness
            "B02": 0.05 - 0.01 * g, "B03": 0.07 + 0.01 * g, "B04": 0.12 - 0.08 * g, "B05": 0.15 + 0.02 * g,
            "B06": 0.20 + 0.10 * g, "B07": 0.22 + 0.14 * g, "B08": 0.20 + 0.30 * g, "B8A": 0.24 + 0.28 * g,
            "B11": 0.25 - 0.05 * g, "B12": 0.18 - 0.06 * g,
        }  # fmt: skip
        cube = np.stack([base[b] for b in PASTIS_BANDS], axis=1)  # (T, 10, H, W)
        cube = cube + rng.normal(0.0, 0.01, size=cube.shape)
        cube = np.round(np.clip(cube, 0.0, 1.0) * 10_000).astype(np.int16)
        target = np.stack([semantic, semantic * 0, semantic * 0]).astype(np.uint8)  # (3, H, W) like PASTIS
        np.save(root / "DATA_S2" / f"S2_{patch_id}.npy", cube)
        np.save(root / "ANNOTATIONS" / f"TARGET_{patch_id}.npy", target)
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [1280, 0], [1280, 1280], [0, 1280], [0, 0]]],
                },
                "properties": {
                    "ID_PATCH": patch_id,
                    "Fold": fold,
                    "N_Parcel": int(len(np.unique(field_class))),
                    "Parcel_Cover": 1.0,
                    "TILE": "t30uxv",
                    "dates-S2": {str(i): int(d.strftime("%Y%m%d")) for i, d in enumerate(dates)},
                },
            }
        )
        written[patch_id] = PastisPatchData(patch_id, fold, dates, cube, semantic)
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}},
        "features": features,
    }
    (root / "metadata.geojson").write_text(json.dumps(collection))
    return written


#: EuroSAT's classes and its 13 bands in file order.
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")  # fmt: skip
EUROSAT_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A")


def write_eurosat(
    root: Path, *, per_class: int = 6, size: int = 64, bands: int = 13, seed: int = 0
) -> dict[str, np.ndarray]:
    """A EuroSAT_MS folder: ``per_class`` GeoTIFFs ``<Class>/<Class>_<n>.tif`` (n from 1) per class, ``bands`` x
    ``size`` x ``size`` uint16; each class has its own spectrum (0.02 to 0.35 per band, seeded) and texture (pixel
    noise of 0.004 to 0.016).

    Returns the arrays written, by file stem (``AnnualCrop_1``).
    """
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    written = {}
    for c, name in enumerate(EUROSAT_CLASSES):
        (root / name).mkdir(parents=True)
        spectrum = rng.uniform(0.02, 0.35, size=bands)  # (bands,)
        texture = 0.004 * (1 + c / 3)
        for n in range(1, per_class + 1):
            image = spectrum[:, None, None] + rng.normal(0.0, texture, size=(bands, size, size))
            data = np.round(np.clip(image, 0, 1) * 10_000).astype(np.uint16)
            profile = {
                "driver": "GTiff",
                "width": size,
                "height": size,
                "count": bands,
                "dtype": "uint16",
                "crs": "EPSG:32631",
                "transform": from_origin(500_000 + 640 * n, 5_000_000 + 640 * c, 10, 10),
            }
            with rasterio.open(root / name / f"{name}_{n}.tif", "w", **profile) as dst:
                dst.write(data)
            written[f"{name}_{n}"] = data
    return written
