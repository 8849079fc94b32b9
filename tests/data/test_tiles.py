"""The tile grid: stable ids, aligned bounds, coverage, zones (with Sentinel-2's exceptions), the vectorised
enumeration against the loop it replaced; windows skip what the AOI does not touch."""

import math

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from rasterio.features import geometry_mask

from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.tiles import TileGrid, split_by_zone, utm_epsg, utm_zone, zone_area, zone_footprint


def test_tiles_are_aligned_stable_and_cover_the_aoi():
    grid = TileGrid(size=64)
    aoi = load_aoi("11.90,45.48,11.93,45.50")
    tiles = grid.tiles(aoi)
    assert len(tiles) > 4
    for t in tiles:
        xmin, ymin, xmax, ymax = t.bounds
        assert xmin % 640 == 0 and ymin % 640 == 0 and xmax - xmin == 640 and ymax - ymin == 640
        assert t.shape == (64, 64) and t.epsg == 32632
        zone, col, row = t.tile_id.split("_")
        assert zone == "32N" and int(col) * 640 == xmin and int(row) * 640 == ymin
    covered = shapely.union_all([shapely.box(*t.bounds) for t in tiles])
    assert covered.contains(aoi.to_crs(32632))
    # a smaller AOI inside the first gets the same ids for the tiles it touches
    inner = grid.tiles(load_aoi("11.91,45.485,11.92,45.495"))
    assert {t.tile_id for t in inner} < {t.tile_id for t in tiles}
    assert {t.tile_id: t.bounds for t in inner}.items() <= {t.tile_id: t.bounds for t in tiles}.items()


def test_two_zones_and_south():
    ids = [t.tile_id for t in TileGrid(size=1024).tiles(load_aoi("11.99,45.49,12.01,45.50"))]
    assert any(i.startswith("32N_") for i in ids) and any(i.startswith("33N_") for i in ids)
    south = TileGrid(size=1024).tiles(load_aoi("-60.01,-10.01,-60.0,-10.0"))
    assert south and all(t.tile_id.startswith("20S_") and t.epsg == 32720 for t in south)


def test_windows_skip_what_the_aoi_misses():
    tile = TileGrid(size=256).tiles(load_aoi("11.9000,45.4900,11.9005,45.4905"))[0]
    windows = tile.windows(64)
    assert 1 <= len(windows) <= 4  # a ~40 m AOI touches one to four of the sixteen windows
    everywhere = geometry_mask([tile.footprint], out_shape=tile.shape, transform=tile.transform, invert=True)
    assert everywhere.sum() > 0
    assert sum(int(tile.inside(w).sum()) for w in windows) == everywhere.sum()  # no AOI pixel left out


def test_grown_windows_reach_across_tile_edges_on_the_same_grid():
    tile = TileGrid(size=64).tile(32632, 1138, 7878, shapely.box(728_320, 5_041_920, 728_960, 5_042_560))
    window = tile.windows(32)[0]  # the tile's north-west corner
    assert (window.row, window.col) == (0, 0)
    grown = window.grown(4, tile.resolution)
    assert (grown.row, grown.col, grown.height, grown.width) == (window.row - 4, window.col - 4, 40, 40)
    xmin, _, _, ymax = grown.bounds
    assert grown.bounds == tuple(b + d for b, d in zip(window.bounds, (-40, -40, 40, 40), strict=True))
    # into the neighbouring tiles, on their pixel edges
    assert xmin == tile.bounds[0] - 40 and ymax == tile.bounds[3] + 40 and xmin % 10 == 0
    assert window.grown(0, tile.resolution) == window
    with pytest.raises(ValueError, match="negative"):
        window.grown(-1, tile.resolution)


def test_tile_size_must_suit_cogs():
    with pytest.raises(ValueError, match="multiple of 16"):
        TileGrid(size=100)


# --- Sentinel-2's UTM zones and the vectorised enumeration ------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "zone"),
    [
        (5.3, 60.4, 32),  # Bergen: zone 32V reaches west to 3 E
        (2.9, 60.0, 31),  # west of 3 E, still 31V
        (11.9, 63.9, 32),  # 32V ends at 12 E and 64 N
        (5.3, 64.0, 31),  # band W: the ordinary zones again
        (5.3, 55.99, 31),  # band U
        (15.0, 78.0, 33),  # Svalbard
        (10.0, 78.0, 33),  # no 32X: 33X reaches west to 9 E
        (8.9, 78.0, 31),  # 31X reaches east to 9 E
        (22.0, 80.0, 35),  # no 34X
        (34.0, 73.0, 37),  # no 36X
        (42.0, 78.0, 38),  # east of 42 E: the ordinary zones
        (10.0, 71.99, 32),  # band W
        (5.3, -60.4, 31),  # the exceptions are northern
        (-179.9, 0.0, 1),
        (179.9, 10.0, 60),
    ],
)
def test_utm_zones_follow_sentinel2(lon, lat, zone):
    assert utm_zone(lon, lat) == zone
    assert utm_epsg(lon, lat) == (32600 if lat >= 0 else 32700) + zone


def test_zone_areas_cover_the_globe_once():
    areas = [zone_area(base + zone) for base in (32600, 32700) for zone in range(1, 61)]
    assert sum(a.area for a in areas) == pytest.approx(360 * 180)
    assert shapely.union_all(areas).area == pytest.approx(360 * 180)
    assert zone_area(32632).bounds == (3.0, 0.0, 12.0, 72.0)  # 32V widened, no 32X
    assert zone_area(32634).bounds[3] == 72.0 and zone_area(32636).bounds[3] == 72.0
    assert zone_area(32633).bounds == (9.0, 0.0, 21.0, 90.0)
    with pytest.raises(ValueError, match="not a WGS84 UTM zone"):
        zone_area(4326)


def test_every_point_of_a_part_is_in_its_zone():
    aoi = load_aoi("1,54,24,80")  # south-western Norway and Svalbard, both exceptions
    parts = split_by_zone(aoi)
    assert sorted(parts) == [32631, 32632, 32633, 32634, 32635]
    assert sum(p.area for p in parts.values()) == pytest.approx(aoi.geometry.area)
    rng = np.random.default_rng(0)
    for lon, lat in zip(rng.uniform(1, 24, 2000), rng.uniform(54, 80, 2000), strict=True):
        holding = [epsg for epsg, part in parts.items() if part.contains(shapely.Point(lon, lat))]
        assert holding == [utm_epsg(lon, lat)], (lon, lat)
    assert list(split_by_zone(load_aoi("4,59,7,61"))) == [32632]  # Bergen's region: 32V only
    assert list(split_by_zone(load_aoi("10,77,20,79"))) == [32633]  # Svalbard: 33X only


def reference_ids(grid: TileGrid, aoi) -> list[str]:
    """The tile ids as the grid enumerated them before it was vectorised: one intersection per candidate."""
    ids, w = [], grid.width_m
    for epsg, part in split_by_zone(aoi).items():
        footprint = zone_footprint(part, epsg)
        xmin, ymin, xmax, ymax = footprint.bounds
        for row in range(math.floor(ymax / w), math.floor(ymin / w) - 1, -1):
            for col in range(math.floor(xmin / w), math.floor(xmax / w) + 1):
                if (
                    footprint.intersection(shapely.box(col * w, row * w, (col + 1) * w, (row + 1) * w)).area
                    > 0
                ):
                    ids.append(grid.tile_id(epsg, col, row))
    return ids


def tile_in_lonlat(grid: TileGrid, epsg: int, col: int, row: int):
    """A tile's square as a lon/lat polygon: projected back, its edges fall on the tile grid's edges."""
    w = grid.width_m
    to_lonlat = Transformer.from_crs(epsg, 4326, always_xy=True)
    xs, ys = (
        [col * w, (col + 1) * w, (col + 1) * w, col * w],
        [row * w, row * w, (row + 1) * w, (row + 1) * w],
    )
    return shapely.Polygon(zip(*to_lonlat.transform(xs, ys), strict=True))


@pytest.mark.parametrize(
    ("size", "aoi"),
    [
        (512, "11.87,45.47,12.045,45.50"),  # the mini continent: two zones
        (64, "11.90,45.48,11.93,45.50"),
        (1024, "2,55,13,65"),  # 31V, 32V and the ordinary zones
        (1024, "5,76,25,80"),  # Svalbard
        (256, "-60.1,-10,-60,-9.9"),  # south
        (64, "tile"),  # an AOI whose edges lie on tile edges
        (
            256,
            {
                "type": "Polygon",
                "coordinates": [[[11, 45], [12.5, 45.2], [11.3, 46], [11.2, 45.4], [11, 45]]],
            },
        ),
    ],
)
def test_the_vectorised_grid_finds_the_same_tiles(size, aoi):
    grid = TileGrid(size=size)
    area = load_aoi(tile_in_lonlat(grid, 32632, 1138, 7878) if aoi == "tile" else aoi)
    tiles = grid.tiles(area)
    assert [t.tile_id for t in tiles] == reference_ids(grid, area)
    zones = grid.zone_tiles(area)
    assert sum(len(z) for z in zones) == len(tiles)
    for zone in zones:  # the area in each tile adds up to the footprint's
        assert zone.inside_m2.sum() == pytest.approx(zone.footprint.area, rel=1e-9)
        assert (zone.inside_m2 > 0).all() and (zone.inside_m2 <= grid.width_m**2 * (1 + 1e-9)).all()
    if aoi == "tile":  # the tile itself, whole; projecting there and back leaves neighbours slivers at most
        inside = dict(zip((t.tile_id for t in tiles), zones[0].inside_m2, strict=True))
        assert inside.pop("32N_1138_7878") == pytest.approx(grid.width_m**2)
        assert all(v < 1e-3 for v in inside.values())
    # bands of a few rows give the same tiles as one band
    assert [(z.epsg, list(z.cols), list(z.rows)) for z in grid.zone_tiles(area, max_boxes=7)] == [
        (z.epsg, list(z.cols), list(z.rows)) for z in zones
    ]
