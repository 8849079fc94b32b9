"""Quicklooks: small PNGs of a run's maps, per tile and per run, written with GDAL's PNG driver.

A **tile's quicklook** is drawn while its blocks are written: :class:`~pimc_ray.io.rasters.RasterSet` hands every
block of a product to a :class:`QuicklookCanvas`, which keeps the pixel at the centre of each ``step`` x ``step``
cell (``step`` the smallest that brings the longer side to at most :attr:`Quicklook.max_size` pixels; the pixel
GDAL's nearest-neighbour resampling picks) and draws it at once, so a tile's quicklook costs a few kilobytes of
memory per window and no read back. Two kinds (:class:`Quicklook`):

- **false colour** of a multi-band product (the embedding): an RGBA PNG whose red, green and blue are the
  product's first three principal components (:class:`PcaBasis`), each stretched linearly between the 2nd and
  98th percentiles of the sample the basis was fit on; alpha is 0 where any band is nodata. One basis serves
  every tile of a run, so a colour means the same embedding on neighbouring tiles.
- **palette** of a class map's band 1: a palette PNG whose pixel values are the class ids and whose colour table
  is the map's (nodata, 0, transparent): a reader gets the classes back from the PNG, and the legend is the
  classification extension's ``classification:classes`` beside it (:func:`legend_svg` draws it as text).

A **run's quicklook** (:func:`write_run_quicklooks`) is composed from its tiles' quicklooks, never from the
full-resolution COGs: each is placed (nearest neighbour) on one grid of at most ``max_size`` pixels a side, the
zone's grid for a one-zone run (an exact copy where no downsampling is needed) and a lon/lat grid across zones.
It reads one small PNG per tile, concurrently, as the run's end already reads one item per tile.

No plotting library is needed (the cluster's images have none): GDAL writes the PNGs, and the legend is SVG text.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine

from pimc_ray.parallel import in_order
from pimc_ray.storage import Store

__all__ = [
    "PNG_MEDIA_TYPE",
    "SVG_MEDIA_TYPE",
    "PcaBasis",
    "Quicklook",
    "QuicklookCanvas",
    "class_palette",
    "decimation",
    "legend_svg",
    "png_bytes",
    "write_run_quicklooks",
]

PNG_MEDIA_TYPE = "image/png"
SVG_MEDIA_TYPE = "image/svg+xml"

RGBA = tuple[int, int, int, int]

#: Colours of classes a head gives none (tab10's), in class order; never the nodata value 0.
_FALLBACK_COLOURS = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)


@dataclass(frozen=True)
class PcaBasis:
    """A projection of ``d``-band pixels to three colours: the first three principal components of a sample, each
    stretched between two of the sample's percentiles (fit once per run, shipped to every worker)."""

    mean: tuple[float, ...]
    """The sample's mean, ``(d,)``."""
    components: tuple[tuple[float, ...], ...]
    """Three unit vectors ``(3, d)``, by decreasing variance (zeros where ``d < 3``); the sign of each makes its
    largest loading positive, so the same sample always gives the same colours."""
    low: tuple[float, float, float]
    """Each component's value drawn as 0 (the sample's 2nd percentile)."""
    high: tuple[float, float, float]
    """Each component's value drawn as 255 (the sample's 98th percentile)."""
    pixels: int = 0
    """Pixels of the sample."""

    @classmethod
    def fit(cls, sample: np.ndarray, *, stretch: tuple[float, float] = (2.0, 98.0)) -> PcaBasis:
        """The basis of ``sample`` ``(n, d)``; rows with a NaN are left out.

        Raises:
            ValueError: fewer than two complete rows.
        """
        x = np.asarray(sample, dtype=np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"a PCA basis needs two or more complete pixels, got {len(x)}")
        d = x.shape[1]
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)  # vt: (min(n, d), d), by decreasing variance
        k = min(3, len(vt))
        components = np.zeros((3, d))
        components[:k] = vt[:k]
        largest = components[np.arange(3), np.abs(components).argmax(axis=1)]
        components *= np.where(largest < 0, -1.0, 1.0)[:, None]
        projected = (x - mean) @ components.T  # (n, 3)
        low, high = np.percentile(projected, stretch, axis=0)
        high = np.where(high > low, high, low + 1.0)  # a flat component draws as its low colour
        return cls(
            tuple(mean.tolist()),
            tuple(tuple(c) for c in components.tolist()),
            (float(low[0]), float(low[1]), float(low[2])),
            (float(high[0]), float(high[1]), float(high[2])),
            len(x),
        )

    @property
    def dim(self) -> int:
        return len(self.mean)

    def rgba(self, block: np.ndarray) -> np.ndarray:
        """``(4, h, w)`` uint8 RGBA of a ``(d, h, w)`` block: alpha 255 where every band is valid, else 0 (and
        black)."""
        d, height, width = block.shape
        if d != self.dim:
            raise ValueError(f"the basis projects {self.dim} bands, the block has {d}")
        flat = block.reshape(d, -1).astype(np.float64)  # (d, pixels)
        # (3, pixels); einsum rather than BLAS: a small product, and BLAS threads stall on a busy worker's cores
        projected = np.einsum("kd,dp->kp", np.asarray(self.components), flat - np.asarray(self.mean)[:, None])
        low, high = np.asarray(self.low)[:, None], np.asarray(self.high)[:, None]
        valid = np.isfinite(projected).all(axis=0)
        scaled = np.clip(np.nan_to_num((projected - low) / (high - low)), 0.0, 1.0)
        rgb = np.where(valid, np.round(scaled * 255), 0).astype(np.uint8)
        alpha = np.where(valid, 255, 0).astype(np.uint8)
        return np.concatenate([rgb, alpha[None]]).reshape(4, height, width)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "components": [list(c) for c in self.components],
            "low": list(self.low),
            "high": list(self.high),
            "pixels": self.pixels,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PcaBasis:
        low, high = (tuple(float(v) for v in data[k]) for k in ("low", "high"))
        return cls(
            tuple(float(v) for v in data["mean"]),
            tuple(tuple(float(v) for v in c) for c in data["components"]),
            (low[0], low[1], low[2]),
            (high[0], high[1], high[2]),
            int(data.get("pixels", 0)),
        )


def class_palette(colormap: Mapping[int, Sequence[int]] | None, class_ids: Sequence[int]) -> dict[int, RGBA]:
    """The colour table of a class quicklook: the map's colours, a fallback colour for each class in
    ``class_ids`` that has none, and 0 (nodata) transparent."""
    out: dict[int, RGBA] = {0: (0, 0, 0, 0)}
    given = {int(k): v for k, v in (colormap or {}).items() if int(k) != 0}
    for k, v in given.items():
        out[k] = (int(v[0]), int(v[1]), int(v[2]), int(v[3]) if len(v) > 3 else 255)
    missing = [int(c) for c in class_ids if int(c) not in out]
    for i, c in enumerate(missing):
        out[c] = (*_FALLBACK_COLOURS[i % len(_FALLBACK_COLOURS)], 255)
    return out


@dataclass(frozen=True)
class Quicklook:
    """How one product of a tile is drawn: a false colour (``basis``) or a palette (``colormap``), exactly one."""

    product: str
    """The product whose blocks it draws."""
    basis: PcaBasis | None = None
    """A multi-band product's colours: RGBA from its principal components."""
    colormap: Mapping[int, RGBA] | None = None
    """A class map's colours (band 1, value -> RGBA; see :func:`class_palette`)."""
    max_size: int = 512
    """The longer side of the quicklook at most, in pixels."""

    def __post_init__(self) -> None:
        if (self.basis is None) == (self.colormap is None):
            raise ValueError("a quicklook is either a false colour (basis) or a palette (colormap)")
        if self.max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {self.max_size}")

    @property
    def bands(self) -> int:
        """Bands of the PNG: 4 (RGBA) or 1 (palette)."""
        return 4 if self.basis is not None else 1

    @property
    def description(self) -> str:
        """What the colours mean (the STAC asset's description)."""
        if self.basis is not None:
            return (
                f"False colour of the {self.product}: red, green and blue are its first three principal "
                f"components (one basis per run, fit on {self.basis.pixels} sample pixels), each stretched "
                "between the sample's 2nd and 98th percentiles; transparent where nodata"
            )
        return (
            f"Band 1 of the {self.product} as a palette PNG: pixel values are the class ids, in the map's colours "
            "(classification:classes is the legend); transparent where nodata"
        )

    def draw(self, block: np.ndarray) -> np.ndarray:
        """The PNG's bands ``(bands, h, w)`` uint8 of a ``(product bands, h, w)`` block."""
        if self.basis is not None:
            return self.basis.rgba(block)
        return np.asarray(block[:1]).astype(np.uint8)


def decimation(height: int, width: int, max_size: int) -> int:
    """The step that brings a ``height`` x ``width`` raster to at most ``max_size`` pixels a side."""
    return max(1, -(-max(height, width) // max_size))


class QuicklookCanvas:
    """A quicklook of one raster, drawn as its blocks arrive (see the module docstring).

    Args:
        quicklook: how to draw.
        height, width: the raster's size.
    """

    def __init__(self, quicklook: Quicklook, height: int, width: int) -> None:
        self.quicklook = quicklook
        self.step = decimation(height, width, quicklook.max_size)
        # the source pixel each quicklook pixel shows: the centre of its step x step cell (as GDAL's nearest)
        self.rows = np.minimum(np.arange(-(-height // self.step)) * self.step + self.step // 2, height - 1)
        self.cols = np.minimum(np.arange(-(-width // self.step)) * self.step + self.step // 2, width - 1)
        self.image = np.zeros((quicklook.bands, len(self.rows), len(self.cols)), np.uint8)  # all transparent

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.cols)

    def add(self, block: np.ndarray, row: int, col: int) -> None:
        """Draw the pixels a ``(bands, h, w)`` block with its top-left pixel at ``(row, col)`` holds."""
        r0, r1 = np.searchsorted(self.rows, [row, row + block.shape[1]])
        c0, c1 = np.searchsorted(self.cols, [col, col + block.shape[2]])
        if r0 == r1 or c0 == c1:
            return
        picked = block[:, self.rows[r0:r1, None] - row, self.cols[None, c0:c1] - col]  # (bands, r1-r0, c1-c0)
        self.image[:, r0:r1, c0:c1] = self.quicklook.draw(picked)

    def transform(self, raster: Affine) -> Affine:
        """The quicklook's geotransform, from the raster's."""
        return raster * Affine.scale(self.step)

    def png(self, *, epsg: int | None = None, transform: Affine | None = None) -> bytes:
        """The quicklook as PNG bytes (the raster's CRS and transform only spare a warning: a PNG keeps neither)."""
        return png_bytes(
            self.image,
            colormap=self.quicklook.colormap,
            crs=None if epsg is None else f"EPSG:{epsg}",
            transform=None if transform is None else self.transform(transform),
        )


def png_bytes(
    image: np.ndarray,
    *,
    colormap: Mapping[int, RGBA] | None = None,
    crs: Any = None,
    transform: Affine | None = None,
) -> bytes:
    """A ``(bands, h, w)`` uint8 image as PNG bytes, written by GDAL's PNG driver: 4 bands are RGBA, 1 band with
    ``colormap`` a palette PNG (alpha in its tRNS chunk). A PNG keeps no georeference: ``crs`` and ``transform``
    only spare rasterio's warning about its absence (silenced otherwise, which is not thread-safe)."""
    import rasterio
    from rasterio.io import MemoryFile

    if crs is None or transform is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return png_bytes(image, colormap=colormap, crs="EPSG:4326", transform=Affine.identity())
    bands, height, width = image.shape
    profile = {"driver": "PNG", "width": width, "height": height, "count": bands, "dtype": "uint8"}
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile() as memory:  # no .aux.xml: the bytes are all
        with memory.open(**profile, crs=crs, transform=transform) as dst:
            dst.write(image.astype(np.uint8, copy=False))
            if colormap is not None:
                dst.write_colormap(1, dict(colormap))
        return bytes(memory.read())


def _read_png(data: bytes) -> tuple[np.ndarray, dict[int, RGBA] | None]:
    """``(bands (b, h, w) uint8, colour table of a palette PNG or None)`` of PNG bytes, read by GDAL (which
    warns that a PNG has no georeference: the caller silences it, in its thread, as warning filters are global)."""
    from rasterio.io import MemoryFile

    with MemoryFile(data) as memory, memory.open() as src:
        colormap = src.colormap(1) if src.colorinterp[0].name == "palette" else None
        return src.read(), colormap


def legend_svg(classes: Sequence[Mapping[str, Any]], *, title: str = "Classes") -> bytes:
    """A legend of class quicklooks as SVG (text, so no plotting library): a swatch and a name per class of
    ``classes`` (the classification extension's class objects: ``value``, ``name``, ``title``, ``color_hint``;
    nodata ones left out)."""
    rows = [c for c in classes if not c.get("nodata")]
    labels = [str(c.get("title") or c["name"]) for c in rows]
    width = 40 + 7 * max([len(title), *(len(t) + 6 for t in labels)])
    height = 32 + 22 * len(rows)
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        f'  <rect width="{width}" height="{height}" fill="white"/>',
        f'  <text x="8" y="20" font-weight="bold">{escape(title)}</text>',
    ]
    for i, (c, label) in enumerate(zip(rows, labels, strict=True)):
        y = 30 + 22 * i
        colour = f"#{c['color_hint']}" if c.get("color_hint") else "none"
        lines += [
            f'  <rect x="8" y="{y}" width="24" height="16" fill="{colour}" stroke="#444"/>',
            f'  <text x="40" y="{y + 13}">{escape(str(c["value"]))}  {escape(label)}</text>',
        ]
    return ("\n".join([*lines, "</svg>"]) + "\n").encode()


# --- the run's quicklooks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placed:
    """One tile's quicklook as the run's composition needs it."""

    key: str
    """Where the PNG is in the store."""
    epsg: int
    transform: Affine
    """The quicklook's geotransform (its asset's ``proj:transform``)."""
    bounds: tuple[float, float, float, float]
    """The tile's bounds in its CRS."""


def _placements(items: Sequence[Mapping[str, Any]], asset_key: str) -> list[_Placed]:
    """The tiles' quicklooks of ``asset_key`` (tiles published without one are left out)."""
    out = []
    for item in items:
        asset = item.get("assets", {}).get(asset_key)
        if asset is None or "proj:transform" not in asset:
            continue
        props = item["properties"]
        key = f"tiles/{props['pimc:tile']}/{asset['href'].removeprefix('./')}"
        epsg = int(str(props["proj:code"]).removeprefix("EPSG:"))
        bounds = tuple(float(v) for v in props["proj:bbox"])
        out.append(_Placed(key, epsg, Affine(*asset["proj:transform"][:6]), bounds))  # type: ignore[arg-type]
    return out


def _run_grid(placed: Sequence[_Placed], max_size: int) -> tuple[int, Affine, tuple[int, int]]:
    """``(epsg, transform, (height, width))`` of a run's quicklook: the zone's grid for one zone, at a whole
    multiple of the tiles' quicklook pixels (an exact copy of them where that multiple is 1), else lon/lat."""
    from rasterio.warp import transform_bounds

    zones = {p.epsg for p in placed}
    one_zone = len(zones) == 1
    if one_zone:
        epsg = zones.pop()
        boxes = np.array([p.bounds for p in placed])
        pixel = min(p.transform.a for p in placed)
    else:
        epsg = 4326
        boxes = np.array([transform_bounds(p.epsg, 4326, *p.bounds, densify_pts=21) for p in placed])
        pixel = min(p.transform.a for p in placed) / 111_320  # a quicklook pixel in degrees of latitude
    west, south = boxes[:, 0].min(), boxes[:, 1].min()
    east, north = boxes[:, 2].max(), boxes[:, 3].max()
    longer = max(east - west, north - south)
    if one_zone:  # one zone: whole quicklook pixels, so a tile's pixels land on the grid's
        resolution = pixel * max(1, math.ceil(longer / (max_size * pixel) - 1e-9))
    else:
        resolution = max(pixel, longer / max_size)
    width = max(1, min(max_size, math.ceil((east - west) / resolution - 1e-9)))
    height = max(1, min(max_size, math.ceil((north - south) / resolution - 1e-9)))
    return epsg, Affine(resolution, 0.0, west, 0.0, -resolution, north), (height, width)


def _compose(
    store: Store, placed: Sequence[_Placed], max_size: int, threads: int
) -> tuple[np.ndarray, dict[int, RGBA] | None, int, Affine] | None:
    """The tiles' quicklooks placed on the run's grid (nearest neighbour); returns the image, the palette of
    palette quicklooks, and the grid (None when no tile's quicklook is there any more)."""
    from rasterio.errors import NotGeoreferencedWarning, WindowError
    from rasterio.warp import Resampling, reproject, transform_bounds
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    epsg, grid, (height, width) = _run_grid(placed, max_size)
    image: np.ndarray | None = None
    palette: dict[int, RGBA] | None = None
    full = Window(0, 0, width, height)

    def fetch(p: _Placed) -> tuple[_Placed, tuple[np.ndarray, dict[int, RGBA] | None] | None]:
        data = store.get_bytes(p.key)
        return p, None if data is None else _read_png(data)

    with warnings.catch_warnings():  # in this thread, not the reading ones: warning filters are the process's
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for p, read in in_order(fetch, placed, threads, chunk=64):
            if read is None:
                continue
            source, colormap = read
            if image is None:
                image = np.zeros((source.shape[0], height, width), np.uint8)
                palette = colormap
            bounds = p.bounds if epsg == p.epsg else transform_bounds(p.epsg, epsg, *p.bounds, densify_pts=21)
            try:
                window = (
                    from_bounds(*bounds, transform=grid).round_offsets().round_lengths().intersection(full)
                )
            except WindowError:  # the tile is off the grid (not expected: the grid spans every tile)
                continue
            part = np.zeros((source.shape[0], window.height, window.width), np.uint8)
            reproject(
                source,
                part,
                src_transform=p.transform,
                src_crs=f"EPSG:{p.epsg}",
                dst_transform=window_transform(window, grid),
                dst_crs=f"EPSG:{epsg}",
                resampling=Resampling.nearest,
                init_dest_nodata=False,
            )
            drawn = part[-1] > 0 if source.shape[0] == 4 else part[0] > 0  # alpha, or a class id (0: nodata)
            view = image[(slice(None), *window.toslices())]  # a view: assigning into it paints the image
            view[:, drawn] = part[:, drawn]
    return None if image is None else (image, palette, epsg, grid)


def write_run_quicklooks(
    store: Store,
    items: Sequence[Mapping[str, Any]],
    *,
    max_size: int = 1024,
    threads: int = 16,
) -> dict[str, dict[str, Any]]:
    """The run's quicklooks, composed from its tiles' (see the module docstring), put at the store's root
    under the tiles' file names (``quicklook.png``...); with a class quicklook also its legend
    (``<name>_legend.svg``). Returns the collection's assets (key -> STAC asset, with relative hrefs and the
    quicklook's grid in the projection extension's fields).

    Args:
        store: the run's output.
        items: the STAC items of the run's published tiles: their ``thumbnail*`` assets name the quicklooks.
        max_size: the longer side of each run quicklook at most, in pixels.
        threads: quicklooks read at once.
    """
    keys = sorted(
        {k for i in items for k, a in i.get("assets", {}).items() if "thumbnail" in a.get("roles", ())}
    )
    out: dict[str, dict[str, Any]] = {}
    for asset_key in keys:
        placed = _placements(items, asset_key)
        if not placed:
            continue
        composed = _compose(store, placed, max_size, threads)
        if composed is None:
            continue
        image, palette, epsg, grid = composed
        name = placed[0].key.rsplit("/", 1)[1]
        data = png_bytes(image, colormap=palette, crs=f"EPSG:{epsg}", transform=grid)
        store.put_bytes(data, name)
        first = next(i["assets"][asset_key] for i in items if asset_key in i.get("assets", {}))
        asset = {k: v for k, v in first.items() if not k.startswith(("proj:", "file:")) and k != "href"}
        asset |= {
            "href": f"./{name}",
            "title": f"{first.get('title', 'Quicklook')}, whole run ({len(placed)} tiles)",
            "proj:code": f"EPSG:{epsg}",
            "proj:shape": list(image.shape[1:]),
            "proj:transform": list(grid)[:6],
        }
        out[asset_key] = asset
        classes = first.get("classification:classes")
        if classes:
            legend = name.removesuffix(".png") + "_legend.svg"
            store.put_bytes(legend_svg(classes), legend)
            out[f"legend{asset_key.removeprefix('thumbnail')}"] = {
                "href": f"./{legend}",
                "type": SVG_MEDIA_TYPE,
                "title": f"Legend of {name}",
                "roles": ["metadata"],
            }
    return out
