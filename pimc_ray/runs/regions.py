"""Named regions of run specs: Natural Earth countries and continents, and their areas.

A run spec may name its region instead of drawing it: a country (``France``, or its ISO 3166 alpha-3 code ``FRA``,
case-insensitive) or a continent (``Europe``, ``Africa``, ``Asia``, ``North America``, ``South America``,
``Oceania``, ``Antarctica``). The polygons are Natural Earth's 1:110m "Admin 0 - Countries" (public domain), the
copy geopandas 0.14.4 ships as ``naturalearth_lowres``, vendored beside this module as
``naturalearth_lowres.geojson`` by ``infra/regions/build_regions.py`` (its docstring says how; the licence note is
``naturalearth_lowres.LICENSE.txt``). At 1:110m a coastline is good to about 10 km: fine to choose the tiles of a
country or a continent, not to clip pixels at a border.

What a name means, where Natural Earth alone would surprise:

* a continent is the union of the countries Natural Earth files under it;
* ``Europe`` is clipped to :data:`CONTINENT_BOUNDS` (lon -25..60, lat 34..82): Natural Earth files all of Russia
  under Europe, so without the clip Europe would run to the Pacific (and across the antimeridian). 60 E stands for
  the Urals; 82 N keeps Svalbard and Franz Josef Land. Turkey, Cyprus and Kazakhstan are Asia in Natural Earth and
  stay out. Europe so defined covers about 9.9e6 km², and ``Asia`` has no Siberia (name a bbox or GeoJSON for it);
* ``France`` is metropolitan France with Corsica (about 5.6e5 km²): Natural Earth's France also holds French
  Guiana, which the vendored file splits out as its own feature ``French Guiana`` (``GUF``, South America);
* regions that cross the antimeridian (``Russia``, ``Fiji``, ``Oceania``, ``Antarctica``) are refused: an AOI must
  lie on one side of it (:func:`pimc_ray.data.aoi.validate_geometry`); name a bbox or a GeoJSON of one side.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import shapely
import shapely.geometry
from shapely.geometry.base import BaseGeometry

from pimc_ray.errors import InvalidConfigError

__all__ = [
    "CONTINENT_BOUNDS",
    "REGIONS_FILE",
    "Country",
    "area_km2",
    "countries",
    "region_geometry",
    "region_names",
]

#: The vendored Natural Earth countries (a resource of this package).
REGIONS_FILE = "naturalearth_lowres.geojson"

#: Continents clipped to a lon/lat box (minx, miny, maxx, maxy); see the module's docstring for why.
CONTINENT_BOUNDS: dict[str, tuple[float, float, float, float]] = {"Europe": (-25.0, 34.0, 60.0, 82.0)}


@dataclass(frozen=True)
class Country:
    """One feature of the vendored file."""

    name: str
    """Natural Earth's short name (``France``, ``Bosnia and Herz.``, ``United States of America``)."""
    iso_a3: str
    """ISO 3166-1 alpha-3 code, or ``-99`` where Natural Earth has none (Kosovo)."""
    continent: str
    """Natural Earth's continent (``Europe``, ``Asia``, ..., ``Seven seas (open ocean)``)."""
    geometry: BaseGeometry
    """A Polygon or MultiPolygon in lon/lat degrees."""


@lru_cache(maxsize=1)
def countries() -> tuple[Country, ...]:
    """The vendored countries, read once per process."""
    text = resources.files(__package__).joinpath(REGIONS_FILE).read_text(encoding="utf-8")
    return tuple(
        Country(
            name=f["properties"]["name"],
            iso_a3=f["properties"]["iso_a3"],
            continent=f["properties"]["continent"],
            geometry=shapely.geometry.shape(f["geometry"]),
        )
        for f in json.loads(text)["features"]
    )


@lru_cache(maxsize=1)
def _index() -> dict[str, tuple[str, str]]:
    """Lower-cased name or ISO code -> ``(kind, canonical name)``, kind ``country`` or ``continent``."""
    index: dict[str, tuple[str, str]] = {}
    for c in countries():
        index[c.continent.casefold()] = ("continent", c.continent)
    for c in countries():
        index.setdefault(c.name.casefold(), ("country", c.name))
        if not c.iso_a3.startswith("-"):
            index.setdefault(c.iso_a3.casefold(), ("country", c.name))
    return index


def region_names() -> list[str]:
    """Every name a spec may give: the continents, then the countries, each as Natural Earth spells it."""
    continents = sorted({c.continent for c in countries()})
    return continents + sorted(c.name for c in countries())


@lru_cache(maxsize=64)
def _geometry(kind: str, name: str) -> BaseGeometry:
    if kind == "country":
        return next(c.geometry for c in countries() if c.name == name)
    geometry = shapely.union_all([c.geometry for c in countries() if c.continent == name])
    if name in CONTINENT_BOUNDS:
        geometry = geometry.intersection(shapely.geometry.box(*CONTINENT_BOUNDS[name]))
    return geometry


def region_geometry(name: str) -> BaseGeometry:
    """The lon/lat (multi)polygon of a country (name or ISO A3 code) or a continent, case-insensitive.

    Raises:
        InvalidConfigError: an unknown name (naming the closest ones), or a region across the antimeridian.
    """
    key = name.strip().casefold()
    found = _index().get(key)
    if found is None:
        names = region_names()
        close = difflib.get_close_matches(key, [n.casefold() for n in names], n=3, cutoff=0.6)
        spelled = [next(n for n in names if n.casefold() == c) for c in close]
        hint = f"did you mean {' or '.join(repr(s) for s in spelled)}? " if spelled else ""
        raise InvalidConfigError(
            f"unknown region {name!r}; {hint}name a Natural Earth country (or its ISO A3 code) or a continent "
            f"({', '.join(n for n in names[:8])}), or give a bbox or a GeoJSON file"
        )
    kind, canonical = found
    geometry = _geometry(kind, canonical)
    minx, _, maxx, _ = geometry.bounds
    if maxx - minx > 180:
        raise InvalidConfigError(
            f"region {name!r} crosses the antimeridian (lon {minx:.0f}..{maxx:.0f}), which an AOI cannot; give a "
            "bbox or a GeoJSON of the part on one side of 180 degrees instead"
        )
    return geometry


def area_km2(geometry: Any) -> float:
    """Geodesic area in km² of a lon/lat (multi)polygon, on the WGS84 ellipsoid (:class:`pyproj.Geod`)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    polygons = getattr(geometry, "geoms", [geometry])
    oriented = [shapely.geometry.polygon.orient(p, sign=1.0) for p in polygons]  # shells counter-clockwise
    return sum(geod.geometry_area_perimeter(p)[0] for p in oriented) / 1e6
