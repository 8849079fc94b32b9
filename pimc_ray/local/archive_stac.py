"""STAC items and collections of the sample archive, in the Earth Search v1 or Planetary Computer style.

The items deliberately reproduce the traps of the real catalogs (see :mod:`pimc_ray.data.catalogs`):

* Earth Search: items before baseline 04.00 have DNs without offset, ``earthsearch:boa_offset_applied: false``
  and ``raster:bands`` offset 0. From 04.00 on, most items have DNs *without* the offset and
  ``earthsearch:boa_offset_applied: true``, yet ``raster:bands`` says offset -0.1 (the real catalog's wrong
  value); every sixth of them (phase drawn per tile) keeps ESA's +1000 DNs with the flag false.
* Planetary Computer: ESA's DNs unchanged (every item from 04.00 on carries +1000), no flag and no
  ``raster:bands``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from pyproj import Transformer

from pimc_ray.data.catalogs import BAND_GSD, BANDS, COMMON_NAMES, SCL, get_convention
from pimc_ray.local._noise import hash_uniform, stream_key
from pimc_ray.local.archive_grid import (
    ACQUISITION_TIME,
    BASELINE_04_START,
    ArchiveSpec,
    TileInfo,
    acquisition_dates,
    platform_unit,
    processing_baseline,
)
from pimc_ray.local.archive_scenes import Scene, classes_of, solar_position

__all__ = [
    "COG_MEDIA_TYPE",
    "LABELS_ASSET",
    "LABELS_COLLECTION",
    "RELATIVE_ORBIT",
    "S2_COLLECTION",
    "STAC_VERSION",
    "dn_carries_offset",
    "footprint",
    "label_item",
    "labels_collection",
    "s2_collection",
    "scene_item",
    "scene_item_id",
]

STAC_VERSION = "1.1.0"
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
S2_COLLECTION = "sentinel-2-l2a"
LABELS_COLLECTION = "pimc-sample-labels"
LABELS_ASSET = "labels"
#: Relative orbit of the (single, descending) pass over the three tiles.
RELATIVE_ORBIT = 22

_EXT = "https://stac-extensions.github.io"
_EO, _PROJ, _RASTER = (
    f"{_EXT}/eo/v1.1.0/schema.json",
    f"{_EXT}/projection/v1.1.0/schema.json",
    (f"{_EXT}/raster/v1.1.0/schema.json"),
)
_GRID, _MGRS, _VIEW = (
    f"{_EXT}/grid/v1.1.0/schema.json",
    f"{_EXT}/mgrs/v1.0.0/schema.json",
    (f"{_EXT}/view/v1.0.0/schema.json"),
)
_SAT, _CLASSIFICATION = f"{_EXT}/sat/v1.0.0/schema.json", f"{_EXT}/classification/v2.0.0/schema.json"

# band -> (Earth Search description, Planetary Computer description, centre wavelength um, FWHM um)
_BAND_TEXT: Mapping[str, tuple[str, str, float, float]] = {
    "B02": ("Blue (band 2)", "Band 2 - Blue", 0.49, 0.098),
    "B03": ("Green (band 3)", "Band 3 - Green", 0.56, 0.045),
    "B04": ("Red (band 4)", "Band 4 - Red", 0.665, 0.038),
    "B05": ("Red edge 1 (band 5)", "Band 5 - Vegetation red edge 1", 0.704, 0.019),
    "B06": ("Red edge 2 (band 6)", "Band 6 - Vegetation red edge 2", 0.74, 0.018),
    "B07": ("Red edge 3 (band 7)", "Band 7 - Vegetation red edge 3", 0.783, 0.028),
    "B08": ("NIR 1 (band 8)", "Band 8 - NIR", 0.842, 0.145),
    "B8A": ("NIR 2 (band 8A)", "Band 8A - Vegetation red edge 4", 0.865, 0.033),
    "B11": ("SWIR 1 (band 11)", "Band 11 - SWIR (1.6)", 1.61, 0.143),
    "B12": ("SWIR 2 (band 12)", "Band 12 - SWIR (2.2)", 2.19, 0.242),
}
# SCL class -> s2:*_percentage property counting it
_SCL_PERCENTAGES = {
    3: "s2:cloud_shadow_percentage",
    4: "s2:vegetation_percentage",
    5: "s2:not_vegetated_percentage",
    6: "s2:water_percentage",
    8: "s2:medium_proba_clouds_percentage",
    9: "s2:high_proba_clouds_percentage",
    10: "s2:thin_cirrus_percentage",
}


def dn_carries_offset(spec: ArchiveSpec, tile_id: str, date: dt.date) -> bool:
    """Whether the DNs written for this scene carry ESA's +1000 (``-BOA_ADD_OFFSET``)."""
    if date < BASELINE_04_START:
        return False
    if spec.convention == "planetary-computer":
        return True
    post = [d for d in acquisition_dates(spec) if d >= BASELINE_04_START]
    index = post.index(date) if date in post else (date - BASELINE_04_START).days // spec.revisit_days
    phase = int(6 * hash_uniform(stream_key(spec.seed, "offset-phase", tile_id))[()])
    return (index + phase) % 6 == 0


def scene_item_id(spec: ArchiveSpec, tile_id: str, date: dt.date) -> str:
    """Item id in the convention's style (``S2B_32TQR_20220103_0_L2A`` or ``S2B_MSIL2A_..._T32TQR_...``)."""
    unit = platform_unit(spec, date)
    if spec.convention == "earth-search":
        return f"S2{unit}_{tile_id}_{date:%Y%m%d}_0_L2A"
    sensing, generated = dt.datetime.combine(date, ACQUISITION_TIME), _generated(date)
    return (
        f"S2{unit}_MSIL2A_{sensing:%Y%m%dT%H%M%S}_R{RELATIVE_ORBIT:03d}_T{tile_id}_{generated:%Y%m%dT%H%M%S}"
    )


def scene_item(
    spec: ArchiveSpec,
    tile: TileInfo,
    date: dt.date,
    scene: Scene,
    *,
    hrefs: Mapping[str, str],
    collection_href: str,
) -> dict[str, Any]:
    """The STAC item of one scene.

    Args:
        spec: archive spec (its ``convention`` picks the item style).
        tile: the scene's tile.
        date: acquisition date.
        scene: the rendered scene (for cloud cover and SCL statistics).
        hrefs: canonical band name (``B02`` ... ``SCL``) to the absolute URI of its COG.
        collection_href: absolute URI of the collection JSON.
    """
    geometry, bbox = footprint(tile)
    stats = _scene_statistics(date, scene)
    if spec.convention == "earth-search":
        carries = dn_carries_offset(spec, tile.tile_id, date)
        properties = _earth_search_properties(spec, tile, date, stats, carries)
        claimed_offset = -0.1 if date >= BASELINE_04_START else 0.0  # the catalog's value, right or wrong
        assets = _earth_search_assets(tile, hrefs, claimed_offset)
        extensions = [_EO, _PROJ, _RASTER, _GRID, _MGRS, _VIEW]
    else:
        properties = _planetary_computer_properties(spec, tile, date, stats)
        assets = _planetary_computer_assets(tile, hrefs)
        extensions = [_EO, _SAT, _PROJ]
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": scene_item_id(spec, tile.tile_id, date),
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": [{"rel": "collection", "href": collection_href, "type": "application/json"}],
        "assets": assets,
        "collection": S2_COLLECTION,
    }


def label_item(spec: ArchiveSpec, tile: TileInfo, *, href: str, collection_href: str) -> dict[str, Any]:
    """The STAC item of one tile's land-cover label COG."""
    geometry, bbox = footprint(tile)
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [_PROJ, _RASTER, _CLASSIFICATION, _GRID],
        "id": f"{LABELS_COLLECTION}-{tile.tile_id}",
        "geometry": geometry,
        "bbox": bbox,
        "properties": {
            "datetime": None,
            "start_datetime": f"{spec.year}-01-01T00:00:00Z",
            "end_datetime": f"{spec.year}-12-31T23:59:59Z",
            "proj:epsg": tile.epsg,
            "proj:code": tile.crs,
            "grid:code": f"MGRS-{tile.tile_id}",
        },
        "links": [{"rel": "collection", "href": collection_href, "type": "application/json"}],
        "assets": {LABELS_ASSET: {"href": href, **_label_asset(spec, tile)}},
        "collection": LABELS_COLLECTION,
    }


def s2_collection(spec: ArchiveSpec, tiles: list[TileInfo]) -> dict[str, Any]:
    """The ``sentinel-2-l2a`` collection, with ``item_assets`` in the convention's style."""
    dates = acquisition_dates(spec)
    if spec.convention == "earth-search":
        assets = _earth_search_assets(tiles[0], None, None)
        platforms, constellation = ["sentinel-2a", "sentinel-2b"], "sentinel-2"
    else:
        assets = _planetary_computer_assets(tiles[0], None)
        platforms, constellation = ["Sentinel-2A", "Sentinel-2B"], "Sentinel 2"
    item_assets = {
        key: {k: v for k, v in asset.items() if k not in ("proj:shape", "proj:transform")}
        for key, asset in assets.items()
    }
    return _collection(
        S2_COLLECTION,
        title="Sentinel-2 Level-2A (pimc-ray sample archive)",
        description=(
            "Generated miniature Sentinel-2 L2A archive: seeded land cover, phenology and clouds over the "
            f"miniature MGRS tiles {', '.join(t.tile_id for t in tiles)}, items in the {spec.convention} "
            f"style (seed {spec.seed})."
        ),
        tiles=tiles,
        interval=[_datetime(dates[0]), _datetime(dates[-1])],
        summaries={
            "platform": platforms,
            "constellation": [constellation],
            "instruments": ["msi"],
            "gsd": [10, 20],
        },
        item_assets=item_assets,
    )


def labels_collection(spec: ArchiveSpec, tiles: list[TileInfo]) -> dict[str, Any]:
    """The ``pimc-sample-labels`` collection (one item per tile)."""
    asset = {
        k: v for k, v in _label_asset(spec, tiles[0]).items() if k not in ("proj:shape", "proj:transform")
    }
    return _collection(
        LABELS_COLLECTION,
        title="Land-cover labels of the pimc-ray sample archive",
        description="Land-cover class rasters (10 m, uint8, 0 = nodata) the sample scenes were made from.",
        tiles=tiles,
        interval=[f"{spec.year}-01-01T00:00:00Z", f"{spec.year}-12-31T23:59:59Z"],
        summaries={"classification:classes": _classes(spec)},
        item_assets={LABELS_ASSET: asset},
        extensions=[_CLASSIFICATION],
    )


def footprint(tile: TileInfo) -> tuple[dict[str, Any], list[float]]:
    """``(GeoJSON polygon, bbox)`` of a tile in longitude/latitude (counter-clockwise, 7 decimals)."""
    to_lonlat = _to_lonlat(tile.epsg)
    xmin, ymin, xmax, ymax = tile.bounds
    corners = [(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)]
    ring = [[round(v, 7) for v in to_lonlat.transform(x, y)] for x, y in corners]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}, bbox


# --- conventions ------------------------------------------------------------------------------------------


def _earth_search_properties(
    spec: ArchiveSpec, tile: TileInfo, date: dt.date, stats: Mapping[str, Any], carries: bool
) -> dict[str, Any]:
    baseline = processing_baseline(date)
    created = f"{date + dt.timedelta(days=1):%Y-%m-%d}T06:30:00.000Z"
    zenith, azimuth = solar_position(date)
    return {
        "created": created,
        "platform": f"sentinel-2{platform_unit(spec, date).lower()}",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        **stats,
        "proj:epsg": tile.epsg,
        "proj:code": tile.crs,
        "mgrs:utm_zone": tile.utm_zone,
        "mgrs:latitude_band": tile.latitude_band,
        "mgrs:grid_square": tile.grid_square,
        "grid:code": f"MGRS-{tile.tile_id}",
        "view:sun_azimuth": round(azimuth, 4),
        "view:sun_elevation": round(90.0 - zenith, 4),
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": baseline,
        "s2:product_uri": _product_uri(spec, tile, date),
        "s2:generation_time": _generated(date).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "s2:datatake_type": "INS-NOBS",
        "s2:sequence": "0",
        "datetime": _datetime(date),
        "earthsearch:boa_offset_applied": baseline >= "04.00" and not carries,
        "updated": created,
    }


def _earth_search_assets(
    tile: TileInfo, hrefs: Mapping[str, str] | None, offset: float | None
) -> dict[str, dict[str, Any]]:
    """Assets keyed ``blue`` ... ``scl``; ``offset`` is what ``raster:bands`` claims (None: left out)."""
    keys = get_convention("earth-search").asset_keys
    assets: dict[str, dict[str, Any]] = {}
    for band in BANDS:
        key, gsd = keys[band], BAND_GSD[band]
        description, _, wavelength, fwhm = _BAND_TEXT[band]
        raster = {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15, "spatial_resolution": gsd}
        assets[key] = {
            "type": COG_MEDIA_TYPE,
            "title": f"{description} - {gsd}m",
            "eo:bands": [_eo_band(key, band, description, wavelength, fwhm)],
            "gsd": gsd,
            **_proj_grid(tile, gsd),
            "raster:bands": [raster | {"scale": 0.0001} | ({} if offset is None else {"offset": offset})],
            "roles": ["data", "reflectance"],
        }
    assets[keys[SCL]] = {
        "type": COG_MEDIA_TYPE,
        "title": "Scene classification map (SCL)",
        **_proj_grid(tile, 20),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        "roles": ["data", "reflectance"],
    }
    return _with_hrefs(assets, hrefs, keys)


def _planetary_computer_properties(
    spec: ArchiveSpec, tile: TileInfo, date: dt.date, stats: Mapping[str, Any]
) -> dict[str, Any]:
    zenith, azimuth = solar_position(date)
    return {
        "datetime": _datetime(date),
        "platform": f"Sentinel-2{platform_unit(spec, date)}",
        "proj:epsg": tile.epsg,
        "instruments": ["msi"],
        "s2:mgrs_tile": tile.tile_id,
        "constellation": "Sentinel 2",
        **stats,
        "s2:product_type": "S2MSI2A",
        "sat:orbit_state": "descending",
        "s2:datatake_type": "INS-NOBS",
        "s2:generation_time": _generated(date).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "sat:relative_orbit": RELATIVE_ORBIT,
        "s2:mean_solar_zenith": round(zenith, 4),
        "s2:mean_solar_azimuth": round(azimuth, 4),
        "s2:processing_baseline": processing_baseline(date),
    }


def _planetary_computer_assets(tile: TileInfo, hrefs: Mapping[str, str] | None) -> dict[str, dict[str, Any]]:
    """Assets keyed ``B02`` ... ``SCL``, without ``raster:bands`` (as on the Planetary Computer)."""
    assets: dict[str, dict[str, Any]] = {}
    for band in BANDS:
        gsd = BAND_GSD[band]
        _, description, wavelength, fwhm = _BAND_TEXT[band]
        assets[band] = {
            "type": COG_MEDIA_TYPE,
            "roles": ["data"],
            "title": f"{description} - {gsd}m",
            "eo:bands": [_eo_band(band, band, description, wavelength, fwhm)],
            "gsd": float(gsd),
            **_proj_grid(tile, gsd),
        }
    assets[SCL] = {
        "type": COG_MEDIA_TYPE,
        "roles": ["data"],
        "title": "Scene classfication map (SCL)",  # sic, as in the real catalog
        "gsd": 20.0,
        **_proj_grid(tile, 20),
    }
    return _with_hrefs(assets, hrefs, get_convention("planetary-computer").asset_keys)


def _eo_band(name: str, band: str, description: str, wavelength: float, fwhm: float) -> dict[str, Any]:
    return {
        "name": name,
        "common_name": COMMON_NAMES[band],
        "description": description,
        "center_wavelength": wavelength,
        "full_width_half_max": fwhm,
    }


def _with_hrefs(
    assets: dict[str, dict[str, Any]], hrefs: Mapping[str, str] | None, keys: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Put each asset's ``href`` first (None: ``item_assets`` of a collection, no hrefs)."""
    if hrefs is None:
        return assets
    return {keys[band]: {"href": hrefs[band], **assets[keys[band]]} for band in (*BANDS, SCL)}


def _scene_statistics(date: dt.date, scene: Scene) -> dict[str, Any]:
    """Cloud cover, SCL class percentages and the Earth-Sun factor, shared by both conventions."""
    counts = np.bincount(scene.scl.ravel(), minlength=12)
    total = scene.scl.size
    stats: dict[str, Any] = {"eo:cloud_cover": round(scene.cloud_cover, 4)}
    stats["s2:nodata_pixel_percentage"] = round(100.0 * counts[0] / total, 6)
    for value, name in _SCL_PERCENTAGES.items():
        stats[name] = round(100.0 * counts[value] / total, 6)
    stats["s2:snow_ice_percentage"] = 0.0
    stats["s2:reflectance_conversion_factor"] = round(_earth_sun_factor(date), 8)
    return stats


def _proj_grid(tile: TileInfo, resolution: int) -> dict[str, Any]:
    a, b, c, d, e, f = tile.transform(resolution)[:6]
    return {"proj:shape": list(tile.shape_at(resolution)), "proj:transform": [a, b, c, d, e, f]}


def _label_asset(spec: ArchiveSpec, tile: TileInfo) -> dict[str, Any]:
    return {
        "type": COG_MEDIA_TYPE,
        "title": "Land-cover classes",
        **_proj_grid(tile, 10),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 10}],
        "classification:classes": _classes(spec),
        "roles": ["data", "labels"],
    }


def _classes(spec: ArchiveSpec) -> list[dict[str, Any]]:
    return [
        {"value": value, "name": info.name, "description": info.description, "color_hint": info.color_hint}
        for value, info in classes_of(spec).items()
    ]


def _collection(
    collection_id: str,
    *,
    title: str,
    description: str,
    tiles: list[TileInfo],
    interval: list[str],
    summaries: dict[str, Any],
    item_assets: dict[str, Any],
    extensions: list[str] | None = None,
) -> dict[str, Any]:
    boxes = [footprint(t)[1] for t in tiles]
    west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
    union = [west, south, max(b[2] for b in boxes), max(b[3] for b in boxes)]
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions or [],
        "id": collection_id,
        "title": title,
        "description": description,
        "keywords": ["sentinel-2", "synthetic", "pimc-ray"],
        "license": "CC0-1.0",
        "providers": [{"name": "pimc-ray sample archive", "roles": ["producer", "processor", "host"]}],
        "extent": {"spatial": {"bbox": [union, *boxes]}, "temporal": {"interval": [interval]}},
        "summaries": summaries,
        "item_assets": item_assets,
        "links": [],
    }


def _datetime(date: dt.date) -> str:
    return dt.datetime.combine(date, ACQUISITION_TIME).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _generated(date: dt.date) -> dt.datetime:
    """Fixed processing time of a product: two hours after sensing."""
    return dt.datetime.combine(date, ACQUISITION_TIME).replace(microsecond=0) + dt.timedelta(hours=2)


def _product_uri(spec: ArchiveSpec, tile: TileInfo, date: dt.date) -> str:
    sensing = dt.datetime.combine(date, ACQUISITION_TIME)
    baseline = processing_baseline(date).replace(".", "")
    return (
        f"S2{platform_unit(spec, date)}_MSIL2A_{sensing:%Y%m%dT%H%M%S}_N{baseline}_R{RELATIVE_ORBIT:03d}"
        f"_T{tile.tile_id}_{_generated(date):%Y%m%dT%H%M%S}.SAFE"
    )


def _earth_sun_factor(date: dt.date) -> float:
    """ESA's reflectance conversion factor ``1 / d**2`` (Earth-Sun distance in AU) for the date."""
    doy = date.timetuple().tm_yday
    return float(1.0 / (1.0 - 0.01673 * np.cos(0.0172 * (doy - 4))) ** 2)


@lru_cache(maxsize=4)
def _to_lonlat(epsg: int) -> Transformer:
    return Transformer.from_crs(epsg, 4326, always_xy=True)
