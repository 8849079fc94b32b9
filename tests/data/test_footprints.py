import datetime as dt
import pickle

import numpy as np
import pytest
import shapely.geometry

from pimc_ray.data.footprints import ItemIndex, footprint_lonlat
from pimc_ray.data.series import SeriesReader, SeriesSpec, read_series
from pimc_ray.data.stac import DateRange
from pimc_ray.data.tiles import OutputGrid, Window

SERIES = SeriesSpec(dates=DateRange(dt.date(2022, 1, 1), dt.date(2022, 12, 31)))
#: A UTM 32N grid over the sample archive (tiles 32TQR and 32TQS meet at x = 728,320 m).
GRID = OutputGrid(
    32632, (720_000.0, 5_000_000.0, 740_000.0, 5_050_000.0), 10.0, shapely.geometry.box(0, 0, 1, 1)
)


def window(xmin: float, ymin: float, size: int = 32) -> Window:
    return Window(0, 0, size, size, (xmin, ymin, xmin + 10.0 * size, ymin + 10.0 * size))


def item(
    item_id: str, lon0: float, lat0: float, lon1: float, lat1: float, *, with_geometry: bool = True
) -> dict:
    out = {"id": item_id, "bbox": [lon0, lat0, lon1, lat1]}
    if with_geometry:
        out["geometry"] = shapely.geometry.mapping(shapely.geometry.box(lon0, lat0, lon1, lat1))
    return out


def test_an_item_without_geometry_is_found_by_its_bbox_2d_or_3d():
    assert footprint_lonlat(item("a", 1, 2, 3, 4, with_geometry=False)).bounds == (1, 2, 3, 4)
    three_d = {"id": "b", "bbox": [1, 2, 0, 3, 4, 100]}
    assert footprint_lonlat(three_d).bounds == (1, 2, 3, 4)


def test_the_index_returns_the_items_meeting_a_window_in_their_given_order_and_survives_pickling():
    # a window of 32 px at 10 m in UTM 32N near 9.0 E 45.0 N (x 500 km is the zone's central meridian, 9 E)
    win = window(500_000.0, 4_983_000.0)
    here = [item(f"here-{i}", 8.99, 44.99, 9.01, 45.01, with_geometry=i % 2 == 0) for i in range(3)]
    away = [item(f"away-{i}", 10.0, 46.0, 10.1, 46.1) for i in range(50)]
    # an item ending 5 m west of the window: inside the one-pixel margin, so a window edge never loses data
    west = 500_000.0 - 5.0
    edge = item("edge", 8.98, 44.99, 9.0 + (west - 500_000.0) / 78_700.0, 45.01)
    items = [*away[:20], here[0], edge, *away[20:], here[1], here[2]]
    index = ItemIndex(items)
    got = [i["id"] for i in index.over(32632, win.bounds, 10.0)]
    assert got == ["here-0", "edge", "here-1", "here-2"]
    assert [i["id"] for i in ItemIndex(items, margin=0).over(32632, win.bounds, 10.0)] == [
        "here-0",
        "here-1",
        "here-2",
    ]
    assert [i["id"] for i in pickle.loads(pickle.dumps(index)).over(32632, win.bounds, 10.0)] == got
    assert index.over(32632, window(600_000.0, 4_983_000.0).bounds, 10.0) == []


@pytest.mark.parametrize(
    ("where", "tiles"),
    [
        ((727_200.0, 5_041_400.0), {"32TQR"}),
        ((728_160.0, 5_041_760.0), {"32TQR", "32TQS"}),  # across the edge of the two tiles
        ((700_000.0, 5_000_000.0), set()),  # no item: nodata
    ],
    ids=["inside-a-tile", "across-two-tiles", "outside-the-archive"],
)
def test_a_window_read_through_the_index_equals_a_window_read_with_every_item(sample_archive, where, tiles):
    items = sample_archive.read_items("sentinel-2-l2a")
    win = window(*where)
    chosen = ItemIndex(items).over(GRID.epsg, win.bounds, GRID.resolution)
    assert {i["id"].split("_")[1] for i in chosen} == tiles
    got = SeriesReader(SERIES, items)(GRID, win)
    every = read_series(items, SERIES, GRID, win)  # stackstac over every item of the archive: the oracle
    np.testing.assert_array_equal(got.values, every.values)
    np.testing.assert_array_equal(got.valid_count, every.valid_count)
    np.testing.assert_array_equal(got.first_valid, every.first_valid)
    np.testing.assert_array_equal(got.last_valid, every.last_valid)
    assert np.isfinite(got.values).any() == bool(tiles)
