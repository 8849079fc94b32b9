"""Run specs: one YAML file that says everything a (scheduled, continental) mapping run does.

A spec is validated once, by pydantic models that refuse unknown keys and wrong types; every problem becomes an
:class:`~pimc_ray.errors.InvalidConfigError` of one line naming the key (``spec.resources.workers: Input should
be a valid integer, unable to parse string as an integer (got 'two')``), so a job exits with code 2 before any
work. An example, with every key (only ``region``, ``period``, ``catalog.stac_url`` and ``output`` are required;
the others show their defaults, which are the mapping jobs' defaults)::

    name: europe-2024                 # optional, a label for schedules and logs
    region: Europe                    # a country (name or ISO A3), a continent, a bbox, or a GeoJSON file/URI
    period: 2024                      # a year, a season (2024-summer), {last_months: 12}, or {start:, end:}
    catalog:
      stac_url: https://earth-search.aws.element84.com/v1
      collection: sentinel-2-l2a
      convention: null                # earth-search | planetary-computer; null: detected from the items
      max_cloud_cover: null           # percent
      snapshot: null                  # frozen item list (.ndjson or .parquet), a path or URI
    model: s3://bucket/models/pimc    # encoder checkpoint; null: random weights
    precision: float32                # float32, or bfloat16 (the encoders under torch autocast)
    products:
      embedding: true
      classes: {head: s3://bucket/models/pimc/head}  # or {train_aoi: <region>, labels_collection: ...}; null: none
      indices: false                  # NDVI/EVI/SAVI series, written under <output>/indices
      forecast: null                  # a forecast head's URI (jobs/train_forecast.py): forecast COGs per tile
    output: s3://bucket/maps/europe-2024
    tile_size: 1024                   # pixels per tile edge (a multiple of 16)
    series: {steps: 36, min_valid: 4, on_unreadable: error, window_size: 128}
    resources: {workers: 2, cpus_per_worker: 0.75, gpus_per_worker: 0.0, readers: 2, read_cpus: 0.25,
                batch_size: 1024, wait_for_resources: false}
    budget: {max_gpu_hours: null, max_cpu_hours: null, max_cost_usd: null}   # caps the plan checks

Each key but ``name``, ``budget`` and ``products.indices`` is one option of ``jobs/embed_aoi.py`` (see
:data:`FLAGS`), so :meth:`RunSpec.to_args` writes a spec as that job's command line and :meth:`RunSpec.from_args`
reads one back: ``RunSpec.from_args(spec.to_args(), parser=embed_parser()) == spec`` for every spec with a fixed
period (a rolling one is resolved to its dates on the day the command line is written).

Periods (:class:`Period`, resolved by :meth:`RunSpec.dates`):

* a year, ``2024``: 1 January to 31 December;
* a season, ``2024-summer`` or ``{year: 2024, season: summer}``: meteorological (northern) seasons, winter
  1 December of the year before to the end of February, spring March-May, summer June-August, autumn
  September-November;
* a rolling window, ``last 12 months`` or ``{last_months: 12}``: the last whole calendar months before ``today``'s
  month (today's month is still filling up); on 15 March 2025, 1 March 2024 to 28 February 2025. Every run in
  the same month sees the same dates, so a rerun recomputes nothing that has not changed;
* ``{start: 2024-03-01, end: 2024-10-31}``: those dates (a range that is exactly a year or a season is kept as one).
"""

from __future__ import annotations

import argparse
import calendar
import datetime as dt
import difflib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

import shapely
import shapely.errors
import shapely.geometry
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pimc_ray.data.aoi import AOI, load_aoi
from pimc_ray.data.catalogs import CONVENTIONS
from pimc_ray.data.stac import DateRange
from pimc_ray.data.timegrid import MAX_STEPS
from pimc_ray.errors import InvalidAOIError, InvalidConfigError, StorageError
from pimc_ray.runs.regions import area_km2, region_geometry
from pimc_ray.storage import UriLike, join_uri, normalize_location, normalize_uri, read_bytes

__all__ = [
    "FLAGS",
    "SEASONS",
    "Budget",
    "Catalog",
    "Classes",
    "Period",
    "Products",
    "Region",
    "Resources",
    "RunSpec",
    "Series",
    "describe",
]

Season = Literal["winter", "spring", "summer", "autumn"]

#: The months of each season: (first month, last month); winter's December is in the year before.
SEASONS: dict[str, tuple[int, int]] = {
    "winter": (12, 2),
    "spring": (3, 5),
    "summer": (6, 8),
    "autumn": (9, 11),
}

#: Key path in a spec -> option of ``jobs/embed_aoi.py`` (``region`` and ``period`` are written specially:
#: ``--aoi`` and ``--start``/``--end``; ``products.embedding`` chooses embed_aoi.py or classify_aoi.py).
FLAGS: dict[str, str] = {
    "region": "--aoi",
    "period.start": "--start",
    "period.end": "--end",
    "catalog.stac_url": "--stac-url",
    "catalog.collection": "--collection",
    "catalog.convention": "--catalog",
    "catalog.max_cloud_cover": "--max-cloud-cover",
    "catalog.snapshot": "--snapshot",
    "output": "--out",
    "series.steps": "--steps",
    "series.min_valid": "--min-valid",
    "series.on_unreadable": "--on-unreadable",
    "series.window_size": "--window-size",
    "resources.workers": "--workers",
    "resources.cpus_per_worker": "--cpus-per-worker",
    "resources.gpus_per_worker": "--gpus-per-worker",
    "resources.readers": "--readers",
    "resources.read_cpus": "--read-cpus",
    "resources.wait_for_resources": "--wait-for-resources",
    "resources.batch_size": "--batch-size",
    "model": "--checkpoint",
    "precision": "--precision",
    "products.classes.head": "--head",
    "products.classes.train_aoi": "--head-train-aoi",
    "products.classes.labels_collection": "--labels-collection",
    "products.forecast": "--forecast-head",
    "tile_size": "--tile-size",
}

#: The ``--aoi`` GeoJSON Feature property that carries a region's name through a command line.
REGION_PROPERTY = "pimc:region"

_DOCS = "docs/design.md, 'Run specs'"


class _Spec(BaseModel):
    """Frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _uri(value: str, *, folder: bool = False) -> str:
    """``value`` normalised as :mod:`pimc_ray.storage` writes URIs; its refusal as a ValueError for pydantic."""
    try:
        return normalize_location(value, option="") if folder else normalize_uri(value)
    except StorageError as err:
        raise ValueError(str(err)) from err


# --- region -------------------------------------------------------------------------------------------------


def _numbers(text: str) -> list[float] | None:
    """Four numbers ``minx,miny,maxx,maxy`` (commas or spaces), as :func:`~pimc_ray.data.aoi.load_aoi` reads them."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        return [float(p) for p in parts] if len(parts) == 4 else None
    except ValueError:
        return None


class Region(_Spec):
    """Where to map: exactly one of a name, a bbox or a GeoJSON.

    Shorthands: a string is a GeoJSON file or URI when it has a ``/`` or ends in ``.json``/``.geojson``, a bbox
    when it is four numbers, else a name; a list is a bbox; a mapping with ``type`` is inline GeoJSON.
    """

    name: str | None = None
    """A Natural Earth country (name or ISO A3 code) or continent (:mod:`pimc_ray.runs.regions`)."""
    bbox: tuple[float, float, float, float] | None = None
    """``[minx, miny, maxx, maxy]`` in lon/lat degrees."""
    geojson: str | dict[str, Any] | None = None
    """A GeoJSON file (a path or URI, read when the AOI is needed) or an inline GeoJSON object."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if "://" in text or "/" in text or text.lower().endswith((".json", ".geojson")):
                return {"geojson": text}
            numbers = _numbers(text)
            return {"bbox": numbers} if numbers is not None else {"name": text}
        if isinstance(value, list | tuple):
            return {"bbox": value}
        if isinstance(value, Mapping) and "type" in value:
            return {"geojson": dict(value)}
        return value

    @field_validator("name")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        if name is not None:
            region_geometry(name)  # an InvalidConfigError (a ValueError) naming close matches
        return name

    @field_validator("bbox")
    @classmethod
    def _box(cls, bbox: tuple[float, float, float, float] | None) -> tuple[float, float, float, float] | None:
        if bbox is not None:
            load_aoi(list(bbox))  # an InvalidAOIError (a ValueError): empty, reversed, out of range
        return bbox

    @field_validator("geojson", mode="before")
    @classmethod
    def _str_or_object(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | Mapping):
            raise ValueError(
                f"give a GeoJSON file's path or URI, or a GeoJSON object, not {type(value).__name__} {value!r}"
            )
        return value

    @field_validator("geojson")
    @classmethod
    def _geojson(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str):
            return _uri(value)
        if value is not None:
            load_aoi(value)
        return value

    @model_validator(mode="after")
    def _one(self) -> Region:
        given = [k for k in ("name", "bbox", "geojson") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of name, bbox or geojson, not {' and '.join(given) or 'none'} (e.g. 'France', "
                "[11.8, 45.4, 12.1, 45.6] or areas/aoi.geojson)"
            )
        return self

    def geometry(self) -> Any:
        """The region's lon/lat (multi)polygon (a GeoJSON file is read now)."""
        return self.aoi().geometry

    def aoi(self) -> AOI:
        """The region as a validated :class:`~pimc_ray.data.aoi.AOI` (a GeoJSON file is read now).

        Raises:
            InvalidAOIError: the GeoJSON file cannot be read or holds no usable polygon.
        """
        if self.name is not None:
            return load_aoi(region_geometry(self.name))
        if self.bbox is not None:
            return load_aoi(list(self.bbox))
        return load_aoi(self.geojson)

    def label(self) -> str:
        """A short description: the name, the bbox, or the GeoJSON's URI."""
        if self.name is not None:
            return self.name
        if self.bbox is not None:
            return "bbox " + ",".join(f"{v:g}" for v in self.bbox)
        return str(self.geojson) if isinstance(self.geojson, str) else "inline GeoJSON"

    def to_arg(self) -> str:
        """The ``--aoi`` value: the bbox, the GeoJSON URI or text, or for a name a GeoJSON Feature of its polygon
        whose ``pimc:region`` property keeps the name (the job reads the polygon; :meth:`from_arg` the name)."""
        if self.bbox is not None:
            return ",".join(repr(v) for v in self.bbox)
        if isinstance(self.geojson, str):
            return self.geojson
        if self.geojson is not None:
            return json.dumps(self.geojson, separators=(",", ":"))
        assert self.name is not None
        feature = {
            "type": "Feature",
            "properties": {REGION_PROPERTY: self.name},
            "geometry": shapely.geometry.mapping(region_geometry(self.name)),
        }
        return json.dumps(feature, separators=(",", ":"))

    @staticmethod
    def from_arg(text: str) -> Any:
        """The spec value of an ``--aoi`` value (the inverse of :meth:`to_arg`)."""
        stripped = text.strip()
        if not stripped.startswith("{"):
            return stripped  # a bbox or a GeoJSON file: the shorthands tell them apart
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise InvalidConfigError(
                f"--aoi: not valid JSON ({err.msg}); pass a bbox, GeoJSON or a file"
            ) from err
        name = (obj.get("properties") or {}).get(REGION_PROPERTY) if isinstance(obj, dict) else None
        if name is not None and obj.get("type") == "Feature":
            try:
                same = shapely.equals_exact(
                    shapely.geometry.shape(obj["geometry"]), region_geometry(name), 1e-9
                )
            except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException):
                # a broken geometry, or not that region's: kept as inline GeoJSON, which validation checks
                same = False
            if same:
                return name
        return obj


# --- period -------------------------------------------------------------------------------------------------

_SEASON = re.compile(r"^(\d{4})[-_ ](winter|spring|summer|autumn)$")
_ROLLING = re.compile(r"^last[-_ ]+(\d+)[-_ ]+months?$")
_PERIOD_FIX = (
    "write a year (2024), a season (2024-summer; winter is December of the year before to February), a rolling "
    "window ('last 12 months' or {last_months: 12}) or {start: 2024-03-01, end: 2024-10-31}"
)


def _season_dates(year: int, season: str) -> tuple[dt.date, dt.date]:
    first, last = SEASONS[season]
    start = dt.date(year - 1 if first > last else year, first, 1)
    return start, dt.date(year, last, calendar.monthrange(year, last)[1])


def _as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError:
        return None


def _named_range(start: dt.date, end: dt.date) -> dict[str, Any] | None:
    """``{year}`` or ``{year, season}`` when ``start..end`` is exactly that year or season, else None."""
    if (start.month, start.day, end.month, end.day) == (1, 1, 12, 31) and start.year == end.year:
        return {"year": start.year}
    for season in SEASONS:
        if _season_dates(end.year, season) == (start, end):
            return {"year": end.year, "season": season}
    return None


class Period(_Spec):
    """When: a year, a season of a year, the last whole months before today, or a start and an end date."""

    year: int | None = Field(default=None, ge=1900, le=2100)
    """A calendar year, alone or with a ``season``."""
    season: Season | None = None
    """A meteorological season of ``year`` (:data:`SEASONS`)."""
    last_months: int | None = Field(default=None, ge=1, le=120)
    """The last this many whole calendar months before today's month."""
    start: dt.date | None = None
    """First day of an explicit range (with ``end``)."""
    end: dt.date | None = None
    """Last day of an explicit range, included."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"cannot read {value!r} as a period; {_PERIOD_FIX}")
        if isinstance(value, int):
            return {"year": value}
        if isinstance(value, str):
            text = value.strip().lower()
            if text.isdigit() and len(text) == 4:
                return {"year": int(text)}
            if m := _SEASON.match(text):
                return {"year": int(m.group(1)), "season": m.group(2)}
            if m := _ROLLING.match(text):
                return {"last_months": int(m.group(1))}
            raise ValueError(f"cannot read {value!r} as a period; {_PERIOD_FIX}")
        if isinstance(value, Mapping) and set(value) == {"start", "end"}:
            start, end = _as_date(value["start"]), _as_date(value["end"])
            if start is not None and end is not None and (named := _named_range(start, end)) is not None:
                return named
        return value

    @model_validator(mode="after")
    def _form(self) -> Period:
        given = {k for k in ("year", "season", "last_months", "start", "end") if getattr(self, k) is not None}
        if given not in ({"year"}, {"year", "season"}, {"last_months"}, {"start", "end"}):
            raise ValueError(f"{' + '.join(sorted(given)) or 'nothing'} is not a period; {_PERIOD_FIX}")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}; swap them")
        return self

    def dates(self, today: dt.date | None = None) -> DateRange:
        """The period's dates; ``today`` (default: today, UTC) matters only to a rolling window."""
        if self.start is not None and self.end is not None:
            return DateRange(self.start, self.end)
        if self.last_months is not None:
            today = today or dt.datetime.now(dt.UTC).date()
            this_month = today.replace(day=1)
            months = this_month.year * 12 + this_month.month - 1 - self.last_months
            return DateRange(dt.date(months // 12, months % 12 + 1, 1), this_month - dt.timedelta(days=1))
        assert self.year is not None
        if self.season is not None:
            return DateRange(*_season_dates(self.year, self.season))
        return DateRange(dt.date(self.year, 1, 1), dt.date(self.year, 12, 31))

    def label(self) -> str:
        """``2024``, ``2024-summer``, ``last 12 months`` or ``2024-03-01..2024-10-31``."""
        if self.last_months is not None:
            return f"last {self.last_months} months"
        if self.year is not None:
            return f"{self.year}-{self.season}" if self.season else str(self.year)
        return f"{self.start}..{self.end}"


# --- the other sections -------------------------------------------------------------------------------------


class Catalog(_Spec):
    """Where the Sentinel-2 L2A items come from."""

    stac_url: str
    """Root URL of a STAC API."""
    collection: str = "sentinel-2-l2a"
    """The collection id."""
    convention: str | None = None
    """The catalog's convention (``earth-search``, ``planetary-computer``); None: detected from the items."""
    max_cloud_cover: float | None = Field(default=None, ge=0, le=100)
    """Skip scenes above this ``eo:cloud_cover`` (percent)."""
    snapshot: str | None = None
    """The frozen item list (.ndjson or .parquet), a path or URI: read if it exists, else written."""

    @field_validator("stac_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http(s) URL; give the root URL of a STAC API")
        return url

    @field_validator("convention")
    @classmethod
    def _convention(cls, name: str | None) -> str | None:
        if name is not None and name not in CONVENTIONS:
            raise ValueError(
                f"unknown convention {name!r}; use one of {', '.join(CONVENTIONS)}, or leave it out (detected)"
            )
        return name

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, value: str | None) -> str | None:
        return None if value is None else _uri(value)


class Classes(_Spec):
    """Class maps: with a saved head, or with one fit on labels inside ``train_aoi``."""

    head: str | None = None
    """A saved classification head: a folder or URI."""
    train_aoi: Region | None = None
    """Fit the head on the labels inside this region (held out from the run's region)."""
    labels_collection: str = "pimc-sample-labels"
    """The STAC collection of the labels ``train_aoi`` uses."""

    @field_validator("head")
    @classmethod
    def _head(cls, value: str | None) -> str | None:
        return None if value is None else _uri(value)

    @model_validator(mode="after")
    def _one(self) -> Classes:
        if (self.head is None) == (self.train_aoi is None):
            raise ValueError("give either head (a saved head's URI) or train_aoi (fit one on labels there)")
        return self


class Products(_Spec):
    """What a run writes."""

    embedding: bool = True
    """Embedding COGs per tile (false: class maps only, ``jobs/classify_aoi.py``)."""
    classes: Classes | None = None
    """Class (and confidence) COGs per tile; None: none."""
    indices: bool = False
    """Regular-grid NDVI/EVI/SAVI series and QA (``jobs/export_indices.py``), under ``<output>/indices``."""
    forecast: str | None = None
    """A saved forecast head (``jobs/train_forecast.py``), a folder or URI: each tile's NDVI/EVI/SAVI forecast of
    the steps after the period, beside its embedding or classes; None: none."""

    @field_validator("forecast")
    @classmethod
    def _forecast(cls, value: str | None) -> str | None:
        return None if value is None else _uri(value)

    @model_validator(mode="after")
    def _some(self) -> Products:
        if not (self.embedding or self.classes or self.indices):
            raise ValueError("the run writes nothing: set embedding or indices to true, or give classes")
        return self


class Series(_Spec):
    """The regular time grid of each pixel, and the unit of work."""

    steps: int = Field(default=36, ge=1, le=MAX_STEPS)
    """Regular time-grid steps T (plots are T x T; at most :data:`~pimc_ray.data.timegrid.MAX_STEPS`)."""
    min_valid: int = Field(default=4, ge=1)
    """Pixels with fewer cloud-free observations are nodata."""
    on_unreadable: Literal["error", "nodata"] = "error"
    """An unreadable asset fails its window (error) or becomes nodata."""
    window_size: int = Field(default=128, ge=1)
    """Pixels per window edge (the unit of work)."""


class Resources(_Spec):
    """The workers of a run (:class:`~pimc_ray.mapping.runner.Parallelism`) and the encoder's batch."""

    workers: int = Field(default=2, ge=0)
    """Worker actors, each mapping whole tiles (0: everything in the driver's process)."""
    cpus_per_worker: float = Field(default=0.75, ge=0)
    """CPUs each worker reserves to compute."""
    gpus_per_worker: float = Field(default=0.0, ge=0)
    """GPUs each worker reserves (fractions allowed; > 0: CUDA + CuPy)."""
    readers: int = Field(default=2, ge=1)
    """Read threads per worker."""
    read_cpus: float = Field(default=0.25, ge=0)
    """CPUs each worker reserves besides, for its read threads."""
    batch_size: int = Field(default=1024, ge=1)
    """Pixels per encoder batch."""
    wait_for_resources: bool = False
    """Start even if the cluster cannot place every worker now (it autoscales)."""


class Budget(_Spec):
    """Caps on what a run may cost; a plan over them is refused (each None: no cap)."""

    max_gpu_hours: float | None = Field(default=None, gt=0)
    max_cpu_hours: float | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)


class RunSpec(_Spec):
    """A whole run: region, period, catalog, model, products, output, tiles, resources and budget."""

    name: str | None = None
    """A label for schedules and logs."""
    region: Region
    """Where (:class:`Region`)."""
    period: Period
    """When (:class:`Period`)."""
    catalog: Catalog
    """Which items (:class:`Catalog`)."""
    model: str | None = None
    """The encoder checkpoint, a folder or URI; None: random weights (a smoke test, not a map)."""
    precision: Literal["float32", "bfloat16"] = "float32"
    """What the encoders compute in (bfloat16: torch autocast)."""
    products: Products = Products()
    """What to write (:class:`Products`)."""
    output: str
    """Where: a folder or ``s3://bucket/prefix``."""
    tile_size: int = Field(default=1024, ge=16, multiple_of=16)
    """Tile edge in pixels (the unit of output; a multiple of 16, the COG block)."""
    series: Series = Series()
    """The time grid (:class:`Series`)."""
    resources: Resources = Resources()
    """Workers and batch (:class:`Resources`)."""
    budget: Budget = Budget()
    """Cost caps (:class:`Budget`)."""

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        return None if value is None else _uri(value)

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        return _uri(value, folder=True)

    # --- reading ----------------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Any, *, source: str | None = None) -> RunSpec:
        """A spec from parsed YAML or JSON (a mapping).

        Raises:
            InvalidConfigError: one line naming the first bad key and the fix (``source`` names the file).
        """
        where = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise InvalidConfigError(
                f"{where}a run spec is a mapping of keys (region, period, catalog, output, ...), got "
                f"{type(data).__name__}; see {_DOCS}"
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise InvalidConfigError(where + _one_line(err)) from err

    @classmethod
    def load(cls, uri: UriLike) -> RunSpec:
        """The spec in a YAML file: a local path or a URI (``s3://bucket/specs/europe.yaml``).

        Raises:
            StorageError: nothing can be read there.
            InvalidConfigError: not YAML, a duplicated key, or a bad spec (one line naming the key).
        """
        text = read_bytes(uri)
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise InvalidConfigError(
                f"{uri}: not a valid YAML file{at} ({problem}); check its indentation and quotes"
            ) from err
        return cls.from_mapping(data, source=str(uri))

    def to_yaml(self) -> str:
        """The spec as YAML, without the keys left at their defaults (:meth:`load` reads it back equal)."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)

    # --- resolving --------------------------------------------------------------------------------------

    def dates(self, today: dt.date | None = None) -> DateRange:
        """The period's dates (:meth:`Period.dates`); ``today`` matters only to a rolling window."""
        return self.period.dates(today)

    def aoi(self) -> AOI:
        """The region as an AOI (a GeoJSON file or URI is read now).

        Raises:
            InvalidConfigError: the region's GeoJSON cannot be read or holds no usable polygon.
        """
        try:
            return self.region.aoi()
        except InvalidAOIError as err:
            raise InvalidConfigError(f"spec.region: {err}") from err

    # --- command lines ----------------------------------------------------------------------------------

    @property
    def mapping_job(self) -> str:
        """The job that writes the mapping products: ``embed_aoi.py``, or ``classify_aoi.py`` without embedding."""
        return "embed_aoi.py" if self.products.embedding else "classify_aoi.py"

    def to_args(self, *, today: dt.date | None = None) -> list[str]:
        """The command line of the mapping job (:attr:`mapping_job`; both parse the same options), every option
        written out; ``today`` resolves a rolling period.

        Raises:
            InvalidConfigError: the spec has no mapping product (only indices; see :meth:`commands`).
        """
        if not (self.products.embedding or self.products.classes):
            raise InvalidConfigError(
                "spec.products: no embedding or classes, so no mapping job; the indices job is in commands()"
            )
        args = self._area_args(self.output, today)
        if self.model is not None:
            args += ["--checkpoint", self.model]
        args += ["--precision", self.precision]
        classes = self.products.classes
        if classes is not None and classes.head is not None:
            args += ["--head", classes.head]
        if classes is not None and classes.train_aoi is not None:
            args += ["--head-train-aoi", classes.train_aoi.to_arg()]
        if classes is not None:
            args += ["--labels-collection", classes.labels_collection]
        if self.products.forecast is not None:
            args += ["--forecast-head", self.products.forecast]
        args += ["--batch-size", str(self.resources.batch_size), "--tile-size", str(self.tile_size)]
        return args

    def commands(self, *, today: dt.date | None = None) -> list[tuple[str, list[str]]]:
        """``(jobs/<job>.py, arguments)`` of every job the spec's products need: the mapping job, and
        ``export_indices.py`` writing to ``<output>/indices`` when ``products.indices``."""
        out = []
        if self.products.embedding or self.products.classes:
            out.append((f"jobs/{self.mapping_job}", self.to_args(today=today)))
        if self.products.indices:
            out.append(("jobs/export_indices.py", self._area_args(join_uri(self.output, "indices"), today)))
        return out

    def _area_args(self, out: str, today: dt.date | None) -> list[str]:
        """The options every per-pixel job shares: area, catalog, output, series and parallelism."""
        dates, cat, ser, res = self.dates(today), self.catalog, self.series, self.resources
        args = ["--aoi", self.region.to_arg(), "--start", str(dates.start), "--end", str(dates.end)]
        args += ["--stac-url", cat.stac_url, "--collection", cat.collection]
        if cat.convention is not None:
            args += ["--catalog", cat.convention]
        if cat.max_cloud_cover is not None:
            args += ["--max-cloud-cover", repr(cat.max_cloud_cover)]
        if cat.snapshot is not None:
            args += ["--snapshot", cat.snapshot]
        args += ["--out", out, "--steps", str(ser.steps), "--min-valid", str(ser.min_valid)]
        args += ["--on-unreadable", ser.on_unreadable, "--window-size", str(ser.window_size)]
        args += ["--workers", str(res.workers), "--cpus-per-worker", repr(res.cpus_per_worker)]
        args += ["--gpus-per-worker", repr(res.gpus_per_worker), "--readers", str(res.readers)]
        args += ["--read-cpus", repr(res.read_cpus)]
        if res.wait_for_resources:
            args.append("--wait-for-resources")
        return args

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace | Sequence[str],
        *,
        parser: argparse.ArgumentParser | None = None,
        embedding: bool = True,
        indices: bool = False,
        name: str | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
    ) -> RunSpec:
        """The spec of a mapping job's command line: its parsed arguments, or its argument list with the job's
        ``parser`` (:func:`pimc_ray.cli.jobs.embed_parser`; runs/ sits below cli/ and does not import it).

        ``embedding`` is False for ``classify_aoi.py``; ``indices``, ``name`` and ``budget`` have no option in
        the job. ``--dry-run``, ``--update`` and ``--accept-degraded`` say how to run, not
        what (``pimc run execute`` always updates in place), and are ignored.

        Raises:
            InvalidConfigError: one line naming the option (and its spec key) and the fix.
        """
        if not isinstance(args, argparse.Namespace):
            if parser is None:
                raise TypeError("RunSpec.from_args(argv) needs parser=embed_parser() (pimc_ray.cli.jobs)")
            args = parser.parse_args(list(args))
        a = args  # the job's flags, by their attribute names
        classes: dict[str, Any] | None = None
        if a.head is not None or a.head_train_aoi is not None:
            classes = {"head": a.head, "labels_collection": a.labels_collection}
            if a.head_train_aoi is not None:
                classes["train_aoi"] = Region.from_arg(a.head_train_aoi)
        data: dict[str, Any] = {
            "name": name,
            "region": Region.from_arg(a.aoi),
            "period": {"start": a.start, "end": a.end},
            "catalog": {
                "stac_url": a.stac_url,
                "collection": a.collection,
                "convention": a.catalog,
                "max_cloud_cover": a.max_cloud_cover,
                "snapshot": a.snapshot,
            },
            "model": a.checkpoint,
            "precision": a.precision,
            "products": {
                "embedding": embedding,
                "classes": classes,
                "indices": indices,
                "forecast": a.forecast_head,
            },
            "output": a.out,
            "tile_size": a.tile_size,
            "series": {k: getattr(a, k) for k in Series.model_fields},
            "resources": {k: getattr(a, k) for k in Resources.model_fields},
            "budget": budget if budget is not None else {},
        }
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise InvalidConfigError(_one_line(err, flags=True)) from err


# --- one-line errors ----------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _path(loc: Sequence[int | str]) -> str:
    text = "spec"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The spec model that the key path ``loc`` leads into, if it is one."""
    model: type[BaseModel] = RunSpec
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = get_args(annotation) if get_origin(annotation) is not None else (annotation,)
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _one_line(err: ValidationError, *, flags: bool = False) -> str:
    """The first problem of a ValidationError as one line naming the key (and, for a command line, the option)."""
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    key = _path(loc)
    kind, msg, value = first["type"], first["msg"], first.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        keys = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        text = f"unknown key; {hint}the keys of {_path(loc[:-1])} are {', '.join(keys)}"
    elif kind == "missing":
        text = f"missing; add it (the keys: {_DOCS})"
    elif kind in ("value_error", "assertion_error"):
        text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    else:
        shown = repr(value)
        text = f"{msg} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    dotted = ".".join(str(p) for p in loc if not isinstance(p, int))
    flag = next((f for k, f in FLAGS.items() if dotted == k or dotted.startswith(k + ".")), None)
    if flags and flag is not None:
        key = f"{flag} ({key})"
    return " ".join(f"{key}: {text}{more}".split())  # one line, whatever the messages hold


# --- description --------------------------------------------------------------------------------------------


def _shown(arg: str, spec: RunSpec) -> str:
    """A command-line value as printed: a long GeoJSON (a named region's polygon) is summarised."""
    if len(arg) <= 160:
        return arg
    return f"<GeoJSON of {spec.region.label()}, {len(arg) / 1e3:.0f} kB>"


def describe(spec: RunSpec, *, today: dt.date | None = None) -> str:
    """A few lines saying what ``spec`` does: region and its area, dates, products, output, resources, budget,
    and the equivalent command lines (a named region's polygon summarised; :meth:`RunSpec.to_args` has it)."""
    aoi = spec.aoi()
    dates = spec.dates(today)
    minx, miny, maxx, maxy = aoi.bounds
    products = ["embedding"] if spec.products.embedding else []
    if (classes := spec.products.classes) is not None:
        products.append(
            f"classes (head {classes.head})" if classes.head else "classes (head fit on train_aoi)"
        )
    if spec.products.forecast is not None:
        products.append(f"forecast (head {spec.products.forecast})")
    if spec.products.indices:
        products.append("indices")
    res = spec.resources
    caps = [
        f"{v:g} {unit}"
        for v, unit in (
            (spec.budget.max_gpu_hours, "GPU-hours"),
            (spec.budget.max_cpu_hours, "CPU-hours"),
            (spec.budget.max_cost_usd, "USD"),
        )
        if v is not None
    ]
    lines = [
        f"run spec {spec.name or '(unnamed)'}",
        f"  region     {spec.region.label()}: {area_km2(aoi.geometry):,.0f} km² "
        f"(lon {minx:.2f}..{maxx:.2f}, lat {miny:.2f}..{maxy:.2f})",
        f"  period     {spec.period.label()}: {dates.start} to {dates.end} ({dates.days} days)",
        f"  catalog    {spec.catalog.collection} at {spec.catalog.stac_url} "
        f"(convention: {spec.catalog.convention or 'detected from the items'})",
        f"  model      {spec.model or 'random weights'}",
        f"  products   {', '.join(products)}",
        f"  output     {spec.output}",
        f"  tiles      {spec.tile_size} px ({spec.tile_size * 10 / 1000:g} km at 10 m)",
        f"  resources  {res.workers} workers x ({res.cpus_per_worker:g} CPU + {res.read_cpus:g} read CPU, "
        f"{res.gpus_per_worker:g} GPU), batch {res.batch_size}",
        f"  budget     {', '.join(caps) or 'no cap'}",
    ]
    for job, args in spec.commands(today=today):
        lines.append(f"  command    python {job} {shlex.join(_shown(a, spec) for a in args)}")
    return "\n".join(lines)
