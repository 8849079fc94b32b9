"""Tiles keyed by their own inputs: which items touch a tile, what changes its key, which tiles a rerun maps, and
which files a replacement supersedes. Items are hand-made footprints around tiles of the fixed grid."""

from __future__ import annotations

import pytest
import shapely
from pyproj import Transformer

from pimc_ray.data.aoi import load_aoi
from pimc_ray.data.tiles import TileGrid
from pimc_ray.errors import OutputExistsError
from pimc_ray.io.manifest import RunManifest
from pimc_ray.mapping.updates import superseded_files, tile_folder, tile_inputs, to_map

#: Two rows of 64-px tiles (640 m) near Venice, in UTM 32N.
TILES = TileGrid(64).tiles(load_aoi("11.90,45.47,11.93,45.48"))


def item_over(tile, item_id, updated="2024-01-01T00:00:00Z", shrink=100.0):
    """An item whose footprint is the tile's square shrunk by ``shrink`` metres (touching no other tile)."""
    xmin, ymin, xmax, ymax = tile.bounds
    box = shapely.box(xmin + shrink, ymin + shrink, xmax - shrink, ymax - shrink)
    to_lonlat = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    geometry = shapely.transform(box, to_lonlat.transform, interleaved=False)
    return {
        "id": item_id,
        "geometry": shapely.geometry.mapping(geometry),
        "bbox": list(geometry.bounds),
        "properties": {"updated": updated},
    }


def keys(items, **kwargs):
    args = {"model": "sha256:m", "params": "p"} | kwargs
    return {t: i.key for t, i in tile_inputs(TILES, items, **args).items()}


def test_a_tile_is_keyed_by_the_items_that_touch_it_the_model_and_the_parameters():
    assert len(TILES) >= 4
    a, b = TILES[0], TILES[-1]
    items = [item_over(a, "A1"), item_over(b, "B1")]
    base = keys(items)
    inputs = tile_inputs(TILES, items, model="sha256:m", params="p")
    assert inputs[a.tile_id].items == 1 and inputs[b.tile_id].items == 1
    assert sum(i.items for i in inputs.values()) == 2  # each item touches its tile only

    new = keys([*items, item_over(a, "A2")])  # a new acquisition over tile a
    assert {t for t in base if base[t] != new[t]} == {a.tile_id}
    reprocessed = keys([item_over(a, "A1", updated="2024-06-01T00:00:00Z"), item_over(b, "B1")])
    assert {t for t in base if base[t] != reprocessed[t]} == {a.tile_id}
    assert keys(list(reversed(items))) == base  # the order of a search does not matter
    assert all(keys(items, model="sha256:other")[t] != base[t] for t in base)
    assert all(keys(items, params="q")[t] != base[t] for t in base)


def test_a_halo_takes_in_items_next_to_the_tile():
    a = TILES[0]
    beside = item_over(a, "near", shrink=-50.0)  # 50 m beyond the tile's edge: touches its neighbours too
    plain = tile_inputs(TILES, [beside], model="m", params="p")
    assert sum(i.items for i in plain.values()) > 1
    far = item_over(a, "inside", shrink=150.0)
    wide = tile_inputs(TILES, [far], model="m", params="p", halo=0)
    assert sum(i.items for i in wide.values()) == 1
    grown = tile_inputs(TILES, [far], model="m", params="p", halo=40)  # 400 m of halo reach the neighbours
    assert sum(i.items for i in grown.values()) > 1


def test_a_rerun_maps_new_failed_and_with_update_changed_tiles():
    a, b, c, d = TILES[:4]
    inputs = tile_inputs(TILES, [item_over(a, "A1"), item_over(b, "B1")], model="m", params="p")
    status = {
        a.tile_id: {"status": "done", "inputs": {"key": inputs[a.tile_id].key}},
        b.tile_id: {"status": "done", "inputs": {"key": "old"}},
        c.tile_id: {"status": "failed", "error": "x"},
    }
    ids = lambda tiles: {t.tile_id for t in tiles}  # noqa: E731
    rest = ids(TILES) - {a.tile_id, b.tile_id}
    assert ids(to_map(TILES, status, inputs, update=False)) == rest  # resume: never redo a done tile
    assert ids(to_map(TILES, status, inputs, update=True)) == rest | {b.tile_id}
    assert d.tile_id in rest


def test_superseded_files_are_the_replaced_versions_only():
    v1 = [f"{tile_folder('t1', 1)}/embedding.tif", f"{tile_folder('t1', 1)}/qa.tif"]
    v2 = [f"{tile_folder('t1', 2)}/embedding.tif", f"{tile_folder('t1', 2)}/qa.tif"]
    before = {
        "t1": {"status": "done", "files": v1},
        "t2": {"status": "done", "files": ["tiles/t2/v1/qa.tif"]},
        "t3": {"status": "failed"},
    }
    after = {
        "t1": {"status": "done", "files": v2},
        "t2": {"status": "done", "files": ["tiles/t2/v1/qa.tif"]},
        "t3": {"status": "done", "files": ["tiles/t3/v1/qa.tif"]},
    }
    assert superseded_files(before, after) == sorted(v1)
    assert tile_folder("32N_1_2", 3) == "tiles/32N_1_2/v3"


@pytest.mark.parametrize(
    ("held", "words"),
    [
        (None, "cannot be updated in place"),
        ({"name": "other", "aoi": 1, "tile_size": 64}, "spec 'other', not 'mine'"),
        ({"name": "mine", "aoi": 2, "tile_size": 64}, "another aoi"),
    ],
)
def test_an_output_of_another_run_is_refused_in_place(held, words):
    params = {} if held is None else {"layout": held}
    manifest = RunManifest("k", "m", params, {})
    layout = {"name": "mine", "aoi": 1, "tile_size": 64}
    with pytest.raises(OutputExistsError, match=words):
        manifest.check_same_layout(layout, "s3://b/out")
    RunManifest("k", "m", {"layout": layout}, {}).check_same_layout(layout, "s3://b/out")  # the same: fine
