"""Raster products and the COG writers of one output unit (a tile, or a UTM zone's grid), fed window by window.

A :class:`RasterProduct` says what one output raster holds (dtype, nodata, one description per band, tags, an
optional colour map). A :class:`RasterSet` opens one :class:`~pimc_ray.io.cog.COGWriter` per product on a grid,
takes blocks as windows finish, and publishes every product through a :class:`~pimc_ray.storage.Store` (or
drops them all): the mapping jobs write one set per tile, the indices job one per UTM zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from affine import Affine

from pimc_ray.io.cog import COGWriter
from pimc_ray.storage import Store

__all__ = ["Grid", "RasterProduct", "RasterSet"]


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


class RasterSet:
    """The COG writers of one output unit: one per product, on one grid, under ``folder`` until published.

    Args:
        grid: the unit's pixel grid.
        folder: a local folder for the temporary files.
        products: what to write, by product name.
        tags: dataset tags every product carries.
    """

    def __init__(
        self, grid: Grid, folder: Path, products: Mapping[str, RasterProduct], tags: Mapping[str, Any]
    ) -> None:
        height, width = grid.shape
        self.products = dict(products)
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
        """Write a ``(bands, h, w)`` block of ``product`` with its top-left pixel at ``(row, col)``."""
        self.writers[product].write(block, row, col)

    def publish(self, store: Store, keys: Mapping[str, str]) -> dict[str, str]:
        """Convert every product to a validated COG and put it at its key; returns product -> key."""
        for name, writer in self.writers.items():
            path = writer.close()
            store.put_file(path, keys[name])
            path.unlink()
        return {name: keys[name] for name in self.writers}

    def abort(self) -> None:
        """Drop everything written so far."""
        for writer in self.writers.values():
            writer.abort()
