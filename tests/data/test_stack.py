"""Reflectance stacks from the sample archive, checked against the generator's own reflectances."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pimc_ray.data.catalogs import BANDS
from pimc_ray.data.stack import DEFAULT_MASK_CLASSES, StackSpec, read_window, stack_reflectance
from pimc_ray.kernels.indices import vegetation_indices
from pimc_ray.local.archive import acquisition_dates, build_archive, render_scene, tile_info
from tests.faulty_http import FaultyFileServer
from tests.specs import TEST_SPEC

PC_SPEC = dataclasses.replace(TEST_SPEC, convention="planetary-computer", tiles=("32TQR",))


@pytest.fixture(scope="module")
def pc_archive(tmp_path_factory):
    return build_archive(tmp_path_factory.mktemp("archive") / "pc", PC_SPEC)


def tile_items(archive, tile_id):
    return [i for i in archive.read_items("sentinel-2-l2a") if tile_id in i["id"]]


def stack_tile(archive, tile_id, bands=BANDS):
    tile = tile_info(TEST_SPEC, tile_id)
    lazy = stack_reflectance(
        tile_items(archive, tile_id), bounds=tile.bounds, epsg=tile.epsg, spec=StackSpec(bands=tuple(bands))
    )
    return read_window(lazy)


def scl_valid_10m(scene):
    return ~np.isin(scene.scl, sorted(DEFAULT_MASK_CLASSES)).repeat(2, axis=0).repeat(2, axis=1)


def test_stack_equals_generator_reflectance_where_clear(sample_archive):
    stack = stack_tile(sample_archive, "32TQR")
    dates = acquisition_dates(TEST_SPEC)
    assert stack.dims == ("time", "band", "y", "x")
    assert stack.shape == (len(dates), len(BANDS), 128, 128)
    assert list(stack["band"].values) == list(BANDS)
    assert stack.dtype == np.float32
    assert stack.attrs["epsg"] == 32632
    for t, date in enumerate(dates):
        scene = render_scene(TEST_SPEC, "32TQR", date)
        valid = scl_valid_10m(scene)
        got = stack.values[t]
        np.testing.assert_allclose(got[:, valid], scene.reflectance[:, valid], atol=2e-7)
        assert np.isnan(got[:, ~valid]).all()
    # pre- and post-04.00 acquisitions were both checked, including items whose DNs still carry the offset
    baselines = {i["properties"]["s2:processing_baseline"] for i in tile_items(sample_archive, "32TQR")}
    assert baselines == {"03.01", "04.00"}


def test_earth_search_and_planetary_computer_give_the_same_indices(sample_archive, pc_archive):
    bands = ("B02", "B04", "B08")
    es = stack_tile(sample_archive, "32TQR", bands).values
    pc = stack_tile(pc_archive, "32TQR", bands).values
    np.testing.assert_array_equal(np.isnan(es), np.isnan(pc))
    ind_es = vegetation_indices(es[:, 0], es[:, 1], es[:, 2])  # (3, time, y, x)
    ind_pc = vegetation_indices(pc[:, 0], pc[:, 1], pc[:, 2])
    np.testing.assert_allclose(ind_es, ind_pc, atol=1e-6, equal_nan=True)
    # ... and both equal NDVI computed by hand from the generator's reflectance, before and after 04.00
    for t in (0, 2, 3, 20):  # Jan 3, Jan 23 (03.01); Feb 2, Jul 21 (04.00)
        scene = render_scene(TEST_SPEC, "32TQR", acquisition_dates(TEST_SPEC)[t])
        red, nir = scene.band("B04").astype(np.float64), scene.band("B08").astype(np.float64)
        valid = scl_valid_10m(scene)
        ndvi = (nir - red) / (nir + red)
        np.testing.assert_allclose(ind_pc[0, t][valid], ndvi[valid], atol=1e-6)


def test_same_day_items_of_adjacent_tiles_are_merged(sample_archive):
    west, east = tile_info(TEST_SPEC, "32TQR"), tile_info(TEST_SPEC, "32TQS")
    assert west.bounds[2] == east.bounds[0]
    edge = west.bounds[2]
    bounds = (edge - 320.0, west.bounds[1], edge + 320.0, west.bounds[3])
    items = tile_items(sample_archive, "32TQR") + tile_items(sample_archive, "32TQS")
    stack = read_window(stack_reflectance(items, bounds=bounds, epsg=32632, spec=StackSpec(bands=("B04",))))
    assert stack.sizes["time"] == 37  # 74 items, one step per day
    date = acquisition_dates(TEST_SPEC)[15]
    t = list(stack["time"].values.astype("datetime64[D]")).index(np.datetime64(date))
    left, right = render_scene(TEST_SPEC, "32TQR", date), render_scene(TEST_SPEC, "32TQS", date)
    expected = np.concatenate([left.band("B04")[:, -32:], right.band("B04")[:, :32]], axis=1)
    valid = np.concatenate([scl_valid_10m(left)[:, -32:], scl_valid_10m(right)[:, :32]], axis=1)
    np.testing.assert_allclose(stack.values[t, 0][valid], expected[valid], atol=2e-7)


def test_corrupt_asset_is_a_named_error(sample_archive, tmp_path):
    from pimc_ray.errors import AssetReadError

    items = tile_items(sample_archive, "33TTL")[:3]
    broken = tmp_path / "B04.tif"
    broken.write_bytes(b"not a tiff")
    items[1] = {
        **items[1],
        "assets": {**items[1]["assets"], "red": {**items[1]["assets"]["red"], "href": broken.as_uri()}},
    }
    tile = tile_info(TEST_SPEC, "33TTL")
    lazy = stack_reflectance(items, bounds=tile.bounds, epsg=tile.epsg, spec=StackSpec(bands=("B04",)))
    with pytest.raises(AssetReadError, match="B04.tif"):
        read_window(lazy)


def test_unreadable_asset_policy(sample_archive, tmp_path):
    from pimc_ray.errors import AssetReadError, AssetReadWarning

    items = tile_items(sample_archive, "33TTL")[:3]
    tile = tile_info(TEST_SPEC, "33TTL")
    spec = StackSpec(bands=("B04", "B08"))
    intact = read_window(stack_reflectance(items, bounds=tile.bounds, epsg=tile.epsg, spec=spec)).values
    missing = (tmp_path / "gone" / "B04.tif").as_uri()
    items[1] = {
        **items[1],
        "assets": {**items[1]["assets"], "red": {**items[1]["assets"]["red"], "href": missing}},
    }
    tile = tile_info(TEST_SPEC, "33TTL")

    def stack(policy):
        spec = StackSpec(bands=("B04", "B08"), on_unreadable=policy)
        return stack_reflectance(items, bounds=tile.bounds, epsg=tile.epsg, spec=spec)

    with pytest.raises(AssetReadError, match="on-unreadable nodata"):
        read_window(stack("error"))
    with pytest.warns(AssetReadWarning, match="became nodata"):
        data = read_window(stack("nodata")).values
    assert np.isnan(data[1, 0]).all()  # the missing red band of the second date is nodata ...
    np.testing.assert_array_equal(data[:, 1], intact[:, 1])  # ... and nothing else changed
    np.testing.assert_array_equal(data[[0, 2], 0], intact[[0, 2], 0])


def over_http(items, server):
    """The items with their ``file://`` asset hrefs served by ``server``."""
    out = []
    for item in items:
        assets = {
            k: {**a, "href": server.href(Path(a["href"].removeprefix("file://")))}
            for k, a in item["assets"].items()
        }
        out.append({**item, "assets": assets})
    return out


@pytest.mark.parametrize("fault", ["503", "drop", "truncate"])
def test_transient_http_faults_are_retried_to_the_same_pixels(sample_archive, fault):
    """Every third asset request fails (503, a dropped connection, half a body): GDAL retries, and the stack
    equals the fault-free one."""
    tile = tile_info(TEST_SPEC, "32TQR")
    items = tile_items(sample_archive, "32TQR")[:6]
    spec = StackSpec(bands=("B04", "B08"))

    def read(server):
        lazy = stack_reflectance(over_http(items, server), bounds=tile.bounds, epsg=tile.epsg, spec=spec)
        return read_window(lazy).values

    with FaultyFileServer(sample_archive.root) as clean:
        expected = read(clean)
    with FaultyFileServer(sample_archive.root, fault=fault, every=3) as faulty:
        got = read(faulty)
    assert faulty.faults > 0, "no fault was injected"
    np.testing.assert_array_equal(got, expected)
