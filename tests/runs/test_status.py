"""The status layer: what its GeoJSON says per tile as records come back, how often it is rewritten (a clock the
test turns), and that its PNG paints each tile in its status's colour where the tile is."""

from __future__ import annotations

import json

import pytest
import rasterio
import shapely
from rasterio.io import MemoryFile

from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.tiles import TileGrid
from pimc_ray.runs.status import COLORS, STATUS_GEOJSON, STATUS_PNG, StatusLayer
from pimc_ray.storage import open_store

#: Tiles in two UTM zones (the 12 E meridian between 32N and 33N).
TILES = TileGrid(256).tiles(load_aoi("11.97,45.47,12.03,45.50"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_layer_follows_the_tiles_and_is_rewritten_at_most_every_interval(tmp_path):
    assert {t.epsg for t in TILES} == {32632, 32633} and len(TILES) >= 4
    store, clock = open_store(tmp_path), Clock()
    layer = StatusLayer(store, interval=30.0, clock=clock)
    a, b, c, *rest = TILES
    before = {a.tile_id: {"status": "done", "version": 1, "pixels": 5, "at": "t0"}}
    layer.start(TILES, before, [b, c, *rest])  # a was published before and is unchanged
    assert layer.writes == 1
    layer.tile(b.tile_id, {"status": "done", "version": 1, "pixels": 7, "at": "t1"})
    assert layer.writes == 1  # within the interval: not rewritten
    clock.now = 31.0
    layer.tile(c.tile_id, {"status": "failed", "error": "boom", "at": "t2", "kept_version": 3})
    assert layer.writes == 2
    shown = json.loads((tmp_path / STATUS_GEOJSON).read_text())
    props = {f["id"]: f["properties"] for f in shown["features"]}
    assert props[a.tile_id] == {"tile_id": a.tile_id, "status": "unchanged", "version": 1, "pixels": 5,
                                     "at": "t0", "error": None}  # fmt: skip
    assert props[b.tile_id]["status"] == "done" and props[b.tile_id]["pixels"] == 7
    assert props[c.tile_id]["status"] == "failed" and props[c.tile_id]["version"] == 3
    assert props[c.tile_id]["error"] == "boom"
    assert shown["pimc:counts"] == {"pending": len(rest), "done": 1, "unchanged": 1, "failed": 1}
    layer.finish()
    assert layer.writes == 3


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a PNG has no georeference
def test_each_tile_is_painted_where_it_is_in_its_status_colour(tmp_path):
    store = open_store(tmp_path)
    layer = StatusLayer(store, png_size=400)
    a, b, *rest = TILES
    layer.start(TILES, {}, TILES)
    layer.tile(a.tile_id, {"status": "done", "version": 1, "pixels": 1, "at": "t"})
    layer.tile(b.tile_id, {"status": "failed", "error": "x", "at": "t"})
    layer.finish()
    shown = json.loads((tmp_path / STATUS_GEOJSON).read_text())
    features = {f["id"]: f for f in shown["features"]}
    with MemoryFile((tmp_path / STATUS_PNG).read_bytes()) as memory, memory.open() as src:
        assert max(src.shape) == 400 and src.driver == "PNG"
        image, colormap = src.read(1), src.colormap(1)
    transform = rasterio.transform.from_bounds(
        *shown["bbox"], image.shape[1], image.shape[0]
    )  # the PNG's span
    for tile, status in [(a, "done"), (b, "failed"), (rest[0], "pending")]:
        centre = shapely.geometry.shape(features[tile.tile_id]["geometry"]).centroid
        row, col = rasterio.transform.rowcol(transform, centre.x, centre.y)
        assert tuple(colormap[int(image[row, col])][:3]) == COLORS[status], tile.tile_id
    assert colormap[0][3] == 0  # no tile: transparent


def test_a_layer_without_tiles_has_no_quicklook(tmp_path):
    with pytest.raises(ValueError, match="without tiles"):
        StatusLayer(open_store(tmp_path)).png()
