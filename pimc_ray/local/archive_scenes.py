"""Scenes of the sample archive: land cover, phenology, spectra, clouds and SCL, as pure functions.

A scene is rendered in four steps, each a function of ``(seed, tile, date)`` only:

1. **Land cover** (:func:`label_raster`): a domain-warped Voronoi tessellation of 420 m "macro" cells, each
   farmland, forest, lake or village (every 3 x 3 block of macro cells holds each of the nine kinds once, so
   a 256-pixel tile holds every class), with farmland cut into 180 m jittered-grid fields of four crops.
2. **Surface reflectance**: per pixel, a linear mix ``g * vegetation + (1 - g) * background`` of two spectra,
   where the green fraction ``g`` follows a per-class double-logistic season shifted by up to two weeks per
   field, scaled by a per-field amplitude, and cut by mowing on grassland; water and built-up have their own
   spectra.
3. **Atmosphere**: clouds are thresholded multi-octave value noise (smooth blobs), composited as bright
   semi-opaque layers; their shadows are the same field displaced away from the sun and darken the ground;
   some dates carry a thin cirrus veil.
4. **Quantisation and SCL**: reflectance is rounded to DN / 10000; SCL at 20 m flags cloud shadow (3), medium
   and high probability cloud (8, 9), thin cirrus (10), else vegetation (4), not vegetated (5) or water (6).

Landscape and clouds are anchored to world coordinates per UTM zone, so tiles 32TQR and 32TQS join seamlessly.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pimc_ray.data.catalogs import BANDS, QUANTIFICATION, SCL
from pimc_ray.local._noise import fbm, hash_uniform, jittered_voronoi, stream_key
from pimc_ray.local.archive_grid import (
    ACQUISITION_TIME,
    ZONE32_EAST_EDGE,
    ZONE33_WEST_EDGE,
    ArchiveSpec,
    TileInfo,
    tile_info,
)

__all__ = [
    "BANDS_10M",
    "BANDS_20M",
    "CLASSES",
    "CLASS_SETS",
    "MAX_DN",
    "elevation",
    "classes_of",
    "label_raster",
    "render_scene",
    "solar_position",
    "ClassInfo",
    "Scene",
]

#: Bands stored at 10 m, and at 20 m, in :data:`pimc_ray.data.catalogs.BANDS` order.
BANDS_10M: tuple[str, ...] = ("B02", "B03", "B04", "B08")
BANDS_20M: tuple[str, ...] = ("B05", "B06", "B07", "B8A", "B11", "B12")
#: Largest harmonised DN a scene holds, so that DN + 1000 still fits in uint16.
MAX_DN = 65535 - 1000
#: Approximate centre of the three tiles (for the sun's position).
SITE_LAT, SITE_LON = 45.5, 12.0

_I10 = [BANDS.index(b) for b in BANDS_10M]
_I20 = [BANDS.index(b) for b in BANDS_20M]
_RED, _NIR = BANDS.index("B04"), BANDS.index("B08")


@dataclass(frozen=True)
class ClassInfo:
    """One land-cover class of the label rasters."""

    name: str
    """Machine name (letters, digits, ``_``), as in the STAC classification extension."""
    colour: tuple[int, int, int]
    """Display colour, RGB 0-255."""
    description: str
    """What the class is and how its season looks."""

    @property
    def color_hint(self) -> str:
        """Colour as the classification extension's ``color_hint`` (``RRGGBB``)."""
        return "".join(f"{c:02X}" for c in self.colour)


#: Land-cover classes by id; 0 is nodata.
CLASSES: Mapping[int, ClassInfo] = MappingProxyType(
    {
        1: ClassInfo(
            "winter_cereal",
            (230, 190, 60),
            "Winter wheat or barley: sown in October, green in winter, peaks April-May, harvested in June.",
        ),
        2: ClassInfo(
            "summer_crop",
            (250, 120, 20),
            "Maize: bare until May, emerges in June, peaks in July-August, harvested in September.",
        ),
        3: ClassInfo(
            "grassland",
            (140, 210, 90),
            "Meadow: green from March to November, mown three times (late May, early July, early September).",
        ),
        4: ClassInfo(
            "deciduous_forest",
            (30, 130, 40),
            "Broadleaf forest: leaf-out in late April, leaf-fall in October, bare crowns over litter.",
        ),
        5: ClassInfo("conifer_forest", (10, 70, 40), "Evergreen needleleaf forest: dark and green all year."),
        6: ClassInfo(
            "water",
            (40, 90, 200),
            "Lakes: dark in NIR and SWIR (NDVI < 0), turbidity varies with the season.",
        ),
        7: ClassInfo("built_up", (200, 40, 40), "Villages: bright flat spectrum with some gardens."),
        8: ClassInfo(
            "bare_soil", (150, 110, 70), "Fallow or ploughed land: soil all year, sparse weeds in summer."
        ),
        9: ClassInfo(
            "orchard",
            (170, 90, 160),
            "Young fruit orchard: sparse deciduous trees over weeded soil rows, the forest's season on a "
            "darker floor (class set 'level' only).",
        ),
        10: ClassInfo(
            "grass_ley",
            (200, 230, 120),
            "Temporary grass-clover ley in the crop rotation: grassland's season and cuts on a lower canopy "
            "(class set 'level' only).",
        ),
    }
)
#: The classes of each class set (``ArchiveSpec.class_set``).
CLASS_SETS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"shape": (1, 2, 3, 4, 5, 6, 7, 8), "level": (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}
)


def classes_of(spec: ArchiveSpec) -> dict[int, ClassInfo]:
    """The classes an archive of ``spec`` holds, by id."""
    return {c: CLASSES[c] for c in CLASS_SETS[spec.class_set]}


# Spectra in BANDS order (B02 B03 B04 B05 B06 B07 B08 B8A B11 B12), surface reflectance.
_VEG = np.array([0.030, 0.070, 0.035, 0.100, 0.280, 0.370, 0.410, 0.430, 0.220, 0.110], np.float32)
_NEEDLE = np.array([0.020, 0.045, 0.024, 0.070, 0.180, 0.240, 0.265, 0.275, 0.130, 0.060], np.float32)
_SOIL = np.array([0.075, 0.105, 0.135, 0.155, 0.175, 0.190, 0.205, 0.215, 0.290, 0.240], np.float32)
_LITTER = np.array([0.035, 0.055, 0.070, 0.095, 0.125, 0.145, 0.160, 0.170, 0.200, 0.130], np.float32)
_WATER = np.array([0.055, 0.060, 0.040, 0.028, 0.016, 0.013, 0.011, 0.009, 0.005, 0.004], np.float32)
_URBAN = np.array([0.100, 0.110, 0.125, 0.135, 0.145, 0.150, 0.160, 0.165, 0.210, 0.190], np.float32)
_CLOUD = np.array([0.440, 0.440, 0.450, 0.460, 0.470, 0.470, 0.480, 0.480, 0.370, 0.270], np.float32)
# Relative path reflectance of an aerosol residual per band (about (lambda / 490 nm) ** -1.5).
_AEROSOL_SHAPE = np.array([1.00, 0.77, 0.62, 0.55, 0.50, 0.46, 0.42, 0.39, 0.20, 0.10], np.float32)
_CIRRUS = np.array([0.080, 0.070, 0.060, 0.055, 0.050, 0.050, 0.045, 0.045, 0.030, 0.020], np.float32)

# Vegetation and background spectrum of each class id (row 0: nodata, never drawn).
_VEG_OF_CLASS = np.stack([_VEG, _VEG, _VEG, _VEG, _VEG, _NEEDLE, _VEG, _VEG, _VEG, _VEG, _VEG])
_BACKGROUND_OF_CLASS = np.stack(
    [_SOIL, _SOIL, _SOIL, _SOIL, _LITTER, _LITTER, _WATER, _URBAN, _SOIL, _SOIL, _SOIL]
)

# Green fraction g(t) = base + a1 L((t-s1)/r1) - a2 L((t-s2)/r2) + a3 L((t-s3)/r3), L the logistic and t
# the day of year; then g * amplitude (per field), clipped to [0, 0.97]. Columns:
#   base   a1     s1     r1    a2     s2     r2    a3     s3     r3
# fmt: off
_PHENOLOGY = np.array([
    [0.00, 0.00, 100.0, 10.0, 0.00, 250.0, 10.0, 0.00, 300.0, 10.0],  # 0 nodata
    [0.22, 0.66,  82.0,  8.0, 0.88, 172.0,  6.0, 0.20, 300.0,  8.0],  # 1 winter cereal (+ autumn sowing)
    [0.03, 0.87, 168.0,  7.0, 0.90, 252.0,  7.0, 0.00, 300.0, 10.0],  # 2 summer crop
    [0.45, 0.42,  80.0, 10.0, 0.40, 305.0, 12.0, 0.00, 300.0, 10.0],  # 3 grassland (before mowing)
    [0.12, 0.83, 112.0,  6.0, 0.83, 292.0,  8.0, 0.00, 300.0, 10.0],  # 4 deciduous forest
    [0.76, 0.10, 105.0, 12.0, 0.10, 285.0, 12.0, 0.00, 300.0, 10.0],  # 5 conifer forest
    [0.00, 0.00, 100.0, 10.0, 0.00, 250.0, 10.0, 0.00, 300.0, 10.0],  # 6 water
    [0.55, 0.45,  95.0, 10.0, 0.45, 290.0, 10.0, 0.00, 300.0, 10.0],  # 7 built-up (x garden fraction)
    [0.03, 0.08, 130.0, 12.0, 0.08, 240.0, 12.0, 0.00, 300.0, 10.0],  # 8 bare soil (weeds)
    [0.05, 0.60, 112.0,  6.0, 0.60, 292.0,  8.0, 0.00, 300.0, 10.0],  # 9 orchard: 4's season, sparse trees
    [0.15, 0.42,  80.0, 10.0, 0.40, 305.0, 12.0, 0.00, 300.0, 10.0],  # 10 grass ley: 3's, 0.3 lower
], dtype=np.float32)
# fmt: on
_MOWING_DOY = np.array([145.0, 190.0, 245.0], np.float32)
_MOWING_DEPTH, _MOWING_RECOVERY_DAYS = 0.55, 14.0
_NEVER = 9999.0  # day of a cut that does not happen
# Per-parcel variation (fields; forest, lake and village cells): onset +-_ONSET_DAYS, end of season
# +-_LENGTH_DAYS more, the green fraction scaled by _AMPLITUDE; shares of pastures and of catch crops.
_ONSET_DAYS, _LENGTH_DAYS = 21.0, 14.0
_NOISE_ABS, _NOISE_REL = 0.005, 0.02
_AMPLITUDE = (0.65, 1.05)
_PASTURE_SHARE, _CATCH_SHARE = 0.3, 0.4

# Terrain: the plain in the west (32TQR, 60-120 m) rises east into the foothills (33TTL, 700-900 m). Seasons come
# later uphill, by Hopkins' bioclimatic law about 4 days per 122 m: sowing, green-up, cuts, harvest and leaf-fall
# of 33TTL run about three weeks behind 32TQR's. Elevation = plain + rise x L((easting from 12 E - centre) /
# width) + hills (+-60 m of fractal noise).
_PLAIN_M, _RISE_M, _SLOPE_CENTRE_M, _SLOPE_WIDTH_M, _HILLS_M = 60.0, 840.0, -800.0, 700.0, 120.0
_DELAY_DAYS_PER_M = 4.0 / 122.0

_MACRO_CELL, _WARP_M = 420.0, 110.0  # farmland fields: ArchiveSpec.field_size
# Kinds of the nine macro cells of each 3 x 3 block (0: farmland cut into fields).
_MACRO_KINDS = np.array([0, 0, 0, 0, 0, 4, 5, 6, 7], dtype=np.uint8)
# Crops of farmland fields and their cumulative shares, per class set.
_FIELD_CLASSES = {
    "shape": np.array([1, 2, 3, 8], dtype=np.uint8),
    "level": np.array([1, 2, 3, 8, 9, 10], dtype=np.uint8),
}
_FIELD_CUMULATIVE = {
    "shape": np.array([0.30, 0.60, 0.85], dtype=np.float64),
    "level": np.array([0.20, 0.40, 0.55, 0.70, 0.85], dtype=np.float64),
}
#: Grass classes: mown, and grazed as pasture.
_GRASS = (3, 10)

_CLOUD_SPACING, _CIRRUS_SPACING, _CLOUD_EDGE = 1000.0, 3000.0, 0.12
_SHADOW_DEPTH = 0.6
# Truth thresholds (10 m) and SCL thresholds (on 2 x 2 block means at 20 m).
_CLOUD_TRUE, _CIRRUS_TRUE, _SHADOW_TRUE = 0.05, 0.2, 0.2
_SCL_MEDIUM, _SCL_HIGH, _SCL_CIRRUS, _SCL_SHADOW = 0.2, 0.5, 0.3, 0.45


@dataclass(frozen=True, eq=False)
class Scene:
    """One rendered acquisition of one tile: what the COGs of an item hold, plus the truth behind SCL."""

    tile_id: str
    """MGRS tile id."""
    date: dt.date
    """Acquisition date."""
    reflectance: NDArray[np.float32]
    """``(band, y, x)`` surface reflectance at 10 m in :data:`~pimc_ray.data.catalogs.BANDS` order, exactly
    ``DN / 10000`` of the harmonised DNs; 20 m bands are their 20 m values repeated over 2 x 2 pixels
    (nearest-neighbour upsampling)."""
    reflectance_20m: NDArray[np.float32]
    """``(band, y/2, x/2)`` the :data:`BANDS_20M` at their native 20 m grid (what their COGs hold)."""
    scl: NDArray[np.uint8]
    """``(y/2, x/2)`` scene classification layer at 20 m."""
    cloud_mask: NDArray[np.bool_]
    """``(y, x)`` true cloud at 10 m: opaque cloud or thin cirrus (what ``eo:cloud_cover`` counts)."""
    cirrus_mask: NDArray[np.bool_]
    """``(y, x)`` true thin cirrus at 10 m (a part of ``cloud_mask``)."""
    shadow_mask: NDArray[np.bool_]
    """``(y, x)`` true cloud shadow at 10 m, outside ``cloud_mask``."""

    @property
    def cloud_cover(self) -> float:
        """Percentage of cloudy 10 m pixels (``eo:cloud_cover``)."""
        return float(100.0 * self.cloud_mask.mean())

    @property
    def clear_mask(self) -> NDArray[np.bool_]:
        """``(y, x)`` pixels neither cloudy nor shadowed."""
        return ~(self.cloud_mask | self.shadow_mask)

    def band(self, name: str) -> NDArray[np.float32]:
        """One band's reflectance on the 10 m grid, ``(y, x)``."""
        return self.reflectance[BANDS.index(name)]

    def native(self, name: str) -> NDArray[np.float32]:
        """One band's reflectance at its native resolution (10 or 20 m), as written to its COG."""
        if name in BANDS_20M:
            return self.reflectance_20m[BANDS_20M.index(name)]
        return self.band(name)

    def dn(self, name: str, *, boa_offset: bool = False) -> NDArray[np.uint16] | NDArray[np.uint8]:
        """The array written to the COG of band ``name`` (or ``"SCL"``).

        Args:
            name: canonical band name (``B04``) or ``SCL``.
            boa_offset: add ESA's ``-BOA_ADD_OFFSET`` (1000) to the DNs, as baseline >= 04.00 products do.
        """
        if name == SCL:
            return self.scl
        dn = np.rint(self.native(name).astype(np.float64) * QUANTIFICATION)
        return (dn + (1000 if boa_offset else 0)).astype(np.uint16)


def label_raster(spec: ArchiveSpec, tile_id: str) -> NDArray[np.uint8]:
    """Land-cover class ids of a tile, ``(y, x)`` uint8 at 10 m (keys of :data:`CLASSES`; 0 is nodata)."""
    return _landscape(spec, tile_info(spec, tile_id), 0).classes.copy()


def render_scene(spec: ArchiveSpec, tile_id: str, date: dt.date) -> Scene:
    """Render one acquisition of one tile.

    A pure function of the spec (but its ``convention``, which plays no part, so both catalog conventions
    describe the same scenes), the tile and the date. A date of an earlier year than ``spec.year`` sees that
    year's crops (the rotation); the season follows the date's day of year.

    Raises:
        ValueError: if ``tile_id`` is not one of ``spec.tiles``.
    """
    tile = tile_info(spec, tile_id)
    land = _landscape(spec, tile, spec.year - date.year)
    weather = _weather(spec.seed, spec.cloud_rate, date, spec.haze)
    doy = float(date.timetuple().tm_yday)

    # (y, x) green fraction and per-class background brightness of this date
    green = _green_fraction(land, doy)
    season = math.cos(2 * math.pi * (doy - 200.0) / 365.0)  # +1 mid-July, -1 mid-January
    moisture = (0.9 + 0.08 * season) * weather.moisture
    by_class = [1.0, *[moisture] * 5, weather.turbidity, 1.0, *[moisture] * 3]  # class ids 0..10
    dynamic = np.array(by_class, dtype=np.float32)[land.classes]
    # (band, y, x) cloud-free surface reflectance
    surface = green * land.vegetation + (1 - green) * (land.background * dynamic)
    rng = np.random.default_rng(stream_key(spec.seed, "pixel-noise", tile_id, date.isoformat()))
    # per-date noise: sensor and correction noise plus view-angle (BRDF) effects, ~0.005 + 2 % of the signal
    noise = rng.standard_normal(surface.shape, dtype=np.float32)
    surface += noise * (np.float32(_NOISE_ABS) + np.float32(_NOISE_REL) * surface)

    cloud, shadow, cirrus = _cloud_layers(spec.seed, tile, date, weather)
    observed = surface * (1 - _SHADOW_DEPTH * shadow)
    observed = _residual_atmosphere(spec.seed, tile, date, weather, observed)
    observed = observed * (1 - 0.1 * cirrus) + cirrus * _CIRRUS[:, None, None]
    cloud_top = weather.cloud_brightness * _CLOUD[:, None, None] * (0.75 + 0.35 * cloud)
    observed = (1 - cloud) * observed + cloud * cloud_top
    observed *= weather.haze[:, None, None]

    dn10 = _quantise(observed[_I10])  # (4, y, x)
    dn20 = _quantise(_block_mean(observed[_I20]))  # (6, y/2, x/2)
    reflectance_20m = _to_reflectance(dn20)
    reflectance = np.empty(observed.shape, dtype=np.float32)
    reflectance[_I10] = _to_reflectance(dn10)
    reflectance[_I20] = reflectance_20m.repeat(2, axis=1).repeat(2, axis=2)

    cloud_mask = (cloud >= _CLOUD_TRUE) | (cirrus >= _CIRRUS_TRUE)
    scl = _scene_classification(surface, land.classes, cloud, shadow, cirrus)
    return Scene(
        tile_id=tile_id,
        date=date,
        reflectance=reflectance,
        reflectance_20m=reflectance_20m,
        scl=scl,
        cloud_mask=cloud_mask,
        cirrus_mask=cirrus >= _CIRRUS_TRUE,
        shadow_mask=(shadow >= _SHADOW_TRUE) & ~cloud_mask,
    )


def solar_position(date: dt.date) -> tuple[float, float]:
    """Approximate ``(zenith, azimuth)`` of the sun in degrees at :data:`ACQUISITION_TIME` over the tiles.

    Azimuth is clockwise from north. Good to a degree or two, which is all shadows and metadata need.
    """
    doy = date.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365)
    lat = math.radians(SITE_LAT)
    hours = ACQUISITION_TIME.hour + ACQUISITION_TIME.minute / 60 + SITE_LON / 15
    hour_angle = math.radians(15 * (hours - 12))
    sin_elev = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    elevation = math.asin(sin_elev)
    azimuth = math.atan2(
        math.sin(hour_angle), math.cos(hour_angle) * math.sin(lat) - math.tan(decl) * math.cos(lat)
    )
    return 90.0 - math.degrees(elevation), (math.degrees(azimuth) + 180.0) % 360.0


# --- land cover ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Landscape:
    """Static per-pixel properties of one tile (cached; arrays are read-only)."""

    classes: NDArray[np.uint8]  # (y, x)
    phenology: NDArray[np.float32]  # (10, y, x) rows of _PHENOLOGY, timing shifted per field
    amplitude: NDArray[np.float32]  # (y, x) scales g (garden fraction for built-up)
    mowing: NDArray[np.float32]  # (3, y, x) day of year of the cuts (grassland; _NEVER for none)
    catch: NDArray[np.float32]  # (3, y, x) catch crop after winter cereal: height, emergence, ploughing day
    vegetation: NDArray[np.float32]  # (band, y, x) vegetation spectrum x vigour x texture
    background: NDArray[np.float32]  # (band, y, x) background spectrum x brightness x texture


@lru_cache(maxsize=4)  # ~9 MB per 256-pixel tile
def _landscape(spec: ArchiveSpec, tile: TileInfo, rotation: int) -> _Landscape:
    """Land cover and per-pixel parameters of one tile, from world coordinates in the tile's UTM zone.

    ``rotation`` is how many years before ``spec.year`` (0: that year): farmland fields draw their crop again
    for each earlier year; everything else (parcels, timing, forests, lakes, villages) stays.
    """
    seed = spec.seed
    xs, ys = tile.pixel_centres()
    x, y = np.meshgrid(xs, ys)  # (y, x) world coordinates of pixel centres

    def key(name: str) -> int:
        return stream_key(seed, tile.epsg, name)

    # Macro cells on warped coordinates (organic edges), a 3 x 3 block permutation of kinds per block.
    warp_x = (fbm(key("warp-x"), xs, ys, 380.0, octaves=3) - 0.5) * (2 * _WARP_M)
    warp_y = (fbm(key("warp-y"), xs, ys, 380.0, octaves=3) - 0.5) * (2 * _WARP_M)
    mcol, mrow = jittered_voronoi(key("macro"), x + warp_x, y + warp_y, _MACRO_CELL, jitter=0.5)
    slot = (mrow % 3) * 3 + (mcol % 3)
    draws = hash_uniform(key("macro-kind"), (mcol // 3)[None], (mrow // 3)[None], np.arange(9)[:, None, None])
    permutation = np.argsort(draws, axis=0)  # (9, y, x): a permutation of the kinds per 3 x 3 block
    kind = _MACRO_KINDS[np.take_along_axis(permutation, slot[None], axis=0)[0]]

    fcol, frow = jittered_voronoi(key("field"), x, y, spec.field_size, jitter=0.8)
    crop_key = key("crop") if rotation == 0 else key(f"crop-{rotation}")
    crop_draw = np.searchsorted(_FIELD_CUMULATIVE[spec.class_set], hash_uniform(crop_key, fcol, frow))
    crop = _FIELD_CLASSES[spec.class_set][crop_draw]
    farm = kind == 0
    classes = np.where(farm, crop, kind).astype(np.uint8)

    # Per-parcel draws: a field on farmland, the macro cell elsewhere.
    parcel = (np.where(farm, fcol, mcol), np.where(farm, frow, mrow), farm.astype(np.int64))

    def draw(name: str) -> NDArray[np.float32]:
        return hash_uniform(key(name), *parcel).astype(np.float32)

    # Timing: the region's calendar (elevation), then per field: sowing (onset) +-3 weeks, season length
    # +-2 weeks, green-up and senescence speed x0.7-1.4.
    delay = elevation(seed, tile) * _DELAY_DAYS_PER_M if spec.calendar == "shifted" else np.float32(0.0)
    shift = (draw("shift") - 0.5) * (2 * _ONSET_DAYS)
    phenology = _PHENOLOGY[classes].transpose(2, 0, 1).copy()  # (10, y, x)
    phenology[[2, 5, 8]] += shift + delay  # the three onsets s1, s2, s3
    phenology[5] += (draw("length") - 0.5) * (2 * _LENGTH_DAYS)  # end of season (harvest, leaf-fall)
    phenology[[3, 6]] *= 0.7 + 0.7 * draw("speed")
    amplitude = _AMPLITUDE[0] + (_AMPLITUDE[1] - _AMPLITUDE[0]) * draw("amplitude")
    amplitude = np.where(classes == 8, 0.5 + 2.5 * draw("weeds"), amplitude)  # from clean fallow to weedy
    # grassland grazed as pasture, never mown, a lower canopy (leys are mown, never grazed)
    pasture = (classes == 3) & (draw("pasture") < _PASTURE_SHARE)
    amplitude = np.where(pasture, 0.8 * amplitude, amplitude)
    garden = np.clip(fbm(key("garden"), xs, ys, 60.0, octaves=2) * 1.1 - 0.25, 0.0, 0.45)
    amplitude = np.where(classes == 7, garden, amplitude).astype(np.float32)
    cuts = [draw(f"cut-{k}") for k in range(3)]
    mowing = np.stack(
        [d + delay + 0.5 * shift + (c - 0.5) * 20.0 for d, c in zip(_MOWING_DOY, cuts, strict=True)]
    )
    mowing[2] = np.where(draw("third-cut") < 0.4, _NEVER, mowing[2])  # two cuts only
    mowing[:, pasture] = _NEVER
    # Some winter cereal fields carry a catch crop (mustard, phacelia) from August until ploughing.
    has_catch = (classes == 1) & (draw("catch") < _CATCH_SHARE)
    catch = np.stack(
        [
            np.where(has_catch, 0.25 + 0.35 * draw("catch-height"), 0.0),
            205.0 + delay + 30.0 * draw("catch-emergence"),
            285.0 + delay + 20.0 * draw("catch-end"),
        ]
    ).astype(np.float32)

    vigour = 0.92 + 0.16 * draw("vigour")
    canopy = 0.8 + 0.4 * fbm(key("canopy"), xs, ys, 40.0, octaves=2)
    vigour = np.where((classes == 4) | (classes == 5), vigour * canopy, vigour)
    brightness = 0.8 + 0.4 * draw("brightness")
    rough = 0.85 + 0.3 * fbm(key("roofs"), xs, ys, 30.0, octaves=2)
    brightness = np.where(classes == 7, brightness * rough, brightness)
    col, row = np.rint(x / 10).astype(np.int64), np.rint(y / 10).astype(np.int64)
    texture = (1.0 + 0.04 * (hash_uniform(key("texture"), col, row) - 0.5)).astype(np.float32)

    vegetation = _VEG_OF_CLASS[classes].transpose(2, 0, 1) * (vigour * texture)
    background = _BACKGROUND_OF_CLASS[classes].transpose(2, 0, 1) * (brightness * texture)
    arrays = (classes, phenology, amplitude, mowing.astype(np.float32), catch, vegetation, background)
    for a in arrays:
        a.flags.writeable = False
    return _Landscape(*arrays)


def elevation(seed: int, tile: TileInfo) -> NDArray[np.float32]:
    """``(y, x)`` terrain height in metres: the plain in the west rising into the foothills in the east.

    A logistic slope across the easting measured from the 12 E meridian (the zone 32 / zone 33 boundary, so the
    slope runs on across the three tiles), plus low fractal hills.
    """
    xs, ys = tile.pixel_centres()
    east = xs - (ZONE32_EAST_EDGE if tile.epsg == 32632 else ZONE33_WEST_EDGE)  # metres east of 12 E
    slope = _PLAIN_M + _RISE_M * _logistic((east - _SLOPE_CENTRE_M) / _SLOPE_WIDTH_M)
    hills = (fbm(stream_key(seed, tile.epsg, "hills"), xs, ys, 900.0, octaves=2) - 0.5) * _HILLS_M
    return (slope[None, :] + hills).astype(np.float32)


def _green_fraction(land: _Landscape, doy: float) -> NDArray[np.float32]:
    """``(y, x)`` green vegetation fraction on day of year ``doy``."""
    p = land.phenology
    green = (
        p[0]
        + p[1] * _logistic((doy - p[2]) / p[3])
        - p[4] * _logistic((doy - p[5]) / p[6])
        + p[7] * _logistic((doy - p[8]) / p[9])
    )
    c = land.catch
    green = green + c[0] * (_logistic((doy - c[1]) / 7.0) - _logistic((doy - c[2]) / 5.0))
    since_cut = doy - land.mowing  # (3, y, x)
    recovery = np.exp(-np.maximum(since_cut, 0) / _MOWING_RECOVERY_DAYS)
    dips = np.where(since_cut >= 0, _MOWING_DEPTH * recovery, 0)
    mown = np.prod(1 - dips, axis=0)
    green = np.where(np.isin(land.classes, _GRASS), green * mown, green)
    return np.clip(green * land.amplitude, 0.0, 0.97).astype(np.float32)


def _logistic(z: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
    return 1 / (1 + np.exp(-np.clip(z, -40, 40)))


# --- atmosphere ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Weather:
    """Date-level draws shared by every tile of the archive (one pass, one weather)."""

    cloud_fraction: float  # target fraction of opaque cloud
    cloud_brightness: float
    cloud_height: float  # metres; shadow offset = height x tan(zenith)
    cirrus_fraction: float  # 0 on dates without cirrus
    cirrus_strength: float
    moisture: float  # soil darkening after rain
    turbidity: float  # water brightness factor
    haze: NDArray[np.float32]  # (band,) residual atmospheric gain
    aerosol: float = (
        0.0  # path reflectance at 490 nm left by the atmospheric correction (mean over the scene)
    )
    veil: float = 0.0  # opacity of thin haze that SCL does not flag (0 on dates without)


def _weather(seed: int, cloud_rate: float, date: dt.date, haze: float = 1.0) -> _Weather:
    rng = np.random.default_rng(stream_key(seed, "weather", date.isoformat()))
    u_kind, u_amount, u_cirrus, u_cirrus_amount = rng.random(4)
    # mixture of clear, partly cloudy and nearly overcast dates whose mean is cloud_rate
    p_overcast = max(5 * cloud_rate / 12, (cloud_rate - 0.325) / 0.6)
    p_partly = min(1 - p_overcast, max(0.0, (cloud_rate - 0.01 - 0.915 * p_overcast) / 0.315))
    if cloud_rate == 0:
        fraction = 0.0
    elif u_kind < p_overcast:
        fraction = 0.85 + 0.15 * u_amount
    elif u_kind < p_overcast + p_partly:
        fraction = 0.05 + 0.55 * u_amount
    else:
        fraction = 0.02 * u_amount
    has_cirrus = cloud_rate > 0 and u_cirrus < 0.15
    u_aerosol, u_aerosol_amount, u_veil, u_veil_amount = rng.random(4)
    # residual aerosol on 1 date in 5 and an unflagged veil on 1 in 6 at haze 1, more often and thicker above
    aerosol = 0.02 + 0.04 * u_aerosol_amount if u_aerosol < 0.2 * haze else 0.012 * u_aerosol_amount
    veil = 0.03 + 0.09 * u_veil_amount if u_veil < min(0.9, 0.18 * haze) else 0.0
    aerosol, veil = aerosol * min(haze, 1.0) * max(1.0, haze) ** 0.5, veil * max(1.0, haze) ** 0.5
    clean = cloud_rate == 0  # an ideal atmosphere: no clouds, no residuals
    return _Weather(
        cloud_fraction=float(fraction),
        cloud_brightness=float(0.9 + 0.4 * rng.random()),
        cloud_height=float(250 + 200 * rng.random()),
        cirrus_fraction=float(0.2 + 0.4 * u_cirrus_amount) if has_cirrus else 0.0,
        cirrus_strength=float(0.6 + 0.4 * rng.random()),
        moisture=float(0.92 + 0.08 * rng.random()),
        turbidity=float(0.8 + 0.5 * rng.random()),
        haze=(1 + 0.02 * rng.standard_normal(len(BANDS))).astype(np.float32),
        aerosol=0.0 if clean else float(aerosol),
        veil=0.0 if clean else float(veil),
    )


def _cloud_layers(
    seed: int, tile: TileInfo, date: dt.date, weather: _Weather
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """``(cloud, shadow, cirrus)`` opacities in [0, 1], each ``(y, x)``, anchored to the zone's grid."""
    xs, ys = tile.pixel_centres()
    zero = np.zeros(tile.shape, dtype=np.float32)
    cloud, shadow, cirrus = zero, zero, zero
    key = stream_key(seed, "cloud", tile.epsg, date.isoformat())
    if weather.cloud_fraction > 0:
        threshold = _noise_quantile(1 - weather.cloud_fraction)
        cloud = _ramp(fbm(key, xs, ys, _CLOUD_SPACING), threshold, _CLOUD_EDGE)
        # shadow at p is the cloud at p - offset, the offset pointing away from the sun
        zenith, azimuth = solar_position(date)
        length = weather.cloud_height * math.tan(math.radians(zenith))
        dx = -length * math.sin(math.radians(azimuth))
        dy = -length * math.cos(math.radians(azimuth))
        shadow = _ramp(fbm(key, xs - dx, ys - dy, _CLOUD_SPACING), threshold, _CLOUD_EDGE)
    if weather.cirrus_fraction > 0:
        threshold = _noise_quantile(1 - weather.cirrus_fraction)
        veil = _ramp(fbm(stream_key(key, "cirrus"), xs, ys, _CIRRUS_SPACING), threshold, 0.08)
        cirrus = (veil * weather.cirrus_strength).astype(np.float32)
    return cloud, shadow, cirrus


def _residual_atmosphere(
    seed: int, tile: TileInfo, date: dt.date, weather: _Weather, ground: NDArray[np.float32]
) -> NDArray[np.float32]:
    """What the atmospheric correction and SCL leave in: aerosol path reflectance and thin unflagged haze.

    The aerosol residual adds a smooth, spectrally decreasing path reflectance (about ``lambda ** -1.5``, from
    ``weather.aerosol`` at 490 nm) and dims the ground a little; the veil is a thin cloud-bright layer of
    opacity up to ``weather.veil``. Neither is seen by SCL (it is computed from the cloud layers only), as
    real L2A products let haze and thin cloud edges through. Both vary over a few kilometres.
    """
    xs, ys = tile.pixel_centres()
    key = stream_key(seed, "atmosphere", tile.epsg, date.isoformat())
    if weather.aerosol > 0:
        load = weather.aerosol * (0.4 + 1.2 * fbm(stream_key(key, "aerosol"), xs, ys, 2500.0, octaves=2))
        ground = ground * (1 - 2 * load) + load * _AEROSOL_SHAPE[:, None, None]
    if weather.veil > 0:
        veil = weather.veil * fbm(stream_key(key, "veil"), xs, ys, 1500.0, octaves=3)
        ground = (1 - veil) * ground + veil * _CLOUD[:, None, None]
    return ground.astype(np.float32)


@lru_cache(maxsize=1)
def _noise_quantiles() -> NDArray[np.float64]:
    """Quantiles 0, 0.001, ..., 1 of :func:`fbm` (4 octaves), from a 61 km reference square."""
    xs = np.arange(1024, dtype=np.float64) * 60.0
    sample = fbm(stream_key("reference"), xs, xs, _CLOUD_SPACING)
    return np.quantile(sample.astype(np.float64), np.linspace(0, 1, 1001))


def _noise_quantile(q: float) -> float:
    return float(np.interp(q, np.linspace(0, 1, 1001), _noise_quantiles()))


def _ramp(noise: NDArray[np.float32], threshold: float, width: float) -> NDArray[np.float32]:
    t = np.clip((noise - threshold) / width, 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


# --- quantisation and SCL -----------------------------------------------------------------------------------


def _scene_classification(
    surface: NDArray[np.float32],
    classes: NDArray[np.uint8],
    cloud: NDArray[np.float32],
    shadow: NDArray[np.float32],
    cirrus: NDArray[np.float32],
) -> NDArray[np.uint8]:
    """SCL at 20 m from 2 x 2 block means of the truth (so faint cloud edges can be missed, as in reality)."""
    red, nir = _block_mean(surface[_RED]), _block_mean(surface[_NIR])
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    water = _block_mean((classes == 6).astype(np.float32)) >= 0.5
    scl = np.where(water, 6, np.where(ndvi >= 0.4, 4, 5)).astype(np.uint8)
    scl[_block_mean(shadow) >= _SCL_SHADOW] = 3
    scl[_block_mean(cirrus) >= _SCL_CIRRUS] = 10
    cloud20 = _block_mean(cloud)
    scl[cloud20 >= _SCL_MEDIUM] = 8
    scl[cloud20 >= _SCL_HIGH] = 9
    return scl


def _block_mean(a: NDArray[np.float32]) -> NDArray[np.float32]:
    """Mean over 2 x 2 blocks of the last two axes (10 m -> 20 m)."""
    *lead, h, w = a.shape
    return a.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1), dtype=np.float32)


def _quantise(reflectance: NDArray[np.float32]) -> NDArray[np.uint16]:
    return np.clip(np.rint(reflectance * QUANTIFICATION), 1, MAX_DN).astype(np.uint16)


def _to_reflectance(dn: NDArray[np.uint16]) -> NDArray[np.float32]:
    return (dn.astype(np.float64) / QUANTIFICATION).astype(np.float32)
