"""PIMC training pairs: (regular-grid series of pixel p, multispectral image patch around p), streamed.

A pair holds what the two encoders need, and nothing that can be rebuilt cheaply: the blue, red and NIR series of
the pixel on the regular time grid (the recurrence plots are built from them by the trainer, right before the RP
encoder, like in the embedding job) and a ``bands x k x k`` patch of surface reflectance centred on the pixel,
from a composite (the per-pixel median over the regular grid, which interpolates between cloud-free
observations only) or from one date (the grid step nearest to it), built by :mod:`pimc_ray.kernels.patches` exactly as
the mapping job builds the patches of an image-patch encoder::

    window (h x w)   read_series, all ten bands, on the window grown by k // 2 pixels per side
                     (T, 10, (h + k - 1) (w + k - 1))  float32, NaN nodata
    series           (n, 3, T)      B02, B04, B08 of the n sampled pixels
    patch            (n, 10, k, k)  B02 B03 B04 B05 B06 B07 B08 B8A B11 B12 of the composite around them

Spatial spread (the PIMC paper samples along a Hilbert curve): the candidate windows of the training region are
ordered along a Hilbert curve over their centres (lon/lat), and each pass over them visits the curve in
bit-reversed (van der Corput) order from a random start, so any stretch of the stream covers the whole region
evenly. Inside a window the valid pixels are ordered along the window's own Hilbert curve, cut into ``n`` equal
runs, and one random pixel is drawn per run: a sample stratified in space. Pixels whose series or patch holds
nodata (NaN, or an index that is undefined such as NDVI of a black pixel) are never drawn.

Streaming: :meth:`PairStream.dataset` is a Ray Data pipeline of visits through :class:`PairReader` actors (the
stage pattern of :mod:`pimc_ray.parallel`): one visit (a window and a seed) in, up to ``pixels_per_window`` pairs
out, so the training set is read as it is consumed and never held in memory.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pyproj import Transformer

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.footprints import ItemIndex
from pimc_ray.data.series import INDEX_BAND_POSITIONS, SeriesSpec, crop_halo, read_series
from pimc_ray.data.tiles import OutputGrid, Window
from pimc_ray.errors import InvalidConfigError
from pimc_ray.kernels.indices import vegetation_indices
from pimc_ray.kernels.patches import check_composite, composite, patch_ok, patches_at
from pimc_ray.parallel import actor_stage, bound_memory

__all__ = [
    "draw_pairs",
    "hilbert_index",
    "hilbert_sort",
    "read_pairs",
    "spread_order",
    "stratified_pick",
    "training_tasks",
    "visit_plan",
    "PairReader",
    "PairSpec",
    "PairStream",
    "Task",
    "Visit",
    "WindowPixels",
    "window_pixels",
]

logger = logging.getLogger(__name__)

Task = tuple[OutputGrid, Window]


@dataclass(frozen=True)
class PairSpec:
    """How training pairs are drawn."""

    series: SeriesSpec
    """Dates, regular grid, mask and catalog; its ``bands`` are replaced by all ten bands for reading."""
    patch_size: int = 9
    """Side k of the image patch in 10 m pixels (odd: the pixel is its centre)."""
    composite: str = "median"
    """``"median"`` (per-pixel median over the regular grid) or an ISO date: the grid step nearest to it."""
    window_size: int = 128
    """Edge of a candidate window in pixels (one read serves up to ``pixels_per_window`` pairs)."""
    pixels_per_window: int = 1024
    """Pairs drawn per window visit (fewer where fewer pixels are valid)."""
    seed: int = 0
    """Seed of the visit order and of the pixel draws."""

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(
                f"patch_size must be odd and positive (the pixel is the centre), got {self.patch_size}"
            )
        if self.window_size < 1 or self.pixels_per_window < 1:
            raise ValueError(
                f"window_size and pixels_per_window must be >= 1, got {self.window_size}, {self.pixels_per_window}"
            )
        check_composite(self.composite)

    @property
    def read_spec(self) -> SeriesSpec:
        """The series spec that reads all ten bands."""
        return replace(self.series, bands=BANDS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": self.series.to_dict(),
            "patch_size": self.patch_size,
            "composite": self.composite,
            "window_size": self.window_size,
            "pixels_per_window": self.pixels_per_window,
            "seed": self.seed,
        }


# --- space-filling order ------------------------------------------------------------------------------------


def hilbert_index(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Position along the Hilbert curve of order ``order`` (a ``2**order`` square) of integer cells ``(x, y)``.

    The classic ``xy2d`` (Hilbert 1891; the iterative form of Warren, *Hacker's Delight*, 16-2), vectorised:
    cells that are consecutive on the curve share an edge, so runs of the curve are compact regions.

    Args:
        x: integer column(s) in ``[0, 2**order)``.
        y: integer row(s) in ``[0, 2**order)``.
        order: bits per coordinate (at most 31).

    Returns:
        int64 positions in ``[0, 4**order)``, shaped like the broadcast of ``x`` and ``y``.
    """
    if not 0 <= order <= 31:
        raise ValueError(f"order must be in [0, 31], got {order}")
    n = np.int64(1) << order
    x, y = np.broadcast_arrays(np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64))
    if x.size and (x.min() < 0 or y.min() < 0 or x.max() >= n or y.max() >= n):
        raise ValueError(f"cells must lie in [0, {int(n)}) for order {order}")
    x, y = x.copy(), y.copy()
    d = np.zeros(x.shape, dtype=np.int64)
    s = n // 2
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx.astype(np.int64)) ^ ry.astype(np.int64))
        # rotate the quadrant so the sub-curve has the canonical orientation
        flip = ~ry & rx
        x = np.where(flip, n - 1 - x, x)
        y = np.where(flip, n - 1 - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s //= 2
    return d


def hilbert_sort(x: np.ndarray, y: np.ndarray, *, order: int = 16) -> np.ndarray:
    """Permutation that orders points ``(x, y)`` (any real coordinates) along a Hilbert curve over their bbox."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0, dtype=np.int64)
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-12)
    cells = (1 << order) - 1
    cx = np.rint((x - x.min()) / span * cells).astype(np.int64)
    cy = np.rint((y - y.min()) / span * cells).astype(np.int64)
    return np.argsort(hilbert_index(cx, cy, order), kind="stable")


def spread_order(n: int) -> np.ndarray:
    """The indices ``0..n-1`` in bit-reversed (van der Corput) order: every prefix is spread evenly over them."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    bits = max(1, int(np.ceil(np.log2(n))))
    k = np.arange(1 << bits, dtype=np.int64)
    rev = np.zeros_like(k)
    for b in range(bits):
        rev |= ((k >> b) & 1) << (bits - 1 - b)
    return rev[rev < n]


def stratified_pick(count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n, count)`` sorted positions in ``[0, count)``: one uniform draw in each of ``n`` equal runs."""
    if count <= n:
        return np.arange(count, dtype=np.int64)
    edges = np.linspace(0, count, n + 1)
    lo, hi = np.ceil(edges[:-1]).astype(np.int64), np.ceil(edges[1:]).astype(np.int64)
    return lo + (rng.random(n) * (hi - lo)).astype(np.int64)


# --- candidate windows and the visit plan -------------------------------------------------------------------


def training_tasks(grids: Sequence[OutputGrid], window_size: int) -> list[Task]:
    """Every window of ``grids`` with a pixel inside its footprint, ordered along a Hilbert curve.

    The curve runs over the windows' centres in lon/lat (longitudes scaled by the cosine of the latitude), so
    windows of several UTM zones share one ordering.
    """
    tasks = [(g, w) for g in grids for w in g.windows(window_size) if g.inside(w).any()]
    if not tasks:
        return []
    lon, lat = np.empty(len(tasks)), np.empty(len(tasks))
    for epsg in {g.epsg for g, _ in tasks}:
        to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
        for i, (g, w) in enumerate(tasks):
            if g.epsg == epsg:
                xmin, ymin, xmax, ymax = w.bounds
                lon[i], lat[i] = to_lonlat.transform((xmin + xmax) / 2, (ymin + ymax) / 2)
    # a local equirectangular projection, so the curve runs over (nearly) metric distances
    return [tasks[i] for i in hilbert_sort(lon * np.cos(np.radians(np.mean(lat))), lat)]


@dataclass(frozen=True)
class Visit:
    """One read of one window in the pair stream."""

    index: int
    """Position in the stream (0 = first visit of the run, resumed runs continue the count)."""
    task: int
    """Index of the window in the Hilbert-ordered task list."""
    seed: int
    """Seed of this visit's pixel draw."""


def visit_plan(n_tasks: int, *, start: int, count: int, seed: int = 0) -> list[Visit]:
    """Visits ``start .. start + count - 1`` of the endless stream over ``n_tasks`` Hilbert-ordered windows.

    Pass ``e`` visits every window once, in :func:`spread_order` along the curve, rotated by a random offset
    drawn from ``(seed, e)``; visit ``k``'s pixel draw is seeded by ``(seed, k)``, so a resumed run that starts
    at ``start`` sees the same visits an uninterrupted run would have seen there.
    """
    if n_tasks <= 0:
        return []
    base = spread_order(n_tasks)
    visits = []
    for k in range(start, start + count):
        epoch, j = divmod(k, n_tasks)
        offset = int(np.random.default_rng([seed, epoch, 1]).integers(n_tasks))
        visits.append(
            Visit(
                k, int(base[(j + offset) % n_tasks]), int(np.random.default_rng([seed, k, 2]).integers(2**31))
            )
        )
    return visits


# --- reading pairs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowPixels:
    """What the pairs of one window are drawn from: read once, drawn from at every visit."""

    image: np.ndarray
    """``(10, H, W)`` composite of the window grown by the patch halo (NaN nodata)."""
    series: np.ndarray
    """``(P, 3, T)`` blue, red, NIR series of the window's own pixels."""
    candidates: np.ndarray
    """Pixels whose series, indices and whole patch are free of nodata, in Hilbert order along the window."""

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes + self.series.nbytes + self.candidates.nbytes)


def window_pixels(
    items: Sequence[Mapping[str, Any]], spec: PairSpec, grid: OutputGrid, window: Window
) -> WindowPixels:
    """Read one window (all ten bands, grown by the patch halo) and find the pixels pairs may be drawn at."""
    k, m = spec.patch_size, spec.patch_size // 2
    big = window.grown(m, grid.resolution)
    values = read_series(items, spec.read_spec, grid, big).values  # (T, 10, P')
    h, w = window.height, window.width
    image = composite(values, spec.composite, spec.series.grid_dates())
    image = image.reshape(len(BANDS), big.height, big.width)  # (10, H, W)
    series = crop_halo(values[:, INDEX_BAND_POSITIONS], h, w, m).transpose(
        2, 1, 0
    )  # (P, 3, T) blue, red, nir

    whole = patch_ok(image, k)  # (h, w): the pixel's whole patch is free of nodata
    ok = (whole & grid.inside(window)).reshape(-1) & np.isfinite(series).all(axis=(1, 2))
    candidates = np.flatnonzero(ok)
    if len(candidates):
        idx = vegetation_indices(series[candidates, 0], series[candidates, 1], series[candidates, 2], axis=1)
        candidates = candidates[np.isfinite(idx).all(axis=(1, 2))]  # e.g. NDVI of a black pixel is 0 / 0

    rows, cols = np.divmod(candidates, w)
    order = int(np.ceil(np.log2(max(h, w, 2))))
    candidates = candidates[np.argsort(hilbert_index(cols, rows, order), kind="stable")]
    return WindowPixels(np.ascontiguousarray(image), np.ascontiguousarray(series), candidates)


def draw_pairs(
    pixels: WindowPixels, spec: PairSpec, grid: OutputGrid, window: Window, *, seed: int
) -> dict[str, np.ndarray]:
    """Up to ``spec.pixels_per_window`` pairs of a window, one per run of its Hilbert curve (seeded).

    Returns:
        ``series`` (n, 3, T) float32 blue/red/NIR, ``patch`` (n, 10, k, k) float32, and the pixel's ``x``,
        ``y`` (n,) float64 centre coordinates and ``epsg`` (n,) int32, in Hilbert order.
    """
    candidates = pixels.candidates
    pick = candidates[stratified_pick(len(candidates), spec.pixels_per_window, np.random.default_rng(seed))]
    rows, cols = np.divmod(pick, window.width)
    patches = patches_at(pixels.image, rows, cols, spec.patch_size)  # (n, 10, k, k)
    xmin, _, _, ymax = window.bounds
    return {
        "series": np.ascontiguousarray(pixels.series[pick], dtype=np.float32),
        "patch": patches,
        "x": xmin + (cols + 0.5) * grid.resolution,
        "y": ymax - (rows + 0.5) * grid.resolution,
        "epsg": np.full(len(pick), grid.epsg, dtype=np.int32),
    }


def read_pairs(
    items: Sequence[Mapping[str, Any]], spec: PairSpec, grid: OutputGrid, window: Window, *, seed: int
) -> dict[str, np.ndarray]:
    """Up to ``spec.pixels_per_window`` valid pairs of one window, drawn along its Hilbert curve
    (:func:`window_pixels`, then :func:`draw_pairs`)."""
    return draw_pairs(window_pixels(items, spec, grid, window), spec, grid, window, seed=seed)


class PairReader:
    """Ray Data UDF: a batch of visits (``task``, ``seed``, ``visit`` columns) -> the pairs of their windows.

    Holds the items and the task list once per actor, as the Ray Data batch-inference guide recommends, and the
    pixels of the windows it read last (:class:`WindowPixels`, up to ``cache_mb``): a window is read once and
    drawn from at every later visit while it stays in the cache. Reading is what a pair costs (about 9 in 10 of
    a visit's time, ``benchmarks/bench_pairs.py``), and a region of fewer windows than the run's visits visits
    each window many times.
    """

    def __init__(
        self, items: Sequence[Mapping[str, Any]], tasks: Sequence[Task], spec: PairSpec, cache_mb: int = 1024
    ) -> None:
        bound_memory()  # bounded block cache and heap, as in the mapping workers
        self.index = ItemIndex(items)
        self.tasks = list(tasks)
        self.spec = spec
        self.cache_bytes = cache_mb * 1024 * 1024
        self.cache: OrderedDict[int, WindowPixels] = OrderedDict()
        self.cached_bytes = 0

    def pixels(self, task: int) -> WindowPixels | None:
        """The pixels of window ``task``: cached, or read (None where no item covers the window)."""
        if task in self.cache:
            self.cache.move_to_end(task)
            return self.cache[task]
        grid, window = self.tasks[task]
        grown = window.grown(self.spec.patch_size // 2, grid.resolution)
        items = self.index.over(grid.epsg, grown.bounds, grid.resolution)
        if not items:
            logger.warning(
                "no item covers window %s of EPSG:%d; it yields no pairs", window.bounds, grid.epsg
            )
            return None
        pixels = window_pixels(items, self.spec, grid, window)
        self.cache[task] = pixels
        self.cached_bytes += pixels.nbytes
        while self.cache and self.cached_bytes > self.cache_bytes:
            self.cached_bytes -= self.cache.popitem(last=False)[1].nbytes
        return pixels

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for task, seed, visit in zip(batch["task"], batch["seed"], batch["visit"], strict=True):
            pixels = self.pixels(int(task))
            if pixels is None:
                continue
            grid, window = self.tasks[int(task)]
            pairs = draw_pairs(pixels, self.spec, grid, window, seed=int(seed))
            pairs["visit"] = np.full(len(pairs["x"]), int(visit), dtype=np.int64)
            parts.append(pairs)
        if not parts:
            return _empty_pairs(self.spec)
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def _empty_pairs(spec: PairSpec) -> dict[str, np.ndarray]:
    k, steps = spec.patch_size, spec.series.timegrid.steps
    return {
        "series": np.zeros((0, 3, steps), np.float32),
        "patch": np.zeros((0, len(BANDS), k, k), np.float32),
        "x": np.zeros(0),
        "y": np.zeros(0),
        "epsg": np.zeros(0, np.int32),
        "visit": np.zeros(0, np.int64),
    }


@dataclass(frozen=True)
class PairStream:
    """Where pairs come from: the items, the Hilbert-ordered windows, and how pairs are drawn."""

    items: list[dict[str, Any]]
    tasks: list[Task]
    spec: PairSpec
    readers: int = 1
    """Ray Data actors reading windows."""
    reader_cpus: float = 1.0
    """CPUs each reader reserves."""
    cache_mb: int = 1024
    """Memory each reader keeps the windows it read in, to draw from them again at later visits."""

    def __post_init__(self) -> None:
        if self.cache_mb < 0:
            raise InvalidConfigError(f"the readers' cache_mb must not be negative, got {self.cache_mb}")

    def dataset(self, *, start: int, count: int) -> Any:
        """The Ray Data pipeline of visits ``start .. start + count - 1`` (see :func:`visit_plan`)."""
        import ray.data

        plan = visit_plan(len(self.tasks), start=start, count=count, seed=self.spec.seed)
        rows = [{"visit": v.index, "task": v.task, "seed": v.seed} for v in plan]
        return actor_stage(
            ray.data.from_items(rows, override_num_blocks=max(1, len(rows))),
            PairReader,
            kwargs={"items": self.items, "tasks": self.tasks, "spec": self.spec, "cache_mb": self.cache_mb},
            actors=self.readers,
            cpus=self.reader_cpus,
        )
