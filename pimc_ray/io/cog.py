"""Cloud-optimized GeoTIFF writing: windowed, atomic, validated, described.

A COG cannot be written block by block (its overviews and tile index come first in the file), so
:class:`COGWriter` takes blocks into a temporary tiled GeoTIFF beside the target, and on :meth:`COGWriter.close`
converts it with GDAL's COG driver (ZSTD, internal tiles, overviews), checks the result with
``rio_cogeo.cogeo.cog_validate`` and renames it into place. Memory stays bounded by one block plus GDAL's
cache (capped by ``gdal_cache_mb``), whatever the raster's size; a crash never leaves half a file under the
final name. :func:`write_cog` is the one-call form for arrays already in memory.

Every output carries CRS, transform, nodata on every band, band descriptions and tags, and optionally per-band
tags (scale/offset of quantised bands) and a colour map (class maps).

No band is ever an alpha band: every band is data, and a reader that took one for alpha would mask all the others
where it is 0 (GDAL's GTI driver does, for one). The bands are written ``MINISBLACK`` (so 3 or 4 uint8 bands are
not RGB/RGBA), and because GDAL's GeoTIFF writer marks band 2 of every two-band palette raster as alpha whatever
its creation options (``GTiffDataset::CreateCopy``; the ``classes`` product: class id with a palette, then the
confidence), :func:`_unmark_alpha` resets that mark in place in every image directory of the finished COG, which
moves no byte of its layout.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from pimc_ray.errors import InternalError
from pimc_ray.parallel import GDAL_CACHE_MB

__all__ = ["COGWriter", "write_cog"]

logger = logging.getLogger(__name__)


class COGWriter:
    """Write a raster block by block, then publish it as a validated COG at ``path``.

    Args:
        path: target file; its folder is created.
        height, width, count: raster size and band count.
        dtype: numpy dtype name of every band.
        transform: affine transform of the top-left pixel corner.
        epsg: CRS code.
        nodata: nodata value of every band (NaN allowed for floats); unwritten blocks read as nodata.
        band_descriptions: one description per band.
        tags: dataset-level metadata tags (values are stringified; keys without ":", which GDAL splits on).
        band_tags: per-band metadata tags (e.g. ``scale``/``offset`` of quantised bands).
        colormap: colour map for band 1 (class maps), value -> RGBA.
        blocksize: internal tile size.
        compress: GDAL compression of the COG.
        gdal_cache_mb: GDAL block cache while converting (bounds memory on large rasters).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        height: int,
        width: int,
        count: int,
        dtype: str,
        transform: Affine,
        epsg: int,
        nodata: float | int,
        band_descriptions: Sequence[str] | None = None,
        tags: Mapping[str, Any] | None = None,
        band_tags: Sequence[Mapping[str, Any]] | None = None,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        blocksize: int = 256,
        compress: str = "ZSTD",
        gdal_cache_mb: int = GDAL_CACHE_MB,
    ) -> None:
        if band_descriptions is not None and len(band_descriptions) != count:
            raise ValueError(f"{len(band_descriptions)} descriptions for {count} bands")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.shape = (count, height, width)
        self.dtype = np.dtype(dtype)
        self.compress = compress
        self.blocksize = blocksize
        self.gdal_cache_mb = gdal_cache_mb
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=".part.tif")
        os.close(fd)
        self._part = Path(name)
        tile = 256 if min(height, width) >= 256 else 16 * max(1, min(height, width) // 16)
        self._dst = rasterio.open(
            self._part,
            "w",
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype=self.dtype.name,
            crs=f"EPSG:{epsg}",
            transform=transform,
            nodata=nodata,
            tiled=True,
            blockxsize=tile,
            blockysize=tile,
            compress="ZSTD",
            zstd_level=1,
            sparse_ok=True,
            bigtiff="IF_SAFER",
            photometric="MINISBLACK",  # data bands, not RGB(A), whatever their count and dtype
        )
        for i, description in enumerate(band_descriptions or [], start=1):
            self._dst.set_band_description(i, description)
        if tags:
            self._dst.update_tags(**{k: str(v) for k, v in tags.items()})
        for i, btags in enumerate(band_tags or [], start=1):
            self._dst.update_tags(i, **{k: str(v) for k, v in btags.items()})
        if colormap:
            self._dst.write_colormap(1, dict(colormap))

    def write(self, data: np.ndarray, row: int, col: int) -> None:
        """Write a ``(bands, h, w)`` block with its top-left pixel at ``(row, col)``."""
        if data.ndim != 3 or data.shape[0] != self.shape[0]:
            raise ValueError(f"block must be ({self.shape[0]}, h, w), got {data.shape}")
        h, w = data.shape[1:]
        if row < 0 or col < 0 or row + h > self.shape[1] or col + w > self.shape[2]:
            raise ValueError(f"block {data.shape} at ({row}, {col}) falls outside the raster {self.shape}")
        self._dst.write(data.astype(self.dtype, copy=False), window=Window(col, row, w, h))

    def close(self) -> Path:
        """Convert to a COG, validate it and move it to ``path``; the temporary files are removed."""
        self._dst.close()
        cog = self._part.with_suffix(".cog.tmp")
        try:
            options = {
                "BLOCKSIZE": self.blocksize,
                "COMPRESS": self.compress,
                "OVERVIEWS": "AUTO",
                "RESAMPLING": "NEAREST",
                "BIGTIFF": "IF_SAFER",
                "SPARSE_OK": "TRUE",  # blocks never written (outside the AOI) stay absent and read as nodata
            }
            if self.dtype.kind in "iuf":
                options["PREDICTOR"] = "YES"
            # rasterio.Env takes GDAL_CACHEMAX in bytes (GDALSetCacheMax64), unlike the environment variable (MB)
            with rasterio.Env(GDAL_CACHEMAX=self.gdal_cache_mb * 1024 * 1024):
                rasterio.shutil.copy(self._part, cog, driver="COG", **options)
            _unmark_alpha(cog)
            valid, errors, _ = cog_validate(str(cog), quiet=True)
            if not valid:
                raise InternalError(f"GDAL wrote an invalid COG for {self.path}: {errors}")
            with rasterio.open(cog) as src:
                if ColorInterp.alpha in src.colorinterp:
                    raise InternalError(f"{self.path} has an alpha band: {[c.name for c in src.colorinterp]}")
            os.replace(cog, self.path)
        except BaseException:
            cog.unlink(missing_ok=True)
            raise
        finally:
            self._part.unlink(missing_ok=True)
        logger.info("wrote %s (%d bands, %dx%d)", self.path, self.shape[0], self.shape[2], self.shape[1])
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        if not self._dst.closed:
            self._dst.close()
        self._part.unlink(missing_ok=True)

    def __enter__(self) -> COGWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


#: TIFF tag ExtraSamples, and its values that mark a sample as alpha (associated, unassociated).
_EXTRASAMPLES = 338
_ALPHA_SAMPLES = (1, 2)


def _unmark_alpha(path: Path) -> int:
    """Mark every extra sample of every image directory (IFD) of the TIFF at ``path`` "unspecified" where it says
    alpha; returns how many were.

    Only the values of the ExtraSamples tags change, in place (they lie inside their IFD entry, or in an array the
    entry points to): no offset, size or tile of the file moves, so a COG stays a valid COG.
    """
    with open(path, "r+b") as f:

        def read(offset: int, fmt: str) -> tuple[int, ...]:
            f.seek(offset)
            size = struct.calcsize(fmt)
            raw = f.read(size)
            if len(raw) != size:
                raise InternalError(f"{path}: truncated TIFF at byte {offset}")
            return struct.unpack(fmt, raw)

        order = {b"II": "<", b"MM": ">"}.get(f.read(2))
        if order is None:
            raise InternalError(f"{path} is not a TIFF file")
        (version,) = read(2, order + "H")
        if version == 42:  # classic TIFF: 2-byte entry count, 12-byte entries, 4-byte offsets
            count_fmt, entry_fmt, offset_fmt, inline, (ifd,) = "H", "HHII", "I", 4, read(4, order + "I")
        elif version == 43:  # BigTIFF: 8-byte count, 20-byte entries, 8-byte offsets
            count_fmt, entry_fmt, offset_fmt, inline, (ifd,) = "Q", "HHQQ", "Q", 8, read(8, order + "Q")
        else:
            raise InternalError(f"{path}: unknown TIFF version {version}")
        entry_size = struct.calcsize(order + entry_fmt)
        count_size = struct.calcsize(order + count_fmt)
        patched, seen = 0, set()
        while ifd and ifd not in seen:
            seen.add(ifd)
            (entries,) = read(ifd, order + count_fmt)
            for i in range(entries):
                entry = ifd + count_size + i * entry_size
                tag, kind, n, value = read(entry, order + entry_fmt)
                if tag != _EXTRASAMPLES or kind != 3:  # SHORT values
                    continue
                # values that fit the entry's value field are stored in it, the others where it points
                where = entry + entry_size - inline if 2 * n <= inline else value
                samples = list(read(where, f"{order}{n}H"))
                if any(s in _ALPHA_SAMPLES for s in samples):
                    patched += sum(s in _ALPHA_SAMPLES for s in samples)
                    f.seek(where)
                    f.write(struct.pack(f"{order}{n}H", *(0 if s in _ALPHA_SAMPLES else s for s in samples)))
            (ifd,) = read(ifd + count_size + entries * entry_size, order + offset_fmt)
    if patched:
        logger.debug("%s: %d alpha samples marked unspecified", path, patched)
    return patched


def write_cog(path: str | Path, data: np.ndarray, **options: Any) -> Path:
    """Write ``data`` (bands, y, x) as a validated COG at ``path``, atomically.

    ``options`` are :class:`COGWriter`'s keyword arguments except the size and dtype, taken from ``data``.
    """
    if data.ndim != 3:
        raise ValueError(f"data must be (bands, y, x), got shape {data.shape}")
    count, height, width = data.shape
    with COGWriter(path, height=height, width=width, count=count, dtype=data.dtype.name, **options) as writer:
        writer.write(data, 0, 0)
    return Path(path)
