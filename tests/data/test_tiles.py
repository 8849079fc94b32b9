"""The tile grid: stable ids, aligned bounds, coverage, zones; windows skip what the AOI does not touch."""

import pytest
import shapely
from rasterio.features import geometry_mask

from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.tiles import TileGrid


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
