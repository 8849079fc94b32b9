"""Plans: what a run spec will cost before it runs, and the refusal of a run over its budget.

:func:`plan_run` turns a :class:`~pimc_ray.runs.spec.RunSpec` into a :class:`Plan`:

1. the region, clipped to Sentinel-2's coverage (:data:`SENTINEL2_COVERAGE`), cut into the tiles of the fixed
   UTM tile grid (:meth:`~pimc_ray.data.tiles.TileGrid.zone_tiles`: the same tiles, ids and order as
   :meth:`~pimc_ray.data.tiles.TileGrid.tiles`, vectorised; Europe's 99,000 tiles in about a second), with
   Sentinel-2's zone exceptions (:data:`~pimc_ray.data.tiles.ZONE_EXCEPTIONS`: 32V, 31X-37X);
2. its area (geodesic km²) and pixels (the region's area in each tile over the pixel's, in the zone's CRS);
3. the items the run will read, asked of the STAC API: the total from one request where the API reports
   ``numberMatched``, else estimated from a systematic sample of tiles (each searched on its own: the run's
   items touching it); and the acquisitions a pixel sees (distinct dates per sampled tile, weighted by its pixels)
   or, with ``count_items=False``, assumed from the constellation's 5-day revisit (:data:`REVISIT_DAYS`);
4. the bytes to read, as :func:`pimc_ray.mapping.maps.dry_run` counts them: pixels x acquisitions x (bands x 2 B
   of uint16 + 0.25 B of SCL at 20 m);
5. CPU- and GPU-hours from the measured throughputs (:class:`Throughput`, constants citing docs/benchmarks.md)
   and the spec's resources, and the cost at the prices given (:class:`Prices`, per hour, in any currency;
   the budget's ``max_cost_usd`` is compared with it as given, so give USD prices to check it).

:meth:`Plan.check_budget` refuses a plan over ``spec.budget`` with one line naming the figure and the fix;
:func:`write_plan` writes ``plan.json`` and ``plan_tiles.geojson`` (one feature per tile) to a folder or URI.

Estimating items from a sample: item *i* found in sampled tile *t* counts ``1 / k_i``, *k_i* being the number of
planned tiles the item touches, so the sum over every tile would be exactly the number of items, and the sample's
sum times ``tiles / sampled`` estimates it without bias (Horvitz-Thompson). With every tile sampled it is exact.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import shapely
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from pimc_ray.data.aoi import AOI
from pimc_ray.data.stac import DateRange, count_items, search_items
from pimc_ray.data.tiles import TileGrid, ZoneTiles
from pimc_ray.errors import CatalogUnreachableError, InvalidAOIError, InvalidConfigError, NoItemsFoundError
from pimc_ray.progress import Meter, Progress
from pimc_ray.runs.regions import area_km2
from pimc_ray.runs.spec import Budget, RunSpec
from pimc_ray.storage import UriLike, join_uri, normalize_location, write_bytes

__all__ = [
    "CPU_PIXELS_PER_SECOND",
    "DEFAULT_SAMPLE_TILES",
    "GPU_PIXELS_PER_SECOND",
    "PLAN_FILE",
    "READ_PIXELS_PER_CPU_SECOND",
    "REVISIT_DAYS",
    "SENTINEL2_COVERAGE",
    "SENTINEL2_START",
    "TILES_FILE",
    "ItemEstimate",
    "Plan",
    "PlannedTiles",
    "Prices",
    "Throughput",
    "TileSample",
    "plan_run",
    "write_plan",
]

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
TILES_FILE = "plan_tiles.geojson"

#: Where Sentinel-2 images land systematically: between 56 S and 84 N (lon/lat box). Parts of a region outside it
#: are left out of the plan; a region wholly outside it is refused.
SENTINEL2_COVERAGE: tuple[float, float, float, float] = (-180.0, -56.0, 180.0, 84.0)
#: Sentinel-2A's launch: no acquisitions before it.
SENTINEL2_START = dt.date(2015, 6, 23)
#: Days between acquisitions of a place by the two-satellite constellation at the equator (more often at high
#: latitudes, where orbits overlap): ~73 a year, the ~70 docs/design.md's cost arithmetic uses.
REVISIT_DAYS = 5.0
#: Tiles searched to estimate the items and acquisitions when the API does not count them.
DEFAULT_SAMPLE_TILES = 16
#: Pixel size of the tile grid in metres.
RESOLUTION = 10.0
#: Bands read per acquisition by the default (RP) encoder: blue, red, NIR (and SCL, counted apart).
DEFAULT_BANDS = 3

#: Pixels per second one CPU maps end to end (read, regular grid, plots, encoder, COGs, publish) with the default
#: RP encoder (8.5 MFLOP/pixel, random init): 261,511 pixels in 99.4 s on two tile workers of 0.75 + 0.25 CPU
#: (docs/benchmarks.md, "Driver and tile workers", the "default encoder" row; 2-core AMD EPYC, 2026-11-29).
CPU_PIXELS_PER_SECOND = 261_511 / 99.4 / 2
#: Pixels per second one GPU embeds regular series (indices, plots, RP encoder, host-to-device copy included):
#: 494,763 on an NVIDIA H200 (docs/benchmarks.md, "GPU checks": ``bench_embed``, 65,536 pixels, batch 8,192).
GPU_PIXELS_PER_SECOND = 494_763.0
#: Pixels per second one CPU reads (STAC items, stackstac, harmonise, SCL mask, regular 36-step grid): the read
#: stage of docs/benchmarks.md, "End to end: the mapping pipeline by stage" (12,059 px/s, three bands, local
#: archive). It bounds a GPU worker that reserves too few CPUs to read for its GPU.
READ_PIXELS_PER_CPU_SECOND = 12_059.0


@dataclass(frozen=True)
class Throughput:
    """The measured rates a plan turns pixels into hours with (defaults: the module's constants)."""

    cpu_pixels_per_second: float = CPU_PIXELS_PER_SECOND
    """End-to-end pixels per second of one CPU on a CPU-only worker."""
    gpu_pixels_per_second: float = GPU_PIXELS_PER_SECOND
    """Pixels per second of one GPU (plots and encoder)."""
    read_pixels_per_cpu_second: float = READ_PIXELS_PER_CPU_SECOND
    """Pixels per second one CPU reads for a GPU worker."""

    def __post_init__(self) -> None:
        for name in ("cpu_pixels_per_second", "gpu_pixels_per_second", "read_pixels_per_cpu_second"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidConfigError(
                    f"throughput {name} must be a positive number of pixels/s, got {value!r}"
                )


@dataclass(frozen=True)
class Prices:
    """What an hour costs (in any one currency; None: no price, so no cost)."""

    cpu_hour: float | None = None
    """Price of one CPU-hour (``--cpu-hour-price``)."""
    gpu_hour: float | None = None
    """Price of one GPU-hour (``--gpu-hour-price``)."""

    def __post_init__(self) -> None:
        for option, value in (("--cpu-hour-price", self.cpu_hour), ("--gpu-hour-price", self.gpu_hour)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise InvalidConfigError(f"{option} must be a price of zero or more, got {value!r}")


@dataclass(frozen=True, eq=False)
class PlannedTiles:
    """A plan's tiles as columns, in the order of :meth:`~pimc_ray.data.tiles.TileGrid.tiles`."""

    tile_ids: tuple[str, ...]
    """Stable ids, ``<zone><N|S>_<column>_<row>``."""
    epsg: np.ndarray
    """(n,) int64 EPSG code of each tile's UTM zone."""
    cols: np.ndarray
    """(n,) int64 tile columns."""
    rows: np.ndarray
    """(n,) int64 tile rows."""
    bounds: np.ndarray
    """(n, 4) float64 ``xmin, ymin, xmax, ymax`` in metres of the tile's zone."""
    corners: np.ndarray
    """(n, 4, 2) float64 lon/lat of the south-west, south-east, north-east and north-west corners."""
    pixels: np.ndarray
    """(n,) int64 pixels of the region in each tile."""

    def __len__(self) -> int:
        return len(self.tile_ids)

    def zones(self) -> dict[int, int]:
        """EPSG code -> tiles in that zone."""
        codes, counts = np.unique(self.epsg, return_counts=True)
        return {int(c): int(n) for c, n in zip(codes, counts, strict=True)}

    def footprints(self) -> np.ndarray:
        """(n,) shapely polygons of the tiles in lon/lat (their corners joined by straight lines)."""
        return shapely.polygons(self.corners)

    def to_geojson(self, properties: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        """A FeatureCollection of the tiles (lon/lat, 6 decimals); ``properties`` adds to a tile's, by index."""
        ring = np.round(np.concatenate([self.corners, self.corners[:, :1]], axis=1), 6).tolist()
        features = []
        for i, tile_id in enumerate(self.tile_ids):
            props: dict[str, Any] = {
                "tile_id": tile_id,
                "epsg": int(self.epsg[i]),
                "col": int(self.cols[i]),
                "row": int(self.rows[i]),
                "pixels": int(self.pixels[i]),
                "bounds": [float(v) for v in self.bounds[i]],
            }
            props.update((properties or {}).get(i, {}))
            geometry = {"type": "Polygon", "coordinates": [ring[i]]}
            features.append({"type": "Feature", "id": tile_id, "geometry": geometry, "properties": props})
        return {"type": "FeatureCollection", "features": features}

    @classmethod
    def from_zones(cls, grid: TileGrid, zones: Sequence[ZoneTiles]) -> PlannedTiles:
        """The columns of :meth:`~pimc_ray.data.tiles.TileGrid.zone_tiles`' zones, corners projected to lon/lat."""
        from pyproj import Transformer

        w, r = grid.width_m, grid.resolution
        ids: list[str] = []
        epsg, corners, pixels, cols, rows = [], [], [], [], []
        for zone in zones:
            ids += [
                grid.tile_id(zone.epsg, int(c), int(rw)) for c, rw in zip(zone.cols, zone.rows, strict=True)
            ]
            epsg.append(np.full(len(zone), zone.epsg, np.int64))
            cols.append(zone.cols)
            rows.append(zone.rows)
            x0, y0 = zone.cols * w, zone.rows * w
            xs = np.stack([x0, x0 + w, x0 + w, x0], axis=1)  # SW, SE, NE, NW
            ys = np.stack([y0, y0, y0 + w, y0 + w], axis=1)
            to_lonlat = Transformer.from_crs(zone.epsg, 4326, always_xy=True)
            lon, lat = to_lonlat.transform(xs, ys)
            corners.append(np.stack([lon, lat], axis=-1))
            pixels.append(np.rint(zone.inside_m2 / (r * r)).astype(np.int64))
        if not zones:
            empty = np.zeros(0, np.int64)
            return cls((), empty, empty, empty, np.zeros((0, 4)), np.zeros((0, 4, 2)), empty)
        c, rw = np.concatenate(cols), np.concatenate(rows)
        bounds = np.stack([c * w, rw * w, (c + 1) * w, (rw + 1) * w], axis=1).astype(np.float64)
        return cls(
            tuple(ids), np.concatenate(epsg), c, rw, bounds, np.concatenate(corners), np.concatenate(pixels)
        )


@dataclass(frozen=True)
class TileSample:
    """What the STAC API holds for one sampled tile."""

    tile_id: str
    items: int
    """Items touching the tile's part of the region in the period."""
    acquisitions: int
    """Distinct acquisition dates among them: what each of its pixels is read for."""
    pixels: int
    """The tile's pixels in the region."""


@dataclass(frozen=True)
class ItemEstimate:
    """The items a run will read, and the acquisitions a pixel sees."""

    count: int
    """Items of the collection touching the region in the period."""
    method: Literal["counted", "sampled"]
    """``counted``: the API's ``numberMatched`` for the region; ``sampled``: estimated from :attr:`sample`."""
    sample: tuple[TileSample, ...]
    """The tiles searched (systematically spread over the plan's tiles)."""
    acquisitions: float
    """Acquisitions per pixel: the sampled tiles' distinct dates, weighted by their pixels."""


@dataclass(frozen=True, eq=False)
class Plan:
    """What a run spec covers and costs (:func:`plan_run`)."""

    name: str | None
    """The spec's name."""
    region: str
    """The spec's region, as :meth:`~pimc_ray.runs.spec.Region.label` says it."""
    dates: DateRange
    """The period's dates."""
    catalog: dict[str, Any]
    """The spec's catalog section (STAC URL, collection, cloud cap)."""
    tile_size: int
    resolution: float
    tiles: PlannedTiles
    region_km2: float
    """Geodesic area of the region within Sentinel-2's coverage."""
    outside_km2: float
    """Geodesic area of the region outside Sentinel-2's coverage, left out of the plan."""
    pixels: int
    """Pixels of the region (the region's area in each tile over a pixel's, summed)."""
    items: ItemEstimate | None
    """None when the items were not counted (``count_items=False``)."""
    acquisitions: float
    """Acquisitions per pixel the bytes assume."""
    acquisitions_source: str
    """Where :attr:`acquisitions` comes from."""
    bands: int
    """uint16 bands read per acquisition (besides SCL)."""
    bytes_to_read: int
    workers: int
    cpus_per_worker: float
    """CPUs each worker reserves, to compute and to read."""
    gpus_per_worker: float
    throughput: Throughput
    bound: Literal["cpu", "gpu", "read"]
    """What limits a worker: its CPUs (a CPU run), its GPU, or the CPUs that read for its GPU."""
    pixels_per_second: float
    """The whole run's rate: workers x a worker's."""
    wall_hours: float
    cpu_hours: float
    """CPU-hours reserved: wall time x workers x CPUs per worker."""
    gpu_hours: float
    """GPU-hours reserved: wall time x workers x GPUs per worker."""
    prices: Prices
    cost: float | None
    """``cpu_hours x cpu price + gpu_hours x gpu price``; None when an hour that is not zero has no price."""
    budget: Budget = field(default_factory=Budget)
    """The spec's caps, checked by :meth:`check_budget`."""
    planned_on: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())

    @property
    def tile_km2(self) -> float:
        """Area of one tile."""
        return (self.tile_size * self.resolution / 1000) ** 2

    @property
    def tiles_km2(self) -> float:
        """Area of all the plan's tiles (in their zones' CRS)."""
        return len(self.tiles) * self.tile_km2

    # --- the budget -----------------------------------------------------------------------------------------

    def over_budget(self, budget: Budget | None = None) -> list[str]:
        """What exceeds ``budget`` (default: the spec's), each as a clause naming the figure and the fix."""
        budget = self.budget if budget is None else budget
        smaller = "plan a smaller region or a shorter period"
        more_read = (
            "; reading bounds its GPUs: give each worker more CPUs to read (resources.read_cpus)"
            if self.bound == "read"
            else ""
        )
        problems = []
        if budget.max_gpu_hours is not None and self.gpu_hours > budget.max_gpu_hours:
            problems.append(
                f"the plan needs {self.gpu_hours:,.1f} GPU-hours, over budget.max_gpu_hours "
                f"{budget.max_gpu_hours:g}; raise the cap or {smaller}{more_read}"
            )
        if budget.max_cpu_hours is not None and self.cpu_hours > budget.max_cpu_hours:
            problems.append(
                f"the plan needs {self.cpu_hours:,.1f} CPU-hours, over budget.max_cpu_hours "
                f"{budget.max_cpu_hours:g}; raise the cap or {smaller}"
            )
        if budget.max_cost_usd is not None:
            if self.cost is None:
                missing = [
                    (kind, option)
                    for kind, option, hours, price in (
                        ("CPU", "--cpu-hour-price", self.cpu_hours, self.prices.cpu_hour),
                        ("GPU", "--gpu-hour-price", self.gpu_hours, self.prices.gpu_hour),
                    )
                    if hours > 0 and price is None
                ]
                problems.append(
                    f"budget.max_cost_usd is {budget.max_cost_usd:g} but the plan has no price for its "
                    f"{' and '.join(kind for kind, _ in missing)}-hours; pass "
                    f"{' and '.join(option for _, option in missing)} (USD per hour) to check it"
                )
            elif self.cost > budget.max_cost_usd:
                problems.append(
                    f"the plan costs {self.cost:,.2f} at the prices given, over budget.max_cost_usd "
                    f"{budget.max_cost_usd:g}; raise the cap or {smaller}"
                )
        return problems

    def check_budget(self, budget: Budget | None = None) -> None:
        """Refuse a plan over ``budget`` (default: the spec's).

        Raises:
            InvalidConfigError: one line naming each figure over its cap (or a cost cap without prices) and the fix.
        """
        problems = self.over_budget(budget)
        if problems:
            raise InvalidConfigError("over budget: " + "; and ".join(problems))

    # --- reporting ------------------------------------------------------------------------------------------

    def to_dict(self, *, tiles_file: str | None = TILES_FILE) -> dict[str, Any]:
        """The plan as JSON values (``plan.json``), tiles summarised per zone; ``tiles_file`` names their GeoJSON."""
        items = self.items
        return {
            "name": self.name,
            "region": self.region,
            "period": {"start": str(self.dates.start), "end": str(self.dates.end), "days": self.dates.days},
            "catalog": self.catalog,
            "planned_on": str(self.planned_on),
            "tiles": {
                "count": len(self.tiles),
                "tile_size": self.tile_size,
                "resolution_m": self.resolution,
                "tile_km2": self.tile_km2,
                "zones": {f"EPSG:{k}": v for k, v in self.tiles.zones().items()},
                "geojson": tiles_file,
            },
            "area_km2": {
                "region": round(self.region_km2, 1),
                "tiles": round(self.tiles_km2, 1),
                "outside_coverage": round(self.outside_km2, 1),
            },
            "pixels": self.pixels,
            "items": None
            if items is None
            else {
                "count": items.count,
                "method": items.method,
                "sampled_tiles": [vars(s) for s in items.sample],
            },
            "acquisitions_per_pixel": round(self.acquisitions, 2),
            "acquisitions_source": self.acquisitions_source,
            "bands": self.bands,
            "bytes_to_read": self.bytes_to_read,
            "resources": {
                "workers": self.workers,
                "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker,
            },
            "throughput": vars(self.throughput),
            "bound": self.bound,
            "pixels_per_second": round(self.pixels_per_second, 1),
            "hours": {
                "wall": round(self.wall_hours, 3),
                "cpu": round(self.cpu_hours, 3),
                "gpu": round(self.gpu_hours, 3),
            },
            "prices": vars(self.prices),
            "cost": None if self.cost is None else round(self.cost, 2),
            "budget": self.budget.model_dump(),
            "over_budget": self.over_budget(),
        }

    def summary(self) -> str:
        """A few lines for a terminal: tiles, area, pixels, items, bytes, hours, cost and budget."""
        zones = self.tiles.zones()
        items = self.items
        if items is None:
            items_line = "not counted (--no-items)"
        elif items.method == "counted":
            items_line = f"{items.count:,} (counted by the API; {len(items.sample)} tiles sampled for dates)"
        else:
            items_line = f"~{items.count:,} (estimated from {len(items.sample)} sampled tiles)"
        gpu = f", {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        if self.cost is not None:
            cost = f"{self.cost:,.2f} at {self.prices.cpu_hour or 0:g}/CPU-hour, {self.prices.gpu_hour or 0:g}/GPU-hour"
        else:
            cost = "no prices given (--cpu-hour-price, --gpu-hour-price)"
        figures = (
            (self.budget.max_gpu_hours, self.gpu_hours, "GPU-hours"),
            (self.budget.max_cpu_hours, self.cpu_hours, "CPU-hours"),
            (self.budget.max_cost_usd, self.cost, "USD"),
        )
        caps = [
            f"{cap:g} {unit} ({'no prices' if figure is None else 'over' if figure > cap else 'within'})"
            for cap, figure, unit in figures
            if cap is not None
        ]
        budget = ", ".join(caps) or "no cap"
        outside = (
            f"; {self.outside_km2:,.0f} km² outside Sentinel-2's coverage left out"
            if self.outside_km2
            else ""
        )
        lines = [
            f"plan of {self.name or '(unnamed)'}: {self.region}, {self.dates.start} to {self.dates.end}",
            f"  tiles         {len(self.tiles):,} of {self.tile_size} px ({self.tile_size * self.resolution / 1000:g} "
            f"km) in {len(zones)} UTM zone{'s' if len(zones) != 1 else ''}",
            f"  area          {self.region_km2:,.0f} km² region, {self.tiles_km2:,.0f} km² of tiles{outside}",
            f"  pixels        {self.pixels:,}",
            f"  items         {items_line}",
            f"  acquisitions  {self.acquisitions:.1f} per pixel ({self.acquisitions_source})",
            f"  reading       {_bytes(self.bytes_to_read)} ({self.bands} bands + SCL)",
            f"  workers       {self.workers} x ({self.cpus_per_worker:g} CPU{gpu}): {self.pixels_per_second:,.0f} "
            f"px/s, bound by {self.bound}",
            f"  hours         {_hours_text(self.wall_hours)} wall, {_hours_text(self.cpu_hours)} CPU-hours, "
            f"{_hours_text(self.gpu_hours)} GPU-hours",
            f"  cost          {cost}",
            f"  budget        {budget}",
        ]
        return "\n".join(lines)


def _bytes(n: float) -> str:
    """``44.97 TB``, ``2.31 GB``, ``12.0 MB``."""
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} B"


def _hours_text(hours: float) -> str:
    """``2,264.1``, or three significant digits below 10 (``0.0483``)."""
    return f"{hours:,.1f}" if hours >= 10 or hours == 0 else f"{hours:.3g}"


# --- planning -----------------------------------------------------------------------------------------------


def _check_period(dates: DateRange, today: dt.date) -> None:
    if dates.end < SENTINEL2_START:
        raise NoItemsFoundError(
            f"spec.period: {dates.start} to {dates.end} ends before Sentinel-2's first acquisitions "
            f"({SENTINEL2_START}), so it has no items; choose a later period"
        )
    if dates.start > today:
        raise NoItemsFoundError(
            f"spec.period: {dates.start} to {dates.end} starts after today ({today}), so it has no items yet; "
            "choose a period that has begun"
        )


def _covered(spec: RunSpec) -> tuple[AOI, float]:
    """The region within Sentinel-2's coverage, and the km² left out."""
    region = spec.aoi()
    covered = region.geometry.intersection(shapely.box(*SENTINEL2_COVERAGE))
    polygons = shapely.get_parts(covered)
    polygonal = [p for p in polygons if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
    if not polygonal:
        minx, miny, maxx, maxy = region.bounds
        raise InvalidAOIError(
            f"spec.region: {spec.region.label()} (lat {miny:.1f}..{maxy:.1f}) lies outside Sentinel-2's coverage "
            f"(latitudes {-SENTINEL2_COVERAGE[1]:g} S to {SENTINEL2_COVERAGE[3]:g} N); choose a region between them"
        )
    inside = shapely.union_all(polygonal)
    outside = region.geometry.difference(inside)
    outside_km2 = area_km2(outside) if not outside.is_empty and outside.area > 0 else 0.0
    return AOI(inside), outside_km2


def _hours(
    spec: RunSpec, throughput: Throughput
) -> tuple[int, float, float, Literal["cpu", "gpu", "read"], float]:
    """``(workers, cpus per worker, gpus per worker, bound, run pixels/s)`` of the spec's resources."""
    res = spec.resources
    workers = max(1, res.workers)
    cpus = (
        res.cpus_per_worker + res.read_cpus if res.workers else 1.0
    )  # workers=0: all in the driver's process
    gpus = res.gpus_per_worker
    if cpus <= 0:
        raise InvalidConfigError(
            "spec.resources: each worker reserves no CPU (cpus_per_worker + read_cpus = 0), so the plan cannot "
            "say how fast it reads; reserve some (resources.read_cpus)"
        )
    bound: Literal["cpu", "gpu", "read"]
    if gpus > 0:
        encode, read = gpus * throughput.gpu_pixels_per_second, cpus * throughput.read_pixels_per_cpu_second
        rate, bound = (encode, "gpu") if encode <= read else (read, "read")
    else:
        rate, bound = cpus * throughput.cpu_pixels_per_second, "cpu"
    return workers, cpus, gpus, bound, workers * rate


class _TileAreas:
    """Each planned tile's part of the region in lon/lat (whole tiles: the tile), computed when first asked."""

    def __init__(self, tiles: PlannedTiles, region: BaseGeometry, full: int) -> None:
        self.footprints = tiles.footprints()
        self.whole = tiles.pixels >= full
        self.region = region
        shapely.prepare(region)
        self.cache: dict[int, BaseGeometry] = {}

    def __call__(self, index: int) -> BaseGeometry:
        if self.whole[index]:
            return self.footprints[index]
        if index not in self.cache:
            part = self.footprints[index].intersection(self.region)
            self.cache[index] = part if part.area > 0 else self.footprints[index]
        return self.cache[index]


def _sample_indices(n_tiles: int, n_sample: int) -> np.ndarray:
    """``n_sample`` tile indices spread evenly over the plan's order (zone by zone, north to south)."""
    if n_sample >= n_tiles:
        return np.arange(n_tiles)
    return np.floor((np.arange(n_sample) + 0.5) * n_tiles / n_sample).astype(np.int64)


def _estimate_items(
    spec: RunSpec,
    region: AOI,
    tiles: PlannedTiles,
    dates: DateRange,
    *,
    sample_tiles: int,
    progress: Progress,
) -> ItemEstimate:
    cat = spec.catalog
    query: dict[str, Any] = {
        "stac_url": cat.stac_url,
        "collection": cat.collection,
        "max_cloud_cover": cat.max_cloud_cover,
    }
    no_api = "; or plan without items: --no-items"
    try:
        counted = count_items(region, dates, **query)
    except CatalogUnreachableError as err:
        raise CatalogUnreachableError(f"{err}{no_api}") from err
    areas = _TileAreas(tiles, region.geometry, spec.tile_size**2)
    tree = shapely.STRtree(areas.footprints) if counted is None else None
    chosen = _sample_indices(len(tiles), sample_tiles)
    meter = Meter(len(chosen))
    samples, share = [], 0.0
    for done, index in enumerate(chosen, 1):
        try:
            found = search_items(areas(int(index)), dates, **query)
        except NoItemsFoundError:
            found = []
        except CatalogUnreachableError as err:
            raise CatalogUnreachableError(f"{err}{no_api}") from err
        if tree is not None:
            for item in found:  # item i counts 1 / (planned tiles it touches): the Horvitz-Thompson weight
                geometry = shapely.geometry.shape(item["geometry"])
                touched = [  # the tree tests the tiles' squares; a partial tile's part of the region decides
                    t
                    for t in map(int, tree.query(geometry, predicate="intersects"))
                    if areas.whole[t] or geometry.intersects(areas(t))
                ]
                share += 1.0 / max(1, len(touched))
        days = {str(i["properties"].get("datetime") or "")[:10] for i in found}
        sample = TileSample(tiles.tile_ids[index], len(found), len(days), int(tiles.pixels[index]))
        samples.append(sample)
        progress(
            f"items: tile {done}/{len(chosen)} {sample.tile_id}: {sample.items} items, {sample.acquisitions} "
            f"dates  {meter.times(done)}"
        )
    count = counted if counted is not None else round(share * len(tiles) / max(1, len(chosen)))
    weight = sum(s.pixels for s in samples)
    acquisitions = sum(s.pixels * s.acquisitions for s in samples) / weight if weight else 0.0
    if count == 0 or acquisitions == 0:
        where = "the region" if counted is not None else f"{len(chosen)} of the region's {len(tiles):,} tiles"
        cloud = f" with eo:cloud_cover <= {cat.max_cloud_cover:g}" if cat.max_cloud_cover is not None else ""
        raise NoItemsFoundError(
            f"no {cat.collection!r} items at {cat.stac_url} touch {where} between {dates.start} and {dates.end}"
            f"{cloud}; choose a period (or region) with acquisitions, check the collection id, or sample more "
            "tiles (--sample-tiles)"
        )
    return ItemEstimate(count, "counted" if counted is not None else "sampled", tuple(samples), acquisitions)


def plan_run(
    spec: RunSpec,
    *,
    today: dt.date | None = None,
    prices: Prices | None = None,
    count_items: bool = True,
    sample_tiles: int = DEFAULT_SAMPLE_TILES,
    bands: int = DEFAULT_BANDS,
    throughput: Throughput | None = None,
    progress: Progress = logger.info,
) -> Plan:
    """Plan ``spec``: tiles, area, pixels, items, bytes, hours and cost (see the module's docstring). Nothing is
    written; :func:`write_plan` does.

    Args:
        spec: the run spec.
        today: resolves a rolling period (default: today, UTC).
        prices: per CPU-hour and per GPU-hour; None (or a price left None): no cost.
        count_items: ask the STAC API for the items and acquisitions; False: acquisitions assumed from the
            5-day revisit, no item count, no request.
        sample_tiles: tiles searched for acquisitions (and for items when the API does not count them).
        bands: uint16 bands read per acquisition besides SCL: 3 for the default RP encoder, 10 for an
            image-patch or joint encoder (the 236-d default embedding).
        throughput: the rates; None: the measured constants.
        progress: receives a line per step.

    Raises:
        InvalidAOIError: the region lies outside Sentinel-2's coverage.
        NoItemsFoundError: the period is before Sentinel-2 or after today, or the API has no items for it.
        CatalogUnreachableError: the STAC API cannot be reached (the message names ``--no-items``).
        InvalidConfigError: a bad ``sample_tiles``, ``bands`` or resources that reserve nothing.
    """
    if sample_tiles < 1:
        raise InvalidConfigError(f"--sample-tiles must be at least 1, got {sample_tiles}")
    if not 1 <= bands <= 13:
        raise InvalidConfigError(
            f"bands must be 1 to 13 (Sentinel-2 bands read per acquisition), got {bands}"
        )
    prices = prices or Prices()
    throughput = throughput or Throughput()
    today = today or dt.datetime.now(dt.UTC).date()
    dates = spec.dates(today)
    _check_period(dates, today)
    region, outside_km2 = _covered(spec)
    meter = Meter(1)
    grid = TileGrid(spec.tile_size, RESOLUTION)
    tiles = PlannedTiles.from_zones(grid, grid.zone_tiles(region))
    pixels = int(tiles.pixels.sum())
    progress(
        f"tiles: {len(tiles):,} in {len(tiles.zones())} UTM zones, {pixels:,} pixels  {meter.elapsed:.1f}s"
    )

    items: ItemEstimate | None = None
    if count_items:
        items = _estimate_items(spec, region, tiles, dates, sample_tiles=sample_tiles, progress=progress)
        acquisitions = items.acquisitions
        source = f"distinct dates of {len(items.sample)} sampled tiles, weighted by their pixels"
    else:
        acquisitions = dates.days / REVISIT_DAYS
        source = f"assumed: one every {REVISIT_DAYS:g} days, items not counted"
    # uint16 bands plus uint8 SCL at 20 m (a quarter of a byte per 10 m pixel), as mapping.maps.dry_run counts
    bytes_to_read = int(pixels * acquisitions * (bands * 2 + 0.25))

    workers, cpus, gpus, bound, rate = _hours(spec, throughput)
    wall_hours = pixels / rate / 3600
    cpu_hours, gpu_hours = wall_hours * workers * cpus, wall_hours * workers * gpus
    needed = [(cpu_hours, prices.cpu_hour), (gpu_hours, prices.gpu_hour)]
    cost = None if any(h > 0 and p is None for h, p in needed) else sum(h * (p or 0.0) for h, p in needed)
    return Plan(
        name=spec.name,
        region=spec.region.label(),
        dates=dates,
        catalog=spec.catalog.model_dump(mode="json"),
        tile_size=spec.tile_size,
        resolution=RESOLUTION,
        tiles=tiles,
        region_km2=area_km2(region.geometry),
        outside_km2=outside_km2,
        pixels=pixels,
        items=items,
        acquisitions=acquisitions,
        acquisitions_source=source,
        bands=bands,
        bytes_to_read=bytes_to_read,
        workers=workers,
        cpus_per_worker=cpus,
        gpus_per_worker=gpus,
        throughput=throughput,
        bound=bound,
        pixels_per_second=rate,
        wall_hours=wall_hours,
        cpu_hours=cpu_hours,
        gpu_hours=gpu_hours,
        prices=prices,
        cost=cost,
        budget=spec.budget,
        planned_on=today,
    )


def write_plan(plan: Plan, out: UriLike) -> tuple[str, str]:
    """Write ``plan_tiles.geojson`` and then ``plan.json`` (which names it) into the folder or URI ``out``, each
    atomically; returns their URIs.

    Raises:
        StorageError: ``out`` cannot be written.
    """
    folder = normalize_location(out)
    sampled = {s.tile_id: s for s in (plan.items.sample if plan.items else ())}
    extra = {
        i: {"sampled_items": sampled[t].items, "sampled_acquisitions": sampled[t].acquisitions}
        for i, t in enumerate(plan.tiles.tile_ids)
        if t in sampled
    }
    geojson = json.dumps(plan.tiles.to_geojson(extra), separators=(",", ":")).encode()
    tiles_uri = write_bytes(geojson, join_uri(folder, TILES_FILE))
    body = json.dumps(plan.to_dict(tiles_file=TILES_FILE), indent=2).encode() + b"\n"
    plan_uri = write_bytes(body, join_uri(folder, PLAN_FILE))
    return plan_uri, tiles_uri
