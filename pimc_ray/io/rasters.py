"""Raster products and the COG writers of one output unit (a tile, or a UTM zone's grid), fed window by window.

A :class:`RasterProduct` says what one output raster holds (dtype, nodata, one description per band, tags, an
optional colour map). A :class:`RasterSet` opens one :class:`~pimc_ray.io.cog.COGWriter` per product on a grid,
takes blocks as windows finish, and publishes every product through a :class:`~pimc_ray.storage.Store` (or
drops them all): the mapping jobs write one set per tile, the indices job one per UTM zone.

While the blocks are in memory the set keeps each band's statistics (count, mean and sum of squared deviations
merged block by block, as Chan et al. 1979), and when it publishes a COG it hashes the file in the same read
that measures it: a :class:`RasterFile` per product, what a STAC item's file and raster extensions carry. A set
may also draw quicklooks of its products as the blocks arrive (:class:`~pimc_ray.io.quicklooks.Quicklook`: a
downsampled PNG per quicklook, published beside the COGs), so a quicklook never reads a COG back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine

from pimc_ray.io.cog import COGWriter
from pimc_ray.io.quicklooks import Quicklook, QuicklookCanvas
from pimc_ray.storage import Store

__all__ = ["BandStatistics", "Grid", "RasterFile", "RasterProduct", "RasterSet", "file_multihash"]


class Grid(Protocol):
    """A north-up pixel grid (:class:`~pimc_ray.data.tiles.OutputGrid` and its tiles are grids)."""

    @property
    def epsg(self) -> int: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def transform(self) -> Affine: ...


@dataclass(frozen=True)
class RasterProduct:
    """One output raster: what every band holds, and how it is stored."""

    name: str
    dtype: str
    """NumPy dtype name of every band."""
    nodata: float
    bands: tuple[str, ...]
    """One description per band (``emb_00``, ``2022-01-06``, ``valid_observations``...)."""
    title: str
    tags: Mapping[str, str] = field(default_factory=dict)
    """Dataset tags of this product, beside those of its set."""
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None
    """Colour map of band 1 (class maps)."""


@dataclass(frozen=True)
class BandStatistics:
    """One band's statistics over its valid (not nodata) pixels, as the STAC raster extension has them."""

    valid_percent: float
    """Valid pixels, in percent of the raster's."""
    minimum: float | None = None
    """None (as the other moments) when no pixel is valid."""
    maximum: float | None = None
    mean: float | None = None
    stddev: float | None = None
    """Population standard deviation (as GDAL's)."""


@dataclass(frozen=True)
class RasterFile:
    """A published COG (or quicklook PNG): where it is, its size and checksum, and its bands' statistics."""

    key: str
    size: int
    """Bytes."""
    checksum: str
    """Multihash of its SHA2-256: ``1220`` and the hex digest (see :func:`file_multihash`)."""
    statistics: tuple[BandStatistics, ...]
    """One per band (none for a quicklook)."""


def file_multihash(path: Path) -> tuple[int, str]:
    """``(size in bytes, multihash)`` of a file, in one read: the multihash of its SHA2-256 is ``12`` (the code of
    sha2-256), ``20`` (32 bytes) and the hex digest, as the STAC file extension's ``file:checksum``."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, "1220" + digest.hexdigest()


class _Moments:
    """Per-band count, minimum, maximum, mean and sum of squared deviations of the valid pixels written so far,
    merged block by block (Chan, Golub and LeVeque's pairwise update: stable, one pass, float64)."""

    def __init__(self, bands: int, nodata: float) -> None:
        self.nodata = nodata
        self.count = np.zeros(bands, np.int64)
        self.mean = np.zeros(bands)
        self.m2 = np.zeros(bands)
        self.minimum = np.full(bands, np.inf)
        self.maximum = np.full(bands, -np.inf)

    def add(self, block: np.ndarray) -> None:
        """Add a ``(bands, h, w)`` block, as stored (cast to the product's dtype)."""
        flat = block.reshape(block.shape[0], -1).astype(np.float64)  # (bands, pixels)
        valid = ~np.isnan(flat) if np.isnan(self.nodata) else flat != self.nodata
        n = valid.sum(axis=1)
        if not n.any():
            return
        has = n > 0
        mean = np.where(valid, flat, 0.0).sum(axis=1) / np.maximum(n, 1)
        m2 = np.where(valid, (flat - mean[:, None]) ** 2, 0.0).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        share = n / np.maximum(total, 1)  # the block's part of the merged count
        self.m2 = np.where(has, self.m2 + m2 + delta**2 * self.count * share, self.m2)
        self.mean = np.where(has, self.mean + delta * share, self.mean)
        self.minimum = np.minimum(self.minimum, np.where(valid, flat, np.inf).min(axis=1))
        self.maximum = np.maximum(self.maximum, np.where(valid, flat, -np.inf).max(axis=1))
        self.count = total

    def statistics(self, pixels: int) -> tuple[BandStatistics, ...]:
        """Each band's statistics on a raster of ``pixels`` pixels (unwritten blocks are nodata)."""
        out = []
        for i, n in enumerate(self.count.tolist()):
            percent = 100.0 * n / pixels
            if n == 0:
                out.append(BandStatistics(percent))
                continue
            out.append(
                BandStatistics(
                    percent,
                    float(self.minimum[i]),
                    float(self.maximum[i]),
                    float(self.mean[i]),
                    float(np.sqrt(self.m2[i] / n)),
                )
            )
        return tuple(out)


class RasterSet:
    """The COG writers of one output unit: one per product, on one grid, under ``folder`` until published.

    Args:
        grid: the unit's pixel grid.
        folder: a local folder for the temporary files.
        products: what to write, by product name.
        tags: dataset tags every product carries.
        quicklooks: quicklooks to draw as blocks arrive, by name (each of one of ``products``).
    """

    def __init__(
        self,
        grid: Grid,
        folder: Path,
        products: Mapping[str, RasterProduct],
        tags: Mapping[str, Any],
        *,
        quicklooks: Mapping[str, Quicklook] | None = None,
    ) -> None:
        height, width = grid.shape
        self.grid = grid
        self.pixels = height * width
        self.products = dict(products)
        for name, quicklook in (quicklooks or {}).items():
            if quicklook.product not in self.products:
                raise ValueError(f"quicklook {name!r} draws {quicklook.product!r}, which is not a product")
        self.quicklooks = {name: QuicklookCanvas(q, height, width) for name, q in (quicklooks or {}).items()}
        """The quicklooks drawn so far, by name."""
        self.moments = {name: _Moments(len(p.bands), p.nodata) for name, p in self.products.items()}
        self.files: dict[str, RasterFile] = {}
        """What :meth:`publish` published, by product and quicklook."""
        self.writers = {
            name: COGWriter(
                folder / f"{name}.tif",
                height=height,
                width=width,
                count=len(p.bands),
                dtype=p.dtype,
                transform=grid.transform,
                epsg=grid.epsg,
                nodata=p.nodata,
                band_descriptions=list(p.bands),
                tags={**tags, **p.tags},
                colormap=p.colormap,
            )
            for name, p in self.products.items()
        }

    def write(self, product: str, block: np.ndarray, row: int, col: int) -> None:
        """Write a ``(bands, h, w)`` block of ``product`` with its top-left pixel at ``(row, col)`` (each pixel once:
        the bands' statistics count every block written)."""
        self.writers[product].write(block, row, col)
        stored = block.astype(self.products[product].dtype, copy=False)
        self.moments[product].add(stored)
        for canvas in self.quicklooks.values():
            if canvas.quicklook.product == product:
                canvas.add(stored, row, col)

    def publish(self, store: Store, keys: Mapping[str, str]) -> dict[str, str]:
        """Convert every product to a validated COG and put it at its key, then every quicklook as a PNG at its
        own; returns name -> key (products and quicklooks), and keeps each one's :class:`RasterFile` in
        :attr:`files`."""
        for name, writer in self.writers.items():
            path = writer.close()
            size, checksum = file_multihash(path)
            store.put_file(path, keys[name])
            path.unlink()
            self.files[name] = RasterFile(
                keys[name], size, checksum, self.moments[name].statistics(self.pixels)
            )
        for name, canvas in self.quicklooks.items():
            data = canvas.png(epsg=self.grid.epsg, transform=self.grid.transform)
            store.put_bytes(data, keys[name])
            self.files[name] = RasterFile(
                keys[name], len(data), "1220" + hashlib.sha256(data).hexdigest(), ()
            )
        return {name: keys[name] for name in [*self.writers, *self.quicklooks]}

    def abort(self) -> None:
        """Drop everything written so far."""
        for writer in self.writers.values():
            writer.abort()
