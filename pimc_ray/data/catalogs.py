"""Catalog conventions for Sentinel-2 L2A, as data.

Public catalogs publish the same ESA product with different asset keys and different promises about its digital
numbers (DN). Since processing baseline 04.00 (25 January 2022) L2A DNs carry ``BOA_ADD_OFFSET = -1000``:

    surface reflectance = (DN + BOA_ADD_OFFSET) / 10000

* Earth Search v1 (``earth-search``) re-processed most post-04.00 scenes so that their DNs no longer carry the
  offset, and flags those items with ``earthsearch:boa_offset_applied: true``. Its ``raster:bands`` ``offset``
  of -0.1 is known to be wrong for those items (Element84/earth-search issues 9, 66, 71), so we never read it.
* Planetary Computer (``planetary-computer``) serves ESA's DNs unchanged: every item on or after baseline 04.00
  carries the offset, and no property says so.

:func:`harmonisation` turns one item into the ``(scale, offset)`` that maps its DNs to surface reflectance, so the
offset is removed exactly once whichever catalog an item came from. A new catalog is a new
:class:`CatalogConvention` in :data:`CONVENTIONS`, not a new branch in the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pimc_ray.errors import UnknownCatalogError

__all__ = [
    "BANDS",
    "BAND_GSD",
    "BOA_ADD_OFFSET_DN",
    "COMMON_NAMES",
    "CONVENTIONS",
    "EARTH_SEARCH",
    "OFFSET_BASELINE",
    "PLANETARY_COMPUTER",
    "QUANTIFICATION",
    "SCL",
    "detect_convention",
    "get_convention",
    "harmonisation",
    "parse_baseline",
    "CatalogConvention",
]

#: Reflectance bands in the order every stack uses (10 m: B02 B03 B04 B08; 20 m: the rest).
BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: The scene classification layer (20 m, uint8).
SCL = "SCL"
#: Native ground sampling distance of each band, in metres.
BAND_GSD: Mapping[str, int] = MappingProxyType(
    {
        "B02": 10,
        "B03": 10,
        "B04": 10,
        "B08": 10,
        "B05": 20,
        "B06": 20,
        "B07": 20,
        "B8A": 20,
        "B11": 20,
        "B12": 20,
        "SCL": 20,
    }
)
#: Common names (STAC ``eo:bands``) of each band.
COMMON_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "B02": "blue",
        "B03": "green",
        "B04": "red",
        "B05": "rededge",
        "B06": "rededge",
        "B07": "rededge",
        "B08": "nir",
        "B8A": "nir08",
        "B11": "swir16",
        "B12": "swir22",
    }
)

#: Processing baseline from which L2A DNs carry BOA_ADD_OFFSET.
OFFSET_BASELINE = (4, 0)
#: BOA_ADD_OFFSET in DN (the same for every band in every baseline so far).
BOA_ADD_OFFSET_DN = -1000
#: BOA_QUANTIFICATION_VALUE: DN per unit reflectance.
QUANTIFICATION = 10000


@dataclass(frozen=True)
class CatalogConvention:
    """How one catalog names Sentinel-2 L2A assets and what its DNs mean."""

    name: str
    """Short name used in configuration (``earth-search``, ``planetary-computer``)."""
    asset_keys: Mapping[str, str]
    """Canonical band name (``B04``, ``SCL``) to the catalog's asset key (``red``, ``scl``)."""
    offset_applied_property: str | None = None
    """Item property that is true when the provider already removed BOA_ADD_OFFSET from the DNs."""
    default_collection: str = "sentinel-2-l2a"
    """Collection id of Sentinel-2 L2A in this catalog."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Free-form notes (documentation URL, quirks)."""

    def asset_key(self, band: str) -> str:
        """The catalog's asset key for a canonical band name."""
        try:
            return self.asset_keys[band]
        except KeyError as err:
            raise UnknownCatalogError(
                f"band {band!r} has no asset in the {self.name!r} convention; use one of {sorted(self.asset_keys)}"
            ) from err


EARTH_SEARCH = CatalogConvention(
    name="earth-search",
    asset_keys=MappingProxyType(
        {
            "B02": "blue",
            "B03": "green",
            "B04": "red",
            "B05": "rededge1",
            "B06": "rededge2",
            "B07": "rededge3",
            "B08": "nir",
            "B8A": "nir08",
            "B11": "swir16",
            "B12": "swir22",
            "SCL": "scl",
        }
    ),
    offset_applied_property="earthsearch:boa_offset_applied",
    extra={"url": "https://earth-search.aws.element84.com/v1"},
)

PLANETARY_COMPUTER = CatalogConvention(
    name="planetary-computer",
    asset_keys=MappingProxyType({b: b for b in (*BANDS, SCL)}),
    offset_applied_property=None,
    extra={"url": "https://planetarycomputer.microsoft.com/api/stac/v1"},
)

CONVENTIONS: Mapping[str, CatalogConvention] = MappingProxyType(
    {c.name: c for c in (EARTH_SEARCH, PLANETARY_COMPUTER)}
)


def get_convention(name: str) -> CatalogConvention:
    """Look a convention up by name."""
    try:
        return CONVENTIONS[name]
    except KeyError as err:
        raise UnknownCatalogError(
            f"unknown catalog convention {name!r}; use one of {sorted(CONVENTIONS)}"
        ) from err


def detect_convention(item: Mapping[str, Any]) -> CatalogConvention:
    """Pick the convention whose asset keys an item (a STAC item dict) carries.

    Raises:
        UnknownCatalogError: if no known convention names the item's red and SCL assets.
    """
    assets = item.get("assets", {})
    for convention in CONVENTIONS.values():
        if convention.asset_keys["B04"] in assets and convention.asset_keys[SCL] in assets:
            return convention
    raise UnknownCatalogError(
        f"item {item.get('id')!r} has assets {sorted(assets)}, which match no known Sentinel-2 L2A convention "
        f"({', '.join(CONVENTIONS)}); pass catalog=<name> or add a CatalogConvention"
    )


def parse_baseline(value: str | None) -> tuple[int, int]:
    """``"04.00"`` -> ``(4, 0)``. A missing baseline is treated as pre-04.00 (the property predates 04.00)."""
    if value in (None, ""):
        return (0, 0)
    major, _, minor = str(value).partition(".")
    try:
        return (int(major), int(minor or 0))
    except ValueError as err:
        raise UnknownCatalogError(
            f"unparsable s2:processing_baseline {value!r}; expected a string like '04.00'"
        ) from err


def harmonisation(item: Mapping[str, Any], convention: CatalogConvention) -> tuple[float, float]:
    """``(scale, offset)`` such that ``reflectance = DN * scale + offset`` for every band of ``item``.

    The offset is -0.1 exactly when the item's baseline is 04.00 or later and the provider has not removed
    BOA_ADD_OFFSET already; ``raster:bands`` offsets are ignored because catalogs get them wrong.
    """
    props = item.get("properties", {})
    carries_offset = parse_baseline(props.get("s2:processing_baseline")) >= OFFSET_BASELINE
    if convention.offset_applied_property is not None and props.get(convention.offset_applied_property):
        carries_offset = False
    offset = BOA_ADD_OFFSET_DN / QUANTIFICATION if carries_offset else 0.0
    return 1.0 / QUANTIFICATION, offset
