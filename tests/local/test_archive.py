"""The sample Sentinel-2 archive: geometry, determinism, COGs, DN conventions, STAC items, clouds, phenology.

Each check reads what was written back through an independent path (GDAL via rasterio, rio-cogeo's validator,
the STAC 1.1 JSON schemas shipped with pystac, :func:`pimc_ray.data.catalogs.harmonisation`) and compares it with
:func:`render_scene`, the generator's own description of a scene.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pytest
import rasterio
from jsonschema import Draft7Validator
from pystac.validation.local_validator import get_local_schema_cache
from referencing import Registry, Resource
from rio_cogeo.cogeo import cog_validate

from pimc_ray.data.catalogs import BANDS, EARTH_SEARCH, PLANETARY_COMPUTER, SCL, get_convention, harmonisation
from pimc_ray.errors import OutputExistsError
from pimc_ray.local.archive import (
    CLASSES,
    LABELS_ASSET,
    LABELS_COLLECTION,
    S2_COLLECTION,
    ArchiveInfo,
    ArchiveSpec,
    acquisition_dates,
    build_archive,
    classes_of,
    elevation,
    label_raster,
    main,
    render_scene,
    tile_grid,
    tile_info,
)

# Two tiles in two UTM zones, 13 dates (3 Jan: baseline 03.01; 12 from 04.00 on, 2 per tile carry the offset).
SMALL = ArchiveSpec(tile_size=64, tiles=("32TQS", "33TTL"), revisit_days=30)
ES_PROPERTIES = {
    "datetime",
    "platform",
    "constellation",
    "instruments",
    "eo:cloud_cover",
    "proj:epsg",
    "proj:code",
    "mgrs:utm_zone",
    "mgrs:latitude_band",
    "mgrs:grid_square",
    "grid:code",
    "s2:processing_baseline",
    "s2:product_type",
    "earthsearch:boa_offset_applied",
    "created",
    "updated",
}
COG_KEYS = {
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "swir16",
    "swir22",
    "scl",
}


@pytest.fixture(scope="module")
def es_archive(tmp_path_factory: pytest.TempPathFactory) -> ArchiveInfo:
    return build_archive(tmp_path_factory.mktemp("es") / "archive", SMALL)


@pytest.fixture(scope="module")
def pc_archive(tmp_path_factory: pytest.TempPathFactory) -> ArchiveInfo:
    spec = dataclasses.replace(SMALL, convention="planetary-computer")
    return build_archive(tmp_path_factory.mktemp("pc") / "archive", spec)


def _path(href: str) -> Path:
    parsed = urlparse(href)
    assert parsed.scheme == "file" and Path(url2pathname(parsed.path)).is_absolute(), href
    return Path(url2pathname(parsed.path))


def _read(href: str) -> np.ndarray:
    with rasterio.open(_path(href)) as dataset:
        return dataset.read(1)


def _tile_of(item: dict[str, Any]) -> str:
    props = item["properties"]
    return props.get("s2:mgrs_tile") or props["grid:code"].removeprefix("MGRS-")


def _scene_of(item: dict[str, Any]) -> tuple[str, dt.date]:
    """``(tile, date)`` of a ``sentinel-2-l2a`` item."""
    return _tile_of(item), dt.date.fromisoformat(item["properties"]["datetime"][:10])


def _validator(kind: str) -> Draft7Validator:
    """A validator for the STAC 1.1.0 core ``item`` or ``collection`` schema, from pystac's offline copies."""
    cache = get_local_schema_cache()
    registry = Registry().with_resources((uri, Resource.from_contents(s)) for uri, s in cache.items())
    return Draft7Validator(
        cache[f"https://schemas.stacspec.org/v1.1.0/{kind}-spec/json-schema/{kind}.json"], registry=registry
    )


# --- spec, grid, calendar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"tile_size": 100},
        {"tile_size": 0},
        {"tiles": ("32TQR", "31UFU")},
        {"tiles": ()},
        {"tiles": ("32TQR", "32TQR")},
        {"revisit_days": 0},
        {"convention": "usgs"},
        {"cloud_rate": 1.5},
        {"seed": -1},
        {"calendar": "lunar"},
        {"class_set": "colour"},
        {"field_size": 5.0},
        {"haze": -1.0},
        {"years": 0},
    ],
)
def test_spec_rejects_bad_values_naming_them(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        ArchiveSpec(**bad)


def test_tile_grid_has_the_fixed_geometry() -> None:
    grid = {t.tile_id: t for t in tile_grid(ArchiveSpec())}
    side = 2560
    assert grid["32TQR"].epsg == grid["32TQS"].epsg == 32632 and grid["33TTL"].epsg == 32633
    assert grid["32TQR"].bounds == (729_600 - 2 * side, 5_042_560 - side, 729_600 - side, 5_042_560)
    assert grid["32TQS"].bounds == (729_600 - side, 5_042_560 - side, 729_600, 5_042_560)
    assert grid["33TTL"].bounds == (266_240, 5_042_560 - side, 266_240 + side, 5_042_560)
    assert all(t.shape == (256, 256) and t.shape_at(20) == (128, 128) for t in grid.values())
    assert tuple(grid["32TQS"].transform(20))[:6] == (20.0, 0.0, 729_600.0 - side, 0.0, -20.0, 5_042_560.0)
    assert (grid["32TQR"].utm_zone, grid["32TQR"].latitude_band, grid["32TQR"].grid_square) == (32, "T", "QR")


def test_acquisition_calendar() -> None:
    dates = acquisition_dates(ArchiveSpec())
    assert len(dates) == 37 and dates[0] == dt.date(2022, 1, 3) and dates[-1] == dt.date(2022, 12, 29)
    assert {(b - a).days for a, b in zip(dates, dates[1:], strict=False)} == {10}


# --- land cover and scenes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_default_tile_holds_every_class(seed: int) -> None:
    spec = ArchiveSpec(seed=seed)
    for tile in spec.tiles:
        labels = label_raster(spec, tile)
        assert labels.dtype == np.uint8 and labels.shape == (256, 256)
        counts = np.bincount(labels.ravel(), minlength=9)
        assert counts[0] == 0 and (counts[1:] > 0.02 * labels.size).all(), (tile, counts)


def test_landscape_continues_across_the_shared_edge() -> None:
    spec = ArchiveSpec()
    west, east, other_zone = (label_raster(spec, t) for t in ("32TQR", "32TQS", "33TTL"))
    assert np.mean(west[:, -1] == east[:, 0]) > 0.85  # neighbours 10 m apart, mostly in the same parcel
    assert np.mean(west[:, -1] == other_zone[:, 0]) < 0.5  # unrelated land


def test_render_scene_is_pure_and_quantised() -> None:
    spec, date = ArchiveSpec(tile_size=64, tiles=("32TQR",)), dt.date(2022, 6, 12)
    scene, again = render_scene(spec, "32TQR", date), render_scene(spec, "32TQR", date)
    assert np.array_equal(scene.reflectance, again.reflectance) and np.array_equal(scene.scl, again.scl)
    assert scene.reflectance.shape == (10, 64, 64) and scene.reflectance.dtype == np.float32
    assert scene.reflectance_20m.shape == (6, 32, 32) and scene.scl.shape == (32, 32)
    dn = scene.reflectance.astype(np.float64) * 10_000
    assert np.abs(dn - np.rint(dn)).max() < 1e-3 and dn.min() >= 1  # exactly DN / 10000, nodata never drawn
    # 10 m view of a 20 m band = its 20 m values repeated over 2 x 2 pixels
    assert np.array_equal(scene.band("B11"), scene.native("B11").repeat(2, 0).repeat(2, 1))
    assert set(np.unique(scene.scl)) <= {3, 4, 5, 6, 8, 9, 10}
    other = render_scene(dataclasses.replace(spec, convention="planetary-computer"), "32TQR", date)
    assert np.array_equal(scene.reflectance, other.reflectance)


def test_class_phenology_and_spectra_differ() -> None:
    spec = ArchiveSpec(tile_size=128, tiles=("32TQR",), cloud_rate=0.0)
    labels, dates = label_raster(spec, "32TQR"), acquisition_dates(spec)
    present = classes_of(spec)  # the eight of the default class set
    assert set(np.unique(labels)) == set(present)
    ndvi = {c: [] for c in present}
    july = {}
    for date in dates:
        scene = render_scene(spec, "32TQR", date)
        red, nir = scene.band("B04"), scene.band("B08")
        index = (nir - red) / (nir + red)
        for c in present:
            ndvi[c].append(float(index[labels == c].mean()))
        if date == dt.date(2022, 7, 22):
            july = {c: scene.reflectance[:, labels == c].mean(axis=1) for c in present}
    curves = {CLASSES[c].name: np.array(v) for c, v in ndvi.items()}
    peak_month = {name: dates[int(np.argmax(curve))].month for name, curve in curves.items()}
    assert peak_month["summer_crop"] in (7, 8)
    assert peak_month["winter_cereal"] in (4, 5)
    assert curves["water"].max() < 0
    assert curves["deciduous_forest"][15:25].mean() - curves["deciduous_forest"][:5].mean() > 0.25
    assert np.ptp(curves["conifer_forest"]) < 0.1 and curves["conifer_forest"].min() > 0.6
    assert curves["bare_soil"].max() < 0.4
    summer_grass = curves["grassland"][12:26]  # May to mid-September: mowing dips
    local_minima = np.sum((summer_grass[1:-1] < summer_grass[:-2]) & (summer_grass[1:-1] < summer_grass[2:]))
    assert local_minima >= 2
    names = list(curves)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert np.abs(curves[a] - curves[b]).max() > 0.1, (a, b)
    maize, water = july[2], july[6]
    assert 0.3 <= maize[BANDS.index("B08")] <= 0.45 and 0.02 <= maize[BANDS.index("B04")] <= 0.07
    assert water[BANDS.index("B08")] < 0.03 and water[BANDS.index("B12")] < 0.02


def test_scl_flags_most_clouds_and_misses_what_sen2cor_misses() -> None:
    """SCL catches opaque clouds and most shadows, and lets faint edges, thin cirrus and haze through."""
    spec = ArchiveSpec()
    cloud = flagged = shadow = shadow_flagged = clear = false_alarm = 0
    covers, per_scene = [], []
    for tile in spec.tiles:
        for date in acquisition_dates(spec):
            scene = render_scene(spec, tile, date)
            scl = scene.scl.repeat(2, 0).repeat(2, 1)  # (y, x) at 10 m
            is_cloud = np.isin(scl, (8, 9, 10))
            cloud += scene.cloud_mask.sum()
            flagged += (is_cloud & scene.cloud_mask).sum()
            shadow += scene.shadow_mask.sum()
            shadow_flagged += ((scl == 3) & scene.shadow_mask).sum()
            clear += scene.clear_mask.sum()
            false_alarm += (is_cloud & scene.clear_mask).sum()
            if scene.cloud_mask.mean() > 0.02:
                per_scene.append((is_cloud & scene.cloud_mask).sum() / scene.cloud_mask.sum())
            covers.append(scene.cloud_cover)
    assert 0.88 <= flagged / cloud < 0.97  # faint edges and thin cirrus are missed, as by the real SCL
    assert np.mean(np.array(per_scene) > 0.7) > 0.8  # most cloudy scenes are mostly flagged
    assert 0.6 <= shadow_flagged / shadow < 0.85  # shadows are missed more often than clouds
    assert false_alarm / clear < 0.05
    covers_array = np.array(covers)
    assert (covers_array < 1).mean() > 0.1 and (covers_array > 85).mean() > 0.05  # clear and overcast dates
    assert 15 < covers_array.mean() < 50


def test_fields_of_one_crop_differ_in_timing_and_management() -> None:
    """Catch crops after some winter cereal fields, per-field timing: one class, several calendars."""
    spec = ArchiveSpec(tile_size=128, tiles=("32TQR",), cloud_rate=0.0)
    labels = label_raster(spec, "32TQR")

    def ndvi(date: dt.date) -> np.ndarray:
        scene = render_scene(spec, "32TQR", date)
        red, nir = scene.band("B04"), scene.band("B08")
        return (nir - red) / (nir + red)

    after_harvest, catch_crops = ndvi(dt.date(2022, 7, 21)), ndvi(dt.date(2022, 9, 10))
    assert np.mean(after_harvest[labels == 1] > 0.4) < 0.2
    assert 0.2 < np.mean(catch_crops[labels == 1] > 0.4) < 0.7  # some fields green again, most not
    emergence = ndvi(dt.date(2022, 6, 12))[labels == 2]  # maize sown over several weeks
    assert np.percentile(emergence, 90) - np.percentile(emergence, 10) > 0.2


def test_seasons_come_later_uphill() -> None:
    """33TTL lies in the foothills, about 770 m above 32TQR: its winter cereals are harvested weeks later."""
    spec = ArchiveSpec(cloud_rate=0.0)
    dates = [d for d in acquisition_dates(spec) if dt.date(2022, 5, 20) <= d <= dt.date(2022, 8, 31)]

    def harvest_day(tile_id: str) -> float:
        """Day of year when the mean NDVI of the tile's winter cereal has fallen halfway (by interpolation)."""
        cereal = label_raster(spec, tile_id) == 1
        curve = []
        for date in dates:
            scene = render_scene(spec, tile_id, date)
            red, nir = scene.band("B04")[cereal], scene.band("B08")[cereal]
            curve.append(float(np.mean((nir - red) / (nir + red))))
        half = (max(curve) + min(curve)) / 2
        days = [d.timetuple().tm_yday for d in dates]
        i = next(i for i in range(1, len(curve)) if curve[i - 1] >= half > curve[i])
        return days[i - 1] + (curve[i - 1] - half) / (curve[i - 1] - curve[i]) * (days[i] - days[i - 1])

    height = {t: float(elevation(spec.seed, tile_info(spec, t)).mean()) for t in ("32TQR", "33TTL")}
    assert 700 < height["33TTL"] - height["32TQR"] < 850
    # Hopkins' law: ~4 days per 122 m, so ~25 days; per-field timing noise leaves a few days either way
    assert 18 < harvest_day("33TTL") - harvest_day("32TQR") < 32


def test_residual_atmosphere_is_left_in_and_absent_from_a_clean_archive() -> None:
    """Aerosol residuals and unflagged haze change clear-sky reflectance; cloud_rate=0 is an ideal atmosphere."""
    hazy, clean = (
        ArchiveSpec(tile_size=64, tiles=("32TQR",)),
        ArchiveSpec(tile_size=64, tiles=("32TQR",), cloud_rate=0.0),
    )
    gaps = []
    for date in acquisition_dates(hazy):
        a, b = render_scene(hazy, "32TQR", date), render_scene(clean, "32TQR", date)
        unflagged = a.clear_mask & ~np.isin(a.scl.repeat(2, 0).repeat(2, 1), (3, 8, 9, 10))
        gaps.append(
            float(np.median(a.band("B02")[unflagged] - b.band("B02")[unflagged])) if unflagged.any() else 0.0
        )
    gaps_array = np.array(gaps)
    assert (gaps_array > 0.01).sum() >= 3  # hazy dates brighten the blue band of pixels SCL calls clear
    assert np.abs(np.median(gaps_array)) < 0.01  # most dates are nearly clean


# --- scenario families ---------------------------------------------------------------------------------------


def _ndvi_curve(spec: ArchiveSpec, tile_id: str, mask: np.ndarray, dates: list[dt.date]) -> np.ndarray:
    """The mean NDVI of the masked pixels on each date."""
    curve = []
    for date in dates:
        scene = render_scene(spec, tile_id, date)
        red, nir = scene.band("B04")[mask], scene.band("B08")[mask]
        curve.append(float(np.mean((nir - red) / (nir + red))))
    return np.array(curve)


def test_aligned_calendars_put_the_foothills_on_the_plain_s_calendar() -> None:
    """With ``calendar="aligned"`` 33TTL's winter cereal follows 32TQR's season (shifted: weeks later)."""
    dates = [dt.date(2022, 5, 10), dt.date(2022, 6, 10), dt.date(2022, 6, 25), dt.date(2022, 7, 10)]
    gaps = {}
    for calendar in ("shifted", "aligned"):
        spec = ArchiveSpec(tile_size=64, tiles=("32TQR", "33TTL"), calendar=calendar, cloud_rate=0.0)
        curves = {t: _ndvi_curve(spec, t, label_raster(spec, t) == 1, dates) for t in spec.tiles}
        gaps[calendar] = float(np.abs(curves["33TTL"] - curves["32TQR"]).max())
    assert gaps["shifted"] > 0.12 and gaps["aligned"] < 0.06


def test_field_size_sets_how_many_fields_a_tile_holds() -> None:
    """Fields are runs of one crop: 60 m fields make many more crop borders than 180 m ones."""

    def borders(field_size: float) -> int:
        classes = label_raster(ArchiveSpec(tile_size=128, tiles=("32TQR",), field_size=field_size), "32TQR")
        farm = np.isin(classes, (1, 2, 3, 8))
        return int(((classes[:, 1:] != classes[:, :-1]) & farm[:, 1:] & farm[:, :-1]).sum())

    assert borders(60.0) > 2 * borders(180.0)


def test_level_classes_share_a_season_at_another_level() -> None:
    """The 'level' class set adds orchards and grass leys: the season of deciduous forest and of grassland, on
    another NDVI level."""
    spec = ArchiveSpec(tile_size=128, tiles=("32TQR",), class_set="level", cloud_rate=0.0)
    classes = label_raster(spec, "32TQR")
    assert {9, 10} <= set(np.unique(classes).tolist()) and CLASSES[9].name == "orchard"
    assert set(np.unique(label_raster(ArchiveSpec(tile_size=128, tiles=("32TQR",)), "32TQR"))) <= set(
        range(9)
    )
    dates = [dt.date(2022, m, 15) for m in range(1, 13)]
    curve = {c: _ndvi_curve(spec, "32TQR", classes == c, dates) for c in (3, 4, 9, 10)}
    for twin, base in ((9, 4), (10, 3)):
        level = float(np.mean(curve[twin] - curve[base]))
        shape = curve[twin] - curve[base] - level  # what differs beyond a constant offset
        assert abs(level) > 0.08 and np.abs(shape).max() < 0.6 * np.ptp(curve[base])


def test_haze_scales_the_residuals_scl_lets_through() -> None:
    """Hazy archives brighten the blue band of pixels SCL calls clear on more dates; haze 0 on none."""

    def hazy_dates(haze: float) -> int:
        spec = ArchiveSpec(tile_size=64, tiles=("32TQR",), haze=haze)
        n = 0
        for date in acquisition_dates(spec):
            scene = render_scene(spec, "32TQR", date)
            clear = scene.clear_mask & ~np.isin(scene.scl.repeat(2, 0).repeat(2, 1), (3, 8, 9, 10))
            truth = render_scene(dataclasses.replace(spec, haze=0.0), "32TQR", date)
            gap = np.median(scene.band("B02")[clear] - truth.band("B02")[clear]) if clear.any() else 0.0
            n += int(gap > 0.01)
        return n

    assert hazy_dates(0.0) == 0 and hazy_dates(2.5) > hazy_dates(1.0) >= 3


def test_two_years_rotate_the_crops_and_keep_the_rest() -> None:
    from pimc_ray.local.archive_scenes import _landscape

    spec = ArchiveSpec(tile_size=64, tiles=("32TQR",), years=2, cloud_rate=0.0)
    dates = acquisition_dates(spec)
    assert dates[0] == dt.date(2021, 1, 3) and dates[-1].year == 2022 and len(dates) == 73
    now, before = (_landscape(spec, tile_info(spec, "32TQR"), r).classes for r in (0, 1))
    farm = np.isin(now, (1, 2, 3, 8))
    assert np.array_equal(now[~farm], before[~farm])  # forests, lakes, villages stay
    assert 0.4 < np.mean(now[farm] != before[farm]) < 0.9  # most fields grew another crop the year before
    np.testing.assert_array_equal(label_raster(spec, "32TQR"), now)  # the labels are the last year's


# --- the built archive --------------------------------------------------------------------------------------


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root``, with ``root`` itself replaced in text files."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix in (".json", ".ndjson"):
            data = data.replace(root.as_uri().encode(), b"ROOT").replace(str(root).encode(), b"ROOT")
        out[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def test_build_is_deterministic(es_archive: ArchiveInfo, tmp_path: Path) -> None:
    again = build_archive(tmp_path / "again", SMALL)
    first, second = _digest(es_archive.root), _digest(again.root)
    assert first == second
    assert len([p for p in first if p.endswith(".tif")]) == es_archive.n_cogs == 2 * 13 * 11 + 2


def test_cogs_are_valid_and_on_the_tile_grid(es_archive: ArchiveInfo) -> None:
    for item in es_archive.read_items():
        tile = tile_info(SMALL, _tile_of(item))
        for key, asset in item["assets"].items():
            path = _path(asset["href"])
            valid, errors, _ = cog_validate(str(path), quiet=True)
            assert valid, (path, errors)
            with rasterio.open(path) as dataset:
                resolution = int(dataset.res[0])
                assert dataset.crs.to_epsg() == tile.epsg
                assert dataset.transform == tile.transform(resolution)
                assert dataset.shape == tile.shape_at(resolution) == tuple(asset["proj:shape"])
                assert list(dataset.transform)[:6] == asset["proj:transform"]
                assert dataset.nodata == 0 and dataset.count == 1
                expected = "uint8" if key in ("scl", LABELS_ASSET) else "uint16"
                assert dataset.dtypes[0] == expected
                assert resolution == (10 if key in ("blue", "green", "red", "nir", LABELS_ASSET) else 20)


@pytest.mark.parametrize("convention", ["earth-search", "planetary-computer"])
def test_harmonised_dns_give_back_the_rendered_reflectance(
    convention: str, es_archive: ArchiveInfo, pc_archive: ArchiveInfo
) -> None:
    archive = es_archive if convention == "earth-search" else pc_archive
    catalog = get_convention(convention)
    kinds = set()
    for item in archive.read_items(S2_COLLECTION):
        tile, date = _scene_of(item)
        scene = render_scene(SMALL, tile, date)
        scale, offset = harmonisation(item, catalog)
        props = item["properties"]
        post = props["s2:processing_baseline"] >= "04.00"
        for band in BANDS:
            dn = _read(item["assets"][catalog.asset_key(band)]["href"])
            reflectance = (dn * scale + offset).astype(np.float32)
            np.testing.assert_allclose(reflectance, scene.native(band), rtol=0, atol=1e-6)
        assert np.array_equal(_read(item["assets"][catalog.asset_key(SCL)]["href"]), scene.scl)
        carries = offset != 0
        raw = _read(item["assets"][catalog.asset_key("B02")]["href"]).astype(np.int64)
        assert np.all(raw - np.rint(scene.native("B02") * 10_000) == (1000 if carries else 0))
        kinds.add((post, carries, props.get("earthsearch:boa_offset_applied")))
    if convention == "earth-search":
        # pre-04.00; post-04.00 offset removed and flagged (most); post-04.00 offset kept, flag false (few)
        assert kinds == {(False, False, False), (True, False, True), (True, True, False)}
    else:
        assert kinds == {(False, False, None), (True, True, None)}


def test_earth_search_raster_bands_offset_is_the_real_catalogs_trap(es_archive: ArchiveInfo) -> None:
    items = [
        i for i in es_archive.read_items(S2_COLLECTION) if i["properties"]["earthsearch:boa_offset_applied"]
    ]
    assert items and len(items) > 0.7 * 2 * 12
    for item in items[:3]:
        asset = item["assets"]["red"]
        band = asset["raster:bands"][0]
        assert band["offset"] == -0.1  # the catalog says so ...
        naive = _read(asset["href"]) * band["scale"] + band["offset"]
        scene = render_scene(SMALL, *_scene_of(item))
        assert np.allclose(naive, scene.native("B04") - 0.1, atol=1e-6)  # ... and trusting it is 0.1 off


def test_both_conventions_describe_the_same_scenes(es_archive: ArchiveInfo, pc_archive: ArchiveInfo) -> None:
    es = {_scene_of(i): i for i in es_archive.read_items(S2_COLLECTION)}
    pc = {_scene_of(i): i for i in pc_archive.read_items(S2_COLLECTION)}
    assert es.keys() == pc.keys() and len(es) == 2 * 13
    for key in list(es)[::5]:
        a, b = es[key], pc[key]
        assert a["properties"]["eo:cloud_cover"] == b["properties"]["eo:cloud_cover"]
        assert np.array_equal(_read(a["assets"]["scl"]["href"]), _read(b["assets"]["SCL"]["href"]))
        for band in ("B04", "B11"):
            sr = [
                _read(item["assets"][c.asset_key(band)]["href"]) * s + o
                for item, c in ((a, EARTH_SEARCH), (b, PLANETARY_COMPUTER))
                for s, o in [harmonisation(item, c)]
            ]
            np.testing.assert_allclose(sr[0], sr[1], atol=1e-9)


def test_earth_search_items_have_the_v1_structure(es_archive: ArchiveInfo) -> None:
    validator = _validator("item")
    items = es_archive.read_items(S2_COLLECTION)
    assert len(items) == es_archive.n_scene_items == 26
    for item in items:
        validator.validate(item)
        props = item["properties"]
        tile, date = _scene_of(item)
        assert re.fullmatch(rf"S2[AB]_{tile}_{date:%Y%m%d}_0_L2A", item["id"])
        assert ES_PROPERTIES <= props.keys(), ES_PROPERTIES - props.keys()
        assert props["proj:code"] == f"EPSG:{props['proj:epsg']}" == tile_info(SMALL, tile).crs
        assert props["grid:code"] == f"MGRS-{tile}" and props["mgrs:utm_zone"] == int(tile[:2])
        assert props["s2:processing_baseline"] == ("03.01" if date < dt.date(2022, 1, 25) else "04.00")
        assert props["created"].startswith(str(date + dt.timedelta(days=1)))  # fixed, never "now"
        assert props["platform"] == ("sentinel-2b" if item["id"].startswith("S2B") else "sentinel-2a")
        assert 0 <= props["eo:cloud_cover"] <= 100
        assert set(item["assets"]) == COG_KEYS == set(EARTH_SEARCH.asset_keys.values())
        for key, asset in item["assets"].items():
            assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert _path(asset["href"]).is_file() and asset["title"] and asset["roles"]
            band = asset["raster:bands"][0]
            assert band["nodata"] == 0 and band["spatial_resolution"] in (10, 20)
            if key != "scl":
                assert band["data_type"] == "uint16" and band["bits_per_sample"] == 15
                assert band["scale"] == 0.0001 and band["offset"] == (
                    0.0 if date < dt.date(2022, 1, 25) else -0.1
                )
                assert asset["eo:bands"][0]["name"] == key and asset["gsd"] in (10, 20)
        assert [link["rel"] for link in item["links"]] == ["collection"]
        assert _path(item["links"][0]["href"]) == es_archive.collection_paths[S2_COLLECTION]
    platforms = [i["properties"]["platform"] for i in sorted(items, key=_scene_of) if _tile_of(i) == "32TQS"]
    assert platforms == ["sentinel-2b", "sentinel-2a"] * 6 + ["sentinel-2b"]


def test_planetary_computer_items_have_its_structure(pc_archive: ArchiveInfo) -> None:
    validator = _validator("item")
    for item in pc_archive.read_items(S2_COLLECTION):
        validator.validate(item)
        props = item["properties"]
        assert set(item["assets"]) == {*BANDS, SCL} == set(PLANETARY_COMPUTER.asset_keys.values())
        assert props["s2:mgrs_tile"] in SMALL.tiles and props["platform"] in ("Sentinel-2A", "Sentinel-2B")
        assert re.fullmatch(
            rf"S2[AB]_MSIL2A_\d{{8}}T\d{{6}}_R022_T{props['s2:mgrs_tile']}_\d{{8}}T\d{{6}}", item["id"]
        )
        assert "earthsearch:boa_offset_applied" not in props and "proj:epsg" in props
        assert all("raster:bands" not in asset for asset in item["assets"].values())


def test_collections_and_label_items(es_archive: ArchiveInfo) -> None:
    validator = _validator("collection")
    for collection_id, path in es_archive.collection_paths.items():
        collection = json.loads(path.read_text())
        validator.validate(collection)
        assert collection["id"] == collection_id and not collection["links"]
    labels = es_archive.read_items(LABELS_COLLECTION)
    assert len(labels) == es_archive.n_label_items == 2
    item_validator = _validator("item")
    for item in labels:
        item_validator.validate(item)
        tile = item["id"].removeprefix(f"{LABELS_COLLECTION}-")
        asset = item["assets"][LABELS_ASSET]
        assert _path(asset["href"]) == es_archive.label_paths[tile]
        assert np.array_equal(_read(asset["href"]), label_raster(SMALL, tile))
        classes = asset["classification:classes"]
        assert [c["value"] for c in classes] == list(range(1, 9))
        assert all(re.fullmatch(r"[0-9A-Fa-f]{6}", c["color_hint"]) and c["name"] for c in classes)


def test_existing_archive_is_reused_replaced_or_protected(tmp_path: Path) -> None:
    spec = ArchiveSpec(tile_size=32, tiles=("33TTL",), revisit_days=120)
    calls: list[tuple[int, int]] = []
    first = build_archive(tmp_path / "a", spec, progress=lambda done, total: calls.append((done, total)))
    assert first.built and calls == [(k, 5) for k in range(1, 6)]  # 4 dates + 1 label raster
    stamp = first.items_path.stat().st_mtime_ns
    again = build_archive(tmp_path / "a", spec)
    assert not again.built and again == dataclasses.replace(first, built=False)
    assert first.items_path.stat().st_mtime_ns == stamp
    replaced = build_archive(tmp_path / "a", dataclasses.replace(spec, seed=7))
    assert replaced.built and json.loads((tmp_path / "a" / "archive.json").read_text())["spec"]["seed"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging or old folders left behind
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a pimc-ray sample archive"):
        build_archive(tmp_path / "foreign", spec)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["build", "--out", str(tmp_path / "cli"), "--tile-size", "32", "--tiles", "33TTL"]
    assert main([*argv, "--revisit-days", "180", "--convention", "planetary-computer"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "cli") in out and "items.ndjson" in out and "labels.tif" in out
    assert main(["build", "--out", str(tmp_path / "bad"), "--tiles", "99XYZ"]) == 2
    assert "99XYZ" in capsys.readouterr().err
