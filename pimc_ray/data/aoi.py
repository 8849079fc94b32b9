"""Areas of interest: loose inputs (bbox, GeoJSON, file, ``__geo_interface__``) normalised once, validated once.

An :class:`AOI` is a valid, non-empty (multi)polygon in WGS84 longitude/latitude. Everything downstream (search,
tile grids, stacking) takes an :class:`AOI`, never the raw input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import shapely
import shapely.errors
import shapely.geometry
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from pimc_ray.errors import InvalidAOIError, StorageError
from pimc_ray.storage import read_bytes

__all__ = [
    "AOI",
    "load_aoi",
    "validate_geometry",
    "GeoInterface",
]


@runtime_checkable
class GeoInterface(Protocol):
    """Anything with a ``__geo_interface__`` (shapely, geopandas, pystac items...)."""

    @property
    def __geo_interface__(self) -> Mapping[str, Any]: ...


_FIX = "pass a bbox 'minx,miny,maxx,maxy' in degrees, a GeoJSON Polygon/MultiPolygon, or a path to a .geojson file"


@dataclass(frozen=True)
class AOI:
    """A validated area of interest in EPSG:4326 (longitude, latitude)."""

    geometry: BaseGeometry
    """A valid, non-empty Polygon or MultiPolygon in lon/lat degrees."""

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(minx, miny, maxx, maxy)`` in degrees."""
        return tuple(float(v) for v in self.geometry.bounds)  # type: ignore[return-value]

    @property
    def __geo_interface__(self) -> Mapping[str, Any]:
        return shapely.geometry.mapping(self.geometry)

    def to_crs(self, epsg: int) -> BaseGeometry:
        """The AOI's geometry projected to ``EPSG:epsg`` (e.g. a UTM zone)."""
        transformer = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_epsg(epsg), always_xy=True)
        return shapely.transform(self.geometry, transformer.transform, interleaved=False)


def _from_bbox(values: Sequence[float]) -> BaseGeometry:
    if len(values) != 4:
        raise InvalidAOIError(
            f"a bbox needs 4 numbers (minx, miny, maxx, maxy), got {len(values)}: {values!r}"
        )
    minx, miny, maxx, maxy = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise InvalidAOIError(f"bbox {values!r} holds a non-finite number; {_FIX}")
    if -180 <= maxx < 0 < minx <= 180 and miny < maxy:  # east to west: GeoJSON's bbox across the antimeridian
        raise InvalidAOIError(
            f"bbox {values!r} crosses the antimeridian (minx {minx:g} > maxx {maxx:g}), which one AOI cannot: map "
            f"it as two runs, {minx:g},{miny:g},180,{maxy:g} and -180,{miny:g},{maxx:g},{maxy:g}"
        )
    if minx >= maxx or miny >= maxy:
        raise InvalidAOIError(
            f"bbox {values!r} is empty or reversed: it needs minx < maxx and miny < maxy (lon/lat degrees)"
        )
    return shapely.geometry.box(minx, miny, maxx, maxy)


def _from_geojson(obj: Mapping[str, Any]) -> BaseGeometry:
    kind = obj.get("type")
    if kind == "FeatureCollection":
        features = obj.get("features") or []
        if not features:
            raise InvalidAOIError(f"the GeoJSON FeatureCollection has no features; {_FIX}")
        return shapely.unary_union([_from_geojson(f) for f in features])
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            raise InvalidAOIError(f"the GeoJSON Feature has no geometry; {_FIX}")
        return _from_geojson(geometry)
    try:
        return shapely.geometry.shape(obj)
    except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as err:
        raise InvalidAOIError(f"not a GeoJSON geometry ({err}); {_FIX}") from err


def _from_string(text: str) -> BaseGeometry:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return _from_geojson(json.loads(stripped))
        except json.JSONDecodeError as err:
            raise InvalidAOIError(f"the AOI text is not valid JSON ({err.msg}); {_FIX}") from err
    parts = stripped.replace(" ", ",").split(",")
    parts = [p for p in parts if p]
    if len(parts) == 4:
        try:
            numbers = [float(p) for p in parts]
        except ValueError as err:
            raise InvalidAOIError(f"bbox {text!r} is not four numbers; {_FIX}") from err
        return _from_bbox(numbers)
    if "://" in stripped or Path(stripped).suffix.lower() in {".json", ".geojson"} or Path(stripped).exists():
        return _from_file(stripped)
    raise InvalidAOIError(f"cannot read an AOI from {text!r}; {_FIX}")


def _from_file(uri: str | Path) -> BaseGeometry:
    """The geometry of a GeoJSON file: a local path or a URI (``s3://bucket/areas/aoi.geojson``)."""
    try:
        data = read_bytes(uri)
    except StorageError as err:
        raise InvalidAOIError(f"AOI file {str(uri)!r}: {err}; {_FIX}") from err
    try:
        return _from_geojson(json.loads(data))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidAOIError(f"AOI file {str(uri)!r} is not valid GeoJSON ({err}); {_FIX}") from err


def load_aoi(like: Any) -> AOI:
    """Normalise any AOI-like input into a validated :class:`AOI`.

    Accepts an :class:`AOI`, a shapely geometry, anything with ``__geo_interface__``, a GeoJSON mapping
    (geometry, Feature or FeatureCollection), a bbox sequence, a ``"minx,miny,maxx,maxy"`` string, a GeoJSON
    string, or a GeoJSON file (a local path or a URI). Coordinates are lon/lat degrees (EPSG:4326).

    Raises:
        InvalidAOIError: if the input is not a non-empty, valid polygon inside lon/lat bounds.
    """
    if isinstance(like, AOI):
        return like
    if isinstance(like, BaseGeometry):
        geometry = like
    elif isinstance(like, Path):
        geometry = _from_file(like)
    elif isinstance(like, str):
        geometry = _from_string(like)
    elif isinstance(like, Mapping):
        geometry = _from_geojson(like)
    elif isinstance(like, GeoInterface):
        geometry = _from_geojson(like.__geo_interface__)
    elif isinstance(like, Sequence):
        geometry = _from_bbox(like)
    else:
        raise InvalidAOIError(f"cannot use a {type(like).__name__} as an AOI; {_FIX}")
    return AOI(validate_geometry(geometry))


def validate_geometry(geometry: BaseGeometry) -> BaseGeometry:
    """Check that ``geometry`` is a usable lon/lat AOI and return it.

    Raises:
        InvalidAOIError: naming the problem (empty, not a polygon, self-intersecting, out of range, crossing the
            antimeridian) and the fix.
    """
    if geometry.is_empty:
        raise InvalidAOIError(f"the AOI is empty; {_FIX}")
    if geometry.geom_type not in {"Polygon", "MultiPolygon"}:
        raise InvalidAOIError(
            f"the AOI is a {geometry.geom_type}, not a Polygon or MultiPolygon; buffer points or lines into "
            "polygons first"
        )
    if not geometry.is_valid:
        reason = shapely.is_valid_reason(geometry)
        raise InvalidAOIError(
            f"the AOI polygon is invalid ({reason}); fix its ring (e.g. shapely.make_valid) so it does not "
            "self-intersect"
        )
    if geometry.area == 0:
        raise InvalidAOIError(f"the AOI has zero area; {_FIX}")
    minx, miny, maxx, maxy = geometry.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise InvalidAOIError(
            f"the AOI bounds {geometry.bounds} are outside lon [-180, 180] / lat [-90, 90]; coordinates must be "
            "WGS84 degrees in lon, lat order"
        )
    if maxx - minx > 180:
        raise InvalidAOIError(
            "the AOI spans more than 180 degrees of longitude, which usually means it crosses the antimeridian; "
            "split it into two polygons on either side of 180 degrees and run each"
        )
    return geometry
