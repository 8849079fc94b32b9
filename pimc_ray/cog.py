"""Cloud-optimized GeoTIFF writing: atomic, validated, described.

Every output raster goes through :func:`write_cog`: GDAL's COG driver (internal tiles, ZSTD, overviews), CRS,
transform, nodata on every band, band descriptions and tags, an optional colour map; written to a temporary
name beside the target, checked with ``rio_cogeo.cogeo.cog_validate``, then renamed. A crash never leaves half a
file under the final name.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from pimc_ray.errors import PimcError

logger = logging.getLogger(__name__)


def write_cog(
    path: str | Path,
    data: np.ndarray,
    *,
    transform: Affine,
    epsg: int,
    nodata: float | int,
    band_descriptions: Sequence[str] | None = None,
    tags: Mapping[str, Any] | None = None,
    band_tags: Sequence[Mapping[str, Any]] | None = None,
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
    blocksize: int = 256,
    compress: str = "ZSTD",
) -> Path:
    """Write ``data`` (bands, y, x) as a validated COG at ``path``, atomically.

    Args:
        path: target file; its folder is created.
        data: (bands, y, x) array; its dtype is the file's.
        transform: affine transform of the top-left pixel corner.
        epsg: CRS code.
        nodata: nodata value set on every band (NaN allowed for floats).
        band_descriptions: one description per band.
        tags: dataset-level metadata tags (values are stringified; keys without ":", which GDAL splits on).
        band_tags: per-band metadata tags (e.g. ``scale``/``offset`` of quantised bands).
        colormap: colour map for band 1 (class maps), value -> RGBA.
        blocksize: internal tile size.
        compress: GDAL compression.

    Raises:
        PimcError: if the written file is not a valid COG (the temporary file is removed).
    """
    path = Path(path)
    if data.ndim != 3:
        raise ValueError(f"data must be (bands, y, x), got shape {data.shape}")
    if band_descriptions is not None and len(band_descriptions) != data.shape[0]:
        raise ValueError(f"{len(band_descriptions)} descriptions for {data.shape[0]} bands")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tif.tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    predictor = "YES" if data.dtype.kind in "iuf" else "NO"
    profile = {
        "driver": "COG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": f"EPSG:{epsg}",
        "transform": transform,
        "nodata": nodata,
        "BLOCKSIZE": blocksize,
        "COMPRESS": compress,
        "PREDICTOR": predictor,
        "OVERVIEWS": "AUTO",
        "RESAMPLING": "NEAREST",
        "BIGTIFF": "IF_SAFER",
    }
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            for i, description in enumerate(band_descriptions or [], start=1):
                dst.set_band_description(i, description)
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
            for i, btags in enumerate(band_tags or [], start=1):
                dst.update_tags(i, **{k: str(v) for k, v in btags.items()})
            if colormap:
                dst.write_colormap(1, dict(colormap))
        valid, errors, _ = cog_validate(str(tmp), quiet=True)
        if not valid:
            raise PimcError(f"GDAL wrote an invalid COG for {path}: {errors}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d bands, %dx%d)", path, data.shape[0], data.shape[2], data.shape[1])
    return path
