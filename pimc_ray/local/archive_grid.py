"""What the sample archive holds: its spec, its three miniature MGRS tiles and its acquisition calendar.

Geometry is fixed so that the demo and the tests can rely on it. With ``L = tile_size * 10`` metres and the
top edge at northing 5 042 560 for every tile:

========  ==========  ================================  =====================================
tile      EPSG        x range (metres)                  note
========  ==========  ================================  =====================================
32TQR     32632       729 600 - 2L .. 729 600 - L       west neighbour of 32TQS
32TQS     32632       729 600 - L .. 729 600            shares its west edge with 32TQR
33TTL     32633       266 240 .. 266 240 + L            just east of 12 E, next UTM zone
========  ==========  ================================  =====================================
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from affine import Affine
from numpy.typing import NDArray

from pimc_ray.data.catalogs import CONVENTIONS

__all__ = [
    "ACQUISITION_TIME",
    "BASELINE_04_START",
    "PIXEL_SIZE",
    "TILE_IDS",
    "TOP_NORTHING",
    "ZONE32_EAST_EDGE",
    "ZONE33_WEST_EDGE",
    "acquisition_dates",
    "period_end",
    "platform_unit",
    "processing_baseline",
    "tile_grid",
    "tile_info",
    "ArchiveSpec",
    "Calendar",
    "ClassSet",
    "ConventionName",
    "TileInfo",
]

ConventionName = Literal["earth-search", "planetary-computer"]
Calendar = Literal["shifted", "aligned"]
ClassSet = Literal["shape", "level"]

#: Tiles the archive knows, in their canonical order.
TILE_IDS: tuple[str, ...] = ("32TQR", "32TQS", "33TTL")
#: Northing of the top edge of every tile.
TOP_NORTHING = 5_042_560
#: Easting of the east edge of 32TQS (and so of the two zone-32 tiles).
ZONE32_EAST_EDGE = 729_600
#: Easting of the west edge of 33TTL.
ZONE33_WEST_EDGE = 266_240
#: Pixel size of the 10 m bands and of the label rasters.
PIXEL_SIZE = 10
#: Sensing time of every scene (UTC), as in the real 10:17 descending pass over these tiles.
ACQUISITION_TIME = dt.time(10, 17, 56, 393000)
#: First day of processing baseline 04.00, from which ESA's L2A DNs carry BOA_ADD_OFFSET.
BASELINE_04_START = dt.date(2022, 1, 25)


@dataclass(frozen=True)
class ArchiveSpec:
    """Everything that determines the sample archive; the same spec always gives the same bytes."""

    seed: int = 0
    """Seed of every random quantity (landscape, phenology timing, clouds, noise)."""
    tile_size: int = 256
    """Pixels per side at 10 m (a multiple of 16); the 20 m bands and SCL are ``tile_size // 2`` per side."""
    year: int = 2022
    """Calendar year of the acquisitions."""
    revisit_days: int = 10
    """Days between acquisitions; the first is on 3 January (10 days: 37 dates in 2022)."""
    convention: ConventionName = "earth-search"
    """Catalog the items imitate: asset keys, properties and BOA offset traps (``docs/sample-archive.md``)."""
    tiles: tuple[str, ...] = TILE_IDS
    """Tile ids to generate, a subset of :data:`TILE_IDS` (lists are accepted and stored as a tuple)."""
    cloud_rate: float = 0.3
    """Expected opaque-cloud fraction over all dates, in [0, 0.9]: at 0.3 about 1 date in 8 is nearly overcast
    and 1 in 3 is (nearly) clear; 0 gives a cloud-free archive."""

    # Scenario knobs (docs/sample-archive.md, "Scenario families"); the defaults give the demo's archive.
    calendar: Calendar = "shifted"
    """Regional calendars: ``"shifted"``, seasons run later uphill (33TTL about three weeks behind 32TQR), or
    ``"aligned"``, flat land with one calendar everywhere."""
    field_size: float = 180.0
    """Mean size of farmland fields in metres (the cell of their jittered grid): at 60 m a 9 x 9 pixel patch
    mixes several fields."""
    class_set: ClassSet = "shape"
    """Farmland classes: ``"shape"``, four crops that differ by the shape of their season, or ``"level"``, six,
    with a young orchard (deciduous forest's season, sparse trees over soil) and a grass ley (grassland's season
    and cuts on a lower canopy) that differ from another class mostly by level."""
    haze: float = 1.0
    """Scale of what the atmospheric correction and SCL leave in: how often, and how strongly, aerosol
    residuals and thin unflagged veils occur (0: none, 1: the default, 2: hazy)."""
    years: int = 1
    """Years of acquisitions, ending with ``year``; farmland fields rotate their crop from year to year (the
    labels are ``year``'s classes)."""
    until: dt.date | None = None
    """Last day with acquisitions (an ISO ``"YYYY-MM-DD"`` string is accepted and stored as a date), within the
    archive's period; None: the end of ``year``, which is also how 31 December of ``year`` is stored. A scene
    (tile, date) is the same whatever ``until``: a later ``until`` only adds acquisitions
    (:func:`pimc_ray.local.archive.extend_archive` adds them to a built archive)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiles", tuple(self.tiles))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not isinstance(self.tile_size, int) or self.tile_size % 16 or not 16 <= self.tile_size <= 10_976:
            raise ValueError(
                f"tile_size must be a multiple of 16 between 16 and 10976 pixels, got {self.tile_size!r}; "
                "try 64 for tests or 256 for the demo"
            )
        if not isinstance(self.year, int) or not 2015 <= self.year <= 2100:
            raise ValueError(f"year must be an integer between 2015 and 2100, got {self.year!r}")
        if not isinstance(self.revisit_days, int) or not 1 <= self.revisit_days <= 366:
            raise ValueError(f"revisit_days must be an integer between 1 and 366, got {self.revisit_days!r}")
        if self.convention not in get_args(ConventionName) or self.convention not in CONVENTIONS:
            raise ValueError(
                f"unknown convention {self.convention!r}; use one of {sorted(get_args(ConventionName))}"
            )
        unknown = [t for t in self.tiles if t not in TILE_IDS]
        if not self.tiles or unknown or len(set(self.tiles)) != len(self.tiles):
            raise ValueError(
                f"tiles must be distinct ids among {TILE_IDS}, got {self.tiles!r}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        try:
            object.__setattr__(self, "cloud_rate", float(self.cloud_rate))
        except (TypeError, ValueError) as err:
            raise ValueError(f"cloud_rate must be a number in [0, 0.9], got {self.cloud_rate!r}") from err
        if not 0.0 <= self.cloud_rate <= 0.9:
            raise ValueError(f"cloud_rate must be in [0, 0.9], got {self.cloud_rate!r}")
        if self.calendar not in get_args(Calendar):
            raise ValueError(f"calendar must be one of {get_args(Calendar)}, got {self.calendar!r}")
        if self.class_set not in get_args(ClassSet):
            raise ValueError(f"class_set must be one of {get_args(ClassSet)}, got {self.class_set!r}")
        object.__setattr__(self, "field_size", float(self.field_size))
        object.__setattr__(self, "haze", float(self.haze))
        if not 30.0 <= self.field_size <= 2000.0:
            raise ValueError(f"field_size must be between 30 and 2000 metres, got {self.field_size!r}")
        if not 0.0 <= self.haze <= 4.0:
            raise ValueError(f"haze must be in [0, 4], got {self.haze!r}")
        if not isinstance(self.years, int) or not 1 <= self.years <= 3:
            raise ValueError(f"years must be 1, 2 or 3, got {self.years!r}")
        if self.until is not None:
            object.__setattr__(self, "until", self._checked_until(self.until))

    def _checked_until(self, value: object) -> dt.date | None:
        """``until`` as a date within the period (None for the year's last day), or a ValueError naming it."""
        until = value
        if isinstance(until, str):
            try:
                until = dt.date.fromisoformat(until)
            except ValueError as err:
                raise ValueError(f"until must be a date as YYYY-MM-DD, got {value!r}") from err
        if isinstance(until, dt.datetime):
            until = until.date()
        if not isinstance(until, dt.date):
            raise ValueError(f"until must be a date (or YYYY-MM-DD), got {value!r}")
        first, last = dt.date(self.year - self.years + 1, 1, 3), dt.date(self.year, 12, 31)
        if not first <= until <= last:
            raise ValueError(
                f"until must lie within the archive's period {first} .. {last}, got {until}; "
                "choose a day in it, or another year"
            )
        return None if until == last else until

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (``tiles`` as a list), as stored in ``archive.json``."""
        return {
            "seed": self.seed,
            "tile_size": self.tile_size,
            "year": self.year,
            "revisit_days": self.revisit_days,
            "convention": self.convention,
            "tiles": list(self.tiles),
            "cloud_rate": self.cloud_rate,
            "calendar": self.calendar,
            "field_size": self.field_size,
            "class_set": self.class_set,
            "haze": self.haze,
            "years": self.years,
            # only when set, so that the archive.json of archives built before ``until`` existed stays equal
            **({} if self.until is None else {"until": self.until.isoformat()}),
        }


@dataclass(frozen=True)
class TileInfo:
    """One miniature MGRS tile: its id, CRS and 10 m pixel grid."""

    tile_id: str
    """MGRS id such as ``32TQR``."""
    epsg: int
    """EPSG code of its UTM zone (WGS 84, north)."""
    bounds: tuple[float, float, float, float]
    """``(xmin, ymin, xmax, ymax)`` in metres, in the tile's CRS."""
    shape: tuple[int, int]
    """``(height, width)`` of the 10 m grid."""

    @property
    def crs(self) -> str:
        """``"EPSG:32632"`` style CRS string."""
        return f"EPSG:{self.epsg}"

    @property
    def utm_zone(self) -> int:
        """UTM zone number (``32``)."""
        return int(self.tile_id[:2])

    @property
    def latitude_band(self) -> str:
        """MGRS latitude band letter (``T``)."""
        return self.tile_id[2]

    @property
    def grid_square(self) -> str:
        """MGRS 100 km grid square (``QR``)."""
        return self.tile_id[3:]

    def shape_at(self, resolution: int) -> tuple[int, int]:
        """``(height, width)`` of the grid at ``resolution`` metres (10 or 20)."""
        factor = resolution // PIXEL_SIZE
        return self.shape[0] // factor, self.shape[1] // factor

    def transform(self, resolution: int = PIXEL_SIZE) -> Affine:
        """Affine transform of the grid at ``resolution`` metres (origin at the top-left corner)."""
        xmin, _, _, ymax = self.bounds
        return Affine(resolution, 0.0, xmin, 0.0, -resolution, ymax)

    def pixel_centres(self, resolution: int = PIXEL_SIZE) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """World coordinates of pixel centres: ``(xs, ys)``, ``ys`` from north to south."""
        height, width = self.shape_at(resolution)
        xmin, _, _, ymax = self.bounds
        xs = xmin + (np.arange(width) + 0.5) * resolution
        ys = ymax - (np.arange(height) + 0.5) * resolution
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)  # no copy: float64 already


def tile_info(spec: ArchiveSpec, tile_id: str) -> TileInfo:
    """The :class:`TileInfo` of one tile of ``spec``.

    Raises:
        ValueError: if ``tile_id`` is not one of ``spec.tiles``.
    """
    if tile_id not in spec.tiles:
        raise ValueError(f"tile {tile_id!r} is not in this archive; use one of {spec.tiles}")
    side = spec.tile_size * PIXEL_SIZE
    if tile_id == "32TQR":
        epsg, xmin = 32632, ZONE32_EAST_EDGE - 2 * side
    elif tile_id == "32TQS":
        epsg, xmin = 32632, ZONE32_EAST_EDGE - side
    else:  # 33TTL
        epsg, xmin = 32633, ZONE33_WEST_EDGE
    bounds = (float(xmin), float(TOP_NORTHING - side), float(xmin + side), float(TOP_NORTHING))
    return TileInfo(tile_id=tile_id, epsg=epsg, bounds=bounds, shape=(spec.tile_size, spec.tile_size))


def tile_grid(spec: ArchiveSpec) -> list[TileInfo]:
    """Tile id, EPSG, bounds and shape of every tile of ``spec``, in ``spec.tiles`` order."""
    return [tile_info(spec, t) for t in spec.tiles]


def period_end(spec: ArchiveSpec) -> dt.date:
    """Last day of the archive's period: ``spec.until``, or 31 December of ``spec.year``."""
    return spec.until if spec.until is not None else dt.date(spec.year, 12, 31)


def acquisition_dates(spec: ArchiveSpec) -> list[dt.date]:
    """Acquisition dates: 3 January of the first of ``spec.years`` years ending with ``spec.year``, then every
    ``spec.revisit_days`` until ``spec.until`` (the end of ``spec.year`` when None). A later ``until`` only
    appends dates: the list for an earlier one is a prefix of it."""
    first, end = dt.date(spec.year - spec.years + 1, 1, 3), period_end(spec) + dt.timedelta(days=1)
    dates, day = [], first
    while day < end:
        dates.append(day)
        day += dt.timedelta(days=spec.revisit_days)
    return dates


def processing_baseline(date: dt.date) -> str:
    """ESA processing baseline of a scene: ``"03.01"`` before 25 January 2022, ``"04.00"`` from that day."""
    return "04.00" if date >= BASELINE_04_START else "03.01"


def platform_unit(spec: ArchiveSpec, date: dt.date) -> Literal["A", "B"]:
    """Which satellite acquired ``date``: the first date is Sentinel-2B, then A and B alternate."""
    index = (date - dt.date(spec.year, 1, 3)).days // spec.revisit_days
    return "B" if index % 2 == 0 else "A"
